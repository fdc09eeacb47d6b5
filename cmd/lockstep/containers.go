package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"lockstep/faults"
	"lockstep/scenarios"
	"lockstep/scenarios/containers"
)

// runContainers runs one scenario against real services in containers. Ctrl-C
// or SIGTERM stops it and still removes every container and network.
func runContainers(name string, sys scenarios.System, seed uint64, rf runFlags) error {
	sc, err := containers.Lookup(name)
	if err != nil {
		return usagef("%v", err)
	}
	var plan *faults.Plan
	switch {
	case rf.plan != "":
		text, err := os.ReadFile(rf.plan)
		if err != nil {
			return usagef("read the fault plan: %v", err)
		}
		p, err := faults.Parse(string(text))
		if err != nil {
			return usagef("%s: %v", rf.plan, err)
		}
		plan = &p
	case rf.bench:
		// Throughput and lag of a fault-free run: with faults the figures
		// would measure recovery.
		plan = &faults.Plan{Quiet: 30 * time.Second}
	}
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
	out, err := containers.Run(ctx, containers.Config{Scenario: sc, System: sys, Seed: seed, Txns: rf.txns, Bench: rf.bench, Plan: plan, Logger: logger, LogDir: rf.logDir})
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
	fmt.Fprintf(stdout, "repro: lockstep repro --world containers %s\n", scenarios.ReproToken(sc.Name, sys, seed))
	if rf.json != "" {
		if err := writeJSON(rf.json, out.Report); err != nil {
			return err
		}
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
	}
	var cells []*cell
	total, done := len(scs)*len(systems)*seeds, 0
	pipelineFails := 0
	for _, sc := range scs {
		for _, sys := range systems {
			c := &cell{Scenario: sc.Name, System: sys, Anomalies: map[string]int{}}
			cells = append(cells, c)
			for i := 0; i < seeds; i++ {
				seed := firstSeed + uint64(i)
				fmt.Fprintf(stderr, "[%d/%d] %s/%s/%d ...\n", done+1, total, sc.Name, sys, seed)
				out, err := containers.Run(ctx, containers.Config{Scenario: sc, System: sys, Seed: seed, Txns: txns})
				done++
				if err != nil {
					return fmt.Errorf("%s/%s/%d: %w", sc.Name, sys, seed, err)
				}
				c.Seeds++
				for class, n := range out.Report.Counts {
					c.Anomalies[string(class)] += n
				}
				if out.Violated() {
					c.Violating++
					c.Failing = append(c.Failing, scenarios.ReproToken(sc.Name, sys, seed))
					if sys == scenarios.Pipeline {
						pipelineFails++
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
	if pipelineFails > 0 {
		return errViolation
	}
	return nil
}
