package scenarios

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

func mustScenarios(t *testing.T, names string) []*Scenario {
	t.Helper()
	scs, err := Lookup(names)
	if err != nil {
		t.Fatal(err)
	}
	return scs
}

func runKeys(cfg CampaignConfig) []string {
	var keys []string
	for r := range cfg.Runs() {
		keys = append(keys, fmt.Sprintf("%s/%s/%d", r.Scenario.Name, r.System, r.Seed))
	}
	return keys
}

// The shards of a campaign are disjoint, each holds only seeds s with
// (s-first) mod N == i-1, and together they are the campaign, long-haul's
// one seed in fifty included.
func TestShardsPartitionTheCampaign(t *testing.T) {
	for _, c := range []struct {
		names string
		seeds int
		n     int
	}{{"all", 120, 8}, {"all", 7, 3}, {"steady,long-haul", 101, 4}, {"long-haul", 5, 2}} {
		cfg := CampaignConfig{Scenarios: mustScenarios(t, c.names), Systems: Systems, Seeds: c.seeds, FirstSeed: 5}
		whole := runKeys(cfg)
		if len(whole) != cfg.Total() {
			t.Fatalf("%s: Total %d, Runs %d", c.names, cfg.Total(), len(whole))
		}
		seen := map[string]int{}
		for i := 1; i <= c.n; i++ {
			sh := cfg
			sh.Shard = Shard{Index: i, Count: c.n}
			for r := range sh.Runs() {
				if (r.Seed-cfg.FirstSeed)%uint64(c.n) != uint64(i-1) {
					t.Errorf("%s shard %d/%d has seed %d", c.names, i, c.n, r.Seed)
				}
			}
			for _, k := range runKeys(sh) {
				seen[k]++
			}
		}
		if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, slices.Sorted(slices.Values(whole))) {
			t.Errorf("%s: union of %d shards has %d runs, the campaign %d", c.names, c.n, len(got), len(whole))
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("%s: run %s in %d shards", c.names, k, n)
			}
		}
	}
}

// Runs go seed by seed, so a campaign cut short has run the lowest seeds
// of every scenario; long-haul gets one seed in fifty (seeds 1 to 3 of
// 101), or every seed when it is named alone.
func TestCampaignRunsSeedBySeed(t *testing.T) {
	cfg := CampaignConfig{Scenarios: mustScenarios(t, "steady,long-haul,partitions"), Systems: []System{Pipeline}, Seeds: 101, FirstSeed: 1}
	keys := runKeys(cfg)
	if want := []string{"long-haul/pipeline/1", "steady/pipeline/1", "partitions/pipeline/1", "steady/pipeline/2"}; !slices.Equal(keys[:4], want) {
		t.Errorf("first runs %v, want %v", keys[:4], want)
	}
	var long []string
	for _, k := range keys {
		if k[:9] == "long-haul" {
			long = append(long, k)
		}
	}
	if want := []string{"long-haul/pipeline/1", "long-haul/pipeline/2", "long-haul/pipeline/3"}; !slices.Equal(long, want) {
		t.Errorf("long-haul runs %v, want %v", long, want)
	}
	alone := CampaignConfig{Scenarios: mustScenarios(t, "long-haul"), Systems: []System{Pipeline}, Seeds: 4, FirstSeed: 1}
	if n := alone.Total(); n != 4 {
		t.Errorf("long-haul named alone: %d runs of 4 seeds", n)
	}
	if n := len(runKeys(CampaignConfig{Scenarios: mustScenarios(t, "steady"), Systems: Systems})); n != 0 {
		t.Errorf("no seeds and no duration: %d runs, want none", n)
	}
	endless := CampaignConfig{Scenarios: mustScenarios(t, "steady"), Systems: Systems, Duration: time.Minute}
	n := 0
	for range endless.Runs() {
		if n++; n == 1000 {
			break
		}
	}
	if n != 1000 || endless.Total() != 0 {
		t.Errorf("a campaign without a seed limit should be endless (Total 0): got %d runs, Total %d", n, endless.Total())
	}
}

// ranRuns runs a campaign and returns every run's token and trace hash.
func ranRuns(t *testing.T, cfg CampaignConfig) map[string]uint64 {
	t.Helper()
	var mu sync.Mutex
	got := map[string]uint64{}
	cfg.Each = func(r CampaignRun, out *Outcome, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("%s/%s/%d: %v", r.Scenario.Name, r.System, r.Seed, err)
			return
		}
		got[out.Token().String()] = out.Hash
	}
	Campaign(cfg)
	return got
}

// Three shards run exactly the unsharded campaign's runs, with the same
// trace hashes.
func TestShardedCampaignEqualsUnsharded(t *testing.T) {
	cfg := CampaignConfig{Scenarios: mustScenarios(t, "crash-capture,partitions"), Systems: Systems, Seeds: 5, FirstSeed: 1,
		Parallel: 2, Options: Options{Txns: 30}}
	whole := ranRuns(t, cfg)
	if len(whole) != 20 {
		t.Fatalf("want 20 runs, got %d", len(whole))
	}
	union := map[string]uint64{}
	for i := 1; i <= 3; i++ {
		sh := cfg
		sh.Shard = Shard{Index: i, Count: 3}
		for tok, h := range ranRuns(t, sh) {
			if _, dup := union[tok]; dup {
				t.Errorf("%s ran in two shards", tok)
			}
			union[tok] = h
		}
	}
	if !maps.Equal(whole, union) {
		t.Errorf("shards' runs and hashes differ from the campaign's:\n%v\n%v", union, whole)
	}
}

// A campaign bounded by time alone ends, and what it ran is the first
// runs of its order: no seed skipped.
func TestCampaignDuration(t *testing.T) {
	cfg := CampaignConfig{Scenarios: mustScenarios(t, "steady,crash-capture"), Systems: Systems, FirstSeed: 1, Parallel: 2,
		Options: Options{Txns: 20}, Duration: 300 * time.Millisecond}
	got := ranRuns(t, cfg)
	if len(got) == 0 {
		t.Fatal("no run in 300ms")
	}
	var first []string
	for r := range cfg.Runs() {
		if len(first) == len(got) {
			break
		}
		first = append(first, reproOf(r.Scenario.Name, r.System, r.Seed, cfg.Options).String())
	}
	if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(slices.Values(first))) {
		t.Errorf("ran %v, want the first %d runs %v", slices.Sorted(maps.Keys(got)), len(got), first)
	}
	cfg.Seeds, cfg.Duration = 2, time.Hour
	if n := len(ranRuns(t, cfg)); n != 8 {
		t.Errorf("2 seeds within an hour: want 8 runs, got %d", n)
	}
}

func TestParseShard(t *testing.T) {
	if s, err := ParseShard("2/8"); err != nil || s != (Shard{2, 8}) || s.String() != "2/8" {
		t.Errorf("2/8: %v %v", s, err)
	}
	for _, bad := range []string{"0/8", "9/8", "1/0", "x/2", "2", "1/-1", ""} {
		if _, err := ParseShard(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSortTokensBySeedNumber(t *testing.T) {
	got := []string{"steady/pipeline/10", "steady/pipeline/9", "steady/pipeline/100,txns=5", "steady/dualwrite/2"}
	SortTokens(got)
	want := []string{"steady/dualwrite/2", "steady/pipeline/9", "steady/pipeline/10", "steady/pipeline/100,txns=5"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
