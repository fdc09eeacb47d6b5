// Package scenarios names what lockstep runs: a scenario is a topology, a
// workload, a fault mix and the guarantees each system claims. The runner
// builds a simulated world for a (scenario, system, seed), drives it through
// the fault phase and the quiet phase, records the History and has the
// checker judge it. Campaigns run many seeds over many scenarios in parallel.
package scenarios

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"lockstep/faults"
	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
)

// System is what a run puts under test.
type System string

const (
	// Pipeline is the log-based CDC pipeline.
	Pipeline System = "pipeline"
	// DualWrite is the naive baseline: clients write every store themselves.
	DualWrite System = "dualwrite"
	// TwoPC is distributed transactions: a coordinator commits each
	// transaction on the source, the replica and the search index with
	// two-phase commit, and writes the cache after the decision.
	TwoPC System = "2pc"
	// Debezium is Debezium's PostgreSQL connector on Kafka Connect as the
	// capture, its topics read back into transactions and applied by
	// lockstep's own appliers. Only the container world runs it.
	Debezium System = "debezium"
)

// Promises reports whether a run of the system fails (exit 1) when it
// violates a property it claims: the ordered log and two-phase commit are
// built to hold their claims, so a violation is a bug; Debezium claims only
// what its documentation promises, so a violation is a finding about it. Naive dual writes
// are the baseline expected to break theirs: what they break is the
// finding, shown and counted, never a failed run.
func (s System) Promises() bool { return s != DualWrite }

// Systems lists both, pipeline first.
var Systems = []System{Pipeline, DualWrite}

// AllSystems lists every system the simulator runs, in table order: dual
// writes, two-phase commit, the ordered log (the talk's order).
var AllSystems = []System{DualWrite, TwoPC, Pipeline}

// ParseSystem reads a system name.
func ParseSystem(s string) (System, error) {
	for _, x := range append(AllSystems, Debezium) {
		if string(x) == s {
			return x, nil
		}
	}
	return "", fmt.Errorf("unknown system %q (want pipeline, dualwrite, 2pc or debezium)", s)
}

// Scenario is one named test setup.
type Scenario struct {
	Name    string
	Summary string
	// Workload names the application workload (see package workload).
	Workload string
	// Kinds is the fault mix a seed may draw from (swarm: each seed enables
	// a random subset). Empty: no faults.
	Kinds []faults.Kind
	// Roles are the node roles faults may hit; others are left alone.
	Roles []faults.Role
	// Nodes, when set, limits faults to these node names.
	Nodes []string
	// Unclean lets the log elect an out-of-sync leader: acknowledged
	// records may be lost, which no pipeline survives. The pipeline claims
	// only no-phantom there; the checker must still notice the loss.
	Unclean bool
	// EveryKind has every seed draw from all of Kinds, instead of a random
	// subset (see faults.GenConfig.EveryKind).
	EveryKind bool
	// MaxDownBrokers is how many brokers faults may take down at once
	// (default 1, so two replicas stay in sync).
	MaxDownBrokers int
	// Bugs breaks the pipeline on purpose (mutation scenarios, for tests).
	Bugs pipeline.Bugs
	// TwoPCBugs breaks two-phase commit on purpose (the 2pc system's
	// --bug switches).
	TwoPCBugs twopc.Bugs
	// AddsTable, when set, is a table without a primary key that a
	// migration creates during the fault phase (at a time the seed draws);
	// from then on the application also writes a row to it in about one
	// transaction in four.
	AddsTable *pipeline.KeylessTable
	// QuietRestart names nodes that crash and restart once more after the
	// workload stopped and every store caught up: a loss in a quiet
	// period, when no new change comes to reveal it. The run is judged
	// after it.
	QuietRestart []string
	// Size is the scenario's own run size: the options a run leaves zero
	// take it (then the defaults of Options). A long run sets more
	// transactions, clients to commit them and a fault phase to hold
	// them; a repro token leaves them out, as it does the defaults.
	Size Options
	// SeedEvery, when more than 1, has a campaign run one seed of this
	// scenario for every SeedEvery seeds it runs of the others (at least
	// one): a run that costs as much as a hundred others would otherwise
	// take most of a campaign's time (see CampaignSeeds).
	SeedEvery int
	// LateFaults draws the seed's faults over the last quarter of the
	// fault phase only: they hit a pipeline with a long log behind it.
	LateFaults bool
	// StallSourceAtStart pauses the source database from the run's first
	// millisecond for 1.5 to 4.5 s (the seed draws it): the capture's
	// first snapshot requests time out and run late, in any order.
	StallSourceAtStart bool
}

// StallPlan is the plan of a StallSourceAtStart scenario: the source
// database (node db) paused from the first millisecond for 1.5 to 4.5 s,
// drawn from the seed; the same in both worlds.
func (s *Scenario) StallPlan(seed uint64, quiet time.Duration, db string) faults.Plan {
	rng := rand.New(rand.NewPCG(seed, 0x57a11))
	stall := 1500*time.Millisecond + time.Duration(rng.Int64N(int64(3*time.Second)))
	return faults.Plan{Quiet: quiet, Faults: []faults.Fault{
		{At: time.Millisecond, Kind: faults.Pause, Node: db},
		{At: time.Millisecond + stall, Kind: faults.Resume, Node: db},
	}}
}

// CampaignSeeds is how many seeds of the scenario a campaign of seeds
// seeds per scenario runs: seeds, or one for every SeedEvery of them.
func (s *Scenario) CampaignSeeds(seeds int) int {
	if s.SeedEvery <= 1 || seeds <= 0 {
		return seeds
	}
	return max(1, (seeds+s.SeedEvery-1)/s.SeedEvery)
}

// DrawPlan draws a seed's fault plan over topo for a fault phase of quiet,
// from rng: over the whole phase, or with LateFaults over its last quarter
// (the plan then still ends at quiet).
func (s *Scenario) DrawPlan(rng *rand.Rand, topo faults.Topology, quiet time.Duration) faults.Plan {
	return s.DrawPlanPaced(rng, topo, faults.GenConfig{Quiet: quiet})
}

// DrawPlanPaced is DrawPlan with the generator's pacing (mean interval,
// outage, failover downtime) from pace, whose Quiet is the fault phase's
// length; the kinds and limits are the scenario's. The container world
// paces its faults more slowly than the simulator.
func (s *Scenario) DrawPlanPaced(rng *rand.Rand, topo faults.Topology, pace faults.GenConfig) faults.Plan {
	quiet := pace.Quiet
	cfg := pace
	cfg.Kinds, cfg.Unclean, cfg.EveryKind, cfg.MaxDownBrokers = s.Kinds, s.Unclean, s.EveryKind, s.MaxDownBrokers
	if !s.LateFaults {
		return faults.Generate(rng, topo, cfg)
	}
	late := (quiet / 4).Round(time.Millisecond)
	cfg.Quiet = late
	p := faults.Generate(rng, topo, cfg)
	for i := range p.Faults {
		p.Faults[i].At += quiet - late
	}
	p.Quiet = quiet
	return p
}

// Claims is what a system claims of a store of the given kind in this
// scenario. Naive dual writes claim the same as the pipeline: the report
// shows how often they fail to hold it. Debezium claims what its
// documentation promises, for every store: at least once delivery (no
// loss, convergence once it catches up), a key's change events in order in
// its table's topic, and only committed values. Not exactly once (a
// restart sends again what it sent since its last flushed offset), and
// nothing about transactions across tables beyond the metadata topic:
// duplicates and torn reads, if they happen, are counted, not claimed.
func (s *Scenario) Claims(sys System, kind model.StoreKind) model.Claims {
	if sys == TwoPC {
		return twoPCClaims(kind)
	}
	c := model.Claims{}
	if s.Unclean && (sys == Pipeline || sys == Debezium) {
		c[model.NoPhantom] = true
		return c
	}
	for _, p := range []model.Property{model.Convergence, model.NoLoss, model.NoPhantom, model.PerKeyOrder} {
		c[p] = true
	}
	if sys == Debezium {
		return c // what its documentation promises (debeziumClaims)
	}
	switch kind {
	case model.Search:
		c[model.ExactlyOnce] = true
	case model.Replica:
		c[model.Atomicity] = true
	}
	return c
}

var (
	allRoles     = []faults.Role{faults.RoleDB, faults.RoleCapture, faults.RoleApplier, faults.RoleBroker, faults.RoleStore, faults.RoleApp}
	processRoles = []faults.Role{faults.RoleCapture, faults.RoleApplier, faults.RoleApp}
)

// All is every built-in scenario, in report order.
var All = []*Scenario{
	{Name: "steady", Summary: "no faults: both systems should hold every property", Workload: "profiles"},
	{Name: "crash-capture", Summary: "kill -9 and restart the capture process and app clients", Workload: "bank",
		Kinds: []faults.Kind{faults.Crash}, Roles: []faults.Role{faults.RoleCapture, faults.RoleApp}},
	{Name: "crash-appliers", Summary: "kill -9 and restart sink appliers and app clients", Workload: "profiles",
		Kinds: []faults.Kind{faults.Crash}, Roles: []faults.Role{faults.RoleApplier, faults.RoleApp}},
	{Name: "broker-failover", Summary: "kill log leaders and brokers; app clients crash too", Workload: "bank",
		Kinds: []faults.Kind{faults.LeaderFailover, faults.Crash}, Roles: []faults.Role{faults.RoleBroker, faults.RoleApp}},
	{Name: "partitions", Summary: "symmetric and one-way partitions, slow and lossy links", Workload: "profiles",
		Kinds: []faults.Kind{faults.Partition, faults.Delay, faults.Loss}, Roles: allRoles},
	{Name: "cache-restart", Summary: "the cache restarts empty, also once all is quiet; app clients crash", Workload: "profiles",
		Kinds: []faults.Kind{faults.Crash}, Nodes: []string{"cache", "app1", "app2", "app3"}, QuietRestart: []string{"cache"}},
	{Name: "zombie-pause", Summary: "stop-the-world pauses of processes and brokers, woken as zombies", Workload: "bulk",
		Kinds: []faults.Kind{faults.Pause}, Roles: []faults.Role{faults.RoleCapture, faults.RoleApplier, faults.RoleApp, faults.RoleBroker}},
	{Name: "source-stall", Summary: "the source stalls while the capture takes its first snapshot; requests that timed out run late", Workload: "bank",
		StallSourceAtStart: true},
	{Name: "slot-reconnect", Summary: "crash the source database (its slot moves back) and the capture", Workload: "bank",
		Kinds: []faults.Kind{faults.Crash}, Roles: []faults.Role{faults.RoleDB, faults.RoleCapture, faults.RoleApp}},
	{Name: "clock-jump", Summary: "wall clocks jump while processes pause and links slow down", Workload: "bulk",
		Kinds: []faults.Kind{faults.ClockJump, faults.Pause, faults.Delay}, Roles: processRoles},
	{Name: "swarm", Summary: "every fault kind, a random mix per seed", Workload: "profiles",
		Kinds: []faults.Kind{faults.Crash, faults.Pause, faults.Partition, faults.Delay, faults.Loss, faults.ClockJump, faults.LeaderFailover, faults.LostAck, faults.LostAppend}, Roles: allRoles},
	{Name: "ambiguous-append", Summary: "the log loses the capture's appends, or their acknowledgements: appends time out, done or not", Workload: "bank",
		Kinds: []faults.Kind{faults.LostAck, faults.LostAppend}, EveryKind: true, Roles: []faults.Role{faults.RoleCapture}},
	{Name: "unclean-election", Summary: "leader failover with unclean election: the log may lose acknowledged records", Workload: "profiles",
		Kinds: []faults.Kind{faults.LeaderFailover, faults.Crash, faults.Partition, faults.UncleanElection}, Roles: []faults.Role{faults.RoleBroker, faults.RoleCapture},
		Unclean: true, MaxDownBrokers: 2},
	{Name: "fencing", Summary: "a paused or cut-off capture or applier is taken for dead and started again beside itself; the first wakes as a zombie", Workload: "profiles",
		Kinds: []faults.Kind{faults.Pause, faults.Partition, faults.SecondInstance}, EveryKind: true, Roles: allRoles},
	{Name: "retention", Summary: "log retention deletes records stores still need, the source drops the replication slot; processes, stores and the source crash", Workload: "bank",
		Kinds: []faults.Kind{faults.Crash, faults.Retention, faults.SlotDrop}, EveryKind: true,
		Roles: []faults.Role{faults.RoleDB, faults.RoleCapture, faults.RoleApplier, faults.RoleStore, faults.RoleApp}},
	{Name: "long-haul", Summary: "100,000 committed transactions over a 200 s fault phase; the capture, appliers, stores and the source crash or pause in its last 50 s, on a long log", Workload: "profiles",
		Size: Options{Txns: 100_000, Clients: 24, Quiet: 200 * time.Second}, LateFaults: true, SeedEvery: 50,
		Kinds: []faults.Kind{faults.Crash, faults.Pause}, Roles: []faults.Role{faults.RoleDB, faults.RoleCapture, faults.RoleApplier, faults.RoleStore}},
}

// Unsupported is the scenarios whose source holds input the pipeline must
// refuse: a run's expected outcome is the capture stopping with a clear
// error (Outcome.Stopped, exit 2), neither a pass nor a violation. They are
// not part of "all".
var Unsupported = []*Scenario{
	{Name: "keyless-table", Summary: "a table without a key or REPLICA IDENTITY FULL is created mid-run and written: the capture must stop, saying why",
		Workload: "bank", Kinds: []faults.Kind{faults.Crash}, Roles: []faults.Role{faults.RoleCapture, faults.RoleApp},
		AddsTable: &pipeline.KeylessTable{Name: "raw_events", Columns: []string{"at", "what"}}},
}

// Lookup finds scenarios by name; "all" means every scenario. Names may be
// comma-separated.
func Lookup(names string) ([]*Scenario, error) {
	if names == "all" || names == "" {
		return All, nil
	}
	var out []*Scenario
	for _, n := range strings.Split(names, ",") {
		s, err := Resolve(strings.TrimSpace(n))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// ByName returns a built-in scenario (of All or Unsupported) or nil.
func ByName(name string) *Scenario {
	for _, s := range append(All[:len(All):len(All)], Unsupported...) {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Resolve finds a scenario by name, where the name may carry known bugs to
// switch on in the pipeline: "crash-capture+confirm-before-ack". The bugs
// are part of the name, so a repro token replays them too.
func Resolve(name string) (*Scenario, error) {
	base, bugs, _ := strings.Cut(name, "+")
	sc := ByName(base)
	if sc == nil {
		return nil, fmt.Errorf("unknown scenario %q (want one of: %s)", base, strings.Join(Names(), ", "))
	}
	if bugs == "" {
		return sc, nil
	}
	c := *sc
	c.Name = name
	if err := parseBugs(&c, bugs); err != nil {
		return nil, err
	}
	return &c, nil
}

// Names lists the built-in scenarios, sorted.
func Names() []string {
	var ns []string
	for _, s := range append(All[:len(All):len(All)], Unsupported...) {
		ns = append(ns, s.Name)
	}
	sort.Strings(ns)
	return ns
}
