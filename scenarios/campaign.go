package scenarios

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"lockstep/checker"
)

// CampaignConfig is a batch of simulated runs.
type CampaignConfig struct {
	Scenarios []*Scenario
	Systems   []System
	Seeds     int    // seeds per scenario and system
	FirstSeed uint64 // seeds are FirstSeed, FirstSeed+1, ...
	Parallel  int    // worker goroutines (default GOMAXPROCS)
	Options   Options
	// Progress, when set, is called after each run with the count done.
	Progress func(done, total int, last *Outcome)
}

// Cell is the tally of one (scenario, system).
type Cell struct {
	Scenario  string                `json:"scenario"`
	System    System                `json:"system"`
	Seeds     int                   `json:"seeds"`
	Violating int                   `json:"seeds_violating"`
	Anomalies map[checker.Class]int `json:"anomalies_by_class"`
	// Unclaimed counts the anomalies of Anomalies that broke no property
	// their store claims.
	Unclaimed map[checker.Class]int `json:"unclaimed_by_class,omitempty"`
	// SeedsPerSecond is runs per wall second of one worker.
	SeedsPerSecond float64 `json:"seeds_per_second"`
	// Failing names every violating run by its repro token (Repro).
	Failing []string `json:"failing,omitempty"`
	Inconcl int      `json:"seeds_inconclusive"`
	// Refused counts the runs whose pipeline stopped on input it cannot
	// capture (Outcome.Stopped) without a violation before it; RefusedRuns
	// names them, and Stopped says why the first of them stopped.
	Refused     int      `json:"seeds_refused"`
	RefusedRuns []string `json:"refused,omitempty"`
	Stopped     string   `json:"stopped,omitempty"`
	// Inconclusive names every run whose verdict was inconclusive (not a
	// violation, not a pass).
	Inconclusive []string `json:"inconclusive,omitempty"`
	// Metrics are what the system cost the application (see Metrics).
	Metrics      CellMetrics `json:"metrics"`
	firstRefused uint64
	wall         time.Duration
	simWall      time.Duration
	virtual      time.Duration
	_            struct{}
}

// Summary is a campaign's result.
type Summary struct {
	Cells   []*Cell       `json:"cells"`
	Runs    int           `json:"runs"`
	Wall    time.Duration `json:"wall_ns"`
	Speedup float64       `json:"simulated_speedup"` // virtual time / worker wall time, checking included
	// SimSpeedup leaves out building the world and checking the history:
	// virtual time / time in the simulator's event loop.
	SimSpeedup float64  `json:"simulation_only_speedup"`
	Parallel   int      `json:"parallel"`
	Errors     []string `json:"errors,omitempty"`
}

// Cell returns the tally of a scenario and system, or nil.
func (s *Summary) Cell(scenario string, sys System) *Cell {
	for _, c := range s.Cells {
		if c.Scenario == scenario && c.System == sys {
			return c
		}
	}
	return nil
}

// PipelineViolations counts violating pipeline runs: the campaign's verdict.
func (s *Summary) PipelineViolations() int {
	return s.pipelineSum(func(c *Cell) int { return c.Violating })
}

// PipelineInconclusive counts pipeline runs whose verdict was inconclusive.
func (s *Summary) PipelineInconclusive() int {
	return s.pipelineSum(func(c *Cell) int { return c.Inconcl })
}

// PipelineRefused counts pipeline runs that stopped on input the pipeline
// cannot capture.
func (s *Summary) PipelineRefused() int { return s.pipelineSum(func(c *Cell) int { return c.Refused }) }

func (s *Summary) pipelineSum(count func(*Cell) int) int {
	n := 0
	for _, c := range s.Cells {
		if c.System == Pipeline {
			n += count(c)
		}
	}
	return n
}

// Campaign runs every seed of every scenario for every system, in parallel,
// and tallies the outcomes. Results do not depend on the parallelism: each
// run is its own deterministic world.
func Campaign(cfg CampaignConfig) *Summary {
	if cfg.Parallel <= 0 {
		cfg.Parallel = runtime.GOMAXPROCS(0)
	}
	type job struct {
		sc   *Scenario
		sys  System
		seed uint64
		cell *Cell
	}
	sum := &Summary{Parallel: cfg.Parallel}
	var jobs, long []job
	for _, sc := range cfg.Scenarios {
		for _, sys := range cfg.Systems {
			cell := &Cell{Scenario: sc.Name, System: sys, Anomalies: map[checker.Class]int{}, Unclaimed: map[checker.Class]int{}}
			sum.Cells = append(sum.Cells, cell)
			for i := 0; i < sc.CampaignSeeds(cfg.Seeds); i++ {
				j := job{sc, sys, cfg.FirstSeed + uint64(i), cell}
				if sc.SeedEvery > 1 {
					long = append(long, j)
				} else {
					jobs = append(jobs, j)
				}
			}
		}
	}
	// The long runs first, so that they do not end the campaign on one
	// worker while the others are idle.
	jobs = append(long, jobs...)
	start := time.Now()
	var mu sync.Mutex
	done := 0
	next := make(chan job)
	var wg sync.WaitGroup
	for w := 0; w < cfg.Parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				out, err := Run(j.sc, j.sys, j.seed, cfg.Options)
				mu.Lock()
				done++
				if err != nil {
					sum.Errors = append(sum.Errors, err.Error())
				} else {
					tally(j.cell, out)
				}
				if cfg.Progress != nil {
					cfg.Progress(done, len(jobs), out)
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	sum.Wall = time.Since(start)
	var wall, simWall, virtual time.Duration
	for _, c := range sum.Cells {
		sum.Runs += c.Seeds
		wall += c.wall
		simWall += c.simWall
		virtual += c.virtual
		if c.wall > 0 {
			c.SeedsPerSecond = float64(c.Seeds) / c.wall.Seconds()
		}
		sort.Strings(c.Failing)
		sort.Strings(c.Inconclusive)
		sort.Strings(c.RefusedRuns)
		c.Metrics.finish()
	}
	if wall > 0 {
		sum.Speedup = float64(virtual) / float64(wall)
	}
	if simWall > 0 {
		sum.SimSpeedup = float64(virtual) / float64(simWall)
	}
	sort.Strings(sum.Errors)
	return sum
}

func tally(c *Cell, o *Outcome) {
	c.Seeds++
	c.wall += o.Wall
	c.simWall += o.SimWall
	c.virtual += o.Virtual
	c.Metrics.add(o.Metrics)
	for class, n := range o.Report.Counts {
		c.Anomalies[class] += n
	}
	for _, a := range o.Report.Anomalies {
		if !a.Violation {
			c.Unclaimed[a.Class]++
		}
	}
	switch {
	case o.Violated():
		c.Violating++
		c.Failing = append(c.Failing, o.Token().String())
	case o.Refused():
		c.Refused++
		c.RefusedRuns = append(c.RefusedRuns, o.Token().String())
		if c.Stopped == "" || o.Seed < c.firstRefused {
			c.Stopped, c.firstRefused = o.Stopped, o.Seed
		}
	case o.Report.Verdict == checker.Inconclusive:
		c.Inconcl++
		c.Inconclusive = append(c.Inconclusive, o.Token().String())
	}
}

// String is a one-line description of a cell's violations.
func (c *Cell) String() string {
	if c.Seeds == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d (%.0f%%)", c.Violating, c.Seeds, 100*float64(c.Violating)/float64(c.Seeds))
}
