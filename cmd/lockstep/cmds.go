package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"lockstep/checker"
	"lockstep/faults"
	"lockstep/pipeline"
	"lockstep/scenarios"
	"lockstep/scenarios/containers"
	"lockstep/scenarios/report"
	"lockstep/sim"
)

func parseSeed(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, usagef("malformed seed %q: want a decimal or 0x-hex number", s)
	}
	return v, nil
}

func lookupOne(name string) (*scenarios.Scenario, error) {
	sc, err := scenarios.Resolve(name)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return sc, nil
}

func parseSystem(s string) (scenarios.System, error) {
	sys, err := scenarios.ParseSystem(s)
	if err != nil {
		return "", usagef("%v", err)
	}
	return sys, nil
}

// positive is an int flag that must be at least 1: a count of
// transactions, seeds or workers. The variable keeps its default (0 may
// mean "the default") unless the flag is given.
type positive struct{ v *int }

func (p positive) String() string {
	if p.v == nil {
		return "0"
	}
	return strconv.Itoa(*p.v)
}

func (p positive) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, strconv.IntSize)
	if err != nil || n < 1 {
		return errors.New("want a positive whole number")
	}
	*p.v = int(n)
	return nil
}

// positiveFlag defines a positive int flag with a default.
func positiveFlag(fs *flag.FlagSet, name string, value int, usage string) *int {
	v := value
	fs.Var(positive{&v}, name, usage)
	return &v
}

// runFlags are run's flags past --scenario, --system and --seed. The first
// group shapes the run and rides in its repro token (shaping lists them);
// the second only says what to print or keep.
type runFlags struct {
	bugs  string
	txns  int
	world string
	bench bool
	plan  string

	json   string
	report string
	logDir string
	trace  bool
	check  bool
}

// shaping names the flags that shape a run (with --scenario, --system and
// --seed): repro takes them from the token, never as flags.
var shaping = []string{"bug", "txns", "world", "bench", "plan"}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.Var(positive{&f.txns}, "txns", "`N` application transactions per run (default 1000; containers: 300)")
	fs.StringVar(&f.bugs, "bug", "", "break the pipeline on purpose with known CDC bugs (comma-separated): "+bugList()+"; with --system 2pc, two-phase commit's: "+twoPCBugList())
	fs.StringVar(&f.json, "json", "", "write the report as JSON to this file")
	fs.StringVar(&f.report, "report", "", "write the run's report as one self-contained HTML page to this `FILE`")
	fs.StringVar(&f.world, "world", "sim", "where to run: sim (the deterministic simulator) or containers (real PostgreSQL, Kafka, Redis; needs Docker and make images)")
	fs.BoolVar(&f.bench, "bench", false, "containers: report throughput and commit-to-store lag (runs without faults unless --plan is given)")
	fs.StringVar(&f.plan, "plan", "", "containers: run this fault plan (a text file as runs print them) instead of the seed's")
	fs.StringVar(&f.logDir, "logs", "", "containers: keep the containers' logs in this directory")
	fs.BoolVar(&f.check, "check-determinism", false, "run the seed twice and compare traces event by event")
	fs.BoolVar(&f.trace, "log", false, "print the pipeline's debug log (on virtual time) to stderr")
}

// repro is the run the flags ask for, as its token: the bugs ride in the
// scenario's name, a plan file as its absolute path and checksum. Flags
// the chosen world would ignore are refused, so none is dropped silently.
func (f *runFlags) repro(scenario, system, seedText string) (scenarios.Repro, error) {
	sys, err := parseSystem(system)
	if err != nil {
		return scenarios.Repro{}, err
	}
	seed, err := parseSeed(seedText)
	if err != nil {
		return scenarios.Repro{}, err
	}
	r := scenarios.Repro{Scenario: scenario, System: sys, Seed: seed, Txns: f.txns}
	if f.bugs != "" {
		r.Scenario += "+" + strings.ReplaceAll(f.bugs, ",", "+")
	}
	switch f.world {
	case "sim":
		for _, c := range []struct {
			set       bool
			flag, why string
		}{
			{f.plan != "", "--plan", "the simulator draws each seed's faults from the seed"},
			{f.bench, "--bench", "for the simulator's speed, run 'lockstep bench'"},
			{f.logDir != "", "--logs", "the simulator runs no containers; --log prints the pipeline's log"},
		} {
			if c.set {
				return scenarios.Repro{}, usagef("%s needs --world containers (%s)", c.flag, c.why)
			}
		}
		return r, nil
	case scenarios.WorldContainers:
		if f.check {
			return scenarios.Repro{}, usagef("--check-determinism needs the simulator: a run in containers cannot be replayed event by event")
		}
		r.World, r.Bench = scenarios.WorldContainers, f.bench
		if f.plan != "" {
			abs, err := filepath.Abs(f.plan)
			if err != nil {
				return scenarios.Repro{}, usagef("--plan %s: %v", f.plan, err)
			}
			_, sum, err := readPlan(abs)
			if err != nil {
				return scenarios.Repro{}, err
			}
			r.Plan, r.PlanSum = abs, sum
		}
		return r, nil
	}
	return scenarios.Repro{}, usagef("unknown world %q: want sim or containers", f.world)
}

var runCmd = &command{
	name:      "run",
	simulates: true,
	usage:     "--scenario NAME [--system pipeline|dualwrite|2pc] --seed N [--txns N] [--bug NAME] [--json FILE]",
	short:     "run one seed of one scenario and judge it",
	long: `Run builds the simulated world for one seed, drives the workload through the
fault phase and the quiet phase, and prints the checker's verdict, the anomalies
with witnesses, the trace hash and a one-line repro that replays the same run
(every flag that shapes it rides in the token). --report FILE writes the run
as one self-contained HTML page: node states and fault windows over time,
store positions and lag, the anomalies' witnesses, the plan and the repro
line. It exits 0 when the pipeline
held every claimed property, 1 when it violated one, 2 when its verdict is
inconclusive, the run could not complete or the input is bad.`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		var rf runFlags
		rf.register(fs)
		scenario := fs.String("scenario", "", "scenario name (see 'lockstep list')")
		system := fs.String("system", "pipeline", "system under test: pipeline, dualwrite, 2pc or debezium (containers only)")
		seed := fs.String("seed", "", "seed (decimal or 0x-hex)")
		return func(args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			if *scenario == "" || *seed == "" {
				return usagef("--scenario and --seed are required")
			}
			r, err := rf.repro(*scenario, *system, *seed)
			if err != nil {
				return err
			}
			return runRepro(r, rf)
		}
	},
}

var reproCmd = &command{
	name:      "repro",
	simulates: true,
	usage:     "SCENARIO[+BUG...]/SYSTEM/SEED[,KEY=VALUE...]|FILE [--json FILE] [--log] [--check-determinism] [--logs DIR]",
	short:     "replay a printed run exactly (same trace hash)",
	long: `Repro takes the token a run or campaign printed and replays that run bit for
bit: the trace hash it prints must equal the original. The token carries
everything that shapes the run: SCENARIO (with +BUG for each --bug),
SYSTEM and SEED, then a comma and KEY=VALUE for each parameter off its
default: txns, clients, quiet, settle (durations such as 20s), world=containers,
bench=true, plan=PATH and plansum (the plan file's checksum: a file changed
since the run is refused), keys (the workload's key space). For example:
steady/pipeline/1,txns=50. A repro FILE, as shrink writes, holds a token and
an explicit fault plan; its replay must give the trace hash it records.`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		var rf runFlags
		rf.register(fs)
		return func(args []string) error {
			given := ""
			fs.Visit(func(f *flag.Flag) {
				if given == "" && slices.Contains(shaping, f.Name) {
					given = f.Name
				}
			})
			if given != "" {
				return usagef("--%s shapes the run, so it rides in the token (e.g. steady+skip-snapshot/pipeline/1,txns=50,world=containers), not in a flag", given)
			}
			if len(args) != 1 {
				return usagef("want exactly one repro token, e.g. crash-capture/pipeline/42,txns=200")
			}
			if f, ok, err := readReproFile(args[0]); ok || err != nil {
				if err != nil {
					return err
				}
				if rf.logDir != "" {
					return usagef("--logs needs a token with world=containers (a repro file is a simulated run)")
				}
				if err := checkWritable(rf.json, rf.report); err != nil {
					return err
				}
				return runSim(f.Repro, &f, args[0], rf)
			}
			r, err := scenarios.ParseRepro(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			if r.World == scenarios.WorldContainers && rf.check {
				return usagef("--check-determinism needs the simulator: a run in containers cannot be replayed event by event")
			}
			if r.World == "" && rf.logDir != "" {
				return usagef("--logs needs a token with world=containers (the simulator keeps no logs)")
			}
			return runRepro(r, rf)
		}
	},
}

// runRepro runs what a token names; rf says only what to print and keep.
func runRepro(r scenarios.Repro, rf runFlags) error {
	if err := checkWritable(rf.json, rf.report); err != nil {
		return err
	}
	if r.World == scenarios.WorldContainers {
		return runContainers(r, rf)
	}
	return runSim(r, nil, "", rf)
}

// runSim runs a simulated run: the token's, or with file set the repro
// file's (read from path), whose hash the replay must give again.
func runSim(r scenarios.Repro, file *scenarios.ReproFile, path string, rf runFlags) error {
	sc, err := lookupOne(r.Scenario)
	if err != nil {
		return err
	}
	sys, seed := r.System, r.Seed
	if err := simSystem(sys); err != nil {
		return err
	}
	opts := r.Options()
	if file != nil {
		opts = file.Options()
	}
	if rf.trace {
		opts.Log = stderr
	}
	if rf.check {
		err := sim.CheckDeterminism(seed, func(cfg sim.Config) (sim.Result, error) {
			o := opts
			o.KeepTrace = true
			out, err := scenarios.Run(sc, sys, cfg.Seed, o)
			if err != nil {
				return sim.Result{}, err
			}
			return sim.Result{Hash: out.Hash, Trace: out.Trace}, nil
		})
		if err != nil {
			return fmt.Errorf("nondeterminism: %w", err)
		}
		fmt.Fprintln(stdout, "determinism: two runs, identical traces")
	}
	out, err := scenarios.Run(sc, sys, seed, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "scenario %s (%s), system %s, seed %d\n", sc.Name, sc.Summary, sys, seed)
	printPlan(out.Plan)
	for _, fw := range out.History.Faults {
		if fw.Start >= out.Plan.Quiet && fw.Start > 0 {
			fmt.Fprintf(stdout, "  @%v %s\n", fw.Start.Round(time.Millisecond), fw.What)
		}
	}
	fmt.Fprintf(stdout, "ran %v virtual in %v wall (%.0fx), %d events, %d messages, %d committed txns\n",
		out.Virtual.Round(time.Millisecond), out.Wall.Round(time.Millisecond), float64(out.Virtual)/float64(out.Wall),
		out.Stats.Events, out.Stats.Messages, len(out.History.Committed))
	printMetrics(out.Metrics)
	for _, st := range out.History.Stores {
		at, ok := out.History.ConvergedAt[st.Name]
		if ok {
			fmt.Fprintf(stdout, "  %-8s converged at %v\n", st.Name, at.Round(time.Millisecond))
		}
	}
	if len(out.Blocked) > 0 {
		fmt.Fprintf(stdout, "blocked tasks at the end: %s\n", strings.Join(out.Blocked, ", "))
	}
	if out.Refused() {
		// The refusal first: the verdict below is about the history
		// before it only, and is no pass of the run.
		fmt.Fprintf(stdout, "STOPPED: %s\n", out.Stopped)
		fmt.Fprintln(stdout, "the history before the refusal, judged:")
	}
	fmt.Fprint(stdout, out.Report.String())
	fmt.Fprintf(stdout, "trace hash %016x\n", out.Hash)
	if file != nil {
		fmt.Fprintf(stdout, "repro: lockstep repro %s\n", path)
		if err := checkFileHash(*file, path, out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "repro: %s\n", out.Repro())
	}
	if rf.json != "" {
		m := out.Metrics
		if err := writeJSON(rf.json, runJSON{Report: out.Report, Metrics: &m}); err != nil {
			return err
		}
	}
	if rf.report != "" {
		if err := report.WriteFile(rf.report, report.FromOutcome(out)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "report: %s\n", rf.report)
	}
	return judge(sys, out.Report, out.Refused())
}

// judge is a run's exit: the verdict of a system that promises its
// properties (the pipeline, 2PC) counts; dual writes failing is the
// expected finding. A violation before a refusal still fails; a refusal
// and an inconclusive verdict are not a pass.
func judge(sys scenarios.System, rep *checker.Report, refused bool) error {
	switch {
	case !sys.Promises():
		return nil
	case !rep.OK():
		return errViolation
	case refused:
		return errRefused
	case rep.Verdict == checker.Inconclusive:
		return errInconclusive
	}
	return nil
}

func bugList() string {
	var names []string
	for n := range pipeline.BugNames {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// printPlan prints a run's fault plan as text, ready to paste into a bug
// report or a --plan file.
func printPlan(p faults.Plan) {
	fmt.Fprintf(stdout, "faults (%s):\n", p.Mix())
	for _, line := range strings.Split(strings.TrimSpace(p.String()), "\n") {
		fmt.Fprintf(stdout, "  %s\n", line)
	}
}

// checkWritable fails at once, before any run, on output files that cannot
// be written, rather than after a run of minutes whose verdict would then be
// lost. It opens each for writing (an empty path is skipped) and removes
// the ones it had to create; it changes no file that exists, as one may
// also be the input (shrink bug.repro --out bug.repro).
func checkWritable(paths ...string) error {
	for _, p := range paths {
		if p == "" {
			continue
		}
		_, statErr := os.Stat(p)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return usagef("cannot write %v", err)
		}
		f.Close()
		if errors.Is(statErr, os.ErrNotExist) {
			os.Remove(p)
		}
	}
	return nil
}

// runJSON is what run --json writes: the checker's report, its fields at
// the top level, and what the run cost the application (the simulator's
// runs: the object a campaign's JSON gives each run, docs/campaign-json.md).
type runJSON struct {
	*checker.Report
	Metrics *scenarios.Metrics `json:"metrics,omitempty"`
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

var listCmd = &command{
	name:  "list",
	usage: "",
	short: "list the scenarios",
	long:  `List prints every scenario with its workload, fault mix and summary.`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		return func(args []string) error {
			w := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintf(w, "scenario\tworkload\tfaults\tsummary\n")
			names := scenarios.Names()
			sort.Strings(names)
			for _, sc := range append(scenarios.All[:len(scenarios.All):len(scenarios.All)], scenarios.Unsupported...) {
				var kinds []string
				for _, k := range sc.Kinds {
					kinds = append(kinds, string(k))
				}
				if len(kinds) == 0 {
					kinds = []string{"none"}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", sc.Name, sc.Workload, strings.Join(kinds, ","), sc.Summary)
			}
			return w.Flush()
		}
	},
}

var benchCmd = &command{
	name:      "bench",
	simulates: true,
	usage:     "[--seeds N] [--scenario NAME] | --world containers --compare debezium [--debezium stock,tuned] [--clients N] [--duration D] [--kill-at D] [--warmup D] [--poll D] [--flush D] [--max-rate D] [--max-clients N]",
	short:     "measure seeds per second and simulated-time speed-up, or lockstep's capture against Debezium",
	long: `Bench runs one scenario (default swarm: 1,000 transactions, 3 stores, faults)
for --seeds seeds on one core and reports seeds per second and how much faster
than wall time the simulated time ran, for the pipeline and for dual writes.
It also reports the CPU time per seed on all threads, the garbage collector's
included: on a busy machine wall time moves with the neighbours, CPU time
per seed only with the work.

With --world containers --compare debezium it runs the side-by-side
benchmark instead: lockstep's capture and Debezium's connector, stock and
tuned (--debezium; one Kafka Connect worker each), on the same PostgreSQL
and Kafka under the same pgbench load, all killed with kill -9 at --kill-at
and started a second later, and prints a table of every capture's
figures from that run: changes/s, commit -> Kafka append latency p50/p99
(track_commit_timestamp to the broker's LogAppendTime), slot lag, catch-up
after the load, CPU per change and peak memory from each container's
cgroup, restart time and duplicates after the kill, and lockstep/Debezium
beside each Debezium column. --poll and --flush set the tuned connector's poll.interval.ms and
offset.flush.interval.ms (stock keeps Debezium's 500 ms and 60 s). Then,
unless --max-rate is 0, a second load of --max-clients clients with no row
every transaction updates (50 changes per transaction) measures each
capture's maximum sustained rate, in a second table.
Needs Docker, make images and images/build-debezium.sh; takes about 10 min
(Debezium drains the maximum-rate backlog for minutes).`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		seeds := positiveFlag(fs, "seeds", 50, "`N` seeds per system")
		scenario := fs.String("scenario", "swarm", "scenario")
		world := fs.String("world", "sim", "sim, or containers (with --compare)")
		compare := fs.String("compare", "", "`SYSTEM` to run beside lockstep's capture: debezium (needs --world containers)")
		var cc containers.CompareConfig
		fs.IntVar(&cc.Clients, "clients", 4, "pgbench clients (--compare)")
		fs.DurationVar(&cc.Duration, "duration", time.Minute, "pgbench's run time (--compare)")
		fs.DurationVar(&cc.KillAt, "kill-at", 30*time.Second, "kill -9 every capture this long into the load, 0 for never (--compare)")
		fs.DurationVar(&cc.Warmup, "warmup", 15*time.Second, "the load's first seconds, left out of the steady latency (--compare)")
		variants := fs.String("debezium", "stock,tuned", "the Debezium `VARIANTS` beside lockstep's capture: stock, tuned or both (--compare)")
		poll := fs.Duration("poll", 10*time.Millisecond, "the tuned connector's poll.interval.ms, 0 for Debezium's default (--compare)")
		flush := fs.Duration("flush", time.Second, "the tuned connector's offset.flush.interval.ms, 0 for Debezium's default (--compare)")
		fs.DurationVar(&cc.MaxRate, "max-rate", 30*time.Second, "the maximum-rate load's run time, 0 for none (--compare)")
		fs.IntVar(&cc.MaxClients, "max-clients", 16, "the maximum-rate load's pgbench clients (--compare)")
		return func(args []string) error {
			if err := checkCompare(fs, *world, *compare, &cc, *variants, *poll, *flush); err != nil {
				return err
			}
			if *compare != "" {
				return runCompare(cc)
			}
			sc, err := lookupOne(*scenario)
			if err != nil {
				return err
			}
			for _, sys := range scenarios.Systems {
				cpu := processCPU()
				sum := scenarios.Campaign(scenarios.CampaignConfig{Scenarios: []*scenarios.Scenario{sc}, Systems: []scenarios.System{sys}, Seeds: *seeds, FirstSeed: 1, Parallel: 1})
				cpu = processCPU() - cpu
				c := sum.Cells[0]
				fmt.Fprintf(stdout, "%-9s %s: %d seeds, %.1f seeds/s on one core, simulated time %.0fx wall (%.0fx counting only the simulation, not building and checking)\n",
					sys, sc.Name, c.Seeds, c.SeedsPerSecond, sum.Speedup, sum.SimSpeedup)
				if cpu > 0 {
					fmt.Fprintf(stdout, "%-9s %s: %.1f ms of CPU per seed on all threads, garbage collection included (%.1f seeds per CPU-second)\n",
						sys, sc.Name, float64(cpu)/float64(time.Millisecond)/float64(c.Seeds), float64(c.Seeds)/cpu.Seconds())
				}
			}
			fmt.Fprintf(stdout, "collector: %s; GOGC %d at the end\n", gcPolicy, gcPercent())
			return nil
		}
	},
}
