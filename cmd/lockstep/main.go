// Command lockstep runs the harness: one simulated run (run), a campaign of
// many seeds over many scenarios (campaign), the exact replay of a printed
// run (repro), the scenario list (list) and the simulator benchmark (bench).
//
// Exit codes: 0 when the system under test held every property it claims, 1
// when it violated one (the pipeline's and two-phase commit's, its --bug
// switches included; naive dual writes claim nothing, their violations are
// the expected finding), 2 for bad input or a harness error: a run that
// could not complete, a report that could not be written, a verdict that is
// inconclusive (a check did not finish), or a pipeline that stopped on
// input it cannot capture (a table without a key), none of which is a pass.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one subcommand, in the go command's style: usage, a short line,
// the long help and a run function over its own flag set.
type command struct {
	name  string
	usage string
	short string
	long  string
	flags func(fs *flag.FlagSet) func(args []string) error
	// simulates: the command runs simulated worlds as a batch job, so main
	// tunes the collector for throughput (gc.go).
	simulates bool
}

var commands = []*command{runCmd, campaignCmd, reproCmd, listCmd, benchCmd, captureCmd, applyCmd, mergeCmd, coordinatorCmd}

// usageError is bad input: exit 2 with one line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

var (
	// errViolation: the pipeline broke a claimed property (exit 1).
	errViolation = errors.New("the pipeline violated a claimed property")
	// errInconclusive: a claimed property could not be judged (exit 2).
	errInconclusive = errors.New("inconclusive: a claimed property could not be judged (see the report); not a pass")
	// errRefused: the pipeline stopped on input it cannot capture, as it
	// must; already reported (exit 2).
	errRefused = errors.New("the pipeline refused input it cannot capture: not a pass")
	// errHarness: runs could not complete; already reported (exit 2).
	errHarness = errors.New("the harness failed")
)

// gcPolicy says how main set the collector (gc.go), for bench's output.
var gcPolicy = "Go's default pacing"

func main() {
	// Here and not in run, which tests call: the tuning is for the
	// process's life, and a test binary's other tests must not inherit it.
	if len(os.Args) > 1 {
		if c := find(os.Args[1]); c != nil && c.simulates {
			gcPolicy = tuneGCForSimulation()
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

var stdout, stderr io.Writer = os.Stdout, os.Stderr

func run(args []string, out, errw io.Writer) int {
	stdout, stderr = out, errw
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		switch {
		case len(args) < 2:
			printUsage(out)
			return 0
		case len(args) > 2:
			fmt.Fprintf(errw, "lockstep help: want one command, not %d; run 'lockstep help' for the list\n", len(args)-1)
			return 2
		}
		c := find(args[1])
		if c == nil {
			fmt.Fprintf(errw, "lockstep help: unknown command %q; run 'lockstep help' for the list\n", args[1])
			return 2
		}
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.flags(fs)
		printHelp(out, c, fs)
		return 0
	}
	c := find(args[0])
	if c == nil {
		fmt.Fprintf(errw, "lockstep: unknown command %q; run 'lockstep help' for the list\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runFn := c.flags(fs)
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(out, c, fs)
			return 0
		}
		fmt.Fprintf(errw, "lockstep %s: %s; run 'lockstep %s -h' for usage\n", c.name, oneLine(err.Error()), c.name)
		return 2
	}
	err = runFn(pos)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(errw, "lockstep %s: %s\n", c.name, oneLine(ue.msg))
		return 2
	case errors.Is(err, errViolation):
		return 1
	case errors.Is(err, errHarness), errors.Is(err, errRefused):
		return 2
	default:
		// Inconclusive, or the harness or its environment failed (no
		// Docker, Ctrl-C, a report that cannot be written, a fault the
		// kernel cannot make): not the system's failure.
		fmt.Fprintf(errw, "lockstep %s: %s\n", c.name, oneLine(err.Error()))
		return 2
	}
}

// parseInterspersed parses flags wherever they stand among the arguments
// (lockstep repro TOKEN --json out.json as well as before the token), as
// the flag package alone stops at the first argument that is not a flag,
// and returns the others in order. After "--" every argument is one of
// the others.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := args[:len(args)-len(rest)]; len(used) > 0 && used[len(used)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// oneLine folds a multi-line error (docker's and tc's stderr, joined
// errors) into the one line the CLI promises.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(s), "\n", " | ")), " ")
}

// printHelp is a command's usage, its long help and its flags: what both
// 'lockstep help CMD' and 'lockstep CMD -h' print.
func printHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: lockstep %s %s\n\n%s\n", c.name, c.usage, strings.TrimSpace(c.long))
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintf(w, "\nflags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

func find(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "lockstep proves a change-data-capture pipeline keeps its stores in sync under faults.\n\nusage: lockstep <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.short)
	}
	fmt.Fprintf(w, "\nrun 'lockstep help <command>' for details.\n")
}
