// Package campaigntest runs lockstep campaigns inside go test. A test that
// calls Run with the flags' config,
//
//	func TestCampaign(t *testing.T) {
//		campaigntest.Run(t, campaigntest.FromFlags(campaigntest.Config{Seeds: 1, Options: scenarios.Options{Txns: 100}}))
//	}
//
// is a quick check by default and a campaign when asked:
//
//	go test ./scenarios -run TestCampaign -lockstep.seeds=10000 -timeout 0
//	go test ./scenarios -run TestCampaign -lockstep.duration=20m -lockstep.scenario=crash-capture,partitions
//
// Each failing run fails the test with its repro line and is kept in a
// failfile, testdata/lockstep/<TestName>/<token>.fail (as rapid keeps
// testdata/rapid/...). Every later Run replays the test's failfiles first
// and stops there if one still fails; one that passes again is reported,
// and kept until it is deleted (commit one with git add -f to keep its seed
// as a regression test). Only the pipeline runs: dual writes fail by design.
package campaigntest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"lockstep/checker"
	"lockstep/scenarios"
)

// Config is one campaign inside a test.
type Config struct {
	// Scenarios are scenario names separated by commas, bugs riding in a
	// name (crash-capture+confirm-before-ack), or "all" (the default).
	Scenarios string
	// Seeds bounds the seeds run of each scenario (a scenario with
	// SeedEvery runs one of its own per SeedEvery of them, as in the CLI);
	// 0 leaves the bound to Duration, and to one seed without it.
	Seeds int
	// FirstSeed is the first seed (0: 1).
	FirstSeed uint64
	// Duration, when set, starts no run after it has passed; the runs under
	// way finish. With Seeds, whichever ends first ends the campaign.
	Duration time.Duration
	// Options size every run (zero: the scenarios' own sizes).
	Options scenarios.Options
	// Parallel is the number of runs at once (0: GOMAXPROCS).
	Parallel int
	// Dir holds the failfiles ("": testdata/lockstep/<TestName>).
	Dir string
	_   struct{}
}

// TB is the part of *testing.T that Run uses.
type TB interface {
	Helper()
	Name() string
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// Result is what Run did.
type Result struct {
	// Replayed are the failfiles' tokens in the order they ran, first of
	// all; StillFailing those that failed again, PassingAgain those that
	// did not.
	Replayed, StillFailing, PassingAgain []string
	// Runs counts the campaign's runs after the replays; Failing names
	// those that failed, by token, in seed order.
	Runs    int
	Failing []string
	// Stopped says why the campaign ended before its seeds did: "duration",
	// "deadline" (the test's -timeout), "failfiles" (one still fails, so
	// the campaign did not start); "" when it ran them all.
	Stopped string
}

// flags are the go test flags, registered on the command line once.
type flags struct {
	seeds    *int
	seed     *string
	scenario *string
	duration *time.Duration
	txns     *int
}

func register(fs *flag.FlagSet) flags {
	return flags{
		seeds:    fs.Int("lockstep.seeds", 0, "campaign: `N` seeds of each scenario (pipeline only)"),
		seed:     fs.String("lockstep.seed", "", "campaign: the first `seed` (decimal or 0x-hex); alone, that seed only"),
		scenario: fs.String("lockstep.scenario", "", "campaign: scenarios, `all` or names separated by commas (bugs ride in a name: steady+skip-snapshot)"),
		duration: fs.Duration("lockstep.duration", 0, "campaign: start no run after `D` (e.g. 20m); with -lockstep.seeds, whichever ends first"),
		txns:     fs.Int("lockstep.txns", 0, "campaign: `N` application transactions per run (0: the scenario's own, 1000 mostly)"),
	}
}

var commandLine = register(flag.CommandLine)

// FromFlags is quick unless a -lockstep flag is given: with none it
// returns quick unchanged; with any, the campaign they describe, at the
// scenarios' own sizes unless -lockstep.txns says otherwise.
func FromFlags(quick Config) (Config, error) { return commandLine.config(flag.CommandLine, quick) }

func (f flags) config(fs *flag.FlagSet, quick Config) (Config, error) {
	given := false
	fs.Visit(func(fl *flag.Flag) { given = given || strings.HasPrefix(fl.Name, "lockstep.") })
	if !given {
		return quick, nil
	}
	cfg := Config{Scenarios: *f.scenario, Seeds: *f.seeds, Duration: *f.duration, Options: scenarios.Options{Txns: *f.txns},
		Parallel: quick.Parallel, Dir: quick.Dir}
	switch {
	case *f.seeds < 0:
		return Config{}, fmt.Errorf("-lockstep.seeds=%d: want a positive number", *f.seeds)
	case *f.duration < 0:
		return Config{}, fmt.Errorf("-lockstep.duration=%v: want a positive duration", *f.duration)
	case *f.txns < 0:
		return Config{}, fmt.Errorf("-lockstep.txns=%d: want a positive number (0 for the scenario's own)", *f.txns)
	}
	if *f.seed != "" {
		s, err := strconv.ParseUint(*f.seed, 0, 64)
		if err != nil {
			return Config{}, fmt.Errorf("-lockstep.seed=%s: want a decimal or 0x-hex number", *f.seed)
		}
		cfg.FirstSeed = s
	}
	return cfg, nil
}

// deadliner is *testing.T's Deadline: a campaign stops starting runs
// before the test's -timeout would end it.
type deadliner interface{ Deadline() (time.Time, bool) }

// deadlineMargin is the time left for runs under way when a campaign stops
// at the test's deadline: a long-haul seed takes tens of seconds.
const deadlineMargin = time.Minute

// Run replays the test's failfiles, then, unless one still fails, runs the
// campaign. Every failing run is a test error with its repro line and a
// failfile.
func Run(t TB, cfg Config) *Result {
	t.Helper()
	res := &Result{}
	scs, err := scenarios.Lookup(cfg.Scenarios)
	if err != nil {
		t.Errorf("lockstep campaign: %v", err)
		return res
	}
	dir := cfg.Dir
	if dir == "" {
		dir = filepath.Join("testdata", "lockstep", fileName(t.Name()))
	}
	if !replay(t, dir, res) {
		res.Stopped = "failfiles"
		t.Logf("the campaign did not run: a failfile still fails (above); fix it first")
		return res
	}
	if cfg.FirstSeed == 0 {
		cfg.FirstSeed = 1
	}
	if cfg.Seeds == 0 && cfg.Duration == 0 {
		cfg.Seeds = 1
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = runtime.GOMAXPROCS(0)
	}
	start := time.Now()
	var end time.Time
	if cfg.Duration > 0 {
		end = start.Add(cfg.Duration)
	}
	deadline := time.Time{}
	if d, ok := t.(deadliner); ok {
		if dl, ok := d.Deadline(); ok {
			deadline = dl.Add(-deadlineMargin)
		}
	}

	jobs := make(chan job)
	results := make(chan done)
	var wg sync.WaitGroup
	for range cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				out, err := scenarios.Run(j.sc, scenarios.Pipeline, j.seed, cfg.Options)
				results <- done{job: j, out: out, err: err}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for j := range order(scs, cfg.FirstSeed, cfg.Seeds) {
			now := time.Now()
			switch {
			case !end.IsZero() && now.After(end):
				res.Stopped = "duration"
				return
			case !deadline.IsZero() && now.After(deadline):
				res.Stopped = "deadline"
				return
			}
			jobs <- j
		}
	}()
	go func() {
		wg.Wait()
		close(results)
	}()

	var failing []done
	lastLog := start
	for d := range results {
		res.Runs++
		if verdict := verdictOf(d.out, d.err); verdict != "" {
			failing = append(failing, d)
			tok := token(d)
			t.Errorf("%s: %s\n%s", verdict, "lockstep repro "+tok, detail(d.out, d.err))
			if err := writeFailfile(dir, tok, d.out, verdict); err != nil {
				t.Errorf("failfile: %v", err)
			}
		}
		if time.Since(lastLog) >= 30*time.Second {
			lastLog = time.Now()
			t.Logf("campaign: %d runs in %v, %d failing", res.Runs, time.Since(start).Round(time.Second), len(failing))
		}
	}
	slices.SortFunc(failing, func(a, b done) int {
		if a.seed != b.seed {
			return cmpUint(a.seed, b.seed)
		}
		return strings.Compare(a.sc.Name, b.sc.Name)
	})
	for _, d := range failing {
		res.Failing = append(res.Failing, token(d))
	}
	msg := fmt.Sprintf("campaign: %d pipeline runs of %d scenarios from seed %d in %v: %d failing",
		res.Runs, len(scs), cfg.FirstSeed, time.Since(start).Round(time.Millisecond), len(failing))
	switch res.Stopped {
	case "duration":
		msg += fmt.Sprintf("; stopped after -lockstep.duration %v", cfg.Duration)
	case "deadline":
		msg += "; stopped a minute before the test's -timeout: pass -timeout 0 (or a longer one) for the rest"
	}
	t.Logf("%s", msg)
	return res
}

type job struct {
	sc   *scenarios.Scenario
	seed uint64
}

type done struct {
	job
	out *scenarios.Outcome
	err error
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// order yields the runs seed by seed: at step i every scenario runs seed
// first+i, but one with SeedEvery k runs its own j-th seed, first+j, at
// step j*k, so that a campaign of N seeds runs CampaignSeeds(N) of it, as
// the CLI does, and one bounded by time spreads them over it. seeds 0 is
// no bound.
func order(scs []*scenarios.Scenario, first uint64, seeds int) func(yield func(job) bool) {
	return func(yield func(job) bool) {
		for i := 0; seeds == 0 || i < seeds; i++ {
			for _, sc := range scs {
				every := max(1, sc.SeedEvery)
				if i%every != 0 {
					continue
				}
				if !yield(job{sc, first + uint64(i/every)}) {
					return
				}
			}
		}
	}
}

// verdictOf is why a run fails the test, or "" when it does not: the
// pipeline violated a claimed property, the run could not complete, the
// pipeline refused input, or the verdict was inconclusive (none a pass).
func verdictOf(out *scenarios.Outcome, err error) string {
	switch {
	case err != nil:
		return "harness error (not a pipeline violation)"
	case out.Violated():
		return "pipeline violated a claimed property"
	case out.Refused():
		return "pipeline refused input it cannot capture (not a pass)"
	case out.Report.Verdict == checker.Inconclusive:
		return "inconclusive verdict (not a pass)"
	}
	return ""
}

func token(d done) string {
	if d.out != nil {
		return d.out.Token().String()
	}
	return scenarios.Repro{Scenario: d.sc.Name, System: scenarios.Pipeline, Seed: d.seed}.String()
}

// detail is the failing run's evidence: the first claimed violations with
// their witnesses, or the error.
func detail(out *scenarios.Outcome, err error) string {
	if err != nil {
		return err.Error()
	}
	if out.Stopped != "" {
		return out.Stopped
	}
	var b strings.Builder
	v := out.Report.Violations()
	for i, a := range v {
		if i == 5 {
			fmt.Fprintf(&b, "... and %d more\n", len(v)-5)
			break
		}
		fmt.Fprintf(&b, "%s\n", a)
	}
	if len(v) == 0 {
		b.WriteString(out.Report.String())
	}
	return strings.TrimRight(b.String(), "\n")
}

// A failfile is one failing run: its token (everything that shapes a
// simulated run) and, for the record, its trace hash and why it failed.
//
//	# lockstep failfile: ...
//	token steady+skip-snapshot/pipeline/1,txns=20
//	hash 1f2e3d4c5b6a7988
//	failed pipeline violated a claimed property
const failfileHeader = "# lockstep failfile: go test replays this run before its campaign (package scenarios/campaigntest).\n" +
	"# Delete it once the run passes again; keep it (git add -f) to keep the seed as a regression test.\n"

type failfile struct {
	path  string
	token scenarios.Repro
	hash  uint64
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._,=+-]`)

// fileName makes a token or a test name one file name, the same every time.
func fileName(s string) string { return unsafeName.ReplaceAllString(s, "_") }

func writeFailfile(dir, tok string, out *scenarios.Outcome, why string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(failfileHeader)
	fmt.Fprintf(&b, "token %s\n", tok)
	if out != nil {
		fmt.Fprintf(&b, "hash %016x\n", out.Hash)
	}
	fmt.Fprintf(&b, "failed %s\n", why)
	return os.WriteFile(filepath.Join(dir, fileName(tok)+".fail"), []byte(b.String()), 0o644)
}

func readFailfile(path string) (failfile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return failfile{}, err
	}
	f := failfile{path: path}
	haveToken := false
	for i, line := range strings.Split(string(b), "\n") {
		key, val, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch key {
		case "token":
			if f.token, err = scenarios.ParseRepro(val); err != nil {
				return failfile{}, fmt.Errorf("%s:%d: %w", path, i+1, err)
			}
			if f.token.World != "" {
				return failfile{}, fmt.Errorf("%s:%d: a failfile holds simulated runs only", path, i+1)
			}
			haveToken = true
		case "hash":
			if f.hash, err = strconv.ParseUint(val, 16, 64); err != nil {
				return failfile{}, fmt.Errorf("%s:%d: hash %q: want 16 hex digits", path, i+1, val)
			}
		}
	}
	if !haveToken {
		return failfile{}, fmt.Errorf("%s: no token line", path)
	}
	return f, nil
}

// replay runs the failfiles in dir, in name order, and reports whether
// none still fails.
func replay(t TB, dir string, res *Result) bool {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.fail"))
	if err != nil {
		t.Errorf("failfiles: %v", err)
		return false
	}
	slices.Sort(paths)
	ok := true
	for _, p := range paths {
		f, err := readFailfile(p)
		if err != nil {
			t.Errorf("failfile: %v", err)
			ok = false
			continue
		}
		tok := f.token.String()
		res.Replayed = append(res.Replayed, tok)
		sc, err := scenarios.Resolve(f.token.Scenario)
		if err != nil {
			t.Errorf("failfile %s: %v", p, err)
			ok = false
			continue
		}
		out, err := scenarios.Run(sc, f.token.System, f.token.Seed, f.token.Options())
		if verdict := verdictOf(out, err); verdict != "" {
			res.StillFailing = append(res.StillFailing, tok)
			t.Errorf("failfile %s still fails: %s: lockstep repro %s\n%s", p, verdict, tok, detail(out, err))
			ok = false
			continue
		}
		res.PassingAgain = append(res.PassingAgain, tok)
		was := ""
		if f.hash != 0 && f.hash != out.Hash {
			was = fmt.Sprintf(", was %016x when it failed: the code changed since", f.hash)
		}
		t.Logf("failfile %s passes again (trace hash %016x%s): delete it, or keep it as a regression seed", p, out.Hash, was)
	}
	return ok
}
