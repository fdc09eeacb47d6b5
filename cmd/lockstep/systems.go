package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"lockstep/pipeline/twopc"
	"lockstep/scenarios"
)

// printMetrics prints what a run cost the application.
func printMetrics(m scenarios.Metrics) {
	fmt.Fprintf(stdout, "cost: %d txns committed in the fault phase (%.1f/s), commit latency p50 %v p99 %v, unavailable %v\n",
		m.Committed, m.Throughput, m.LatencyP50.Round(100*time.Microsecond), m.LatencyP99.Round(100*time.Microsecond), m.Unavailable)
	if m.InDoubt > 0 {
		fmt.Fprintf(stdout, "in doubt at the end: %d prepared transactions, holding their locks\n", m.InDoubt)
	}
}

// printSystems prints, when the campaign ran two-phase commit, every
// system side by side per scenario: violating runs, throughput, p99 commit
// latency and unavailability (seconds per run).
func printSystems(cfg scenarios.CampaignConfig, sum *scenarios.Summary) {
	if !slices.Contains(cfg.Systems, scenarios.TwoPC) {
		return
	}
	var systems []scenarios.System
	for _, sys := range scenarios.AllSystems {
		if slices.Contains(cfg.Systems, sys) {
			systems = append(systems, sys)
		}
	}
	w := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "scenario")
	for _, sys := range systems {
		fmt.Fprintf(w, "\t%s violating\ttxn/s\tp99 ms\tunavail s", sys)
	}
	fmt.Fprintln(w)
	for _, sc := range cfg.Scenarios {
		fmt.Fprintf(w, "%s", sc.Name)
		for _, sys := range systems {
			c := sum.Cell(sc.Name, sys)
			if c == nil || c.Seeds == 0 {
				fmt.Fprintf(w, "\t-\t-\t-\t-")
				continue
			}
			m := c.Metrics
			fmt.Fprintf(w, "\t%s\t%.1f\t%.0f\t%.1f", c, m.Throughput, m.LatencyP99, m.Unavailable)
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	fmt.Fprintln(stdout)
}

// containerSystem refuses a system the container world does not run.
func containerSystem(sys scenarios.System) error {
	if sys == scenarios.TwoPC {
		return usagef("the container world does not run 2pc yet: run it in the simulator (drop world=containers)")
	}
	return nil
}

// twoPCBugList is the 2pc system's bug switches, for --bug's help.
func twoPCBugList() string { return strings.Join(twopc.BugList(), ", ") }
