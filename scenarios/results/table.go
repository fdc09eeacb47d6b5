package results

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"lockstep/checker"
	"lockstep/scenarios"
)

// maxListed is how many repro lines of a kind the table lists.
const maxListed = 10

// scenarioNames are the file's scenarios in the config's order, then any
// other cell's.
func (f *File) scenarioNames() []string {
	names := append([]string(nil), f.Config.Scenarios...)
	for _, c := range f.Cells {
		if !contains(names, c.Scenario) {
			names = append(names, c.Scenario)
		}
	}
	return names
}

func contains[T comparable](xs []T, x T) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// WriteTable prints the campaign as the CLI shows it, the same for both
// worlds and for merged shards: pipeline against dual writes per scenario,
// the anomalies by class, the speed, and the runs to replay.
func (f *File) WriteTable(out io.Writer) error {
	var b strings.Builder
	// A campaign of Debezium alone has neither column (writeDebezium).
	lockstep := slices.ContainsFunc(f.Config.Systems, func(s scenarios.System) bool { return s != scenarios.Debezium })
	w := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	if lockstep {
		fmt.Fprintf(w, "scenario\tpipeline violating\tdual writes violating\tdual-write anomalies\n")
		for _, sc := range f.scenarioNames() {
			p, d := f.Cell(sc, scenarios.Pipeline), f.Cell(sc, scenarios.DualWrite)
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", sc, p.violatingText(), d.violatingText(), d.classesText())
		}
		w.Flush()
		fmt.Fprintln(&b)
	}
	f.writeSystems(&b)
	f.writeDebezium(&b)
	w = tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "anomalies by class\t")
	for _, sys := range f.Config.Systems {
		fmt.Fprintf(w, "%s\t", sys)
	}
	fmt.Fprintln(w)
	for _, class := range checker.Classes {
		fmt.Fprintf(w, "%s\t", class)
		for _, sys := range f.Config.Systems {
			n := 0
			for _, c := range f.Cells {
				if c.System == sys {
					n += c.Anomalies[class]
				}
			}
			fmt.Fprintf(w, "%d\t", n)
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	fmt.Fprintf(&b, "\n%s\n", f.speedLine())
	if f.Timing.StoppedByDuration {
		fmt.Fprintf(&b, "time up (--duration %s): the runs started by then finished and are counted\n", f.Config.Duration)
	}
	if len(f.MissingShards) > 0 {
		var missing []string
		for _, i := range f.MissingShards {
			missing = append(missing, fmt.Sprintf("%d", i))
		}
		fmt.Fprintf(&b, "\nshards missing from the merge: %s (their seeds were not judged)\n", strings.Join(missing, ", "))
	}
	for _, c := range f.Cells {
		if c.System != scenarios.Pipeline || c.Refused == 0 {
			continue
		}
		for _, r := range c.Runs {
			if r.Verdict == Refused {
				fmt.Fprintf(&b, "\npipeline: %d runs of %s stopped on input the pipeline cannot capture (not a pass), first %s: %s\n",
					c.Refused, c.Scenario, r.Token, r.Stopped)
				break
			}
		}
	}
	inconclusive := f.RunsWhere(scenarios.Pipeline, Inconclusive)
	if len(inconclusive) > 0 {
		fmt.Fprintf(&b, "\npipeline: %d runs inconclusive (a check of a claimed property did not finish or the history was defective: not a pass); replay with:\n", len(inconclusive))
		f.listRuns(&b, inconclusive)
	}
	if errs := f.Errors(); len(errs) > 0 {
		fmt.Fprintf(&b, "\n%d runs could not complete (harness errors, not judged); first: %s\n", len(errs), errs[0].Error)
	}
	if tpc := f.RunsWhere(scenarios.TwoPC, Violated); len(tpc) > 0 {
		fmt.Fprintf(&b, "\n2PC VIOLATED A CLAIMED PROPERTY in %d runs; replay with:\n", len(tpc))
		f.listRuns(&b, tpc)
	}
	failing := f.RunsWhere(scenarios.Pipeline, Violated)
	switch {
	case !lockstep:
		// Debezium's verdict is in its own table's lines.
	case len(failing) > 0:
		fmt.Fprintf(&b, "\nPIPELINE VIOLATED A CLAIMED PROPERTY in %d runs; replay with:\n", len(failing))
		f.listRuns(&b, failing)
	default:
		judged := "in any run"
		if f.Verdict == Unjudged {
			judged = "in the runs judged (not all were, above)"
		}
		fmt.Fprintf(&b, "\npipeline: no claimed property violated %s.\n", judged)
		if dw := f.RunsWhere(scenarios.DualWrite, Violated); len(dw) > 0 {
			fmt.Fprintf(&b, "see a dual-write divergence: lockstep repro %s\n", dw[0].Token)
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}

func (f *File) listRuns(b *strings.Builder, runs []Run) {
	for _, r := range runs[:min(len(runs), maxListed)] {
		fmt.Fprintf(b, "  lockstep repro %s\n", r.Token)
		if r.LogDir != "" {
			fmt.Fprintf(b, "    logs: %s\n", r.LogDir)
		}
	}
	if len(runs) > maxListed {
		fmt.Fprintf(b, "  ... and %d more (all in the JSON and JUnit files)\n", len(runs)-maxListed)
	}
}

// speedLine is the campaign's size and speed: seeds per second per core
// and the simulated time's speed-up in the simulator; seconds per run in
// containers.
func (f *File) speedLine() string {
	wall := time.Duration(f.Timing.WallNS).Round(time.Millisecond)
	var rates []string
	var runWall, virtual, simWall time.Duration
	for _, sys := range f.Config.Systems {
		n, secs := 0, 0.0
		for _, c := range f.Cells {
			if c.System != sys {
				continue
			}
			for _, r := range c.Runs {
				if r.Verdict == Error {
					continue
				}
				n++
				secs += time.Duration(r.Timing.WallNS).Seconds()
				runWall += time.Duration(r.Timing.WallNS)
				virtual += time.Duration(r.Timing.VirtualNS)
				simWall += time.Duration(r.Timing.SimNS)
			}
		}
		switch {
		case secs == 0:
		case f.World == WorldContainers:
			rates = append(rates, fmt.Sprintf("%s %.0f s per run", sys, secs/float64(n)))
		default:
			rates = append(rates, fmt.Sprintf("%s %.1f seeds/s per core", sys, float64(n)/secs))
		}
	}
	rate := strings.Join(rates, ", ")
	if rate == "" {
		rate = "no run judged"
	}
	if f.World == WorldContainers {
		return fmt.Sprintf("%d runs in %v, one at a time, against real services; %s", f.Runs, wall, rate)
	}
	speedup, simSpeedup := 0.0, 0.0
	if runWall > 0 {
		speedup = float64(virtual) / float64(runWall)
	}
	if simWall > 0 {
		simSpeedup = float64(virtual) / float64(simWall)
	}
	return fmt.Sprintf("%d runs in %v on %d workers; %s; simulated time %.0fx faster than wall (%.0fx in the simulator alone)",
		f.Runs, wall, f.Timing.Parallel, rate, speedup, simSpeedup)
}

func (c *Cell) violatingText() string {
	if c == nil || c.Seeds == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d (%.0f%%)", c.Violating, c.Seeds, 100*float64(c.Violating)/float64(c.Seeds))
}

func (c *Cell) classesText() string {
	if c == nil {
		return "-"
	}
	var parts []string
	for _, class := range checker.Classes {
		if n := c.Anomalies[class]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", class, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
