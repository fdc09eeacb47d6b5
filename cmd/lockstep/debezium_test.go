package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lockstep/checker"
	"lockstep/scenarios"
)

// The simulator has no Debezium: every way of asking it for one is one
// line and exit 2, before anything runs. In containers, the faults and bug
// switches --system debezium does not run are refused the same way, before
// Docker is asked for anything.
func TestDebeziumRefusals(t *testing.T) {
	const noSim = "the simulator has no Debezium: run --system debezium with --world containers"
	plan := filepath.Join(t.TempDir(), "crash.plan")
	if err := os.WriteFile(plan, []byte("@4s crash debezium\n@5s restart debezium\nquiet @10s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--scenario", "steady", "--system", "debezium", "--seed", "1"}, "lockstep run: " + noSim},
		{[]string{"repro", "crash-capture/debezium/3"}, "lockstep repro: " + noSim},
		{[]string{"campaign", "--scenario", "steady", "--system", "debezium", "--seeds", "1"}, "lockstep campaign: " + noSim},
		{[]string{"run", "--world", "containers", "--scenario", "fencing", "--system", "debezium", "--seed", "1"}, "lockstep run: scenario fencing: --system debezium does not run second-instance faults"},
		{[]string{"campaign", "--world", "containers", "--scenario", "retention", "--system", "debezium", "--seeds", "1"}, "lockstep campaign: scenario retention: --system debezium does not run retention faults"},
		{[]string{"run", "--world", "containers", "--scenario", "crash-capture", "--bug", "confirm-before-ack", "--system", "debezium", "--seed", "1"}, "lockstep run: scenario crash-capture+confirm-before-ack: lockstep's capture bugs do nothing to Debezium"},
		// A plan replaces the scenario's faults, not its bug switches.
		{[]string{"run", "--world", "containers", "--scenario", "crash-capture", "--bug", "confirm-before-ack", "--system", "debezium", "--seed", "1", "--plan", plan}, "lockstep run: scenario crash-capture+confirm-before-ack: lockstep's capture bugs do nothing to Debezium"},
	} {
		code, out, errw := lockstep(c.args...)
		if code != 2 || out != "" || !strings.HasPrefix(errw, c.want) || strings.Count(errw, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and one line starting %q", c.args, code, out, errw, c.want)
		}
	}
}

// Debezium is a system under test: a claimed property it broke is exit 1,
// as for the pipeline, and an inconclusive verdict is not a pass.
func TestJudgeDebezium(t *testing.T) {
	fail := &checker.Report{Verdict: checker.Fail, Anomalies: []checker.Anomaly{{Class: checker.Lost, Violation: true}}}
	if err := judge(scenarios.Debezium, fail, false); err != errViolation {
		t.Errorf("a violation: %v, want %v", err, errViolation)
	}
	if err := judge(scenarios.Debezium, &checker.Report{Verdict: checker.Inconclusive}, false); err != errInconclusive {
		t.Errorf("inconclusive: %v, want %v", err, errInconclusive)
	}
	if err := judge(scenarios.Debezium, &checker.Report{Verdict: checker.Pass}, false); err != nil {
		t.Errorf("a pass: %v", err)
	}
}
