// Package results is a campaign's outcome in one versioned form for both
// worlds, the simulator's and the containers': every run with its repro
// token, trace hash, fault plan, anomalies and witnesses, tallied per
// scenario and system. The CLI prints its table, writes it as JSON
// (schema lockstep.campaign/v1, docs/campaign-json.md) and as JUnit XML,
// and merges the files of a campaign's shards back into the campaign's.
//
// Everything under a "timing" key (and File.Timing) is wall-clock
// measurement; the rest of a simulated campaign's file is reproducible
// from its config, run for run and hash for hash.
package results

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"lockstep/checker"
	"lockstep/scenarios"
)

// Schema names this version of the file's form. A reader refuses another.
const Schema = "lockstep.campaign/v1"

// Worlds.
const (
	WorldSim        = "sim"
	WorldContainers = scenarios.WorldContainers
)

// Verdicts of a run and of a whole file.
const (
	Held         = "held"         // no claimed property violated
	Violated     = "violated"     // a claimed property violated (a pipeline or 2pc run: exit 1)
	Inconclusive = "inconclusive" // a check of a claimed property did not finish: not a pass
	Refused      = "refused"      // the pipeline stopped on input it cannot capture: not a pass
	Error        = "error"        // the run could not complete: a harness error, not judged
	// Unjudged is a file's verdict when no pipeline run violated a claim
	// but some were not judged (inconclusive, refused, errors, shards
	// missing from a merge): exit 2.
	Unjudged = "unjudged"
)

// MaxWitnesses is how many claimed violations a run keeps, with their
// witnesses (the first ones in the checker's order).
const MaxWitnesses = 3

// File is a campaign's (or a shard's, or merged shards') outcome.
type File struct {
	Schema string `json:"schema"`
	World  string `json:"world"`
	Config Config `json:"config"`
	// Verdict is Held, Violated or Unjudged, judged on the runs of the
	// systems that promise their claims only (the pipeline's and 2PC's,
	// scenarios.System.Promises: dual writes failing is the expected
	// finding); ExitCode is the
	// CLI's for it: 0, 1, 2.
	Verdict  string  `json:"verdict"`
	ExitCode int     `json:"exit_code"`
	Runs     int     `json:"runs"`
	Cells    []*Cell `json:"cells"`
	// MissingShards lists the shards a merge did not get (their seeds were
	// not run, so the merged verdict is at best Unjudged).
	MissingShards []int  `json:"missing_shards,omitempty"`
	Timing        Timing `json:"timing"`
}

// Config is what the campaign was asked to run.
type Config struct {
	Scenarios []string           `json:"scenarios"`
	Systems   []scenarios.System `json:"systems"`
	FirstSeed uint64             `json:"first_seed"`
	// Seeds per scenario and system; 0 when only Duration bounded it.
	Seeds int `json:"seeds"`
	// Duration, a Go duration ("20m"), when the campaign was bounded by time.
	Duration string `json:"duration,omitempty"`
	// Shard is "i/N" for one shard's file, "" for a whole campaign.
	Shard string `json:"shard,omitempty"`
	// Txns is --txns, 0 for each world's default.
	Txns int `json:"txns,omitempty"`
}

// Timing is wall-clock measurement: it differs from one run of the same
// campaign to the next.
type Timing struct {
	Started string `json:"started,omitempty"` // RFC 3339, UTC
	WallNS  int64  `json:"wall_ns"`
	// Parallel is the runs at a time (summed over merged shards).
	Parallel int `json:"parallel"`
	// StoppedByDuration: the campaign ended because its Duration passed.
	StoppedByDuration bool `json:"stopped_by_duration,omitempty"`
}

// Cell is the tally of one scenario and system, and its runs.
type Cell struct {
	Scenario     string                `json:"scenario"`
	System       scenarios.System      `json:"system"`
	Seeds        int                   `json:"seeds"` // runs judged (errors not counted)
	Violating    int                   `json:"seeds_violating"`
	Inconclusive int                   `json:"seeds_inconclusive"`
	Refused      int                   `json:"seeds_refused"`
	Errors       int                   `json:"errors"`
	Anomalies    map[checker.Class]int `json:"anomalies_by_class"`
	// Unclaimed counts the anomalies of Anomalies that broke no property
	// their store claims.
	Unclaimed map[checker.Class]int `json:"unclaimed_by_class"`
	// FailingSeeds are the violating runs' seeds, in numeric order.
	FailingSeeds []uint64 `json:"failing_seeds"`
	// Runs are every run of the cell, by seed.
	Runs   []Run      `json:"runs"`
	Timing CellTiming `json:"timing"`
	// Metrics are what the system cost the application, over the runs
	// that have them (simulated runs; scenarios.CellMetrics).
	Metrics *scenarios.CellMetrics `json:"metrics,omitempty"`
}

// CellTiming is a cell's speed.
type CellTiming struct {
	// SeedsPerSecond is runs per wall second of one worker.
	SeedsPerSecond float64 `json:"seeds_per_second"`
}

// Run is one run.
type Run struct {
	Seed    uint64 `json:"seed"`
	Token   string `json:"token"`   // the repro token: lockstep repro TOKEN replays it
	Verdict string `json:"verdict"` // Held, Violated, Inconclusive, Refused or Error
	// Hash is the simulated run's trace hash (16 hex digits); a
	// container run has none.
	Hash string `json:"trace_hash,omitempty"`
	// Plan is the fault plan as text (faults.Parse reads it back).
	Plan      string                `json:"plan,omitempty"`
	Anomalies map[checker.Class]int `json:"anomalies_by_class,omitempty"`
	Unclaimed map[checker.Class]int `json:"unclaimed_by_class,omitempty"`
	// Violations are the first MaxWitnesses claimed violations, each as
	// the checker words it with its witness.
	Violations []string `json:"violations,omitempty"`
	Stopped    string   `json:"stopped,omitempty"` // why a Refused run's pipeline stopped
	Error      string   `json:"error,omitempty"`   // why an Error run could not complete
	// LogDir is where a container run's logs were kept, if they were.
	LogDir string    `json:"log_dir,omitempty"`
	Timing RunTiming `json:"timing"`
	// Metrics are what the run cost the application (simulated runs;
	// scenarios.Metrics).
	Metrics *scenarios.Metrics `json:"metrics,omitempty"`
}

// RunTiming is a run's wall time and, simulated, its virtual time and the
// wall time of its event loop alone.
type RunTiming struct {
	WallNS    int64 `json:"wall_ns"`
	VirtualNS int64 `json:"virtual_ns,omitempty"`
	SimNS     int64 `json:"simulation_ns,omitempty"`
}

// New is an empty file for a campaign: one cell per scenario and system,
// in the order given.
func New(world string, cfg Config) *File {
	f := &File{Schema: Schema, World: world, Config: cfg}
	for _, sc := range cfg.Scenarios {
		for _, sys := range cfg.Systems {
			f.Cells = append(f.Cells, newCell(sc, sys))
		}
	}
	return f
}

func newCell(scenario string, sys scenarios.System) *Cell {
	return &Cell{Scenario: scenario, System: sys, Anomalies: map[checker.Class]int{}, Unclaimed: map[checker.Class]int{},
		FailingSeeds: []uint64{}, Runs: []Run{}}
}

// Cell is the cell of a scenario and system, or nil.
func (f *File) Cell(scenario string, sys scenarios.System) *Cell {
	for _, c := range f.Cells {
		if c.Scenario == scenario && c.System == sys {
			return c
		}
	}
	return nil
}

// Add files a run under its scenario and system (a cell of its own if the
// config did not name them). Finish tallies.
func (f *File) Add(scenario string, sys scenarios.System, r Run) {
	c := f.Cell(scenario, sys)
	if c == nil {
		c = newCell(scenario, sys)
		f.Cells = append(f.Cells, c)
	}
	c.Runs = append(c.Runs, r)
}

// Judged is a run the checker judged: its verdict, anomaly counts and
// first violations. stopped is why the pipeline refused its input, if it
// did.
func Judged(token, plan string, rep *checker.Report, stopped string) Run {
	r := Run{Token: token, Plan: plan, Stopped: stopped, Verdict: Held}
	if t, err := scenarios.ParseRepro(token); err == nil {
		r.Seed = t.Seed
	}
	for class, n := range rep.Counts {
		if n > 0 {
			if r.Anomalies == nil {
				r.Anomalies = map[checker.Class]int{}
			}
			r.Anomalies[class] += n
		}
	}
	for _, a := range rep.Anomalies {
		if !a.Violation {
			if r.Unclaimed == nil {
				r.Unclaimed = map[checker.Class]int{}
			}
			r.Unclaimed[a.Class]++
		} else if len(r.Violations) < MaxWitnesses {
			r.Violations = append(r.Violations, a.String())
		}
	}
	switch {
	case !rep.OK():
		r.Verdict = Violated
	case stopped != "":
		r.Verdict = Refused
	case rep.Verdict == checker.Inconclusive:
		r.Verdict = Inconclusive
	}
	return r
}

// FromOutcome is a simulated run.
func FromOutcome(o *scenarios.Outcome) Run {
	r := Judged(o.Token().String(), o.Plan.String(), o.Report, o.Stopped)
	r.Hash = fmt.Sprintf("%016x", o.Hash)
	r.Timing = RunTiming{WallNS: int64(o.Wall), VirtualNS: int64(o.Virtual), SimNS: int64(o.SimWall)}
	m := o.Metrics
	r.Metrics = &m
	return r
}

// Failed is a run that could not complete.
func Failed(token scenarios.Repro, err error, wall time.Duration) Run {
	return Run{Seed: token.Seed, Token: token.String(), Verdict: Error, Error: err.Error(), Timing: RunTiming{WallNS: int64(wall)}}
}

// Finish sorts every cell's runs by seed and tallies the cells, the run
// count and the verdict from the runs.
func (f *File) Finish() {
	f.Runs = 0
	for _, c := range f.Cells {
		slices.SortStableFunc(c.Runs, func(a, b Run) int { return cmp.Compare(a.Seed, b.Seed) })
		c.Seeds, c.Violating, c.Inconclusive, c.Refused, c.Errors = 0, 0, 0, 0, 0
		c.Anomalies, c.Unclaimed, c.FailingSeeds = map[checker.Class]int{}, map[checker.Class]int{}, []uint64{}
		var wall time.Duration
		c.Metrics = nil
		for _, r := range c.Runs {
			f.Runs++
			if r.Verdict == Error {
				c.Errors++
				continue
			}
			c.Seeds++
			if r.Metrics != nil {
				if c.Metrics == nil {
					c.Metrics = &scenarios.CellMetrics{}
				}
				c.Metrics.Add(*r.Metrics)
			}
			wall += time.Duration(r.Timing.WallNS)
			for class, n := range r.Anomalies {
				c.Anomalies[class] += n
			}
			for class, n := range r.Unclaimed {
				c.Unclaimed[class] += n
			}
			switch r.Verdict {
			case Violated:
				c.Violating++
				c.FailingSeeds = append(c.FailingSeeds, r.Seed)
			case Inconclusive:
				c.Inconclusive++
			case Refused:
				c.Refused++
			}
		}
		if c.Metrics != nil {
			c.Metrics.Finish()
		}
		c.Timing.SeedsPerSecond = 0
		if wall > 0 {
			c.Timing.SeedsPerSecond = float64(c.Seeds) / wall.Seconds()
		}
	}
	violated, unjudged := false, len(f.MissingShards) > 0
	for _, c := range f.Cells {
		unjudged = unjudged || c.Errors > 0 // either system's: the harness failed
		if c.System.Promises() {
			violated = violated || c.Violating > 0
			unjudged = unjudged || c.Inconclusive > 0 || c.Refused > 0
		}
	}
	switch {
	case violated:
		f.Verdict, f.ExitCode = Violated, 1
	case unjudged:
		f.Verdict, f.ExitCode = Unjudged, 2
	default:
		f.Verdict, f.ExitCode = Held, 0
	}
}

// RunsWhere lists the runs of one system with one verdict, cell by cell.
func (f *File) RunsWhere(sys scenarios.System, verdict string) []Run {
	var out []Run
	for _, c := range f.Cells {
		if c.System != sys {
			continue
		}
		for _, r := range c.Runs {
			if r.Verdict == verdict {
				out = append(out, r)
			}
		}
	}
	return out
}

// Errors lists every run that could not complete, either system.
func (f *File) Errors() []Run {
	var out []Run
	for _, c := range f.Cells {
		for _, r := range c.Runs {
			if r.Verdict == Error {
				out = append(out, r)
			}
		}
	}
	return out
}

// Write writes the file as indented JSON.
func (f *File) Write(path string) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Read reads a file that Write wrote, refusing another schema.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var head struct {
		Schema string `json:"schema"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("%s: not campaign JSON: %w", path, err)
	}
	if head.Schema != Schema {
		return nil, fmt.Errorf("%s: schema %q, want %q (written by lockstep campaign --json)", path, head.Schema, Schema)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

// Summary is the file as a simulated campaign's Summary and config, for
// what takes those (the HTML index, report.WriteCampaign). Every scenario
// must be one the simulator knows.
func (f *File) Summary() (*scenarios.Summary, scenarios.CampaignConfig, error) {
	cfg := scenarios.CampaignConfig{Systems: f.Config.Systems, Seeds: f.Config.Seeds, FirstSeed: f.Config.FirstSeed,
		Parallel: f.Timing.Parallel, Options: scenarios.Options{Txns: f.Config.Txns}}
	for _, name := range f.scenarioNames() {
		sc, err := scenarios.Resolve(name)
		if err != nil {
			return nil, cfg, err
		}
		cfg.Scenarios = append(cfg.Scenarios, sc)
	}
	sum := &scenarios.Summary{Wall: time.Duration(f.Timing.WallNS), Parallel: f.Timing.Parallel}
	var runWall, virtual, simWall time.Duration
	for _, c := range f.Cells {
		sc := &scenarios.Cell{Scenario: c.Scenario, System: c.System, Seeds: c.Seeds, Violating: c.Violating,
			Anomalies: c.Anomalies, Unclaimed: c.Unclaimed, SeedsPerSecond: c.Timing.SeedsPerSecond,
			Inconcl: c.Inconclusive, Refused: c.Refused}
		if c.Metrics != nil {
			sc.Metrics = *c.Metrics
		}
		for _, r := range c.Runs {
			switch r.Verdict {
			case Violated:
				sc.Failing = append(sc.Failing, r.Token)
			case Inconclusive:
				sc.Inconclusive = append(sc.Inconclusive, r.Token)
			case Refused:
				sc.RefusedRuns = append(sc.RefusedRuns, r.Token)
				if sc.Stopped == "" {
					sc.Stopped = r.Stopped
				}
			case Error:
				sum.Errors = append(sum.Errors, r.Error)
				continue
			}
			runWall += time.Duration(r.Timing.WallNS)
			virtual += time.Duration(r.Timing.VirtualNS)
			simWall += time.Duration(r.Timing.SimNS)
		}
		sum.Runs += c.Seeds
		sum.Cells = append(sum.Cells, sc)
	}
	if runWall > 0 {
		sum.Speedup = float64(virtual) / float64(runWall)
	}
	if simWall > 0 {
		sum.SimSpeedup = float64(virtual) / float64(simWall)
	}
	return sum, cfg, nil
}
