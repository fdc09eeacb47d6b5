package scenarios

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"lockstep/checker"
	"lockstep/faults"
	"lockstep/model"
	"lockstep/sim"
	"lockstep/sim/services"
)

// Two-phase commit holds what it claims of the replica and the search index
// under crashes, pauses and partitions of the coordinator, the source, the
// stores and the clients, and recovery leaves no transaction in doubt.
func TestTwoPCHoldsItsClaims(t *testing.T) {
	for _, name := range []string{"crash-capture", "partitions", "zombie-pause", "slot-reconnect", "swarm", "fencing"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for seed := uint64(1); seed <= 4; seed++ {
				out, err := Run(ByName(name), TwoPC, seed, smallRun)
				if err != nil {
					t.Fatal(err)
				}
				if out.Violated() {
					t.Errorf("%s: %s", out.Repro(), out.Report.String())
				}
				if out.Metrics.InDoubt != 0 {
					t.Errorf("%s: %d transactions in doubt at the end", out.Repro(), out.Metrics.InDoubt)
				}
			}
		})
	}
}

// Every 2PC bug switch is caught within 30 seeds: a change the source
// committed is lost on a participant store.
func TestTwoPCBugsAreCaught(t *testing.T) {
	for _, bug := range []string{"commit-before-prepared", "forget-in-doubt", "heuristic-rollback"} {
		t.Run(bug, func(t *testing.T) {
			t.Parallel()
			sc, err := Resolve("crash-capture+" + bug)
			if err != nil {
				t.Fatal(err)
			}
			for seed := uint64(1); seed <= 30; seed++ {
				out, err := Run(sc, TwoPC, seed, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if slices.ContainsFunc(out.Report.Violations(), func(a checker.Anomaly) bool {
					return a.Class == checker.Lost && a.Store != CacheStore
				}) {
					t.Logf("caught at seed %d: %s", seed, out.Repro())
					return
				}
			}
			t.Errorf("%s: no lost change on the replica or the search index in 30 seeds", bug)
		})
	}
}

// A coordinator killed while transactions are in flight leaves prepared
// transactions holding locks; the restarted coordinator resolves them from
// its decision log (commits what it decided, rolls back the rest), so
// nothing is in doubt at the end and no store lost anything. Without that
// (forget-in-doubt) some stay prepared for good.
func TestCoordinatorCrashInDoubtResolvedAfterRestart(t *testing.T) {
	forgot := 0
	for i, at := range []time.Duration{3 * time.Second, 5*time.Second + 7*time.Millisecond, 7*time.Second + 23*time.Millisecond, 9*time.Second + 41*time.Millisecond} {
		plan := faults.Plan{Quiet: 20 * time.Second, Faults: []faults.Fault{
			{At: at, Kind: faults.Crash, Node: CoordinatorNode},
			{At: at + time.Second, Kind: faults.Restart, Node: CoordinatorNode},
		}}
		for _, bugs := range []string{"", "+forget-in-doubt"} {
			sc, err := Resolve("crash-capture" + bugs)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Run(sc, TwoPC, uint64(i+1), Options{Plan: &plan})
			if err != nil {
				t.Fatal(err)
			}
			if bugs != "" {
				if out.Metrics.InDoubt > 0 {
					forgot++
				}
				continue
			}
			if out.Violated() || out.Metrics.InDoubt != 0 {
				t.Errorf("crash at %v: %d in doubt at the end; %s", at, out.Metrics.InDoubt, out.Report.String())
			}
			if out.Metrics.Unavailable < time.Second {
				t.Errorf("crash at %v for 1s: unavailable %v, want at least a second", at, out.Metrics.Unavailable)
			}
		}
	}
	if forgot == 0 {
		t.Error("forget-in-doubt: no crash left a transaction in doubt: the crashes hit no transaction in flight")
	}
}

// The 2PC system replays bit for bit.
func TestTwoPCIsDeterministic(t *testing.T) {
	for _, name := range []string{"swarm", "crash-capture"} {
		err := sim.CheckDeterminism(3, func(cfg sim.Config) (sim.Result, error) {
			o := smallRun
			o.KeepTrace = true
			out, err := Run(ByName(name), TwoPC, cfg.Seed, o)
			if err != nil {
				return sim.Result{}, err
			}
			return sim.Result{Hash: out.Hash, Trace: out.Trace}, nil
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// A bug switch of one system is refused in a run of another, where it
// would change nothing and pass as if caught; names are looked up in both
// catalogues.
func TestBugsBelongToTheirSystem(t *testing.T) {
	sc, err := Resolve("steady+forget-in-doubt")
	if err != nil || !sc.TwoPCBugs.ForgetInDoubt || sc.Bugs.Any() {
		t.Fatalf("resolve: %+v, %v", sc, err)
	}
	if _, err := Run(sc, Pipeline, 1, smallRun); err == nil || !strings.Contains(err.Error(), "--system 2pc") {
		t.Errorf("a 2pc bug in a pipeline run: %v, want a refusal", err)
	}
	sc, _ = Resolve("steady+skip-snapshot")
	if _, err := Run(sc, TwoPC, 1, smallRun); err == nil {
		t.Error("a pipeline bug in a 2pc run was not refused")
	}
	if _, err := Resolve("steady+no-such-bug"); err == nil || !strings.Contains(err.Error(), "heuristic-rollback") || !strings.Contains(err.Error(), "skip-snapshot") {
		t.Errorf("unknown bug: %v, want both catalogues named", err)
	}
}

// Two-phase commit claims nothing of the cache, and of the replica neither
// atomicity as the checker judges it (a prefix of the source's states).
func TestTwoPCClaims(t *testing.T) {
	sc := ByName("steady")
	if c := sc.Claims(TwoPC, model.Cache); len(c) != 0 {
		t.Errorf("cache claims %v, want none", c)
	}
	c := sc.Claims(TwoPC, model.Replica)
	if c[model.Atomicity] || !c[model.NoLoss] || !c[model.NoPhantom] || !c[model.PerKeyOrder] {
		t.Errorf("replica claims %v", c)
	}
	if !sc.Claims(TwoPC, model.Search)[model.ExactlyOnce] {
		t.Error("search does not claim exactly-once")
	}
}

// unavailable counts a window in which an operation waited or failed and
// none was answered; a rollback by the application is an answer.
func TestUnavailableWindows(t *testing.T) {
	s := time.Second
	ops := []*op{
		{start: 100 * time.Millisecond, end: 150 * time.Millisecond, ended: true},                        // 0: answered
		{start: s + 100*time.Millisecond, end: 3*s + 500*time.Millisecond, ended: true, err: errUnwound}, // 1, 2, 3 waiting
		{start: 3*s + 600*time.Millisecond, end: 3*s + 700*time.Millisecond, ended: true},                // 3 answered
		{start: 4*s + 10*time.Millisecond, end: 4*s + 20*time.Millisecond, ended: true, err: fmt.Errorf("overdraft: %w", services.ErrAborted)},
		{start: 8 * s}, // still waiting at the end: 8, 9
	}
	if got := unavailable(ops, 10*s, 30*s); got != 4*s {
		t.Errorf("unavailable %v, want 4s (windows 1, 2, 8, 9)", got)
	}
	lat := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if Percentile(lat, 0.5) != 5 || Percentile(lat, 0.99) != 10 || Percentile(nil, 0.5) != 0 {
		t.Errorf("percentiles: p50 %v p99 %v", Percentile(lat, 0.5), Percentile(lat, 0.99))
	}
}

// Every system reports its cost: committed transactions per second of the
// fault phase, latency percentiles of committed operations, and a paused
// coordinator shows as unavailability.
func TestMetricsOfEverySystem(t *testing.T) {
	for _, sys := range AllSystems {
		out, err := Run(ByName("steady"), sys, 1, smallRun)
		if err != nil {
			t.Fatal(err)
		}
		m := out.Metrics
		if m.Committed == 0 || m.Throughput != float64(m.Committed)/20 || m.LatencyP50 <= 0 || m.LatencyP99 < m.LatencyP50 || m.Unavailable != 0 {
			t.Errorf("%s: metrics %+v", sys, m)
		}
	}
	plan := faults.Plan{Quiet: 20 * time.Second, Faults: []faults.Fault{
		{At: 5 * time.Second, Kind: faults.Pause, Node: CoordinatorNode},
		{At: 9 * time.Second, Kind: faults.Resume, Node: CoordinatorNode},
	}}
	out, err := Run(ByName("zombie-pause"), TwoPC, 1, Options{Plan: &plan})
	if err != nil {
		t.Fatal(err)
	}
	if u := out.Metrics.Unavailable; u < 3*time.Second || u > 5*time.Second {
		t.Errorf("coordinator paused 4s: unavailable %v, want 3 to 5s", u)
	}
}
