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
	"strings"
	"syscall"
	"time"

	"lockstep/checker"
	"lockstep/faults"
	"lockstep/scenarios"
	"lockstep/scenarios/containers"
	"lockstep/scenarios/report"
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
	if err := containerSystem(r.System); err != nil {
		return containers.Config{}, err
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
// container and network.
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
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	fmt.Fprintf(stderr, "lockstep: starting containers for %s/%s (about 30s)...\n", sc.Name, sys)
	cfg.Logger, cfg.LogDir = logger, rf.logDir
	out, err := containers.Run(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; containers removed")
		}
		return err
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
	fmt.Fprintf(stdout, "container logs: %s\n", out.LogDir)
	fmt.Fprintf(stdout, "repro: lockstep repro %s\n", r)
	if rf.json != "" {
		if err := writeJSON(rf.json, out.Report); err != nil {
			return err
		}
	}
	if rf.report != "" {
		err := report.WriteFile(rf.report, report.Run{
			Title: fmt.Sprintf("%s / %s / seed %d", sc.Name, sys, seed), World: "containers",
			History: out.History, Report: out.Report, Plan: out.Plan.String(), Mix: out.Plan.Mix(),
			Repro: "lockstep repro " + r.String(), WallClock: true,
			Notes: []string{"Times are wall time since the containers were up. Container logs: " + out.LogDir},
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "report: %s\n", rf.report)
	}
	return judge(sys, out.Report, false)
}

// containerCampaign runs seeds of scenarios in containers, one run at a time
// (each run owns a whole cluster), and tallies them like a simulated
// campaign.
func containerCampaign(names, system, first string, seeds, txns int, jsonPath string) error {
	if names == "all" {
		names = "steady,crash-capture,crash-appliers,broker-failover,partitions,cache-restart,pgbench"
	}
	var scs []*scenarios.Scenario
	for _, n := range strings.Split(names, ",") {
		sc, err := containers.Lookup(strings.TrimSpace(n))
		if err != nil {
			return usagef("%v", err)
		}
		scs = append(scs, sc)
	}
	systems := scenarios.Systems
	if system != "both" {
		sys, err := parseSystem(system)
		if err != nil {
			return err
		}
		if err := containerSystem(sys); err != nil {
			return err
		}
		systems = []scenarios.System{sys}
	}
	firstSeed, err := parseSeed(first)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := containers.Available(ctx); err != nil {
		return err
	}
	type cell struct {
		Scenario  string           `json:"scenario"`
		System    scenarios.System `json:"system"`
		Seeds     int              `json:"seeds"`
		Violating int              `json:"seeds_violating"`
		Anomalies map[string]int   `json:"anomalies_by_class"`
		Failing   []string         `json:"failing,omitempty"`
		// Inconclusive names the runs whose verdict was inconclusive.
		Inconclusive []string `json:"inconclusive,omitempty"`
	}
	var cells []*cell
	total, done := len(scs)*len(systems)*seeds, 0
	pipelineFails, pipelineInconclusive := 0, 0
	for _, sc := range scs {
		for _, sys := range systems {
			c := &cell{Scenario: sc.Name, System: sys, Anomalies: map[string]int{}}
			cells = append(cells, c)
			for i := 0; i < seeds; i++ {
				seed := firstSeed + uint64(i)
				token := scenarios.Repro{Scenario: sc.Name, System: sys, Seed: seed, World: scenarios.WorldContainers, Txns: txns}
				fmt.Fprintf(stderr, "[%d/%d] %s ...\n", done+1, total, token)
				out, err := containers.Run(ctx, containers.Config{Scenario: sc, System: sys, Seed: seed, Txns: txns})
				done++
				if err != nil {
					if ctx.Err() != nil {
						return fmt.Errorf("interrupted at %s; containers removed", token)
					}
					return fmt.Errorf("%s: %w", token, err)
				}
				c.Seeds++
				for class, n := range out.Report.Counts {
					c.Anomalies[string(class)] += n
				}
				switch {
				case out.Violated():
					c.Violating++
					c.Failing = append(c.Failing, token.String())
					if sys == scenarios.Pipeline {
						pipelineFails++
					}
				case out.Report.Verdict == checker.Inconclusive:
					c.Inconclusive = append(c.Inconclusive, token.String())
					if sys == scenarios.Pipeline {
						pipelineInconclusive++
					}
				}
			}
		}
	}
	for _, c := range cells {
		fmt.Fprintf(stdout, "%-16s %-9s %d/%d violating %v\n", c.Scenario, c.System, c.Violating, c.Seeds, c.Anomalies)
	}
	if jsonPath != "" {
		if err := writeJSON(jsonPath, cells); err != nil {
			return err
		}
	}
	for _, c := range cells {
		if c.System == scenarios.Pipeline {
			for _, f := range c.Failing {
				fmt.Fprintf(stdout, "pipeline violated a claimed property: lockstep repro %s\n", f)
			}
			for _, f := range c.Inconclusive {
				fmt.Fprintf(stdout, "pipeline inconclusive (not a pass): lockstep repro %s\n", f)
			}
		}
	}
	switch {
	case pipelineFails > 0:
		return errViolation
	case pipelineInconclusive > 0:
		return errInconclusive
	}
	return nil
}
