package results

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"lockstep/scenarios"
)

// writeSystems prints, when the campaign ran two-phase commit, every
// system side by side per scenario, in the talk's order: violating runs,
// throughput, p99 commit latency and unavailability (seconds per run).
func (f *File) writeSystems(b *strings.Builder) {
	if !slices.Contains(f.Config.Systems, scenarios.TwoPC) {
		return
	}
	var systems []scenarios.System
	for _, sys := range scenarios.AllSystems {
		if slices.Contains(f.Config.Systems, sys) {
			systems = append(systems, sys)
		}
	}
	w := tabwriter.NewWriter(b, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "scenario")
	for _, sys := range systems {
		fmt.Fprintf(w, "\t%s violating\ttxn/s\tp99 ms\tunavail s", sys)
	}
	fmt.Fprintln(w)
	for _, sc := range f.scenarioNames() {
		fmt.Fprintf(w, "%s", sc)
		for _, sys := range systems {
			c := f.Cell(sc, sys)
			if c == nil || c.Seeds == 0 || c.Metrics == nil {
				fmt.Fprintf(w, "\t%s\t-\t-\t-", c.violatingText())
				continue
			}
			m := c.Metrics
			fmt.Fprintf(w, "\t%s\t%.1f\t%.0f\t%.1f", c.violatingText(), m.Throughput, m.LatencyP99, m.Unavailable)
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	fmt.Fprintln(b)
}
