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
	out, err := containers.Run(ctx, containers.Config{Scenario: sc, System: sys, Seed: seed, Txns: rf.txns, Bench: rf.bench, Logger: logger, LogDir: rf.logDir})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; containers removed")
		}
		return err
	}
	fmt.Fprintf(stdout, "scenario %s (%s), system %s, seed %d, world containers\n", sc.Name, sc.Summary, sys, seed)
	fmt.Fprintf(stdout, "faults (%s):\n", out.Plan.Mix())
	for _, line := range strings.Split(strings.TrimSpace(out.Plan.String()), "\n") {
		fmt.Fprintf(stdout, "  %s\n", line)
	}
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
	if sys == scenarios.Pipeline && out.Violated() {
		return errViolation
	}
	return nil
}
