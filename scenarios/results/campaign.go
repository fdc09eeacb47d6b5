package results

import (
	"sync"
	"time"

	"lockstep/scenarios"
)

// ConfigOf is a simulated campaign's config as the file records it.
func ConfigOf(cfg scenarios.CampaignConfig) Config {
	c := Config{Systems: cfg.Systems, FirstSeed: cfg.FirstSeed, Seeds: cfg.Seeds, Shard: cfg.Shard.String(), Txns: cfg.Options.Txns}
	for _, sc := range cfg.Scenarios {
		c.Scenarios = append(c.Scenarios, sc.Name)
	}
	if cfg.Duration > 0 {
		c.Duration = cfg.Duration.String()
	}
	return c
}

// RunCampaign runs a simulated campaign (scenarios.Campaign, with cfg's
// own Each still called) and returns its file and summary.
func RunCampaign(cfg scenarios.CampaignConfig) (*File, *scenarios.Summary) {
	f := New(WorldSim, ConfigOf(cfg))
	started := time.Now()
	f.Timing.Started = started.UTC().Format(time.RFC3339)
	var mu sync.Mutex
	each := cfg.Each
	cfg.Each = func(r scenarios.CampaignRun, out *scenarios.Outcome, err error) {
		mu.Lock()
		if err != nil {
			tok := scenarios.Repro{Scenario: r.Scenario.Name, System: r.System, Seed: r.Seed, Txns: cfg.Options.Txns}
			f.Add(r.Scenario.Name, r.System, Failed(tok, err, 0))
		} else {
			f.Add(r.Scenario.Name, r.System, FromOutcome(out))
		}
		mu.Unlock()
		if each != nil {
			each(r, out, err)
		}
	}
	sum := scenarios.Campaign(cfg)
	f.Timing.WallNS = int64(sum.Wall)
	f.Timing.Parallel = sum.Parallel
	f.Finish()
	f.Timing.StoppedByDuration = cfg.Duration > 0 && (cfg.Seeds <= 0 || f.Runs < cfg.Total())
	return f, sum
}
