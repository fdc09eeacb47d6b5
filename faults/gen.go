package faults

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Role is what a node does in a run. The generator treats brokers specially
// (at most GenConfig.MaxDownBrokers down at once) and never faults observers;
// other roles are only labels, and roles not listed here are allowed.
type Role string

const (
	RoleDB       Role = "db"       // the source database
	RoleCapture  Role = "capture"  // reads the WAL, produces to the log
	RoleApplier  Role = "applier"  // consumes the log into a store
	RoleBroker   Role = "broker"   // one broker of the replicated log
	RoleStore    Role = "store"    // a sink store (replica, cache, search)
	RoleApp      Role = "app"      // a workload client
	RoleObserver Role = "observer" // the harness's own reader: never faulted
)

// Node is a named node of a topology.
type Node struct {
	Name string
	Role Role
}

// Link is a directed network link, for delay and loss.
type Link struct{ From, To string }

// Topology is what the generator may fault: the run's nodes and, optionally,
// the links worth slowing down.
type Topology struct {
	Nodes []Node
	// Links are the links delay and loss may pick; nil means every ordered
	// pair of distinct nodes that are not observers.
	Links []Link
}

// Validate checks that node names are well-formed and unique, and that links
// join two distinct known nodes that are not observers.
func (t Topology) Validate() error {
	roles := map[string]Role{}
	for _, n := range t.Nodes {
		if err := checkName(n.Name); err != nil {
			return fmt.Errorf("topology: %w", err)
		}
		if _, dup := roles[n.Name]; dup {
			return fmt.Errorf("topology: node %s listed twice", n.Name)
		}
		if n.Role == "" {
			return fmt.Errorf("topology: node %s has no role", n.Name)
		}
		roles[n.Name] = n.Role
	}
	for _, l := range t.Links {
		for _, end := range []string{l.From, l.To} {
			r, ok := roles[end]
			if !ok {
				return fmt.Errorf("topology: link %s->%s: unknown node %q", l.From, l.To, end)
			}
			if r == RoleObserver {
				return fmt.Errorf("topology: link %s->%s: %s is an observer, which is never faulted", l.From, l.To, end)
			}
		}
		if l.From == l.To {
			return fmt.Errorf("topology: link %s->%s goes nowhere", l.From, l.To)
		}
	}
	return nil
}

// Faultable returns the names of the nodes that are not observers, in
// topology order.
func (t Topology) Faultable() []string {
	var names []string
	for _, n := range t.Nodes {
		if n.Role != RoleObserver {
			names = append(names, n.Name)
		}
	}
	return names
}

// Captures returns the names of the capture nodes, the log's producers
// (what lost-ack and lost-append hit), in topology order.
func (t Topology) Captures() []string {
	var names []string
	for _, n := range t.Nodes {
		if n.Role == RoleCapture {
			names = append(names, n.Name)
		}
	}
	return names
}

// processes returns the names of the nodes a second-instance may start
// again: captures and appliers, in topology order.
func (t Topology) processes() []string {
	var names []string
	for _, n := range t.Nodes {
		if n.Role == RoleCapture || n.Role == RoleApplier {
			names = append(names, n.Name)
		}
	}
	return names
}

// DBs returns the names of the source database nodes (what slot-drop hits),
// in topology order.
func (t Topology) DBs() []string {
	var names []string
	for _, n := range t.Nodes {
		if n.Role == RoleDB {
			names = append(names, n.Name)
		}
	}
	return names
}

// Brokers returns the names of the broker nodes, in topology order.
func (t Topology) Brokers() []string {
	var names []string
	for _, n := range t.Nodes {
		if n.Role == RoleBroker {
			names = append(names, n.Name)
		}
	}
	return names
}

func (t Topology) role(name string) (Role, bool) {
	for _, n := range t.Nodes {
		if n.Name == name {
			return n.Role, true
		}
	}
	return "", false
}

// links returns Links, or every ordered pair of faultable nodes.
func (t Topology) links() []Link {
	if t.Links != nil {
		return t.Links
	}
	nodes := t.Faultable()
	var ls []Link
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				ls = append(ls, Link{From: a, To: b})
			}
		}
	}
	return ls
}

// Defaults of GenConfig's zero fields.
const (
	DefaultQuiet            = 20 * time.Second
	DefaultMeanInterval     = time.Second
	DefaultMeanOutage       = 2 * time.Second
	DefaultMaxDownBrokers   = 1
	DefaultFailoverDowntime = 3 * time.Second
)

// GenConfig says what Generate may draw. Zero fields take the defaults above.
type GenConfig struct {
	// Kinds are the kinds a seed may enable. nil means DefaultKinds; an
	// empty non-nil slice enables none (but see Unclean). Restart, Resume
	// and Heal need not be listed and are ignored here: the generator emits
	// them to end crashes, pauses and network faults.
	Kinds []Kind
	// Unclean adds UncleanElection to Kinds. Off by default, because a run
	// with it may lose acknowledged records whatever the pipeline does.
	Unclean bool
	// EveryKind enables every allowed kind in every seed, each at its own
	// random rate, instead of a random subset: for a fault mix whose kinds
	// only tell something together (lost-ack and lost-append: the same
	// timeout to the producer, appended or not), where a swarm would leave
	// one of them out of half the seeds.
	EveryKind bool
	// Quiet is the length of the fault phase: every fault, and its end,
	// falls before it. Default 20s.
	Quiet time.Duration
	// MeanInterval is the mean time between fault arrivals (exponentially
	// distributed), whatever their kind. Default 1s.
	MeanInterval time.Duration
	// MeanOutage is the mean time a crash, pause or network fault lasts
	// before its restart, resume or heal (exponentially distributed, cut
	// short before Quiet). Default 2s.
	MeanOutage time.Duration
	// MaxDownBrokers bounds the brokers crashed, paused or failed over at
	// once, so a 3-broker log keeps 2 replicas in sync by default. 0 means
	// the default 1; a negative value means no broker may go down.
	MaxDownBrokers int
	// FailoverDowntime is how long the generator assumes the broker killed
	// by a leader-failover stays down: it counts against MaxDownBrokers for
	// that long, and must end before Quiet. A world should restart that
	// broker within it. Default 3s.
	FailoverDowntime time.Duration
}

func (c GenConfig) withDefaults() GenConfig {
	if c.Kinds == nil {
		c.Kinds = DefaultKinds
	}
	if c.Quiet == 0 {
		c.Quiet = DefaultQuiet
	}
	if c.MeanInterval == 0 {
		c.MeanInterval = DefaultMeanInterval
	}
	if c.MeanOutage == 0 {
		c.MeanOutage = DefaultMeanOutage
	}
	switch {
	case c.MaxDownBrokers == 0:
		c.MaxDownBrokers = DefaultMaxDownBrokers
	case c.MaxDownBrokers < 0:
		c.MaxDownBrokers = 0
	}
	if c.FailoverDowntime == 0 {
		c.FailoverDowntime = DefaultFailoverDowntime
	}
	return c
}

// Validate checks the config's kinds are known and its durations positive
// (zero meaning the default).
func (c GenConfig) Validate() error {
	for _, k := range c.Kinds {
		if !k.Known() {
			return fmt.Errorf("gen config: unknown fault kind %q: expected one of %s", string(k), kindList(Kinds))
		}
	}
	if c.Quiet < 0 || c.MeanInterval < 0 || c.MeanOutage < 0 || c.FailoverDowntime < 0 {
		return errors.New("gen config: negative duration")
	}
	return nil
}

// allowed reports whether the config lets a seed enable k.
func (c GenConfig) allowed(k Kind) bool {
	return !k.undo() && (slices.Contains(c.Kinds, k) || k == UncleanElection && c.Unclean)
}

// pool is the kinds allowed by cfg that topo can host, in Kinds order.
func pool(topo Topology, cfg GenConfig) []Kind {
	nodes, brokers := topo.Faultable(), topo.Brokers()
	nonBrokers := len(nodes) - len(brokers)
	var ks []Kind
	for _, k := range Kinds {
		if !cfg.allowed(k) {
			continue
		}
		ok := false
		switch k {
		case Crash, Pause:
			ok = nonBrokers > 0 || len(brokers) > 0 && cfg.MaxDownBrokers > 0
		case ClockJump:
			ok = len(nodes) > 0
		case Partition:
			ok = len(nodes) > 1
		case Delay, Loss:
			ok = len(topo.links()) > 0
		case LostAck, LostAppend:
			ok = len(topo.Captures()) > 0
		case SecondInstance:
			ok = len(topo.processes()) > 0
		case LeaderFailover:
			ok = len(brokers) > 0 && cfg.MaxDownBrokers > 0 && cfg.FailoverDowntime < cfg.Quiet
		case UncleanElection:
			ok = len(brokers) > 0
		case Retention:
			ok = true // the log's own doing: it names no node, and a world without a log ignores it
		case SlotDrop:
			ok = len(topo.DBs()) > 0
		}
		if ok {
			ks = append(ks, k)
		}
	}
	return ks
}

// Generate draws a fault plan from rng: the same rng state, topology and
// config give the same plan.
//
// Swarm: the seed first enables a random non-empty subset of the kinds cfg
// allows and topo can host (a fair coin each, one at random if all came up
// tails; all of them with cfg.EveryKind), each with its own random weight.
// Faults then arrive with exponential gaps of mean cfg.MeanInterval, each of
// a kind drawn by weight; an arrival whose kind has no eligible target at
// that moment (every node already down, the broker limit reached) is
// dropped.
//
// The plan is well-formed (Plan.Check passes): a crash or pause only hits a
// node that is up, and its restart or resume follows before Quiet; every
// partition, delay, loss, lost-ack and lost-append is lifted by a heal
// before Quiet; lost-ack and lost-append hit a capture, with a probability
// of 0.5 to 1; at most cfg.MaxDownBrokers brokers are down at once,
// counting each leader-failover for cfg.FailoverDowntime; unclean-election
// occurs at most once and stays on until Quiet; a second-instance starts
// a capture or an applier at most once per node, 100ms to 1.5s after the
// generator paused that node or cut it off from every other node (when the
// seed enabled pause or partition, a pause three times in four when both;
// the pause is resumed, the partition healed, after an exponential outage
// that outlasts the start); observers are never touched. So for a
// generated plan, all HealAll does at Quiet is turn unclean leader
// election off. Times are whole milliseconds.
//
// Generate panics on an invalid topology or config: that is a bug in the
// caller, not a property of the seed.
func Generate(rng *rand.Rand, topo Topology, cfg GenConfig) Plan {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		panic("faults.Generate: " + err.Error())
	}
	if err := topo.Validate(); err != nil {
		panic("faults.Generate: " + err.Error())
	}
	g := &gen{rng: rng, topo: topo, cfg: cfg, crashed: map[string]bool{}, paused: map[string]bool{}, seconds: map[string]bool{}, downSince: map[string]time.Duration{}}
	return g.run()
}

// undoEvent is a restart, resume or heal the generator owes.
type undoEvent struct {
	at   time.Duration
	seq  int
	kind Kind
	node string
}

type gen struct {
	rng  *rand.Rand
	topo Topology
	cfg  GenConfig

	kinds   []Kind
	weights []float64
	total   float64

	plan      Plan
	owed      []*undoEvent
	seq       int
	heal      *undoEvent // the owed heal, if any
	crashed   map[string]bool
	paused    map[string]bool
	downSince map[string]time.Duration // when each crashed or paused node went down
	failovers []time.Duration          // end of each leader-failover's downtime
	unclean   bool
	seconds   map[string]bool // nodes given a second instance
}

func (g *gen) run() Plan {
	quiet := g.cfg.Quiet
	g.plan.Quiet = quiet
	g.drawSwarm()
	if len(g.kinds) == 0 {
		return g.plan
	}
	for t := g.exp(g.cfg.MeanInterval); t < quiet; t += g.exp(g.cfg.MeanInterval) {
		g.flush(t)
		g.start(g.pick(), t)
	}
	g.flush(quiet)
	slices.SortStableFunc(g.plan.Faults, func(a, b Fault) int { return cmpDur(a.At, b.At) })
	return g.plan
}

func cmpDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (g *gen) drawSwarm() {
	p := pool(g.topo, g.cfg)
	if len(p) == 0 {
		return
	}
	for _, k := range p {
		if g.cfg.EveryKind || g.rng.IntN(2) == 0 {
			g.kinds = append(g.kinds, k)
		}
	}
	if len(g.kinds) == 0 {
		g.kinds = append(g.kinds, p[g.rng.IntN(len(p))])
	}
	for range g.kinds {
		w := 0.1 + 0.9*g.rng.Float64()
		g.weights = append(g.weights, w)
		g.total += w
	}
	g.plan.Swarm = slices.Clone(g.kinds)
}

func (g *gen) pick() Kind {
	r := g.rng.Float64() * g.total
	for i, w := range g.weights {
		if r < w {
			return g.kinds[i]
		}
		r -= w
	}
	return g.kinds[len(g.kinds)-1]
}

// exp draws an exponential duration of the given mean, in whole
// milliseconds, at least 1ms.
func (g *gen) exp(mean time.Duration) time.Duration {
	d := time.Duration(g.rng.ExpFloat64() * float64(mean)).Round(time.Millisecond)
	return max(d, time.Millisecond)
}

// ms draws a whole number of milliseconds in [lo, hi].
func (g *gen) ms(lo, hi int) time.Duration {
	return time.Duration(lo+g.rng.IntN(hi-lo+1)) * time.Millisecond
}

func (g *gen) emit(f Fault) { g.plan.Faults = append(g.plan.Faults, f) }

func (g *gen) owe(at time.Duration, k Kind, node string) *undoEvent {
	g.seq++
	u := &undoEvent{at: at, seq: g.seq, kind: k, node: node}
	g.owed = append(g.owed, u)
	return u
}

// flush emits the owed undos due by t, in (time, sequence) order.
func (g *gen) flush(t time.Duration) {
	for {
		i := -1
		for j, u := range g.owed {
			if u.at <= t && (i < 0 || u.at < g.owed[i].at || u.at == g.owed[i].at && u.seq < g.owed[i].seq) {
				i = j
			}
		}
		if i < 0 {
			return
		}
		u := g.owed[i]
		g.owed = slices.Delete(g.owed, i, i+1)
		switch u.kind {
		case Restart:
			delete(g.crashed, u.node)
			delete(g.downSince, u.node)
		case Resume:
			delete(g.paused, u.node)
			delete(g.downSince, u.node)
		case Heal:
			g.heal = nil
		}
		g.emit(Fault{At: u.at, Kind: u.kind, Node: u.node})
	}
}

// end draws when a fault started at t ends: before Quiet, or ok=false when t
// is too close to Quiet for that.
func (g *gen) end(t time.Duration) (time.Duration, bool) {
	last := g.cfg.Quiet - time.Millisecond
	if t >= last {
		return 0, false
	}
	return min(t+g.exp(g.cfg.MeanOutage), last), true
}

func (g *gen) brokersDown(t time.Duration) int {
	n := 0
	for _, b := range g.topo.Brokers() {
		if g.crashed[b] || g.paused[b] {
			n++
		}
	}
	for _, end := range g.failovers {
		if end > t {
			n++
		}
	}
	return n
}

// up returns the faultable nodes that are neither crashed nor paused and,
// when withBrokers is false, not brokers.
func (g *gen) up(withBrokers bool) []string {
	var names []string
	for _, n := range g.topo.Nodes {
		if n.Role == RoleObserver || g.crashed[n.Name] || g.paused[n.Name] || n.Role == RoleBroker && !withBrokers {
			continue
		}
		names = append(names, n.Name)
	}
	return names
}

func (g *gen) start(k Kind, t time.Duration) {
	switch k {
	case Crash, Pause:
		cands := g.up(g.brokersDown(t) < g.cfg.MaxDownBrokers)
		if len(cands) == 0 {
			return
		}
		end, ok := g.end(t)
		if !ok {
			return
		}
		node := cands[g.rng.IntN(len(cands))]
		g.emit(Fault{At: t, Kind: k, Node: node})
		if k == Crash {
			g.crashed[node] = true
			g.downSince[node] = t
			g.owe(end, Restart, node)
		} else {
			g.paused[node] = true
			g.downSince[node] = t
			g.owe(end, Resume, node)
		}
	case ClockJump:
		var cands []string
		for _, n := range g.topo.Faultable() {
			if !g.crashed[n] {
				cands = append(cands, n)
			}
		}
		if len(cands) == 0 {
			return
		}
		node := cands[g.rng.IntN(len(cands))]
		jump := g.ms(100, 5000)
		if g.rng.IntN(2) == 0 {
			jump = -jump
		}
		g.emit(Fault{At: t, Kind: k, Node: node, Jump: jump})
	case Partition, Delay, Loss, LostAck, LostAppend:
		end, ok := g.end(t)
		if !ok {
			return
		}
		f := Fault{At: t, Kind: k}
		switch k {
		case Partition:
			f.A, f.B = g.groups()
			f.OneWay = g.rng.IntN(4) == 0
		case Delay:
			l := g.link()
			f.From, f.To = l.From, l.To
			f.Min = g.ms(0, 50)
			f.Max = f.Min + g.ms(1, 200)
		case Loss:
			l := g.link()
			f.From, f.To = l.From, l.To
			f.P = float64(1+g.rng.IntN(50)) / 100
		case LostAck, LostAppend:
			cs := g.topo.Captures()
			f.Node = cs[g.rng.IntN(len(cs))]
			// Likely, not certain: a producer retries a few times in its
			// session before it gives up, so an append fails (and its
			// timeout is ambiguous) only when every try is lost, and
			// some retries that get through exercise the log's dedupe.
			f.P = float64(50+g.rng.IntN(51)) / 100
		}
		g.emit(f)
		if g.heal == nil {
			g.heal = g.owe(end, Heal, "")
		} else {
			g.heal.at = max(g.heal.at, end)
		}
	case LeaderFailover:
		if g.brokersDown(t) >= g.cfg.MaxDownBrokers || len(g.upBrokers()) == 0 || t+g.cfg.FailoverDowntime >= g.cfg.Quiet {
			return
		}
		g.emit(Fault{At: t, Kind: k})
		g.failovers = append(g.failovers, t+g.cfg.FailoverDowntime)
	case UncleanElection:
		if g.unclean {
			return
		}
		g.unclean = true
		g.emit(Fault{At: t, Kind: k})
	case SecondInstance:
		g.secondInstance(t)
	case Retention:
		// Retention that deletes what nobody needs tells nothing: while
		// a node is down, keep less than its outage so far, so the
		// records a stopped store needs next are gone when it comes
		// back. Otherwise a tenth of a second to a second and a half,
		// which soon passes the last snapshot.
		hi := 1500
		if down := g.longestDown(t); down > 200*time.Millisecond {
			hi = int(down.Milliseconds() * 9 / 10)
		}
		g.emit(Fault{At: t, Kind: k, Keep: g.ms(100, hi)})
	case SlotDrop:
		dbs := g.topo.DBs()
		var cands []string
		for _, n := range dbs {
			if !g.crashed[n] && !g.paused[n] {
				cands = append(cands, n)
			}
		}
		if len(cands) == 0 {
			return // a database that is down cannot be asked to drop its slot
		}
		g.emit(Fault{At: t, Kind: k, Node: cands[g.rng.IntN(len(cands))]})
	}
}

// longestDown is how long the node down the longest at t has been down
// (0 when none is), brokers aside: the log's own replicas hold no position.
func (g *gen) longestDown(t time.Duration) time.Duration {
	var d time.Duration
	for _, n := range g.topo.Nodes {
		if since, ok := g.downSince[n.Name]; ok && n.Role != RoleBroker {
			d = max(d, t-since)
		}
	}
	return d
}

// secondInstance makes a process look dead and starts its replacement: it
// pauses a capture or applier that is up and has no second instance yet,
// or cuts it off from every other node, at t (whichever of the two the
// seed enabled; with neither, the first simply runs on); starts the second
// instance 100ms to 1.5s later, while the first is still out; and lets the
// first come back after an outage of its own, as a zombie beside its
// replacement.
func (g *gen) secondInstance(t time.Duration) {
	var cands []string
	for _, n := range g.topo.processes() {
		if !g.crashed[n] && !g.paused[n] && !g.seconds[n] {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return
	}
	node := cands[g.rng.IntN(len(cands))]
	lag := g.ms(100, 1500)
	end, ok := g.end(t + lag)
	if !ok {
		return
	}
	end = max(end, t+lag+time.Millisecond)
	if end >= g.cfg.Quiet {
		return
	}
	var outs []Kind // how the first may look dead: the seed's own kinds
	for _, k := range []Kind{Pause, Partition} {
		if slices.Contains(g.kinds, k) {
			outs = append(outs, k)
		}
	}
	var rest []string
	for _, n := range g.topo.Faultable() {
		if n != node {
			rest = append(rest, n)
		}
	}
	if len(rest) == 0 {
		outs = slices.DeleteFunc(outs, func(k Kind) bool { return k == Partition })
	}
	if len(outs) > 0 {
		out := outs[g.rng.IntN(len(outs))]
		if len(outs) == 2 && g.rng.IntN(2) == 0 {
			// Pauses three times in four: a paused process wakes with
			// what it held (a batch, an answer), the zombie proper; a
			// cut-off one mostly finds its calls timed out.
			out = Pause
		}
		switch out {
		case Pause:
			g.emit(Fault{At: t, Kind: Pause, Node: node})
			g.paused[node] = true
			g.owe(end, Resume, node)
		case Partition:
			g.emit(Fault{At: t, Kind: Partition, A: []string{node}, B: rest})
			if g.heal == nil {
				g.heal = g.owe(end, Heal, "")
			} else {
				g.heal.at = max(g.heal.at, end)
			}
		}
	}
	g.seconds[node] = true
	g.emit(Fault{At: t + lag, Kind: SecondInstance, Node: node})
}

func (g *gen) upBrokers() []string {
	var names []string
	for _, b := range g.topo.Brokers() {
		if !g.crashed[b] && !g.paused[b] {
			names = append(names, b)
		}
	}
	return names
}

func (g *gen) link() Link {
	ls := g.topo.links()
	return ls[g.rng.IntN(len(ls))]
}

// groups draws a partition's two groups, each in topology order: one node
// isolated from the rest, a split of all nodes in two, or two disjoint
// groups that leave some nodes out.
func (g *gen) groups() (a, b []string) {
	nodes := g.topo.Faultable()
	n := len(nodes)
	perm := g.rng.Perm(n)
	var ka, kb int
	switch g.rng.IntN(3) {
	case 0: // isolate one node
		ka, kb = 1, n-1
	case 1: // split everyone
		ka = 1 + g.rng.IntN(n-1)
		kb = n - ka
	default: // two groups, maybe not covering
		ka = 1 + g.rng.IntN(n-1)
		kb = 1 + g.rng.IntN(n-ka)
	}
	inA, inB := map[int]bool{}, map[int]bool{}
	for _, i := range perm[:ka] {
		inA[i] = true
	}
	for _, i := range perm[ka : ka+kb] {
		inB[i] = true
	}
	for i, name := range nodes {
		switch {
		case inA[i]:
			a = append(a, name)
		case inB[i]:
			b = append(b, name)
		}
	}
	return a, b
}
