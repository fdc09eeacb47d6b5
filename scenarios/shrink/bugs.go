package shrink

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"lockstep/checker"
	"lockstep/scenarios"
)

// BugCase is a known-bug switch and the scenario whose faults expose it, as
// TestKnownBugsAreCaught pairs them: the anomaly class it shows as there,
// in the system the switch belongs to (the pipeline when zero).
type BugCase struct {
	Bug      string
	Scenario string
	Class    checker.Class
	System   scenarios.System
}

func (b BugCase) system() scenarios.System { return cmp.Or(b.System, scenarios.Pipeline) }

// Bugs pairs every --bug switch (pipeline.BugNames, then the two-phase
// commit system's, twopc.BugNames) with its scenario, in the order the
// README lists them. A test fails when a switch is missing.
var Bugs = []BugCase{
	{"confirm-before-ack", "crash-capture", checker.NotConverged, ""},
	{"skip-snapshot", "steady", checker.NotConverged, ""},
	{"non-idempotent-apply", "crash-capture", checker.Duplicate, ""},
	{"commit-offset-first", "crash-appliers", checker.NotConverged, ""},
	{"reorder-deletes-first", "crash-appliers", checker.Lost, ""},
	{"lsn-only-version", "steady", checker.Divergent, ""},
	{"drop-unchanged-toast", "steady", checker.Divergent, ""},
	{"no-split-large-txn", "zombie-pause", checker.NotConverged, ""},
	{"keyless-wedge", "keyless-table", checker.NotConverged, ""},
	{"no-idle-check", "cache-restart", checker.Lost, ""},
	{"confirm-on-append-timeout", "ambiguous-append", checker.NotConverged, ""},
	{"trust-slot-position", "source-stall", checker.NotConverged, ""},
	{"unconditional-apply", "fencing", checker.Backwards, ""},
	{"reset-to-earliest", "retention", checker.NotConverged, ""},
	{"ignore-retention", "retention", checker.NotConverged, ""},
	{"stream-after-slot-loss", "retention", checker.NotConverged, ""},
	{"unique-row-by-row", "steady", checker.NotConverged, ""},
	{"commit-before-prepared", "crash-capture", checker.Lost, scenarios.TwoPC},
	{"forget-in-doubt", "crash-capture", checker.Lost, scenarios.TwoPC},
	{"heuristic-rollback", "crash-capture", checker.Lost, scenarios.TwoPC},
	{"reset-by-ddl", "retention", checker.Torn, ""},
}

// BugRow is one line of the every-bug report.
type BugRow struct {
	BugCase
	// Seed is the first seed (from 1, default options) whose run shows the
	// class; 0 when none of MaxSeeds did.
	Seed    uint64   `json:"seed"`
	Result  *Result  `json:"-"`
	Summary *Summary `json:"result,omitempty"`
	Err     string   `json:"error,omitempty"`
	// CPUSeconds is the process's CPU time during the shrink (EveryBug
	// shrinks one bug at a time), which the machine's other work does not
	// stretch as it does Summary.Seconds.
	CPUSeconds float64 `json:"cpu_seconds"`
}

// EveryBug finds, for each of Bugs, the first failing seed of its scenario
// (at most maxSeeds, default options) and shrinks that run, keeping the
// case's class (on whichever store shows it first). Progress, when set,
// gets each shrink's lines.
func EveryBug(maxSeeds int, cfg Config) []BugRow {
	var rows []BugRow
	for _, bc := range Bugs {
		row := BugRow{BugCase: bc}
		sc, err := scenarios.Resolve(bc.Scenario + "+" + bc.Bug)
		if err != nil {
			row.Err = err.Error()
			rows = append(rows, row)
			continue
		}
		for seed := uint64(1); seed <= uint64(maxSeeds) && row.Seed == 0 && row.Err == ""; seed++ {
			out, err := scenarios.Run(sc, bc.system(), seed, scenarios.Options{})
			if err != nil {
				row.Err = err.Error()
				break
			}
			if slices.ContainsFunc(out.Report.Violations(), func(a checker.Anomaly) bool { return a.Class == bc.Class }) {
				row.Seed = seed
			}
		}
		if row.Seed == 0 {
			if row.Err == "" {
				row.Err = fmt.Sprintf("no %s in seeds 1 to %d", bc.Class, maxSeeds)
			}
			rows = append(rows, row)
			continue
		}
		c := cfg
		c.Class = bc.Class
		cpu := cpuTime()
		res, err := Shrink(sc, bc.system(), row.Seed, scenarios.Options{}, c)
		row.CPUSeconds = (cpuTime() - cpu).Seconds()
		if err != nil {
			row.Err = err.Error()
		} else {
			row.Result = res
			sum := res.Summary()
			row.Summary = &sum
		}
		rows = append(rows, row)
	}
	return rows
}

// MedianElapsed is the median wall time of the rows' shrinks.
func MedianElapsed(rows []BugRow) time.Duration {
	var ds []time.Duration
	for _, r := range rows {
		if r.Result != nil {
			ds = append(ds, r.Result.Elapsed)
		}
	}
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	if len(ds)%2 == 1 {
		return ds[len(ds)/2]
	}
	return (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
}

// WriteTable prints the rows as the README's table.
func WriteTable(w io.Writer, rows []BugRow) {
	fmt.Fprintf(w, "| bug | scenario, seed | class, store | faults | txns | clients | keys | fault phase | runs | seconds (CPU) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r.Result == nil {
			fmt.Fprintf(w, "| %s | %s | %s | not shrunk: %s | | | | | | |\n", r.label(), r.Scenario, r.Class, r.Err)
			continue
		}
		o, s := r.Result.Original, r.Result.Shrunk
		fmt.Fprintf(w, "| %s | %s, %d | %s, %s | %d -> %d | %d -> %d | %d -> %d | %d -> %d | %v -> %v | %d | %.1f (%.1f) |\n",
			r.label(), r.Scenario, r.Seed, r.Result.Class, r.Result.Store, o.Faults, s.Faults, o.Txns, s.Txns,
			o.Clients, s.Clients, o.Keys, s.Keys, o.FaultPhase, s.FaultPhase, r.Result.Runs, r.Result.Elapsed.Seconds(), r.CPUSeconds)
	}
	var cpu []float64
	for _, r := range rows {
		if r.Result != nil {
			cpu = append(cpu, r.CPUSeconds)
		}
	}
	sort.Float64s(cpu)
	med := 0.0
	if n := len(cpu); n > 0 {
		med = (cpu[(n-1)/2] + cpu[n/2]) / 2
	}
	fmt.Fprintf(w, "\nmedian %.1f s per shrink (%.1f s CPU)\n", MedianElapsed(rows).Seconds(), med)
}

// label is the bug's name, with its system when that is not the pipeline.
func (b BugCase) label() string {
	if b.system() == scenarios.Pipeline {
		return b.Bug
	}
	return fmt.Sprintf("%s (%s)", b.Bug, b.system())
}
