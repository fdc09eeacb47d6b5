package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"lockstep/scenarios"
	"lockstep/scenarios/containers"
	"lockstep/scenarios/report"
	"lockstep/scenarios/results"
	"lockstep/scenarios/shrink"
)

var campaignCmd = &command{
	name:      "campaign",
	simulates: true,
	usage:     "[--scenario all|NAME,...] [--seeds N | --duration D] [--shard i/N] [--system both|all|pipeline|dualwrite|2pc] [--json FILE] [--junit FILE] [--report DIR]",
	short:     "run many seeds over scenarios, pipeline vs dual writes",
	long: `Campaign runs --seeds seeds of every chosen scenario for each system, on all
cores, seed by seed, with a progress line on stderr, then prints a table of
pipeline vs naive dual writes per scenario and the anomalies by class.
--duration D (a Go duration: 20m, 1h30m) starts no run once D has passed and
reports what ran; alone it runs seeds until then, with --seeds whichever ends
first. --shard i/N runs only the seeds s with (s - first seed) mod N == i-1:
N machines each run one shard, and 'lockstep merge' combines their --json
files into the whole campaign's table, JSON, JUnit and report.
--json FILE writes every run (token, trace hash, plan, anomalies, witnesses)
in the schema lockstep.campaign/v1 (docs/campaign-json.md), the same in both
worlds; --junit FILE writes one testcase per scenario and system, a failure
carrying each failing run's repro line and witnesses.
It exits 1 if any pipeline run violated a claimed property (its repro lines
are printed); dual writes' failures are the expected finding; a 2pc run that
violated one is listed for replay but does not decide the exit. It exits 2 if a
run could not complete or a pipeline run's verdict was inconclusive or a
refusal (not a pass; their repro lines are printed).
--report DIR writes DIR/index.html (the table, anomalies by class, seeds/s,
the failing runs) and, replayed from their tokens, the reports of the first
--report-runs failing runs of each scenario and system in DIR/runs.
--world containers runs one run at a time against real services; a run's
container logs are kept only when it did not hold, or in --logs DIR.`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		scenario := fs.String("scenario", "all", "scenarios: all, or names separated by commas")
		seeds := positiveFlag(fs, "seeds", 50, "`N` seeds per scenario and system (default 50, or no limit with --duration alone)")
		duration := fs.Duration("duration", 0, "start no run after this wall time `D` (e.g. 20m); the runs under way finish and count")
		shard := fs.String("shard", "", "run only shard `i/N` of the seeds: those s with (s - first seed) mod N == i-1")
		first := fs.String("first-seed", "1", "first seed")
		system := fs.String("system", "both", "both (pipeline and dualwrite), all (also 2pc), pipeline, dualwrite, 2pc or debezium (containers only)")
		parallel := positiveFlag(fs, "parallel", runtime.GOMAXPROCS(0), "`N` runs in parallel")
		txns := positiveFlag(fs, "txns", 0, "`N` application transactions per run (default 1000)")
		jsonOut := fs.String("json", "", "write every run and the tally as JSON (schema lockstep.campaign/v1) to this `FILE`")
		junitOut := fs.String("junit", "", "write JUnit XML to this `FILE`: one testcase per scenario and system")
		reportDir := fs.String("report", "", "write an HTML index page and the failing runs' reports into this `DIR`")
		reportRuns := positiveFlag(fs, "report-runs", 5, "`N` failing runs of each scenario and system get a report in --report's DIR")
		world := fs.String("world", "sim", "sim, or containers (runs one at a time; needs Docker and make images)")
		logDir := fs.String("logs", "", "containers: keep every run's container logs in `DIR`/TOKEN (default: only the logs of runs that did not hold)")
		shrinkFirst := fs.Bool("shrink", false, "shrink the first failing run of each scenario, system (not dual writes) and anomaly class, and print its plan and repro file (simulator only)")
		return func(args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			given := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
			if *duration < 0 || given["duration"] && *duration == 0 {
				return usagef("--duration %v: want a positive duration such as 20m", *duration)
			}
			n := *seeds
			if *duration > 0 && !given["seeds"] {
				n = 0 // the time alone bounds it
			}
			var sh scenarios.Shard
			if *shard != "" {
				var err error
				if sh, err = scenarios.ParseShard(*shard); err != nil {
					return usagef("--shard: %v", err)
				}
			}
			firstSeed, err := parseSeed(*first)
			if err != nil {
				return err
			}
			systems := scenarios.Systems
			if *system == "all" {
				systems = scenarios.AllSystems
			} else if *system != "both" {
				sys, err := parseSystem(*system)
				if err != nil {
					return err
				}
				systems = []scenarios.System{sys}
			}
			outs := campaignOutputs{json: *jsonOut, junit: *junitOut, report: campaignReport{dir: *reportDir, perCell: *reportRuns}}
			switch *world {
			case scenarios.WorldContainers:
				if *reportDir != "" {
					return usagef("--report needs the simulator for a campaign; report a container run with run --report")
				}
				if *shrinkFirst {
					return usagef("--shrink needs the simulator: a container run does not replay bit for bit")
				}
				scs, err := containerScenarios(*scenario)
				if err != nil {
					return err
				}
				for _, sys := range systems {
					for _, sc := range scs {
						if err := containerSystem(sys, sc); err != nil {
							return err
						}
					}
					for _, sc := range scs {
						if err := containers.SupportsSystem(sc, sys, false); err != nil {
							return usagef("%v", err)
						}
					}
				}
				if err := outs.check(); err != nil {
					return err
				}
				return containerCampaign(scenarios.CampaignConfig{Scenarios: scs, Systems: systems, Seeds: n, FirstSeed: firstSeed,
					Duration: *duration, Shard: sh, Options: scenarios.Options{Txns: *txns}}, outs, *logDir)
			case "sim":
			default:
				return usagef("unknown world %q: want sim or containers", *world)
			}
			if *logDir != "" {
				return usagef("--logs needs --world containers (the simulator runs no containers)")
			}
			for _, sys := range systems {
				if err := simSystem(sys); err != nil {
					return err
				}
			}
			scs, err := scenarios.Lookup(*scenario)
			if err != nil {
				return usagef("%v", err)
			}
			if err := outs.check(); err != nil {
				return err
			}
			return campaign(scenarios.CampaignConfig{
				Scenarios: scs, Systems: systems, Seeds: n, FirstSeed: firstSeed, Duration: *duration, Shard: sh,
				Parallel: *parallel, Options: scenarios.Options{Txns: *txns},
			}, outs, *shrinkFirst)
		}
	},
}

// campaignReport is where campaign --report writes its pages.
type campaignReport struct {
	dir     string
	perCell int
}

// campaignOutputs are the files a campaign or a merge writes besides its
// table.
type campaignOutputs struct {
	json, junit string
	report      campaignReport
}

// check fails now, not after an hour of runs, on a file that cannot be
// written, and empties the files (a campaign reads none of them), so one
// that fails or is stopped leaves no earlier campaign's results looking
// current; it creates the report's directory.
func (o campaignOutputs) check() error {
	if err := checkWritable(o.json, o.junit); err != nil {
		return err
	}
	for _, p := range []string{o.json, o.junit} {
		if p == "" {
			continue
		}
		if err := os.Truncate(p, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return usagef("cannot empty %s: %v", p, err)
		}
	}
	if o.report.dir != "" {
		if err := os.MkdirAll(o.report.dir, 0o755); err != nil {
			return usagef("--report: %v", err)
		}
	}
	return nil
}

// write writes the JSON and JUnit files; the report is the caller's (it
// replays simulated runs).
func (o campaignOutputs) write(f *results.File) error {
	if o.json != "" {
		if err := f.Write(o.json); err != nil {
			return err
		}
	}
	if o.junit != "" {
		if err := f.WriteJUnit(o.junit); err != nil {
			return err
		}
	}
	return nil
}

// progress prints a campaign's progress line on stderr: on a terminal one
// line redrawn after every run, elsewhere (CI logs) a line every 5 s.
type progress struct {
	start    time.Time
	deadline time.Time // zero: no --duration
	tty      bool
	last     time.Time
	fails    int // pipeline runs that violated a claim
	dwFails  int
	tpcFails int // two-phase commit's runs that violated a claim
	dbzFails int // Debezium's runs that violated a claim
	ran      map[scenarios.System]bool
	maxSeed  uint64
	lastAt   time.Time // when the last run ended
}

func newProgress(d time.Duration) *progress {
	p := &progress{start: time.Now(), tty: isTerminal(os.Stderr)}
	if d > 0 {
		p.deadline = p.start.Add(d)
	}
	return p
}

// ended notes that a run ended, judged or not.
func (p *progress) ended() { p.lastAt = time.Now() }

// note counts a judged run's verdict.
func (p *progress) note(sys scenarios.System, seed uint64, violated bool) {
	p.maxSeed = max(p.maxSeed, seed)
	if p.ran == nil {
		p.ran = map[scenarios.System]bool{}
	}
	p.ran[sys] = true
	switch {
	case violated && sys == scenarios.TwoPC:
		p.tpcFails++
	case violated && sys == scenarios.Debezium:
		p.dbzFails++
	case violated && sys.Promises():
		p.fails++
	case violated:
		p.dwFails++
	}
}

// left is the time the campaign has left: from the runs so far, or to the
// deadline, whichever is sooner; -1 when it cannot say yet.
func (p *progress) left(done, total int) time.Duration {
	left := time.Duration(-1)
	if total > 0 && done > 0 {
		// The mean run so far, for each run to go, less what the runs
		// under way have done since the last one ended.
		perRun := float64(p.lastAt.Sub(p.start)) / float64(done)
		left = max(0, time.Duration(perRun*float64(total-done))-time.Since(p.lastAt))
	}
	if !p.deadline.IsZero() {
		if d := time.Until(p.deadline); left < 0 || d < left {
			left = max(0, d)
		}
	}
	return left
}

// line is "[done/total runs, seeds up to S of N] ..., about T left".
func (p *progress) line(done, total int, cfg scenarios.CampaignConfig, what string) string {
	runs := fmt.Sprintf("%d runs", done)
	if total > 0 {
		runs = fmt.Sprintf("%d/%d runs", done, total)
	}
	if done > 0 {
		runs += fmt.Sprintf(", seeds up to %d", p.maxSeed)
		if cfg.Seeds > 0 {
			runs += fmt.Sprintf(" of %d", cfg.FirstSeed+uint64(cfg.Seeds)-1)
		}
	}
	s := fmt.Sprintf("[%s] pipeline violations %d, dual-write violations %d", runs, p.fails, p.dwFails)
	if p.ran[scenarios.Debezium] {
		// Debezium's campaigns run it alone: the pipeline's and dual
		// writes' zeros would say runs that never happened held.
		s = fmt.Sprintf("[%s] debezium violations %d", runs, p.dbzFails)
		if p.ran[scenarios.Pipeline] || p.ran[scenarios.DualWrite] {
			s = fmt.Sprintf("[%s] pipeline violations %d, dual-write violations %d, debezium violations %d", runs, p.fails, p.dwFails, p.dbzFails)
		}
	}
	if p.tpcFails > 0 {
		s += fmt.Sprintf(", 2pc violations %d", p.tpcFails)
	}
	if what != "" {
		s += "; " + what
	}
	if left := p.left(done, total); left >= 0 {
		s += fmt.Sprintf("; about %v left", left.Round(time.Second))
	}
	return s
}

// print writes the line now if it is time (always on a terminal, every 5 s
// elsewhere, and when forced).
func (p *progress) print(line string, force bool) {
	if !p.tty && !force && time.Since(p.last) < 5*time.Second {
		return
	}
	p.last = time.Now()
	if p.tty {
		fmt.Fprintf(stderr, "\r%s   ", line)
	} else {
		fmt.Fprintln(stderr, line)
	}
}

func (p *progress) done() {
	if p.tty {
		fmt.Fprintln(stderr)
	}
}

func campaign(cfg scenarios.CampaignConfig, outs campaignOutputs, shrinkFirst bool) error {
	p := newProgress(cfg.Duration)
	cfg.Progress = func(done, total int, last *scenarios.Outcome) {
		p.ended()
		if last != nil {
			p.note(last.System, last.Seed, last.Violated())
			if last.System.Promises() && last.Violated() {
				fmt.Fprintf(stderr, "\r%s violation: %s%s\n", last.System, last.Repro(), strings.Repeat(" ", 20))
			}
		}
		p.print(p.line(done, total, cfg, ""), done == total)
	}
	var ff *firstFails
	if shrinkFirst {
		ff = &firstFails{}
		ff.collect(&cfg)
	}
	file, sum := results.RunCampaign(cfg)
	p.done()
	if err := file.WriteTable(stdout); err != nil {
		return err
	}
	if ff != nil {
		ff.shrinkAll(cfg)
	}
	if err := outs.write(file); err != nil {
		return err
	}
	if err := writeCampaignReport(outs.report, cfg, sum, shrinkFirst); err != nil {
		return err
	}
	return verdictErr("campaign", file)
}

// writeCampaignReport writes campaign --report's pages, if asked.
func writeCampaignReport(rep campaignReport, cfg scenarios.CampaignConfig, sum *scenarios.Summary, shrinkFirst bool) error {
	if rep.dir == "" {
		return nil
	}
	ropts := report.CampaignOptions{PerCell: rep.perCell}
	if shrinkFirst {
		// Each reported failing run gets its shrunk form drawn beside it.
		ropts.Shrink = func(r scenarios.Repro) (*scenarios.Outcome, error) {
			sc, err := lookupOne(r.Scenario)
			if err != nil {
				return nil, err
			}
			res, err := shrink.Shrink(sc, r.System, r.Seed, r.Options(), shrink.Config{})
			if err != nil {
				return nil, err
			}
			return res.Outcome, nil
		}
	}
	if err := report.WriteCampaign(rep.dir, cfg, sum, ropts); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "report: %s\n", filepath.Join(rep.dir, "index.html"))
	return nil
}

// errMissingShards: a merge lacked shards, and nothing else decided it.
var errMissingShards = errors.New("shards missing from the merge: their seeds were not judged; not a pass")

// verdictErr is the exit of a campaign or merge from its file: 1 for a
// pipeline violation, 2 for runs not judged, 0 when it held.
func verdictErr(cmd string, f *results.File) error {
	if f.Verdict == results.Violated {
		return errViolation
	}
	if f.Verdict != results.Unjudged {
		return nil
	}
	if errs := f.Errors(); len(errs) > 0 {
		fmt.Fprintf(stderr, "lockstep %s: %d runs could not complete (harness errors); first: %s\n", cmd, len(errs), oneLine(errs[0].Error))
		return errHarness
	}
	if len(f.RunsWhere(scenarios.Pipeline, results.Refused)) > 0 {
		return errRefused
	}
	if len(f.RunsWhere(scenarios.Pipeline, results.Inconclusive)) > 0 {
		return errInconclusive
	}
	return errMissingShards
}

var mergeCmd = &command{
	name:  "merge",
	usage: "[--json FILE] [--junit FILE] [--report DIR] SHARD.json...",
	short: "combine the JSON files of a campaign's shards into one table, JSON, JUnit and report",
	long: `Merge reads the --json files of a campaign's shards (campaign --shard i/N,
the other flags the same) and prints the whole campaign's table; --json,
--junit and --report write its files as campaign would. For a simulated
campaign the merged JSON is the unsharded campaign's, apart from timing.
Shards that are missing are named, and the verdict is then not a pass.
It exits like campaign: 1 if a pipeline run violated a claimed property, 2
if runs were not judged (errors, inconclusive, refused, missing shards) or
the files are not the shards of one campaign, 0 otherwise.`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		jsonOut := fs.String("json", "", "write the merged campaign as JSON to this `FILE`")
		junitOut := fs.String("junit", "", "write the merged campaign as JUnit XML to this `FILE`")
		reportDir := fs.String("report", "", "write the merged campaign's HTML index and failing runs' reports into this `DIR` (simulator only)")
		reportRuns := positiveFlag(fs, "report-runs", 5, "`N` failing runs of each scenario and system get a report in --report's DIR")
		return func(args []string) error {
			if len(args) == 0 {
				return usagef("want the shards' JSON files, e.g. lockstep merge shard-*.json")
			}
			var files []*results.File
			for _, a := range args {
				f, err := results.Read(a)
				if err != nil {
					return usagef("%v", err)
				}
				files = append(files, f)
			}
			m, err := results.Merge(files)
			if err != nil {
				return usagef("%v", err)
			}
			outs := campaignOutputs{json: *jsonOut, junit: *junitOut, report: campaignReport{dir: *reportDir, perCell: *reportRuns}}
			if outs.report.dir != "" && m.World != results.WorldSim {
				return usagef("--report needs a simulated campaign (its runs are replayed)")
			}
			if err := outs.check(); err != nil {
				return err
			}
			if err := m.WriteTable(stdout); err != nil {
				return err
			}
			if err := outs.write(m); err != nil {
				return err
			}
			if outs.report.dir != "" {
				sum, cfg, err := m.Summary()
				if err != nil {
					return usagef("%v", err)
				}
				if err := writeCampaignReport(outs.report, cfg, sum, false); err != nil {
					return err
				}
			}
			return verdictErr("merge", m)
		}
	},
}
