package faults

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// pipelineTopo is the full pipeline of the design notes.
var pipelineTopo = Topology{Nodes: []Node{
	{"db", RoleDB}, {"capture", RoleCapture},
	{"broker1", RoleBroker}, {"broker2", RoleBroker}, {"broker3", RoleBroker},
	{"applier-cache", RoleApplier}, {"cache", RoleStore},
	{"applier-search", RoleApplier}, {"search", RoleStore},
	{"app1", RoleApp}, {"observer", RoleObserver},
}}

func seeded(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x10c57e9)) }

func drawTopology(t *rapid.T) Topology {
	roles := []Role{RoleDB, RoleCapture, RoleApplier, RoleBroker, RoleStore, RoleApp, RoleObserver, "custom"}
	n := rapid.IntRange(0, 9).Draw(t, "nodes")
	var topo Topology
	for i := range n {
		topo.Nodes = append(topo.Nodes, Node{Name: fmt.Sprintf("n%d", i), Role: rapid.SampledFrom(roles).Draw(t, "role")})
	}
	if rapid.Bool().Draw(t, "explicit links") {
		topo.Links = []Link{} // possibly none: then delay and loss cannot be drawn
		for _, l := range topo.links() {
			if rapid.IntRange(0, 3).Draw(t, "keep link") == 0 {
				topo.Links = append(topo.Links, l)
			}
		}
	}
	return topo
}

func drawConfig(t *rapid.T) GenConfig {
	var cfg GenConfig
	if rapid.Bool().Draw(t, "explicit kinds") {
		cfg.Kinds = rapid.SliceOfDistinct(rapid.SampledFrom(Kinds), rapid.ID[Kind]).Draw(t, "kinds")
	}
	cfg.Unclean = rapid.Bool().Draw(t, "unclean")
	cfg.EveryKind = rapid.Bool().Draw(t, "every kind")
	ms := func(lo, hi int64, label string) time.Duration {
		return time.Duration(rapid.Int64Range(lo, hi).Draw(t, label)) * time.Millisecond
	}
	cfg.Quiet = ms(0, 60_000, "quiet")
	cfg.MeanInterval = ms(0, 3_000, "mean interval")
	if cfg.MeanInterval != 0 && cfg.Quiet/cfg.MeanInterval > 5000 {
		cfg.MeanInterval = cfg.Quiet / 5000 // keep a case under a few ms
	}
	cfg.MeanOutage = ms(0, 8_000, "mean outage")
	cfg.MaxDownBrokers = rapid.IntRange(-1, 3).Draw(t, "max down brokers")
	cfg.FailoverDowntime = ms(0, 10_000, "failover downtime")
	return cfg
}

// maxBrokersDown sweeps the plan and returns the most brokers down at once,
// independently of Check.
func maxBrokersDown(p Plan, topo Topology, cfg GenConfig) int {
	cfg = cfg.withDefaults()
	type edge struct {
		at    time.Duration
		delta int
	}
	var edges []edge
	brokers := topo.Brokers()
	for _, f := range p.Faults {
		switch {
		case (f.Kind == Crash || f.Kind == Pause) && slices.Contains(brokers, f.Node):
			edges = append(edges, edge{f.At, +1})
		case (f.Kind == Restart || f.Kind == Resume) && slices.Contains(brokers, f.Node):
			edges = append(edges, edge{f.At, -1})
		case f.Kind == LeaderFailover:
			edges = append(edges, edge{f.At, +1}, edge{f.At + cfg.FailoverDowntime, -1})
		}
	}
	// Ends before starts at the same instant: windows are [start, end).
	slices.SortStableFunc(edges, func(a, b edge) int {
		if a.at != b.at {
			return cmpDur(a.at, b.at)
		}
		return a.delta - b.delta
	})
	down, most := 0, 0
	for _, e := range edges {
		down += e.delta
		most = max(most, down)
	}
	return most
}

func TestGenerateWellFormed(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		topo := drawTopology(t)
		cfg := drawConfig(t)
		seed := rapid.Uint64().Draw(t, "seed")
		p := Generate(seeded(seed), topo, cfg)

		if err := p.Check(topo, cfg); err != nil {
			t.Fatalf("generated plan is not well-formed: %v\n%s", err, p)
		}
		full := cfg.withDefaults()
		if p.Quiet != full.Quiet {
			t.Fatalf("Quiet = %s, want %s", p.Quiet, full.Quiet)
		}
		for i, f := range p.Faults {
			if f.At%time.Millisecond != 0 || f.At <= 0 || f.At >= p.Quiet {
				t.Fatalf("fault %d (%s): want whole ms in (0, quiet)", i, f)
			}
			if i > 0 && f.At < p.Faults[i-1].At {
				t.Fatalf("fault %d (%s) is out of order", i, f)
			}
			// Likely enough that a producer's retries are all lost now
			// and then: the point of the fault is an append that fails.
			if (f.Kind == LostAck || f.Kind == LostAppend) && !(f.P >= 0.5 && f.P <= 1) {
				t.Fatalf("fault %d (%s): want a probability of 0.5 to 1", i, f)
			}
		}
		if got := maxBrokersDown(p, topo, cfg); got > full.MaxDownBrokers {
			t.Fatalf("%d brokers down at once, limit %d\n%s", got, full.MaxDownBrokers, p)
		}
		if s := p.InForce(); len(s.Crashed)+len(s.Paused) > 0 || s.Network {
			t.Fatalf("plan leaves %s in force at quiet\n%s", s, p)
		}
		possible := pool(topo, full)
		if len(possible) > 0 && len(p.Swarm) == 0 {
			t.Fatalf("empty swarm though %v are possible", possible)
		}
		for _, k := range p.Swarm {
			if !slices.Contains(possible, k) {
				t.Fatalf("swarm has %s, not among the possible %v", k, possible)
			}
		}
		if cfg.EveryKind && len(possible) > 0 && !slices.Equal(p.Swarm, possible) {
			t.Fatalf("EveryKind: swarm %v, want every possible kind %v", p.Swarm, possible)
		}
		q, err := Parse(p.String())
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("generated plan does not round-trip (%v):\n%s", err, p)
		}
		if again := Generate(seeded(seed), topo, cfg); !reflect.DeepEqual(p, again) {
			t.Fatalf("same seed, different plans:\n%s\n%s", p, again)
		}
	})
}

func TestGenerateDeterministic(t *testing.T) {
	cfg := GenConfig{Unclean: true}
	distinct := map[string]bool{}
	for seed := range uint64(50) {
		a := Generate(seeded(seed), pipelineTopo, cfg)
		b := Generate(seeded(seed), pipelineTopo, cfg)
		if !reflect.DeepEqual(a, b) || a.String() != b.String() {
			t.Fatalf("seed %d: two plans:\n%s\n%s", seed, a, b)
		}
		distinct[a.String()] = true
	}
	if len(distinct) < 45 {
		t.Errorf("only %d distinct plans from 50 seeds", len(distinct))
	}
	// A golden plan: changing the generator changes which plan a seed
	// reproduces, so do it on purpose (and update this).
	p := Generate(seeded(7), Topology{Nodes: []Node{{"a", RoleApp}, {"b", RoleBroker}}}, GenConfig{Quiet: 3 * time.Second})
	const golden = "swarm crash,pause,loss\n@22ms pause b\n@126ms loss a->b 0.07\n@138ms resume b\n@441ms crash b\n@543ms crash a\n@2.999s heal\n@2.999s restart b\n@2.999s restart a\nquiet @3s\n"
	if p.String() != golden {
		t.Errorf("seed 7 now gives:\n%s", p)
	}
}

func TestSwarmVariety(t *testing.T) {
	// Every kind, the opt-in ones too (DefaultKinds leaves them out).
	cfg := GenConfig{Unclean: true, Kinds: append(slices.Clone(DefaultKinds), SecondInstance, Retention, SlotDrop)}
	mixes := map[string]int{}
	seen := map[Kind]bool{}
	for seed := range uint64(200) {
		p := Generate(seeded(seed), pipelineTopo, cfg)
		mixes[p.Mix()]++
		for _, f := range p.Faults {
			seen[f.Kind] = true
		}
	}
	if len(mixes) < 2 {
		t.Fatalf("one mix for 200 seeds: %v", mixes)
	}
	for _, k := range Kinds {
		if !seen[k] {
			t.Errorf("no seed drew a %s fault", k)
		}
	}
	t.Logf("%d distinct mixes over 200 seeds", len(mixes))
}

func TestGenerateRespectsConfig(t *testing.T) {
	brokersOnly := Topology{Nodes: []Node{{"b1", RoleBroker}, {"b2", RoleBroker}, {"b3", RoleBroker}, {"obs", RoleObserver}}}
	for seed := range uint64(100) {
		// Unclean election only when asked for.
		p := Generate(seeded(seed), pipelineTopo, GenConfig{})
		if strings.Contains(p.String(), "unclean") {
			t.Fatalf("seed %d: unclean-election without Unclean:\n%s", seed, p)
		}
		// No broker may go down: only partitions, links and clocks.
		p = Generate(seeded(seed), brokersOnly, GenConfig{MaxDownBrokers: -1, MeanInterval: 100 * time.Millisecond})
		for _, f := range p.Faults {
			if f.Kind == Crash || f.Kind == Pause || f.Kind == LeaderFailover {
				t.Fatalf("seed %d: %s with MaxDownBrokers < 0", seed, f)
			}
		}
		// Two brokers down at once are allowed, and happen.
		p = Generate(seeded(seed), brokersOnly, GenConfig{Kinds: []Kind{Crash}, MaxDownBrokers: 2, MeanInterval: 100 * time.Millisecond})
		if err := p.Check(brokersOnly, GenConfig{Kinds: []Kind{Crash}, MaxDownBrokers: 2}); err != nil {
			t.Fatal(err)
		}
		if got := maxBrokersDown(p, brokersOnly, GenConfig{}); got != 2 {
			t.Fatalf("seed %d: at most %d brokers down, want 2 at some point:\n%s", seed, got, p)
		}
	}
	// A fault phase of a few milliseconds, crowded with arrivals: every
	// fault and its end still fit before Quiet.
	tiny := GenConfig{Unclean: true, Quiet: 8 * time.Millisecond, MeanInterval: time.Millisecond, MeanOutage: time.Millisecond, FailoverDowntime: 2 * time.Millisecond}
	for seed := range uint64(300) {
		p := Generate(seeded(seed), pipelineTopo, tiny)
		if err := p.Check(pipelineTopo, tiny); err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, p)
		}
	}
	// Nothing to fault: an empty plan.
	p := Generate(seeded(1), Topology{Nodes: []Node{{"obs", RoleObserver}}}, GenConfig{})
	if len(p.Faults) != 0 || p.Swarm != nil || p.Quiet != DefaultQuiet {
		t.Fatalf("plan for observers only:\n%s", p)
	}
}

func TestGeneratePanicsOnBadInput(t *testing.T) {
	for name, call := range map[string]func(){
		"unknown kind":   func() { Generate(seeded(1), pipelineTopo, GenConfig{Kinds: []Kind{"boom"}}) },
		"duplicate node": func() { Generate(seeded(1), Topology{Nodes: []Node{{"a", RoleApp}, {"a", RoleDB}}}, GenConfig{}) },
		"observer link": func() {
			Generate(seeded(1), Topology{Nodes: []Node{{"a", RoleApp}, {"o", RoleObserver}}, Links: []Link{{"a", "o"}}}, GenConfig{})
		},
	} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			call()
		}()
	}
}

func TestCheckCatchesBadPlans(t *testing.T) {
	topo := Topology{Nodes: []Node{{"a", RoleApp}, {"cap", RoleCapture}, {"b1", RoleBroker}, {"b2", RoleBroker}, {"obs", RoleObserver}}}
	cfg := GenConfig{Unclean: true}
	for _, tc := range []struct{ plan, want string }{
		{"@1s crash a\n@2s crash a\n@3s restart a\nquiet @9s", "a is already down"},
		{"@1s restart a\nquiet @9s", "a is not crashed"},
		{"@1s resume a\nquiet @9s", "a is not paused"},
		{"@1s crash a\nquiet @9s", "a is still crashed at quiet"},
		{"@1s pause a\nquiet @9s", "a is still paused at quiet"},
		{"@1s partition a | b1\nquiet @9s", "no heal"},
		{"@1s crash b1\n@2s pause b2\n@3s restart b1\n@4s resume b2\nquiet @9s", "2 brokers down at once"},
		{"@1s crash b1\n@2s leader-failover\n@3s restart b1\nquiet @9s", "2 brokers down at once"},
		{"@8s leader-failover\nquiet @9s", "runs past quiet"},
		{"@1s crash obs\n@2s restart obs\nquiet @9s", "obs is an observer"},
		{"@1s crash zz\n@2s restart zz\nquiet @9s", "unknown node zz"},
		{"@1s unclean-election\n@2s unclean-election\nquiet @9s", "unclean-election twice"},
		{"swarm crash\n@1s pause a\n@2s resume a\nquiet @9s", "not in the plan's swarm crash"},
		{"@1s lost-ack a 0.5\n@2s heal\nquiet @9s", "a is not a capture (its role is app)"},
		{"@1s lost-append b1 1\n@2s heal\nquiet @9s", "b1 is not a capture (its role is broker)"},
		{"@1s lost-append cap 1\nquiet @9s", "no heal"},
	} {
		p, err := Parse(tc.plan)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Check(topo, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%q) = %v, want %q", tc.plan, err, tc.want)
		}
	}
	p, _ := Parse("@1s unclean-election\nquiet @9s")
	if err := p.Check(topo, GenConfig{}); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("unclean-election without Unclean passed Check: %v", err)
	}
}

// A generated second-instance starts while its first instance looks dead:
// paused, or cut off from every other node, from 100ms to 1.5s before, and
// still so when the second starts; the first comes back later, a zombie.
// Each process gets at most one, and the plans pass Check.
func TestSecondInstanceWhileTheFirstIsOut(t *testing.T) {
	cfg := GenConfig{Kinds: []Kind{Pause, Partition, SecondInstance}, EveryKind: true}
	kinds := map[Kind]int{}
	for seed := range uint64(200) {
		p := Generate(seeded(seed), pipelineTopo, cfg)
		if err := p.Check(pipelineTopo, cfg); err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, p)
		}
		for i, f := range p.Faults {
			if f.Kind != SecondInstance {
				continue
			}
			// The fault that took the first out: a pause of it, or a
			// partition isolating it, 100ms to 1.5s before, that has not
			// ended when the second starts (another fault may have
			// isolated the node too).
			var took *Fault
			for j := i - 1; j >= 0 && took == nil; j-- {
				o := p.Faults[j]
				isolates := o.Kind == Partition && len(o.A) == 1 && o.A[0] == f.Node && len(o.B) == len(pipelineTopo.Faultable())-1
				if lag := f.At - o.At; lag < 100*time.Millisecond || lag > 1500*time.Millisecond || !(o.Kind == Pause && o.Node == f.Node || isolates) {
					continue
				}
				for _, g := range p.Faults[j+1:] {
					if o.Kind == Pause && g.Kind == Resume && g.Node == f.Node || o.Kind == Partition && g.Kind == Heal {
						if g.At > f.At {
							took = &p.Faults[j]
						}
						break
					}
				}
			}
			if took == nil {
				t.Fatalf("seed %d: %s without a pause or partition of its node 100ms to 1.5s before it, lasting past it:\n%s", seed, f, p)
			}
			o := *took
			kinds[o.Kind]++
		}
	}
	if kinds[Pause] == 0 || kinds[Partition] == 0 {
		t.Fatalf("the first instances were taken out by %v, want both pauses and partitions", kinds)
	}
	t.Logf("second instances after: %v", kinds)
}
