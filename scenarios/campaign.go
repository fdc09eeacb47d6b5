package scenarios

import (
	"cmp"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"lockstep/checker"
)

// CampaignConfig is a batch of simulated runs.
type CampaignConfig struct {
	Scenarios []*Scenario
	Systems   []System
	// Seeds is the seeds per scenario and system; 0 with a Duration: no
	// limit but the time.
	Seeds     int
	FirstSeed uint64 // seeds are FirstSeed, FirstSeed+1, ...
	Parallel  int    // worker goroutines (default GOMAXPROCS)
	Options   Options
	// Duration, when set, stops starting runs once this much wall time has
	// passed (the runs under way finish and count). With Seeds too, the
	// campaign ends with whichever comes first.
	Duration time.Duration
	// Shard, when set, runs only its share of the seeds (see Shard).
	Shard Shard
	// Progress, when set, is called after each run with the count done
	// and the total (0 when only the Duration bounds the campaign).
	Progress func(done, total int, last *Outcome)
	// Each, when set, is called after each run with what ran and its
	// outcome or error, one call at a time.
	Each func(run CampaignRun, out *Outcome, err error)
}

// CampaignRun is one run of a campaign: a scenario, a system and a seed.
type CampaignRun struct {
	Scenario *Scenario
	System   System
	Seed     uint64
}

// Shard is one of Count disjoint shares of a campaign's seeds: seed s is
// in shard Index (1-based) when (s-FirstSeed) mod Count == Index-1. The
// shards' union is the whole campaign, so N machines can each run one and
// their results merge into the unsharded campaign's. The zero Shard is
// the whole campaign.
type Shard struct {
	Index int `json:"index"`
	Count int `json:"count"`
}

// ParseShard reads "i/N" (1 <= i <= N).
func ParseShard(s string) (Shard, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 1 || i > n {
		return Shard{}, fmt.Errorf("malformed shard %q: want i/N with 1 <= i <= N, e.g. 2/8", s)
	}
	return Shard{Index: i, Count: n}, nil
}

// String is "i/N", or "" for the whole campaign.
func (s Shard) String() string {
	if s.Count == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%d", s.Index, s.Count)
}

// Has reports whether seed index i (the seed minus the first seed) is in
// the shard.
func (s Shard) Has(i uint64) bool {
	return s.Count <= 1 || i%uint64(s.Count) == uint64(s.Index-1)
}

// stride and offset step through the shard's seed indices.
func (s Shard) stride() uint64 { return uint64(max(1, s.Count)) }
func (s Shard) offset() uint64 { return uint64(max(0, s.Index-1)) }

// Runs lists a campaign's runs in the order they start: seed by seed (so
// a campaign cut short by its Duration has run the lowest seeds of every
// scenario), within a seed scenario by scenario and system by system. A
// scenario with SeedEvery (long-haul) gets its k-th seed once the others
// reach seed index k*SeedEvery, unless it is the only kind of scenario
// asked for: then it runs every seed as the others do. The sequence is
// endless when Seeds is 0 and a Duration is set (Campaign stops it).
func (cfg CampaignConfig) Runs() iter.Seq[CampaignRun] {
	return func(yield func(CampaignRun) bool) {
		var regular, long []*Scenario
		for _, sc := range cfg.Scenarios {
			if sc.SeedEvery > 1 {
				long = append(long, sc)
			} else {
				regular = append(regular, sc)
			}
		}
		if len(regular) == 0 {
			regular, long = long, nil
		}
		// Without a Duration, Seeds bounds the campaign even at 0 (no run).
		bounded := cfg.Seeds > 0 || cfg.Duration <= 0
		stride, off := cfg.Shard.stride(), cfg.Shard.offset()
		nextLong := make([]uint64, len(long)) // per long scenario, its next seed index
		for k := range nextLong {
			nextLong[k] = off
		}
		emit := func(sc *Scenario, i uint64) bool {
			for _, sys := range cfg.Systems {
				if !yield(CampaignRun{sc, sys, cfg.FirstSeed + i}) {
					return false
				}
			}
			return true
		}
		// dueLong runs the long scenarios' seeds due by seed index upTo
		// (all of them that the campaign has, when upTo is nil).
		dueLong := func(upTo *uint64) bool {
			for k, sc := range long {
				for {
					j := nextLong[k]
					if bounded && j >= uint64(sc.CampaignSeeds(cfg.Seeds)) || upTo != nil && j*uint64(sc.SeedEvery) > *upTo {
						break
					}
					if !emit(sc, j) {
						return false
					}
					nextLong[k] += stride
				}
			}
			return true
		}
		for i := off; !bounded || i < uint64(cfg.Seeds); i += stride {
			if !dueLong(&i) {
				return
			}
			for _, sc := range regular {
				if !emit(sc, i) {
					return
				}
			}
		}
		dueLong(nil)
	}
}

// Total is how many runs the campaign has, or 0 when only its Duration
// bounds it.
func (cfg CampaignConfig) Total() int {
	if cfg.Seeds <= 0 {
		return 0
	}
	n := 0
	for range cfg.Runs() {
		n++
	}
	return n
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

// Campaign runs the campaign's runs (Runs), in parallel, and tallies the
// outcomes. Results do not depend on the parallelism: each run is its own
// deterministic world. With a Duration, no run starts once it has passed.
func Campaign(cfg CampaignConfig) *Summary {
	if cfg.Parallel <= 0 {
		cfg.Parallel = runtime.GOMAXPROCS(0)
	}
	sum := &Summary{Parallel: cfg.Parallel}
	cells := map[cellKey]*Cell{}
	for _, sc := range cfg.Scenarios {
		for _, sys := range cfg.Systems {
			cell := &Cell{Scenario: sc.Name, System: sys, Anomalies: map[checker.Class]int{}, Unclaimed: map[checker.Class]int{}}
			sum.Cells = append(sum.Cells, cell)
			cells[cellKey{sc.Name, sys}] = cell
		}
	}
	total := cfg.Total()
	start := time.Now()
	var mu sync.Mutex
	done := 0
	next := make(chan CampaignRun)
	var wg sync.WaitGroup
	for w := 0; w < cfg.Parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				out, err := Run(j.Scenario, j.System, j.Seed, cfg.Options)
				mu.Lock()
				done++
				if err != nil {
					sum.Errors = append(sum.Errors, err.Error())
					out = nil
				} else {
					tally(cells[cellKey{j.Scenario.Name, j.System}], out)
				}
				if cfg.Each != nil {
					cfg.Each(j, out, err)
				}
				if cfg.Progress != nil {
					cfg.Progress(done, total, out)
				}
				mu.Unlock()
			}
		}()
	}
	for j := range cfg.Runs() {
		if cfg.Duration > 0 && time.Since(start) >= cfg.Duration {
			break
		}
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
		SortTokens(c.Failing)
		SortTokens(c.Inconclusive)
		SortTokens(c.RefusedRuns)
		c.Metrics.Finish()
	}
	if wall > 0 {
		sum.Speedup = float64(virtual) / float64(wall)
	}
	if simWall > 0 {
		sum.SimSpeedup = float64(virtual) / float64(simWall)
	}
	SortTokens(sum.Errors)
	return sum
}

type cellKey struct {
	scenario string
	system   System
}

// SortTokens sorts repro tokens (or lines that start with one) by
// scenario, system and then seed as a number, so seed 10 comes after
// seed 9; what does not parse sorts as text, last.
func SortTokens(tokens []string) {
	slices.SortStableFunc(tokens, func(a, b string) int {
		ra, ea := ParseRepro(firstField(a))
		rb, eb := ParseRepro(firstField(b))
		switch {
		case ea != nil || eb != nil:
			return cmp.Or(cmp.Compare(boolInt(ea != nil), boolInt(eb != nil)), strings.Compare(a, b))
		}
		return cmp.Or(strings.Compare(ra.Scenario, rb.Scenario), strings.Compare(string(ra.System), string(rb.System)),
			cmp.Compare(ra.Seed, rb.Seed), strings.Compare(a, b))
	})
}

func firstField(s string) string {
	tok, _, _ := strings.Cut(s, ": ")
	return tok
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func tally(c *Cell, o *Outcome) {
	c.Seeds++
	c.wall += o.Wall
	c.simWall += o.SimWall
	c.virtual += o.Virtual
	c.Metrics.Add(o.Metrics)
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
