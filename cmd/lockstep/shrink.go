package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"lockstep/checker"
	"lockstep/faults"
	"lockstep/scenarios"
	"lockstep/scenarios/containers"
	"lockstep/scenarios/report"
	"lockstep/scenarios/shrink"
)

var shrinkCmd = &command{
	name:      "shrink",
	simulates: true,
	usage:     "TOKEN|FILE [--class C] [--store S] [--out FILE] [--json FILE] [--max-runs N] [--timeout D] | --all-bugs [--seeds N] [--json FILE]",
	short:     "minimise a failing run: fewer faults, transactions, clients, keys",
	long: `Shrink replays the run a repro token or repro file names and looks for a
smaller one that still fails the same way: the same anomaly class on the same
store (the run's first violation unless --class and --store say which), the
same scenario, system, seed and bugs. It drops faults (delta debugging over
the plan's lines), shortens the fault phase with the transactions, halves
transactions, clients and keys, then shortens windows and moves faults
earlier; when the transactions stay many, it tries 20 with the faults at
other times, then with the observer's reads at other times (observe=D in
the token). Each candidate is a simulated run. The same input gives the same
output. Progress goes to stderr; stdout gets the shrunk plan and a repro file
('lockstep repro FILE' replays it with the same trace hash), written to --out
when given.

--all-bugs shrinks, for every --bug switch, the first failing seed of the
scenario that catches it, and prints a table: faults, transactions and
seconds per bug, and the median.

A token with world=containers gets a plan-only shrink: ddmin over the plan's
lines alone, each candidate one container run of about a minute, at most 8
runs unless --max-runs says more, --out FILE required for the shrunk plan.
Container runs do not replay bit for bit, so the result is a smaller plan
that failed once as wanted, not a minimal one nor a deterministic repro.

Exit 1 when the shrunk run is a pipeline or 2PC violation, 0 for dual
writes (their failing is the expected finding), 2 when the run holds
(nothing to shrink) or cannot be run.`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		class := fs.String("class", "", "the anomaly class to keep (default: the run's first violation's)")
		store := fs.String("store", "", "the store to keep it on (default: that violation's)")
		out := fs.String("out", "", "write the shrunk run's repro file here")
		jsonOut := fs.String("json", "", "write faults, transactions, class, hash and seconds as JSON to this file")
		reportOut := fs.String("report", "", "write the shrunk run's HTML report to this `FILE.html` (simulator shrinks)")
		maxRuns := positiveFlag(fs, "max-runs", 1000, "`N` candidate runs at most")
		timeout := fs.Duration("timeout", 5*time.Minute, "stop after this much wall time (a shrink stopped by it may differ from run to run; 0: none)")
		allBugs := fs.Bool("all-bugs", false, "shrink a failing run of every --bug switch and print the table")
		seeds := positiveFlag(fs, "seeds", 30, "--all-bugs: `N` seeds to look in for each bug's first failing run")
		return func(args []string) error {
			cfg := shrink.Config{MaxRuns: *maxRuns, Timeout: *timeout, Class: checker.Class(*class), Store: *store, Progress: stderr}
			if *class != "" && !slices.Contains(checker.Classes, cfg.Class) {
				return usagef("unknown class %q (want one of: %s)", *class, classNames())
			}
			if err := checkWritable(*out, *jsonOut, *reportOut); err != nil {
				return err
			}
			if *allBugs {
				if len(args) > 0 || *class != "" || *store != "" || *out != "" || *reportOut != "" {
					return usagef("--all-bugs takes no token, --class, --store, --out or --report")
				}
				return shrinkAllBugs(*seeds, cfg, *jsonOut)
			}
			if len(args) != 1 {
				return usagef("want exactly one repro token or repro file, e.g. crash-capture+confirm-before-ack/pipeline/1")
			}
			if r, err := scenarios.ParseRepro(args[0]); err == nil && r.World == scenarios.WorldContainers {
				runsSet := false
				fs.Visit(func(f *flag.Flag) { runsSet = runsSet || f.Name == "max-runs" })
				if !runsSet {
					cfg.MaxRuns = shrink.DefaultPlanRuns
				}
				if *reportOut != "" {
					return usagef("--report: a container shrink keeps a plan, not a run to draw; replay it with 'lockstep run --world containers --plan FILE --report FILE.html'")
				}
				return shrinkContainers(r, cfg, *out, *jsonOut)
			}
			sc, sys, seed, opts, err := shrinkInput(args[0])
			if err != nil {
				return err
			}
			res, err := shrink.Shrink(sc, sys, seed, opts, cfg)
			switch {
			case errors.Is(err, shrink.ErrNoViolation):
				return usagef("%v", err)
			case err != nil:
				return err
			}
			printShrunk(res)
			if *out != "" {
				if err := os.WriteFile(*out, []byte(res.File().String()), 0o644); err != nil {
					return fmt.Errorf("write %s: %w", *out, err)
				}
				fmt.Fprintf(stdout, "replay: lockstep repro %s\n", *out)
			}
			if *jsonOut != "" {
				if err := writeJSON(*jsonOut, res.Summary()); err != nil {
					return err
				}
			}
			if *reportOut != "" {
				run := report.FromOutcome(res.Outcome)
				run.Notes = append(run.Notes, fmt.Sprintf("shrunk from %s: %d faults and %d transactions to %d and %d, in %d runs",
					args[0], res.Original.Faults, res.Original.Txns, res.Shrunk.Faults, res.Shrunk.Txns, res.Runs))
				if err := report.WriteFile(*reportOut, run); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "report: %s\n", *reportOut)
			}
			return judge(sys, res.Outcome.Report, false)
		}
	},
}

func init() { commands = append(commands, shrinkCmd) }

func classNames() string {
	s := make([]string, len(checker.Classes))
	for i, c := range checker.Classes {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

// shrinkInput is the run a token or repro file names: a simulated one.
func shrinkInput(arg string) (*scenarios.Scenario, scenarios.System, uint64, scenarios.Options, error) {
	f, isFile, err := readReproFile(arg)
	if err != nil {
		return nil, "", 0, scenarios.Options{}, err
	}
	r, opts := f.Repro, f.Options()
	if !isFile {
		if r, err = scenarios.ParseRepro(arg); err != nil {
			return nil, "", 0, scenarios.Options{}, usagef("%v", err)
		}
		opts = r.Options()
	}
	sc, err := lookupOne(r.Scenario)
	if err != nil {
		return nil, "", 0, scenarios.Options{}, err
	}
	return sc, r.System, r.Seed, opts, nil
}

// readReproFile reads arg as a repro file when a file by that name exists
// (ok); a token is never a file name one has.
func readReproFile(arg string) (f scenarios.ReproFile, ok bool, err error) {
	st, err := os.Stat(arg)
	if err != nil || st.IsDir() {
		return f, false, nil
	}
	text, err := os.ReadFile(arg)
	if err != nil {
		return f, true, usagef("read the repro file: %v", err)
	}
	if !scenarios.LooksLikeReproFile(string(text)) {
		return f, true, usagef("%s is not a repro file (its first line should be 'token SCENARIO/SYSTEM/SEED...'); a plan file runs with run --plan", arg)
	}
	f, err = scenarios.ParseReproFile(string(text))
	if err != nil {
		return f, true, usagef("%s: %v", arg, err)
	}
	return f, true, nil
}

// checkFileHash fails a replay whose hash is not the file's: the run is
// not the one the file recorded (a determinism failure, or a change to the
// code since), which is the harness's finding, not the pipeline's.
func checkFileHash(f scenarios.ReproFile, path string, out *scenarios.Outcome) error {
	if f.Hash != 0 && out.Hash != f.Hash {
		return fmt.Errorf("%s: the replay's trace hash %016x is not the file's %016x: not the run it recorded (the code changed since, or a determinism failure)", path, out.Hash, f.Hash)
	}
	return nil
}

func printShrunk(res *shrink.Result) {
	fmt.Fprintf(stdout, "shrunk %s/%s/%d: %s on %s\n", res.Scenario.Name, res.System, res.Seed, res.Class, res.Store)
	fmt.Fprintf(stdout, "  from %s\n  to   %s (%d runs, %.1fs)\n", res.Original, res.Shrunk, res.Runs, res.Elapsed.Seconds())
	if res.Stopped != "" {
		fmt.Fprintf(stdout, "  stopped early by %s: smaller may exist\n", res.Stopped)
	}
	printPlan(res.Plan())
	fmt.Fprintf(stdout, "trace hash %016x\n", res.Outcome.Hash)
	fmt.Fprintf(stdout, "repro file:\n%s", indent(res.File().String()))
}

func indent(s string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString("  " + l)
		}
	}
	return b.String()
}

// shrinkAllBugs is --all-bugs.
func shrinkAllBugs(seeds int, cfg shrink.Config, jsonPath string) error {
	rows := shrink.EveryBug(seeds, cfg)
	shrink.WriteTable(stdout, rows)
	failed := 0
	for _, r := range rows {
		if r.Result == nil {
			failed++
		}
	}
	if jsonPath != "" {
		if err := writeJSON(jsonPath, struct {
			Bugs          []shrink.BugRow `json:"bugs"`
			MedianSeconds float64         `json:"median_seconds"`
		}{rows, shrink.MedianElapsed(rows).Seconds()}); err != nil {
			return err
		}
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "lockstep shrink: %d bugs could not be shrunk (see the table)\n", failed)
		return errHarness
	}
	return nil
}

// firstFails keeps, for a campaign with --shrink, the first failing run
// (the lowest seed) of each scenario, system and anomaly class, for the
// systems whose failing is news: the pipeline and two-phase commit, not
// dual writes (they fail everywhere, as expected).
type firstFails struct {
	byKey map[string]firstFail
}

type firstFail struct {
	scenario string
	system   scenarios.System
	class    checker.Class
	store    string
	seed     uint64
	sc       *scenarios.Scenario
	opts     scenarios.Options
}

// collect wraps cfg's progress callback (called under the campaign's lock)
// to note every violating run of a system shrinkable says is news.
func (ff *firstFails) collect(cfg *scenarios.CampaignConfig) {
	ff.byKey = map[string]firstFail{}
	progress := cfg.Progress
	byName := map[string]*scenarios.Scenario{}
	for _, sc := range cfg.Scenarios {
		byName[sc.Name] = sc
	}
	cfg.Progress = func(done, total int, last *scenarios.Outcome) {
		if last != nil && shrinkable(last.System) {
			for _, a := range last.Report.Violations() {
				key := firstFailKey(last.Scenario, last.System, a.Class)
				if prev, ok := ff.byKey[key]; !ok || last.Seed < prev.seed {
					o := last.Options
					o.Plan, o.Log, o.KeepTrace = nil, nil, false
					ff.byKey[key] = firstFail{last.Scenario, last.System, a.Class, a.Store, last.Seed, byName[last.Scenario], o}
				}
			}
		}
		if progress != nil {
			progress(done, total, last)
		}
	}
}

// shrinkable says whether a campaign shrinks a system's failing runs: not
// dual writes', whose failing is the expected finding.
func shrinkable(sys scenarios.System) bool { return sys != scenarios.DualWrite }

func firstFailKey(scenario string, sys scenarios.System, class checker.Class) string {
	return scenario + "\x00" + string(sys) + "\x00" + string(class)
}

// shrinkAll shrinks each first failing run, parallel runs at a time, and
// prints them in scenario, system and class order.
func (ff *firstFails) shrinkAll(cfg scenarios.CampaignConfig) {
	var todo []firstFail
	for _, sc := range cfg.Scenarios {
		for _, sys := range cfg.Systems {
			for _, class := range checker.Classes {
				if f, ok := ff.byKey[firstFailKey(sc.Name, sys, class)]; ok {
					todo = append(todo, f)
				}
			}
		}
	}
	if len(todo) == 0 {
		return
	}
	fmt.Fprintf(stdout, "\nshrinking the first failing run of each scenario, system (not dual writes) and anomaly class (%d):\n", len(todo))
	results := make([]*shrink.Result, len(todo))
	errs := make([]error, len(todo))
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range max(cfg.Parallel, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f := todo[i]
				results[i], errs[i] = shrink.Shrink(f.sc, f.system, f.seed, f.opts,
					shrink.Config{Class: f.class, Store: f.store, Timeout: 5 * time.Minute})
				mu.Lock()
				if errs[i] == nil {
					fmt.Fprintf(stderr, "shrunk %s/%s/%d (%s on %s) to %s in %.1fs\n", f.scenario, f.system, f.seed, f.class, f.store, results[i].Shrunk, results[i].Elapsed.Seconds())
				}
				mu.Unlock()
			}
		}()
	}
	for i := range todo {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, f := range todo {
		fmt.Fprintln(stdout)
		if errs[i] != nil {
			fmt.Fprintf(stdout, "%s/%s/%d (%s): could not shrink: %v\n", f.scenario, f.system, f.seed, f.class, errs[i])
			continue
		}
		printShrunk(results[i])
	}
}

// shrinkContainers is the plan-only shrink of a container run: what it
// prints says that it is one, and why its result is weaker.
func shrinkContainers(r scenarios.Repro, cfg shrink.Config, out, jsonPath string) error {
	if out == "" {
		return usagef("a container shrink needs --out FILE: the shrunk plan is replayed as run --world containers --plan FILE")
	}
	base, err := containerConfig(r)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return usagef("--out %s: %v", out, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := containers.Available(ctx); err != nil {
		return err
	}
	base.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fmt.Fprintf(stderr, "lockstep shrink: containers: plan only, each candidate one run of about a minute, at most %d runs\n", cfg.MaxRuns)
	res, err := shrink.ShrinkPlan(func(p *faults.Plan) (faults.Plan, *checker.Report, error) {
		c := base
		if p != nil {
			c.Plan = p
		}
		o, err := containers.Run(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return faults.Plan{}, nil, fmt.Errorf("interrupted; containers removed")
			}
			return faults.Plan{}, nil, err
		}
		return o.Plan, o.Report, nil
	}, cfg)
	switch {
	case errors.Is(err, shrink.ErrNoViolation):
		return usagef("%s: this run %v", r, err)
	case err != nil:
		return err
	}
	text := "# lockstep: a plan-only shrink in containers of " + r.String() + "\n" +
		"# it failed once with " + string(res.Class) + " on " + res.Store + "; container runs do not replay bit for bit\n" + res.Plan.String()
	if err := os.WriteFile(abs, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", abs, err)
	}
	_, sum, err := readPlan(abs)
	if err != nil {
		return err
	}
	tok := r
	tok.Plan, tok.PlanSum = abs, sum
	fmt.Fprintf(stdout, "shrunk %s: %s on %s (containers, plan only: this plan failed once; runs do not replay bit for bit)\n", r, res.Class, res.Store)
	fmt.Fprintf(stdout, "  from %d faults to %d (%d runs, %v)\n", len(res.Original.Faults), len(res.Plan.Faults), res.Runs, res.Elapsed.Round(time.Second))
	if res.Stopped != "" {
		fmt.Fprintf(stdout, "  stopped early by %s: smaller may exist\n", res.Stopped)
	}
	printPlan(res.Plan)
	fmt.Fprintf(stdout, "plan file: %s\nrun it again: lockstep repro %s\n", abs, tok)
	if jsonPath != "" {
		if err := writeJSON(jsonPath, struct {
			World     string        `json:"world"`
			Token     string        `json:"token"`
			Class     checker.Class `json:"class"`
			Store     string        `json:"store"`
			Original  int           `json:"original_faults"`
			Faults    int           `json:"faults"`
			Txns      int           `json:"transactions"` // committed, as the audit slot saw them
			Seconds   float64       `json:"seconds"`
			Runs      int           `json:"runs"`
			Stopped   string        `json:"stopped,omitempty"`
			Plan      string        `json:"plan"`
			Reproduce string        `json:"note"`
		}{scenarios.WorldContainers, tok.String(), res.Class, res.Store, len(res.Original.Faults), len(res.Plan.Faults), res.Report.Committed,
			res.Elapsed.Seconds(), res.Runs, res.Stopped, res.Plan.String(), "plan only; failed once; container runs do not replay bit for bit"}); err != nil {
			return err
		}
	}
	return judge(r.System, res.Report, false)
}
