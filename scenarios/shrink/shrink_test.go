package shrink

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"lockstep/checker"
	"lockstep/faults"
	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
	"lockstep/scenarios"
)

func mustParse(t *testing.T, text string) []faults.Fault {
	t.Helper()
	p, err := faults.Parse(text + "\nquiet @20s\n")
	if err != nil {
		t.Fatal(err)
	}
	return p.Faults
}

// A restart, resume or heal that ends nothing is dropped; one that ends a
// fault in the plan stays.
func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"@1s crash capture\n@2s restart capture":                    "@1s crash capture\n@2s restart capture",
		"@2s restart capture":                                       "",
		"@1s crash app1\n@2s restart capture\n@3s restart app1":     "@1s crash app1\n@3s restart app1",
		"@1s resume db\n@2s pause db\n@3s resume db\n@4s resume db": "@2s pause db\n@3s resume db",
		"@1s heal\n@2s loss db->capture 0.5\n@3s heal\n@4s heal":    "@2s loss db->capture 0.5\n@3s heal",
		"@1s leader-failover\n@2s heal":                             "@1s leader-failover",
	} {
		var got []string
		for _, f := range normalize(mustParse(t, in)) {
			got = append(got, f.String())
		}
		if strings.Join(got, "\n") != want {
			t.Errorf("normalize(%q) = %q, want %q", in, strings.Join(got, "\n"), want)
		}
	}
}

// failsAs reports whether out violates class on store.
func failsAs(out *scenarios.Outcome, class checker.Class, store string) bool {
	return slices.ContainsFunc(out.Report.Violations(), func(a checker.Anomaly) bool { return a.Class == class && a.Store == store })
}

// Shrinking the same run twice gives the same shrunk run, which still fails
// the same way, is smaller, and replays from its repro file to its hash.
func TestShrinkIsDeterministicAndReplays(t *testing.T) {
	sc, err := scenarios.Resolve("crash-appliers+commit-offset-first")
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for range 2 {
		res, err := Shrink(sc, scenarios.Pipeline, 1, scenarios.Options{}, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Stopped != "" {
			t.Fatalf("stopped by %s", res.Stopped)
		}
		if res.Shrunk.Faults >= res.Original.Faults || res.Shrunk.Txns >= res.Original.Txns {
			t.Fatalf("not smaller: %s -> %s", res.Original, res.Shrunk)
		}
		if !failsAs(res.Outcome, res.Class, res.Store) {
			t.Fatalf("the shrunk run does not show %s on %s:\n%s", res.Class, res.Store, res.Outcome.Report)
		}
		text := res.File().String()
		texts = append(texts, text)
		f, err := scenarios.ParseReproFile(text)
		if err != nil {
			t.Fatal(err)
		}
		fsc, err := scenarios.Resolve(f.Repro.Scenario)
		if err != nil {
			t.Fatal(err)
		}
		out, err := scenarios.Run(fsc, f.Repro.System, f.Repro.Seed, f.Options())
		if err != nil {
			t.Fatal(err)
		}
		if out.Hash != f.Hash || !failsAs(out, f.Class, f.Store) {
			t.Fatalf("replay of\n%s\ngave hash %016x and\n%s", text, out.Hash, out.Report)
		}
	}
	if texts[0] != texts[1] {
		t.Fatalf("two shrinks of one run differ:\n%s\n%s", texts[0], texts[1])
	}
}

func TestShrinkRefusesAPassingRun(t *testing.T) {
	_, err := Shrink(scenarios.ByName("crash-capture"), scenarios.Pipeline, 1, scenarios.Options{Txns: 50}, Config{})
	if !errors.Is(err, ErrNoViolation) {
		t.Fatalf("shrinking a passing run: %v, want ErrNoViolation", err)
	}
	sc, _ := scenarios.Resolve("crash-appliers+commit-offset-first")
	_, err = Shrink(sc, scenarios.Pipeline, 1, scenarios.Options{}, Config{Class: checker.Phantom})
	if !errors.Is(err, ErrNoViolation) {
		t.Fatalf("shrinking for a class the run does not show: %v, want ErrNoViolation", err)
	}
}

// A shrink stopped by its budget says so and still hands back a failing run.
func TestShrinkBudget(t *testing.T) {
	sc, _ := scenarios.Resolve("crash-appliers+commit-offset-first")
	res, err := Shrink(sc, scenarios.Pipeline, 1, scenarios.Options{}, Config{MaxRuns: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Runs != 4 || !strings.Contains(res.Stopped, "4 runs") {
		t.Fatalf("runs %d, stopped %q; want 4 and the run budget", res.Runs, res.Stopped)
	}
	if !failsAs(res.Outcome, res.Class, res.Store) || res.Outcome.Plan.String() != res.Plan().String() {
		t.Fatalf("the result is not the failing run it names")
	}
}

// A coordinator crash with no restart lasts until the quiet phase, and a
// store that rolls back an undecided transaction after 1.5 s shows it only
// when the crash lands between a decision and that store's commit: retime
// finds such a time for 20 transactions with the phase kept, where the
// shorter phases end the crash too soon.
func TestRetimeKeepsThePhaseForALongFault(t *testing.T) {
	sc, err := scenarios.Resolve("crash-capture+heuristic-rollback")
	if err != nil {
		t.Fatal(err)
	}
	s := &shrinker{sc: sc, sys: scenarios.TwoPC, seed: 2, cfg: Config{MaxRuns: 1000}, start: time.Now(), class: checker.Lost, store: scenarios.ReplicaStore}
	st := &state{faults: mustParse(t, "@5s crash coordinator"), quiet: 20 * time.Second, txns: 442, clients: 3, keys: 5}
	got := s.retime(st)
	if got == st {
		t.Fatalf("retime found no failing run of %d txns in %d runs", scan, s.runs)
	}
	if got.txns != scan || got.quiet != st.quiet || len(got.faults) != 1 || got.faults[0].What() != "crash coordinator" {
		t.Fatalf("retimed to %s: %v; want %d txns, the 20s phase and the crash moved", got.size(), got.faults, scan)
	}
	if s.best.Options.Txns != scan || s.best.Plan.String() != (&faults.Plan{Faults: got.faults, Quiet: got.quiet}).String() || !failsAs(s.best, checker.Lost, scenarios.ReplicaStore) {
		t.Fatalf("the last failing run is not the retimed one:\n%s\n%s", s.best.Plan, s.best.Report)
	}
}

// A candidate that held is not run again: retime's finer grids repeat
// times of the coarser one, and a run is deterministic.
func TestShrinkRunsACandidateOnce(t *testing.T) {
	sc, err := scenarios.Resolve("steady")
	if err != nil {
		t.Fatal(err)
	}
	s := &shrinker{sc: sc, sys: scenarios.Pipeline, seed: 1, cfg: Config{MaxRuns: 10}, start: time.Now(), class: checker.Lost, store: scenarios.ReplicaStore}
	st := &state{faults: mustParse(t, "@1s crash capture"), quiet: 2 * time.Second, txns: 20, clients: 2, keys: 5}
	again := &state{faults: mustParse(t, "@1s crash capture"), quiet: 2 * time.Second, txns: 20, clients: 2, keys: 5}
	if s.fails(st) || s.fails(again) {
		t.Fatal("a run of the correct pipeline failed as lost on the replica")
	}
	if s.runs != 1 {
		t.Fatalf("%d runs for one candidate tried twice, want 1", s.runs)
	}
	other := &state{faults: mustParse(t, "@1500ms crash capture"), quiet: 2 * time.Second, txns: 20, clients: 2, keys: 5}
	if s.fails(other); s.runs != 2 {
		t.Fatalf("%d runs after another candidate, want 2", s.runs)
	}
}

// Every --bug switch has a scenario to shrink it in.
func TestBugsCoverEverySwitch(t *testing.T) {
	for _, names := range []map[string]scenarios.System{names(pipeline.BugNames, scenarios.Pipeline), names(twopc.BugNames, scenarios.TwoPC)} {
		for name, sys := range names {
			if !slices.ContainsFunc(Bugs, func(b BugCase) bool { return b.Bug == name && b.system() == sys }) {
				t.Errorf("--bug %s (%s) has no entry in shrink.Bugs", name, sys)
			}
		}
	}
	if want := len(pipeline.BugNames) + len(twopc.BugNames); len(Bugs) != want {
		t.Errorf("shrink.Bugs has %d entries for %d switches", len(Bugs), want)
	}
}

func names[V any](switches map[string]V, sys scenarios.System) map[string]scenarios.System {
	out := map[string]scenarios.System{}
	for name := range switches {
		out[name] = sys
	}
	return out
}

// The goal: every --bug switch shrinks to at most 3 faults and 20
// transactions, and the median shrink takes under a minute. Each shrunk run
// replays from its repro file to its hash and still fails the same way, and
// the same run without the bug switch holds: what the shrunk run shows is
// the bug, not the harness.
func TestShrinkEveryBug(t *testing.T) {
	if testing.Short() {
		t.Skip("shrinks every known bug: about a minute")
	}
	rows := EveryBug(30, Config{})
	var table strings.Builder
	WriteTable(&table, rows)
	t.Logf("\n%s", table.String())
	for _, r := range rows {
		if r.Result == nil {
			t.Errorf("%s: %s", r.Bug, r.Err)
			continue
		}
		if s := r.Result.Shrunk; s.Faults > 3 || s.Txns > 20 {
			t.Errorf("%s shrank to %s; want at most 3 faults and 20 txns", r.Bug, s)
		}
		f := r.Result.File()
		sc, _ := scenarios.Resolve(f.Repro.Scenario)
		out, err := scenarios.Run(sc, f.Repro.System, f.Repro.Seed, f.Options())
		if err != nil {
			t.Fatal(err)
		}
		if out.Hash != f.Hash || !failsAs(out, r.Class, f.Store) {
			t.Errorf("%s: the repro file replays to hash %016x (file: %016x), report:\n%s", r.Bug, out.Hash, f.Hash, out.Report)
		}
		correct, err := scenarios.Run(scenarios.ByName(r.Scenario), f.Repro.System, f.Repro.Seed, f.Options())
		if err != nil {
			t.Fatal(err)
		}
		if correct.Violated() {
			t.Errorf("%s: the shrunk run fails without the bug too:\n%s", r.Bug, correct.Report)
		}
	}
	if m := MedianElapsed(rows); m.Seconds() >= 60 {
		t.Errorf("median shrink %v, want under a minute", m)
	}
}

// coverOrder visits every delay once, and each prefix of a power of two
// spreads evenly: the first 2^k are the multiples of n/2^k, rounded down.
func TestCoverOrder(t *testing.T) {
	for _, n := range []int{1, 2, 7, 8, 640} {
		got := coverOrder(n)
		if sorted := slices.Sorted(slices.Values(got)); len(got) != n || (n > 0 && (sorted[0] != 0 || sorted[n-1] != n-1)) || len(slices.Compact(sorted)) != n {
			t.Fatalf("coverOrder(%d) = %v: want 0 to %d, each once", n, got, n-1)
		}
	}
	if got, want := coverOrder(8)[:4], []int{0, 4, 2, 6}; !slices.Equal(got, want) {
		t.Fatalf("coverOrder(8) starts %v, want %v", got, want)
	}
	// 640 rounds up to 1024: its first four are 0, 512, 256 and 768 (past
	// 640, skipped), then 128.
	if got, want := coverOrder(640)[:4], []int{0, 512, 256, 128}; !slices.Equal(got, want) {
		t.Fatalf("coverOrder(640) starts %v, want %v", got, want)
	}
}

// The whole-read period is the median gap between one store's whole reads,
// whatever other stores' reads come between; with fewer than two reads of
// a store there is none.
func TestWholeReadPeriod(t *testing.T) {
	ms := time.Millisecond
	snaps := []model.Snapshot{{Store: "replica", At: 10 * ms}, {Store: "cache", At: 20 * ms}, {Store: "replica", At: 650 * ms},
		{Store: "replica", At: 1290 * ms}, {Store: "cache", At: 2000 * ms}, {Store: "replica", At: 1900 * ms}}
	// replica gaps 640, 640, 610; cache 1980: median of 610, 640, 640, 1980.
	if got := wholeReadPeriod(snaps); got != 640*ms {
		t.Fatalf("period %v, want 640ms", got)
	}
	if got := wholeReadPeriod(snaps[:2]); got != 0 {
		t.Fatalf("period of single reads %v, want 0", got)
	}
}

// ShrinkPlan keeps the lines a run needs to fail, stops at its budget, and
// hands back a runner's error; here the runner is a rule over the plan.
func TestShrinkPlan(t *testing.T) {
	orig, err := faults.Parse("@1s crash app1\n@2s pause db\n@3s crash capture\n@4s restart app1\n@5s resume db\n@6s loss db->capture 0.5\n@7s heal\n@8s restart capture\nquiet @20s\n")
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	run := func(p *faults.Plan) (faults.Plan, *checker.Report, error) {
		runs++
		if p == nil {
			p = &orig
		}
		text := p.String()
		rep := &checker.Report{}
		if strings.Contains(text, "crash capture") && strings.Contains(text, "pause db") {
			rep.Anomalies = []checker.Anomaly{{Class: checker.Lost, Store: "replica", Violation: true}}
		}
		return *p, rep, nil
	}
	res, err := ShrinkPlan(run, Config{MaxRuns: 100})
	if err != nil {
		t.Fatal(err)
	}
	want := "@2s pause db\n@3s crash capture\nquiet @20s\n"
	if res.Plan.String() != want || res.Class != checker.Lost || res.Store != "replica" || res.Runs != runs || res.Stopped != "" {
		t.Fatalf("shrunk to\n%s(class %s on %s, %d runs of %d, stopped %q); want\n%s", res.Plan, res.Class, res.Store, res.Runs, runs, res.Stopped, want)
	}
	runs = 0
	res, err = ShrinkPlan(run, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Runs != DefaultPlanRuns || runs != DefaultPlanRuns || !strings.Contains(res.Stopped, "runs") {
		t.Fatalf("default budget: %d runs (%d made), stopped %q; want %d", res.Runs, runs, res.Stopped, DefaultPlanRuns)
	}
	boom := errors.New("no docker")
	_, err = ShrinkPlan(func(p *faults.Plan) (faults.Plan, *checker.Report, error) {
		if p != nil {
			return faults.Plan{}, nil, boom
		}
		return run(p)
	}, Config{})
	if !errors.Is(err, boom) {
		t.Fatalf("a runner error: %v, want it handed back", err)
	}
	if _, err := ShrinkPlan(func(*faults.Plan) (faults.Plan, *checker.Report, error) { return orig, &checker.Report{}, nil }, Config{}); !errors.Is(err, ErrNoViolation) {
		t.Fatalf("a passing original: %v, want ErrNoViolation", err)
	}
}
