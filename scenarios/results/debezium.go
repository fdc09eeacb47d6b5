package results

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"lockstep/scenarios"
)

// writeDebezium prints, for a campaign that ran --system debezium, its
// table (violating runs and anomalies by class per scenario) and its
// verdict: Debezium's violations of what it claims fail the campaign as
// the pipeline's do, and are listed to replay.
func (f *File) writeDebezium(b *strings.Builder) {
	if !slices.Contains(f.Config.Systems, scenarios.Debezium) {
		return
	}
	w := tabwriter.NewWriter(b, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "scenario\tdebezium violating\tdebezium anomalies\n")
	for _, sc := range f.scenarioNames() {
		c := f.Cell(sc, scenarios.Debezium)
		fmt.Fprintf(w, "%s\t%s\t%s\n", sc, c.violatingText(), c.classesText())
	}
	w.Flush()
	if failing := f.RunsWhere(scenarios.Debezium, Violated); len(failing) > 0 {
		fmt.Fprintf(b, "DEBEZIUM VIOLATED A CLAIMED PROPERTY in %d runs; replay with:\n", len(failing))
		f.listRuns(b, failing)
	} else {
		fmt.Fprintf(b, "debezium: no claimed property violated in the runs judged.\n")
	}
	fmt.Fprintln(b)
}
