package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"lockstep/scenarios/containers"
)

// compareFlags are bench's flags that only the side-by-side benchmark
// reads.
var compareFlags = map[string]bool{"clients": true, "duration": true, "kill-at": true, "warmup": true, "poll": true, "flush": true,
	"debezium": true, "max-rate": true, "max-clients": true}

// checkCompare refuses a bench command line whose flags do not go
// together: --compare needs --world containers and names debezium, the
// container world runs only the comparison, and the comparison's flags
// mean nothing without it. It sets cc's Debezium variants from --debezium,
// the tuned one with poll and flush.
func checkCompare(fs *flag.FlagSet, world, compare string, cc *containers.CompareConfig, variants string, poll, flush time.Duration) error {
	var stray string
	fs.Visit(func(f *flag.Flag) {
		if compareFlags[f.Name] && compare == "" && stray == "" {
			stray = f.Name
		}
	})
	switch {
	case world != "sim" && world != "containers":
		return usagef("--world must be sim or containers, not %q", world)
	case stray != "":
		return usagef("--%s is for the side-by-side benchmark: add --world containers --compare debezium", stray)
	case compare == "" && world == "containers":
		return usagef("bench in containers is the side-by-side benchmark: add --compare debezium")
	case compare == "":
		return nil
	case compare != "debezium":
		return usagef("--compare takes debezium, not %q", compare)
	case world != "containers":
		return usagef("--compare debezium runs real services: add --world containers")
	}
	if poll < 0 || flush < 0 {
		return usagef("--poll and --flush must not be negative")
	}
	vs, err := containers.Variants(strings.Split(variants, ","), poll, flush)
	if err != nil {
		return usagef("%v", err)
	}
	cc.Debezium = vs
	if err := cc.Validate(); err != nil {
		return usagef("%v", err)
	}
	return nil
}

// runCompare runs the side-by-side benchmark and prints its table.
func runCompare(cc containers.CompareConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := containers.Available(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "lockstep: starting containers, lockstep's capture and %d Debezium Connect workers (about 1 min), then %v of pgbench and %v at the maximum rate...\n",
		len(cc.Debezium), cc.Duration, cc.MaxRate)
	res, err := containers.Compare(ctx, cc)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; containers removed")
		}
		return err
	}
	fmt.Fprint(stdout, res.Table())
	fmt.Fprintf(stdout, "\nper transaction, commit and append times: %s\n", res.Times)
	return nil
}
