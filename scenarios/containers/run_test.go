package containers

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"lockstep/faults"
	"lockstep/model"
	"lockstep/scenarios"
)

func plan(t *testing.T, text string) *faults.Plan {
	t.Helper()
	p, err := faults.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return &p
}

func runScenario(t *testing.T, name string, sys scenarios.System, p *faults.Plan, bench bool) *Outcome {
	t.Helper()
	sc, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	out, err := Run(ctx, Config{Scenario: sc, System: sys, Seed: 1, Txns: 120, Plan: p, Bench: bench,
		Logger: testLogger(), LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s/%s: %d committed txns, %d reads, converged %v, wall %v", name, sys, len(out.History.Committed), len(out.History.Reads), out.History.ConvergedAt, out.Wall.Round(time.Second))
	if len(out.History.Committed) < 20 {
		t.Fatalf("only %d committed transactions: the workload did not run", len(out.History.Committed))
	}
	return out
}

// testLogger logs a container test's warnings, and with -v its progress.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// The pipeline holds every claimed property against real PostgreSQL, Kafka
// and Redis while its processes are killed, its log leader fails over and
// its links are cut.
func TestPipelineInContainers(t *testing.T) {
	requireDocker(t)
	cases := []struct {
		scenario string
		plan     string
	}{
		{"crash-capture", `
@3s crash capture
@7s restart capture
@11s crash capture
@11.5s restart capture
@15s crash capture
@18s restart capture
quiet @22s`},
		{"broker-failover", `
@4s leader-failover
@14s leader-failover
quiet @24s`},
		{"partitions", `
@3s partition capture | kafka1,kafka2,kafka3
@8s heal
@9s partition applier-replica,applier-search | kafka1,kafka2,kafka3
@14s heal
@15s loss capture->pg-source 0.3
@15s loss applier-cache->redis 0.2
@19s heal
quiet @22s`},
		{"crash-appliers", `
@3s crash applier-search
@6s restart applier-search
@8s pause applier-replica
@12s resume applier-replica
@13s crash redis
@15s restart redis
quiet @22s`},
	}
	for _, c := range cases {
		t.Run(c.scenario, func(t *testing.T) {
			out := runScenario(t, c.scenario, scenarios.Pipeline, plan(t, c.plan), false)
			if out.Violated() {
				t.Fatalf("the pipeline violated a claimed property:\n%s\nlogs: %s", out.Report, out.LogDir)
			}
			for _, st := range out.History.Stores {
				if _, ok := out.History.ConvergedAt[st.Name]; !ok {
					t.Fatalf("%s never converged:\n%s", st.Name, out.Report)
				}
			}
			checkTimeline(t, out)
		})
	}
}

// checkTimeline asserts that the report's timeline has a span of the
// right state for every crash, pause and partition of the plan, starting
// once the fault was made (docker takes a moment, and a partition of many
// links several on a loaded machine), and position samples
// that end with every store at the source's last commit.
func checkTimeline(t *testing.T, out *Outcome) {
	t.Helper()
	tl := out.History.Timeline
	if tl == nil || len(tl.Positions) == 0 {
		t.Fatalf("no timeline recorded: %+v", tl)
	}
	has := func(node string, state model.NodeState, at time.Duration) bool {
		for _, s := range tl.Spans {
			if s.Node == node && s.State == state && s.Start >= at && s.Start <= at+30*time.Second && s.End > s.Start {
				return true
			}
		}
		return false
	}
	for _, f := range out.Plan.Faults {
		var nodes []string
		var state model.NodeState
		switch f.Kind {
		case faults.Crash:
			nodes, state = []string{f.Node}, model.NodeCrashed
		case faults.Pause:
			nodes, state = []string{f.Node}, model.NodePaused
		case faults.Partition:
			nodes, state = append(append([]string(nil), f.A...), f.B...), model.NodeCutOff
		default:
			continue
		}
		for _, n := range nodes {
			if !has(n, state, f.At) {
				t.Errorf("fault %s: no %s span of %s starting within 30s of it in %+v", f, state, n, tl.Spans)
			}
		}
	}
	last := tl.Positions[len(tl.Positions)-1]
	final := out.History.Committed[len(out.History.Committed)-1].CommitLSN
	for i, p := range last.Stores {
		if !p.Up || !p.Has || p.LSN < final {
			t.Errorf("%s's last sampled position %+v, want at or past %s", out.History.Stores[i].Name, p, final)
		}
	}
}

// Naive dual writes against the same real stores diverge: the cache
// restarting empty loses what the application wrote to it.
func TestDualWritesDivergeInContainers(t *testing.T) {
	requireDocker(t)
	out := runScenario(t, "cache-restart", scenarios.DualWrite, plan(t, `
@10s crash redis
@11s restart redis
quiet @20s`), false)
	if !out.Violated() {
		t.Fatalf("dual writes held every claim through a cache restart:\n%s", out.Report)
	}
	if out.Report.Counts["lost"] == 0 {
		t.Fatalf("want lost documents in the cache:\n%s", out.Report)
	}
	if !strings.Contains(out.Report.String(), "cache") {
		t.Fatalf("the report should name the cache:\n%s", out.Report)
	}
}

// A workload no one here wrote: pgbench's TPC-B-like script, while the
// capture is killed and the log's leader fails over.
func TestPgbenchInContainers(t *testing.T) {
	requireDocker(t)
	out := runScenario(t, "pgbench", scenarios.Pipeline, plan(t, `
@5s crash capture
@8s restart capture
@12s leader-failover
quiet @25s`), true)
	if out.Violated() {
		t.Fatalf("the pipeline violated a claimed property under pgbench:\n%s\nlogs: %s", out.Report, out.LogDir)
	}
	if out.Bench == nil || out.Bench.Txns == 0 {
		t.Fatal("no benchmark figures")
	}
	t.Logf("pgbench:\n%s", out.Bench)
}

// A second instance of the capture and of two appliers, started while the
// first is paused, which then wakes as a zombie: the pipeline holds every
// claim against the real services, and PostgreSQL lets one capture stream
// from the slot (the second is told the slot is active, 55006), as the
// simulated source does.
func TestFencingInContainers(t *testing.T) {
	requireDocker(t)
	out := runScenario(t, "fencing", scenarios.Pipeline, plan(t, `
@3s pause capture
@4s second-instance capture
@7s resume capture
@8s pause applier-replica
@8s pause applier-search
@9s second-instance applier-replica
@9.5s second-instance applier-search
@12s resume applier-replica
@12s resume applier-search
quiet @22s`), false)
	if out.Violated() {
		t.Fatalf("the pipeline violated a claimed property:\n%s\nlogs: %s", out.Report, out.LogDir)
	}
	for _, st := range out.History.Stores {
		if _, ok := out.History.ConvergedAt[st.Name]; !ok {
			t.Fatalf("%s never converged:\n%s", st.Name, out.Report)
		}
	}
	for _, name := range []string{"capture-2", "applier-replica-2", "applier-search-2"} {
		if _, err := os.Stat(out.LogDir + "/" + name + ".log"); err != nil {
			t.Fatalf("no log of the second instance %s: %v", name, err)
		}
	}
	logs, err := os.ReadFile(out.LogDir + "/capture-2.log")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), "55006") {
		t.Fatalf("the second capture was never told the slot is active (55006): two captures streamed? logs: %s", out.LogDir)
	}
}
