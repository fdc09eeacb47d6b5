package scenarios

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"lockstep/checker"
	"lockstep/faults"
	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/scenarios/workload"
	"lockstep/sim"
)

// smallRun keeps the property tests quick; the campaign and the benchmark
// use the full 1,000 transactions.
var smallRun = Options{Txns: 300}

// Every scenario, for both systems, replays bit for bit: same seed, same
// trace, event by event.
func TestScenariosAreDeterministic(t *testing.T) {
	for _, sc := range append(All[:len(All):len(All)], Unsupported...) {
		for _, sys := range Systems {
			t.Run(sc.Name+"/"+string(sys), func(t *testing.T) {
				t.Parallel()
				for seed := uint64(1); seed <= 2; seed++ {
					err := sim.CheckDeterminism(seed, func(cfg sim.Config) (sim.Result, error) {
						o := smallRun
						o.KeepTrace = true
						out, err := Run(sc, sys, cfg.Seed, o)
						if err != nil {
							return sim.Result{}, err
						}
						return sim.Result{Hash: out.Hash, Trace: out.Trace}, nil
					})
					if err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}

func TestDifferentSeedsGiveDifferentRuns(t *testing.T) {
	seen := map[uint64]uint64{}
	for seed := uint64(1); seed <= 20; seed++ {
		out, err := Run(ByName("swarm"), Pipeline, seed, Options{Txns: 100})
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := seen[out.Hash]; dup {
			t.Fatalf("seeds %d and %d gave the same trace hash %016x", prev, seed, out.Hash)
		}
		seen[out.Hash] = seed
	}
}

// The pipeline holds every property it claims, in every scenario, under
// every fault mix the seeds draw.
func TestPipelineHoldsItsClaims(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := rapid.SampledFrom(All).Draw(t, "scenario")
		seed := rapid.Uint64().Draw(t, "seed")
		out, err := Run(sc, Pipeline, seed, smallRun)
		if err != nil {
			t.Fatal(err)
		}
		if out.Violated() {
			t.Fatalf("%s\nplan:\n%s\n%s", out.Repro(), out.Plan, out.Report)
		}
		if len(out.Blocked) > 0 {
			t.Fatalf("%s: tasks blocked for good: %v", out.Repro(), out.Blocked)
		}
		if sc.Unclean {
			return
		}
		for _, st := range out.History.Stores {
			if _, ok := out.History.ConvergedAt[st.Name]; !ok {
				t.Fatalf("%s: store %s never converged", out.Repro(), st.Name)
			}
		}
	})
}

// Naive dual writes claim the same, and the checker catches them failing
// within a few seeds in every scenario.
func TestDualWritesAreCaught(t *testing.T) {
	for _, sc := range All {
		t.Run(sc.Name, func(t *testing.T) {
			t.Parallel()
			for seed := uint64(1); seed <= 10; seed++ {
				out, err := Run(sc, DualWrite, seed, smallRun)
				if err != nil {
					t.Fatal(err)
				}
				if out.Violated() {
					return
				}
			}
			t.Fatalf("dual writes held every claim for 10 seeds of %s", sc.Name)
		})
	}
}

// A table without a key or FULL identity, created and written mid-run:
// the capture stops on the first transaction that wrote it and says so
// (Outcome.Stopped: the table, the transaction, the flag), and the history
// judged ends right before that transaction, which the stores all reached:
// refused, not violated, and not a pass either (the CLI exits 2).
func TestKeylessTableStopsTheCapture(t *testing.T) {
	sc := ByName("keyless-table")
	for seed := uint64(1); seed <= 5; seed++ {
		out, err := Run(sc, Pipeline, seed, smallRun)
		if err != nil {
			t.Fatal(err)
		}
		if !out.Refused() || !strings.Contains(out.Stopped, "a change to raw_events in xid") || !strings.Contains(out.Stopped, "--exclude-tables raw_events") ||
			strings.Contains(out.Stopped, "\n") {
			t.Fatalf("%s: stopped %q; want one line naming raw_events and the flag", out.Repro(), out.Stopped)
		}
		if out.Violated() || out.Report.Verdict != checker.Pass {
			t.Fatalf("%s: the history up to the refused transaction should pass:\n%s", out.Repro(), out.Report)
		}
		committed := out.History.Committed
		for _, txn := range committed {
			for _, c := range txn.Changes {
				if c.Table == "raw_events" {
					t.Fatalf("%s: the judged history holds a change to raw_events", out.Repro())
				}
			}
		}
		if len(committed) < 10 {
			t.Fatalf("%s: only %d transactions before the refusal; want the table created well into the run", out.Repro(), len(committed))
		}
		for _, st := range out.History.Stores {
			if _, ok := out.History.ConvergedAt[st.Name]; !ok {
				t.Fatalf("%s: store %s did not reach the transaction before the refused one", out.Repro(), st.Name)
			}
		}
	}
}

// Each known CDC bug, switched on in the pipeline, is caught within a
// bounded number of seeds in a scenario whose faults expose it.
func TestKnownBugsAreCaught(t *testing.T) {
	cases := []struct {
		bug      string
		scenario string
		bugs     pipeline.Bugs
		want     checker.Class
	}{
		// The log's chain (Txn.PrevLSN) turns these three losses into a
		// stall: appliers stop before the hole.
		{"confirm-before-ack", "crash-capture", pipeline.Bugs{ConfirmBeforeAck: true}, checker.NotConverged},
		{"skip-snapshot", "steady", pipeline.Bugs{SkipSnapshot: true}, checker.NotConverged},
		{"non-idempotent-apply", "crash-capture", pipeline.Bugs{NonIdempotentApply: true}, checker.Duplicate},
		{"commit-offset-first", "crash-appliers", pipeline.Bugs{CommitOffsetFirst: true}, checker.NotConverged},
		{"reorder-deletes-first", "crash-appliers", pipeline.Bugs{ReorderBatch: true}, checker.Lost},
		{"lsn-only-version", "steady", pipeline.Bugs{LSNOnlyVersion: true}, checker.Divergent},
		{"drop-unchanged-toast", "steady", pipeline.Bugs{DropUnchangedToast: true}, checker.Divergent},
		{"no-split-large-txn", "zombie-pause", pipeline.Bugs{NoSplitLargeTxn: true}, checker.NotConverged},
		// The capture retries the keyless change for ever: nothing after
		// it, in any table, reaches a store.
		{"keyless-wedge", "keyless-table", pipeline.Bugs{KeylessWedge: true}, checker.NotConverged},
		// The cache restarts empty once all is quiet and its applier
		// never looks: its documents are gone for good.
		{"no-idle-check", "cache-restart", pipeline.Bugs{NoIdleCheck: true}, checker.Lost},
		// A snapshot request that timed out runs late and makes the slot
		// again past the log's snapshot: streaming from it leaves a hole.
		{"trust-slot-position", "source-stall", pipeline.Bugs{TrustSlotPosition: true}, checker.NotConverged},
		// An append lost before the log took it, confirmed all the same:
		// the next transaction is chained to one the log never got.
		{"confirm-on-append-timeout", "ambiguous-append", pipeline.Bugs{ConfirmOnAppendTimeout: true}, checker.NotConverged},
		// A zombie applier writes its old batch over what its second
		// instance wrote: the store's position goes back.
		{"unconditional-apply", "fencing", pipeline.Bugs{UnconditionalApply: true}, checker.Backwards},
		// A store behind the log's start jumps to it: the chain stops it
		// at the hole, and no snapshot after the hole helps it.
		{"reset-to-earliest", "retention", pipeline.Bugs{ResetToEarliest: true}, checker.NotConverged},
		// Retention deleted the last snapshot and no new one comes: a
		// store that must be rebuilt never is.
		{"ignore-retention", "retention", pipeline.Bugs{IgnoreRetention: true}, checker.NotConverged},
		// The slot was dropped and made again later: what came between
		// is never captured.
		{"stream-after-slot-loss", "retention", pipeline.Bugs{StreamAfterSlotLoss: true}, checker.NotConverged},
		// The replica checks its unique constraints at every row: the
		// first swap of two emails is refused every time it is sent.
		{"unique-row-by-row", "steady", pipeline.Bugs{UniqueRowByRow: true}, checker.NotConverged},
		// The replica's rebuild drops and makes its tables again: the
		// observer's whole read, its snapshot older, finds them empty
		// beside the old position.
		{"reset-by-ddl", "retention", pipeline.Bugs{DDLReset: true}, checker.Torn},
	}
	for _, c := range cases {
		t.Run(c.bug, func(t *testing.T) {
			t.Parallel()
			sc := *ByName(c.scenario)
			sc.Name += "+" + c.bug
			sc.Bugs = c.bugs
			for seed := uint64(1); seed <= 30; seed++ {
				out, err := Run(&sc, Pipeline, seed, smallRun)
				if err != nil {
					t.Fatal(err)
				}
				if a, ok := violation(out, c.want); ok {
					t.Logf("caught at seed %d: %s", seed, a)
					return
				}
			}
			t.Fatalf("the %s bug was not caught as %s in 30 seeds of %s", c.bug, c.want, c.scenario)
		})
	}
}

// A capture that takes an append's timeout for done is caught in most seeds
// of ambiguous-append, not in a few: every seed draws both lost-append (the
// append did not happen, and the bug loses it) and lost-ack (it did, and
// the bug is harmless), at rates high enough that some append fails every
// try. The same seeds with the correct capture hold every claim.
func TestAmbiguousAppendCatchesConfirmOnTimeoutOften(t *testing.T) {
	const seeds = 40
	sc := *ByName("ambiguous-append")
	sc.Name += "+confirm-on-append-timeout"
	sc.Bugs = pipeline.Bugs{ConfirmOnAppendTimeout: true}
	caught := 0
	for seed := uint64(1); seed <= seeds; seed++ {
		out, err := Run(&sc, Pipeline, seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := violation(out, checker.NotConverged); ok {
			caught++
		}
		if seed%4 != 0 {
			continue // the correct capture on every fourth seed: enough to show the faults alone break nothing
		}
		ok, err := Run(ByName("ambiguous-append"), Pipeline, seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ok.Violated() {
			t.Fatalf("%s: the correct capture violated a claim:\n%s", ok.Repro(), ok.Report)
		}
	}
	t.Logf("caught in %d of %d seeds", caught, seeds)
	if caught*2 < seeds {
		t.Fatalf("confirm-on-append-timeout caught in %d of %d seeds of ambiguous-append, want at least half", caught, seeds)
	}
}

// Fencing catches the broken rules that let two writers at a store: an
// applier that writes without its expected position (unconditional-apply),
// in at least half of its first 30 seeds, and an applier that re-applies
// what its store holds (non-idempotent-apply, the rule that makes a
// zombie's or a restarted capture's copies of records harmless), in at
// least half too. The correct pipeline holds on the same seeds.
func TestFencingCatchesTwoWritersOften(t *testing.T) {
	const seeds = 30
	cases := []struct {
		bug  string
		bugs pipeline.Bugs
		want checker.Class
	}{
		{"unconditional-apply", pipeline.Bugs{UnconditionalApply: true}, checker.Backwards},
		{"non-idempotent-apply", pipeline.Bugs{NonIdempotentApply: true}, checker.Duplicate},
	}
	for _, c := range cases {
		t.Run(c.bug, func(t *testing.T) {
			t.Parallel()
			sc := *ByName("fencing")
			sc.Name += "+" + c.bug
			sc.Bugs = c.bugs
			caught := 0
			for seed := uint64(1); seed <= seeds; seed++ {
				out, err := Run(&sc, Pipeline, seed, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := violation(out, c.want); ok {
					caught++
				}
			}
			t.Logf("%s caught as %s in %d of %d seeds of fencing", c.bug, c.want, caught, seeds)
			if caught*2 < seeds {
				t.Fatalf("%s caught as %s in %d of %d seeds of fencing, want at least half", c.bug, c.want, caught, seeds)
			}
		})
	}
	t.Run("correct", func(t *testing.T) {
		t.Parallel()
		for seed := uint64(1); seed <= seeds; seed++ {
			out, err := Run(ByName("fencing"), Pipeline, seed, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if out.Violated() {
				t.Fatalf("%s: the correct pipeline violated a claim:\n%s", out.Repro(), out.Report)
			}
		}
	})
}

// The scenarios together cover every fault kind.
func TestScenariosCoverEveryFaultKind(t *testing.T) {
	covered := map[faults.Kind]bool{faults.Restart: true, faults.Resume: true, faults.Heal: true}
	for _, sc := range All {
		for _, k := range sc.Kinds {
			covered[k] = true
		}
	}
	for _, k := range faults.Kinds {
		if !covered[k] {
			t.Errorf("no scenario draws %s faults", k)
		}
	}
	if len(All) < 8 {
		t.Errorf("%d scenarios, want at least 8", len(All))
	}
}

func TestLookup(t *testing.T) {
	if s, err := Lookup("all"); err != nil || len(s) != len(All) {
		t.Fatalf("Lookup(all) = %d scenarios, %v", len(s), err)
	}
	if s, err := Lookup("steady,swarm"); err != nil || len(s) != 2 {
		t.Fatalf("Lookup(steady,swarm) = %v, %v", s, err)
	}
	if _, err := Lookup("steady,nope"); err == nil {
		t.Fatal("an unknown scenario was accepted")
	}
}

// A repro token names exactly one run: the token of a run with options off
// their defaults carries them, and running what it parses back to gives the
// same hash. (The token used to be scenario/system/seed alone, which replays
// a 1,000-transaction run.)
func TestReproTokenReplays(t *testing.T) {
	opts := Options{Txns: 120, Clients: 2, Quiet: 7 * time.Second, Settle: 25 * time.Second}
	a, err := Run(ByName("crash-capture"), DualWrite, 7, opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := "lockstep repro crash-capture/dualwrite/7,txns=120,clients=2,quiet=7s,settle=25s"; a.Repro() != want {
		t.Fatalf("repro %q, want %q", a.Repro(), want)
	}
	r, err := ParseRepro(a.Repro())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := Resolve(r.Scenario)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(sc, r.System, r.Seed, r.Options())
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash != b.Hash || len(a.Report.Anomalies) != len(b.Report.Anomalies) {
		t.Fatalf("replay differs: %016x/%d vs %016x/%d", a.Hash, len(a.Report.Anomalies), b.Hash, len(b.Report.Anomalies))
	}
	// Options at their defaults stay out of the token, given or not.
	c, err := Run(ByName("steady"), Pipeline, 1, Options{Txns: 1000, Quiet: 20 * time.Second, Clients: 1, Settle: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if want := "steady/pipeline/1,clients=1,settle=5s"; c.Token().String() != want {
		t.Fatalf("token %q, want %q", c.Token(), want)
	}
}

// Tokens print and parse back to the same Repro; malformed ones are refused
// with a reason.
func TestParseRepro(t *testing.T) {
	good := []Repro{
		{Scenario: "steady", System: Pipeline, Seed: 1},
		{Scenario: "crash-capture+confirm-before-ack+skip-snapshot", System: DualWrite, Seed: 1<<64 - 1, Txns: 50, Clients: 7, Quiet: 1500 * time.Millisecond, Settle: time.Minute},
		{Scenario: "partitions", System: Pipeline, Seed: 3, World: WorldContainers, Bench: true, Plan: "/tmp/my plans,v2/100%.txt", PlanSum: "0123456789abcdef"},
		{Scenario: "crash-capture", System: Pipeline, Seed: 4, Txns: 20, Clients: 1, Keys: 2},
		{Scenario: "retention+reset-by-ddl", System: Pipeline, Seed: 10, Txns: 20, Keys: 2, ObserverDelay: 184 * time.Millisecond},
	}
	for _, r := range good {
		got, err := ParseRepro(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRepro(%q) = %+v, %v; want %+v", r.String(), got, err, r)
		}
		if strings.ContainsAny(r.String(), " \t'\"$&;|<>*?()[]\\`") {
			t.Errorf("%q: want a token a shell passes as one word, unquoted", r.String())
		}
	}
	if got, err := ParseRepro("lockstep repro steady/pipeline/0x10,world=sim"); err != nil || got != (Repro{Scenario: "steady", System: Pipeline, Seed: 16}) {
		t.Errorf("hex seed, explicit world=sim: %+v, %v", got, err)
	}
	bad := map[string]string{
		"steady-pipeline-1":                                           "want SCENARIO/SYSTEM/SEED",
		"steady/pipeline":                                             "want SCENARIO/SYSTEM/SEED",
		"/pipeline/1":                                                 "want SCENARIO/SYSTEM/SEED",
		"steady/kafka/1":                                              `unknown system "kafka"`,
		"steady/pipeline/x1":                                          `seed "x1"`,
		"steady/pipeline/1,txns":                                      `parameter "txns": want KEY=VALUE`,
		"steady/pipeline/1,txns=0":                                    "txns=0: want a positive whole number",
		"steady/pipeline/1,txns=5,txns=6":                             "txns given twice",
		"steady/pipeline/1,quiet=-1s":                                 "quiet=-1s: want a positive duration",
		"steady/pipeline/1,speed=11":                                  "speed=11: unknown parameter",
		"steady/pipeline/1,world=moon":                                "world=moon: want sim or containers",
		"steady/pipeline/1,plan=/tmp/p":                               "plan needs world=containers",
		"steady/pipeline/1,bench=true":                                "bench needs world=containers",
		"steady/pipeline/1,world=containers,plan=%4":                  "a % must be followed by two hex digits",
		"steady/pipeline/1,world=containers,plansum=0123456789abcdef": "plansum without plan",
		"steady/pipeline/1,keys=1":                                    "keys=1: want at least 2",
		"steady/pipeline/1,world=containers,keys=4":                   "keys needs the simulator",
		"steady/pipeline/1,observe=0s":                                "observe=0s: want a positive duration",
		"steady/pipeline/1,world=containers,observe=5ms":              "observe needs the simulator",
	}
	for token, want := range bad {
		_, err := ParseRepro(token)
		if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("malformed repro token %q: ", token)) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRepro(%q) = %v; want an error containing %q", token, err, want)
		}
	}
}

// The observer's delay shapes a run, so its token carries it and replays
// it; no delay is the run without one (the same hash as before the option).
func TestObserverDelayIsInTheToken(t *testing.T) {
	run := func(opts Options) *Outcome {
		t.Helper()
		out, err := Run(ByName("steady"), Pipeline, 3, opts)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	plain, delayed := run(Options{Txns: 40}), run(Options{Txns: 40, ObserverDelay: 7 * time.Millisecond})
	if plain.Hash == delayed.Hash {
		t.Fatal("a delayed observer gave the same run")
	}
	if len(plain.History.Reads) == 0 || len(delayed.History.Reads) == 0 || delayed.History.Reads[0].Call < plain.History.Reads[0].Call+7*time.Millisecond {
		t.Fatal("the delayed observer's first read is not 7ms later")
	}
	if want := "steady/pipeline/3,txns=40,observe=7ms"; delayed.Token().String() != want {
		t.Fatalf("token %q, want %q", delayed.Token(), want)
	}
	r, err := ParseRepro(delayed.Token().String())
	if err != nil {
		t.Fatal(err)
	}
	if again := run(r.Options()); again.Hash != delayed.Hash {
		t.Fatalf("replay %016x, want %016x", again.Hash, delayed.Hash)
	}
	if _, err := Run(ByName("steady"), Pipeline, 3, Options{ObserverDelay: -time.Millisecond}); err == nil {
		t.Fatal("a negative observer delay was accepted")
	}
}

// A run with fewer transactions than clients leaves a client sleeping past
// the deadline after its last one (steady/pipeline/2 with one transaction
// was reported not-converged on every store). The source is final anyway:
// the fault phase is over and no client is inside an operation. Every
// store is recorded converged, at the time it got there (its one
// transaction commits at once, so during the fault phase), and from then
// on every read of it shows the final version.
func TestConvergedWhileClientsIdle(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		out, err := Run(ByName("steady"), Pipeline, seed, Options{Txns: 1})
		if err != nil {
			t.Fatal(err)
		}
		if out.Report.Verdict != checker.Pass {
			t.Fatalf("%s:\n%s", out.Repro(), out.Report)
		}
		h := out.History
		final := h.Truth()
		for _, st := range h.Stores {
			at, ok := h.ConvergedAt[st.Name]
			if !ok || at >= h.QuietAt {
				t.Fatalf("%s: %s converged at %v (recorded: %v), want during the fault phase", out.Repro(), st.Name, at, ok)
			}
			for _, r := range h.Reads {
				if r.Store != st.Name || r.Call < at {
					continue
				}
				want, live := final.Get(r.Key)
				if r.Found != live || live && r.Doc.LSN < want.LSN {
					t.Fatalf("%s: %s recorded converged at %v, but a read of %s at %v shows %+v (found %v), want lsn %s",
						out.Repro(), st.Name, at, r.Key, r.Call, r.Doc, r.Found, want.LSN)
				}
			}
		}
	}
}

// Sizes that make no sense are refused, not run.
func TestRunRejectsNegativeOptions(t *testing.T) {
	for _, o := range []Options{{Txns: -5}, {Clients: -1}, {Quiet: -time.Second}, {Settle: -time.Second}} {
		if _, err := Run(ByName("steady"), Pipeline, 1, o); err == nil {
			t.Errorf("Run with %+v: no error", o)
		}
	}
}

// A store still down when the run ends is the harness's failure (the quiet
// phase restarts everything): an error, not an empty final snapshot that
// would report every key of the store lost.
func TestStoreDownAtTheEndIsAHarnessError(t *testing.T) {
	sc := ByName("steady")
	wl, err := workload.New(sc.Workload)
	if err != nil {
		t.Fatal(err)
	}
	x := &world{sc: sc, sys: Pipeline, seed: 1, opts: Options{}.withDefaults(), wl: wl, quietAt: 20 * time.Second,
		keySeen: map[model.Key]bool{}, convergedLSN: map[string]model.LSN{}}
	x.w = sim.New(sim.Config{Seed: 1})
	x.logger = newLogger(nil, x.w)
	x.hist = &model.History{ConvergedAt: map[string]time.Duration{}}
	x.build()
	if err := x.w.Run(time.Second); err != nil {
		t.Fatal(err)
	}
	x.stores[2].Crash()
	if err := x.finish(); err == nil || !strings.Contains(err.Error(), "store search is down") {
		t.Fatalf("finish with the search store down: %v, want a harness error", err)
	}
}

// --txns counts committed transactions: rolled-back transfers and failed
// operations do not use it up (before, a bank run of 300 issued 300 and
// committed about 240).
func TestRunCommitsTxns(t *testing.T) {
	for _, name := range []string{"steady", "source-stall"} {
		out, err := Run(ByName(name), Pipeline, 1, Options{Txns: 300})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(out.History.Committed) - 1; got != 300 { // the initial load first
			t.Errorf("%s: %d application transactions committed, want 300", name, got)
		}
	}
}

// A scenario may size its own runs; its size stays out of repro tokens, and
// long-haul draws its faults in the last quarter of its fault phase and
// runs one campaign seed for every 50.
func TestScenarioSizeAndLateFaults(t *testing.T) {
	lh := ByName("long-haul")
	if o := (Options{}).forScenario(lh).withDefaults(); o.Txns < 100_000 || o.Quiet != 200*time.Second || o.Clients != 24 {
		t.Fatalf("long-haul runs %+v, want 100,000 transactions, 24 clients, 200 s", o)
	}
	if got := reproOf("long-haul", Pipeline, 3, Options{}).String(); got != "long-haul/pipeline/3" {
		t.Fatalf("default long-haul token %q", got)
	}
	if got := reproOf("long-haul", Pipeline, 3, Options{Txns: 500}).String(); got != "long-haul/pipeline/3,txns=500" {
		t.Fatalf("small long-haul token %q", got)
	}
	if got := reproOf("steady", Pipeline, 3, Options{Txns: 100_000}).String(); got != "steady/pipeline/3,txns=100000" {
		t.Fatalf("a long steady run's token %q", got)
	}
	for seed := uint64(1); seed <= 20; seed++ {
		p := lh.DrawPlan(rand.New(rand.NewPCG(seed, 1)), faults.Topology{Nodes: []faults.Node{
			{Name: "db", Role: faults.RoleDB}, {Name: "capture", Role: faults.RoleCapture}, {Name: "cache", Role: faults.RoleStore}}}, 200*time.Second)
		if p.Quiet != 200*time.Second || len(p.Faults) == 0 {
			t.Fatalf("seed %d: plan %s", seed, p)
		}
		for _, f := range p.Faults {
			if f.At < 150*time.Second || f.At >= 200*time.Second {
				t.Fatalf("seed %d: %s is not in the last quarter", seed, f)
			}
		}
	}
	for seeds, want := range map[int]int{1: 1, 20: 1, 50: 1, 51: 2, 200: 4} {
		if got := lh.CampaignSeeds(seeds); got != want {
			t.Errorf("a campaign of %d seeds runs %d of long-haul, want %d", seeds, got, want)
		}
	}
	if got := ByName("steady").CampaignSeeds(200); got != 200 {
		t.Errorf("steady: %d of 200 seeds", got)
	}
}

// A store behind the log's start is rebuilt on the position it holds (a
// fenced reset, not one into a store without a position): with fencing's
// rule alone, retention seed 10's replica refused its rebuild for good
// (not-converged; 108 of 200 seeds failed after the two branches met).
func TestRetentionRebuildsAStoreThatHoldsAPosition(t *testing.T) {
	for _, seed := range []uint64{10, 100, 103} {
		out, err := Run(ByName("retention"), Pipeline, seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if out.Violated() {
			t.Errorf("%s\n%s", out.Repro(), out.Report)
		}
	}
}

// violation is out's first violation of a claim as class, if any.
func violation(out *Outcome, class checker.Class) (checker.Anomaly, bool) {
	for _, a := range out.Report.Violations() {
		if a.Class == class {
			return a, true
		}
	}
	return checker.Anomaly{}, false
}
