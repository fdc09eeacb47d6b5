package main

import (
	"fmt"
	"strings"
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

// containerSystem refuses what the container world cannot run of a
// system: two-phase commit's heuristic-rollback bug is a participant's,
// and PostgreSQL takes no heuristic decisions.
func containerSystem(sys scenarios.System, sc *scenarios.Scenario) error {
	if sys == scenarios.TwoPC && sc.TwoPCBugs.HeuristicRollback {
		return usagef("bug heuristic-rollback: PostgreSQL takes no heuristic decisions, so only the simulator runs it (drop world=containers)")
	}
	return nil
}

// twoPCBugList is the 2pc system's bug switches, for --bug's help.
func twoPCBugList() string { return strings.Join(twopc.BugList(), ", ") }

// simSystem refuses a system the simulator does not run: Debezium runs
// only in containers.
func simSystem(sys scenarios.System) error {
	if sys == scenarios.Debezium {
		return usagef("%v", scenarios.ErrNoDebezium)
	}
	return nil
}
