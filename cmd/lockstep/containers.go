package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"lockstep/faults"
	"lockstep/scenarios"
	"lockstep/scenarios/containers"
	"lockstep/scenarios/report"
	"lockstep/scenarios/results"
)

// readPlan reads a fault plan file and the first 8 bytes of its SHA-256 in
// hex, which a repro token carries so that a changed file is not taken for
// the one that ran.
func readPlan(path string) (faults.Plan, string, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return faults.Plan{}, "", usagef("read the fault plan: %v", err)
	}
	p, err := faults.Parse(string(text))
	if err != nil {
		return faults.Plan{}, "", usagef("%s: %v", path, err)
	}
	sum := sha256.Sum256(text)
	return p, hex.EncodeToString(sum[:8]), nil
}

// containerConfig is the container run a token names: every error here is
// bad input, found before any container starts.
func containerConfig(r scenarios.Repro) (containers.Config, error) {
	sc, err := containers.Lookup(r.Scenario)
	if err != nil {
		return containers.Config{}, usagef("%v", err)
	}
	if err := containerSystem(r.System, sc); err != nil {
		return containers.Config{}, err
	}
	if err := containers.SupportsSystem(sc, r.System, r.Plan != ""); err != nil {
		return containers.Config{}, usagef("%v", err)
	}
	cfg := containers.Config{Scenario: sc, System: r.System, Seed: r.Seed, Txns: r.Txns, Clients: r.Clients,
		Faults: r.Quiet, Settle: r.Settle, Bench: r.Bench}
	switch {
	case r.Plan != "":
		p, sum, err := readPlan(r.Plan)
		if err != nil {
			return containers.Config{}, err
		}
		if r.PlanSum != "" && sum != r.PlanSum {
			return containers.Config{}, usagef("plan file %s changed since the run (checksum %s, the token's %s): the token replays only the plan that ran", r.Plan, sum, r.PlanSum)
		}
		if err := containers.CheckPlan(r.System, p); err != nil {
			return containers.Config{}, usagef("%s: %v", r.Plan, err)
		}
		cfg.Plan = &p
	case r.Bench:
		// Throughput and lag of a fault-free run: with faults the figures
		// would measure recovery.
		cfg.Plan = &faults.Plan{Quiet: cmp.Or(r.Quiet, 30*time.Second)}
	}
	return cfg, nil
}

// runContainers runs what a token with world=containers names, against
// real services. Ctrl-C or SIGTERM stops it and still removes every
// container and network. The containers' logs are kept when the run did
// not hold, or in --logs DIR; the output says where.
func runContainers(r scenarios.Repro, rf runFlags) error {
	cfg, err := containerConfig(r)
	if err != nil {
		return err
	}
	sc, sys, seed := cfg.Scenario, cfg.System, cfg.Seed
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := containers.Available(ctx); err != nil {
		return err
	}
	level := slog.LevelInfo
	if !rf.trace {
		level = slog.LevelWarn
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	logs, err := newRunLogs(rf.logDir, "")
	if err != nil {
		return err
	}
	cfg.LogDir = logs.dir
	phases := startPhases(func(phase string, in time.Duration) string {
		return fmt.Sprintf("lockstep: %s: %s", r, phaseText(phase, in, faultPhaseOf(cfg)))
	})
	cfg.Phase = phases.set
	out, err := containers.Run(ctx, cfg)
	phases.stop()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; containers removed; their logs are in %s", logs.dir)
		}
		return fmt.Errorf("%w; container logs: %s", err, logs.dir)
	}
	fmt.Fprintf(stdout, "scenario %s (%s), system %s, seed %d, world containers\n", sc.Name, sc.Summary, sys, seed)
	printPlan(out.Plan)
	fmt.Fprintf(stdout, "ran %v wall, %d committed txns (from the audit slot)\n", out.Wall.Round(time.Millisecond), len(out.History.Committed))
	for _, st := range out.History.Stores {
		if at, ok := out.History.ConvergedAt[st.Name]; ok {
			fmt.Fprintf(stdout, "  %-8s converged at %v\n", st.Name, at.Round(time.Millisecond))
		}
	}
	fmt.Fprint(stdout, out.Report.String())
	if out.Bench != nil {
		fmt.Fprint(stdout, out.Bench.String())
	}
	if out.InDoubt != nil {
		fmt.Fprint(stdout, out.InDoubt.String())
	}
	kept, err := logs.settle(results.Judged(r.String(), "", out.Report, "").Verdict)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, logs.line(kept))
	fmt.Fprintf(stdout, "repro: lockstep repro %s\n", r)
	if rf.json != "" {
		if err := writeJSON(rf.json, out.Report); err != nil {
			return err
		}
	}
	if rf.report != "" {
		notes := []string{"Times are wall time since the containers were up."}
		if kept {
			notes = append(notes, "Container logs: "+logs.dir)
		}
		err := report.WriteFile(rf.report, report.Run{
			Title: fmt.Sprintf("%s / %s / seed %d", sc.Name, sys, seed), World: "containers",
			History: out.History, Report: out.Report, Plan: out.Plan.String(), Mix: out.Plan.Mix(),
			Repro: "lockstep repro " + r.String(), WallClock: true, Notes: notes,
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "report: %s\n", rf.report)
	}
	return judge(sys, out.Report, false)
}

// runLogs is where one container run keeps its containers' logs: in
// --logs DIR (a folder per run in a campaign), kept; or in a new
// temporary folder, kept only if the run did not hold.
type runLogs struct {
	dir   string
	asked bool
}

// newRunLogs makes the folder: base/sub when --logs gave base, a new
// temporary one otherwise.
func newRunLogs(base, sub string) (runLogs, error) {
	if base != "" {
		dir := filepath.Join(base, sub)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return runLogs{}, usagef("--logs: %v", err)
		}
		return runLogs{dir: dir, asked: true}, nil
	}
	dir, err := os.MkdirTemp("", "lockstep-logs-")
	if err != nil {
		return runLogs{}, fmt.Errorf("container logs: %w", err)
	}
	return runLogs{dir: dir}, nil
}

// settle removes the folder of a run that held, unless --logs asked for
// it, and reports whether it is kept.
func (l runLogs) settle(verdict string) (bool, error) {
	if l.asked || verdict != results.Held {
		return true, nil
	}
	if err := os.RemoveAll(l.dir); err != nil {
		return false, fmt.Errorf("remove the container logs: %w", err)
	}
	return false, nil
}

func (l runLogs) line(kept bool) string {
	if kept {
		return "container logs: " + l.dir
	}
	return "container logs: not kept (the run held; --logs DIR keeps them)"
}

// phaseReporter says on stderr which phase a container run is in: when
// it enters one, and every 10 s in it, so a minute-long run is never
// silent.
type phaseReporter struct {
	mu    sync.Mutex
	phase string
	since time.Time
	text  func(phase string, in time.Duration) string
	quit  chan struct{}
	done  chan struct{}
}

func startPhases(text func(phase string, in time.Duration) string) *phaseReporter {
	p := &phaseReporter{text: text, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				p.print()
			}
		}
	}()
	return p
}

// set enters a phase (containers.Config.Phase).
func (p *phaseReporter) set(phase string) {
	p.mu.Lock()
	p.phase, p.since = phase, time.Now()
	p.mu.Unlock()
	p.print()
}

func (p *phaseReporter) print() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.phase != "" {
		fmt.Fprintln(stderr, p.text(p.phase, time.Since(p.since)))
	}
}

func (p *phaseReporter) stop() {
	close(p.quit)
	<-p.done
}

// faultPhaseOf is how long cfg's fault phase lasts: its plan's, when it
// runs one (a soak's is ten minutes), else its own (0: the default).
func faultPhaseOf(cfg containers.Config) time.Duration {
	if cfg.Plan != nil {
		return cfg.Plan.Quiet
	}
	return cfg.Faults
}

// phaseText is a phase and how long it has run, against how long it
// takes: "faults 12s of 30s".
func phaseText(phase string, in time.Duration, faultPhase time.Duration) string {
	in = in.Round(time.Second)
	switch phase {
	case containers.PhaseStarting:
		return fmt.Sprintf("starting the containers and the pipeline (%v, about 30s)", in)
	case containers.PhaseFaults:
		return fmt.Sprintf("faults and workload (%v of %v)", in, cmp.Or(faultPhase, 30*time.Second))
	case containers.PhaseQuiet:
		return fmt.Sprintf("quiet: faults healed, waiting for the stores to converge (%v)", in)
	case containers.PhaseChecking:
		return fmt.Sprintf("checking the stores (%v)", in)
	}
	return fmt.Sprintf("%s (%v)", phase, in)
}

// containerScenarios are the scenarios a container campaign names ("all":
// those worth a container run).
func containerScenarios(names string) ([]*scenarios.Scenario, error) {
	if names == "all" {
		names = "steady,crash-capture,crash-appliers,broker-failover,partitions,cache-restart,pgbench"
	}
	var scs []*scenarios.Scenario
	for _, n := range strings.Split(names, ",") {
		sc, err := containers.Lookup(strings.TrimSpace(n))
		if err != nil {
			return nil, usagef("%v", err)
		}
		scs = append(scs, sc)
	}
	return scs, nil
}

// containerCampaign runs a campaign's runs in containers, one at a time
// (each run owns a whole cluster), in the simulated campaign's order and
// with its seeds, duration and shard, and reports it in the same form:
// table, JSON, JUnit.
//
// The runs share one cluster, started once and reset between runs
// (containers.World.Reset), so a seed costs its fault and quiet phases, not
// a cluster's start.
func containerCampaign(cfg scenarios.CampaignConfig, outs campaignOutputs, logBase string) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := containers.Available(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "lockstep: starting containers (about 30s), one cluster for every run...\n")
	w, err := containers.Start(ctx, containers.Options{})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; containers removed")
		}
		return err
	}
	defer func() {
		if cerr := w.Close(context.WithoutCancel(ctx)); cerr != nil && err == nil {
			err = fmt.Errorf("containers: cleanup: %w", cerr)
		}
	}()
	file := results.New(results.WorldContainers, results.ConfigOf(cfg))
	file.Timing.Started = time.Now().UTC().Format(time.RFC3339)
	file.Timing.Parallel = 1
	p := newProgress(cfg.Duration)
	total, done := cfg.Total(), 0
	for run := range cfg.Runs() {
		if cfg.Duration > 0 && time.Since(p.start) >= cfg.Duration {
			file.Timing.StoppedByDuration = true
			break
		}
		token := scenarios.Repro{Scenario: run.Scenario.Name, System: run.System, Seed: run.Seed, World: scenarios.WorldContainers, Txns: cfg.Options.Txns}
		logs, err := newRunLogs(logBase, strings.TrimSuffix(report.FileName(token.String()), ".html"))
		if err != nil {
			return err
		}
		phases := startPhases(func(phase string, in time.Duration) string {
			return p.line(done, total, cfg, fmt.Sprintf("now %s: %s", token, phaseText(phase, in, 0)))
		})
		began := time.Now()
		out, err := containers.Run(ctx, containers.Config{Scenario: run.Scenario, System: run.System, Seed: run.Seed,
			Txns: cfg.Options.Txns, LogDir: logs.dir, Phase: phases.set, World: w})
		phases.stop()
		done++
		p.ended()
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted at %s; containers removed; its logs are in %s", token, logs.dir)
		}
		var res results.Run
		if err != nil {
			res = results.Failed(token, err, time.Since(began))
			res.LogDir = logs.dir
			fmt.Fprintf(stderr, "harness error, not judged: %s: %s (logs: %s)\n", token, oneLine(err.Error()), logs.dir)
		} else {
			res = results.Judged(token.String(), out.Plan.String(), out.Report, "")
			res.Timing.WallNS = int64(out.Wall)
			kept, err := logs.settle(res.Verdict)
			if err != nil {
				return err
			}
			if kept {
				res.LogDir = logs.dir
			}
			p.note(run.System, run.Seed, res.Verdict == results.Violated)
			fmt.Fprintf(stderr, "%s: %s in %v; %s\n", token, res.Verdict, out.Wall.Round(time.Second), logs.line(kept))
		}
		file.Add(run.Scenario.Name, run.System, res)
	}
	file.Timing.WallNS = int64(time.Since(p.start))
	file.Finish()
	if err := file.WriteTable(stdout); err != nil {
		return err
	}
	if err := outs.write(file); err != nil {
		return err
	}
	return verdictErr("campaign", file)
}
