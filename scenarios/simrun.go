package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"lockstep/checker"
	"lockstep/faults"
	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/scenarios/workload"
	"lockstep/sim"
	"lockstep/sim/services"
)

// Options sizes a simulated run. The zero value takes the defaults.
type Options struct {
	Txns    int           // application transactions to issue (default 1000)
	Clients int           // application clients (default 3)
	Quiet   time.Duration // length of the fault phase (default 20s)
	Settle  time.Duration // how long the quiet phase may take to converge (default 30s)
	// KeepTrace keeps every trace event, for CheckDeterminism.
	KeepTrace bool
	Checker   checker.Options
	// Log, when set, receives the pipeline's debug log on virtual time.
	Log io.Writer
	// Keys sizes the workload's key space (accounts, users or items; see
	// workload.NewSized); 0 keeps the workload's own.
	Keys int
	// Plan, when set, is run instead of the plan the seed draws (and
	// instead of a StallSourceAtStart scenario's stall): the shrinker's
	// candidates and repro files. Its Quiet must equal the fault phase.
	// The seed still draws everything else, from streams of its own, so
	// the seed's own plan given here gives the seed's own run.
	Plan *faults.Plan
	// ObserverDelay holds the observer's first sample back this long (0:
	// none), which moves every later sample and whole read of the replica
	// by as much. The shrinker sets it to look at the stores at other
	// times: an anomaly that a whole read shows only when it falls in the
	// few milliseconds of another read's window (a rebuild between its
	// snapshot and its rows) is otherwise kept only by a large workload
	// whose timing happens to put it there.
	ObserverDelay time.Duration
}

// validate rejects sizes that make no sense; zero means the default.
func (o Options) validate() error {
	switch {
	case o.Txns < 0:
		return fmt.Errorf("options: %d transactions: want a positive number (0 for the default)", o.Txns)
	case o.Clients < 0:
		return fmt.Errorf("options: %d clients: want a positive number (0 for the default)", o.Clients)
	case o.Quiet < 0:
		return fmt.Errorf("options: fault phase of %v: want a positive duration (0 for the default)", o.Quiet)
	case o.Settle < 0:
		return fmt.Errorf("options: quiet phase of %v: want a positive duration (0 for the default)", o.Settle)
	case o.Keys < 0 || o.Keys > 0 && o.Keys < workload.MinKeys:
		return fmt.Errorf("options: %d keys: want at least %d (0 for the workload's own)", o.Keys, workload.MinKeys)
	case o.ObserverDelay < 0:
		return fmt.Errorf("options: observer delay of %v: want a positive duration (0 for none)", o.ObserverDelay)
	}
	if o.Plan != nil {
		if err := o.Plan.Validate(); err != nil {
			return fmt.Errorf("options: plan: %w", err)
		}
		if q := o.withDefaults().Quiet; o.Plan.Quiet != q {
			return fmt.Errorf("options: the plan's quiet @%v is not the fault phase's end @%v", o.Plan.Quiet, q)
		}
	}
	return nil
}

// forScenario fills the options sc sizes itself (Scenario.Size) where o
// leaves them zero; withDefaults fills the rest.
func (o Options) forScenario(sc *Scenario) Options {
	if sc == nil {
		return o
	}
	if o.Txns == 0 {
		o.Txns = sc.Size.Txns
	}
	if o.Clients == 0 {
		o.Clients = sc.Size.Clients
	}
	if o.Quiet == 0 {
		o.Quiet = sc.Size.Quiet
	}
	if o.Settle == 0 {
		o.Settle = sc.Size.Settle
	}
	return o
}

func (o Options) withDefaults() Options {
	if o.Txns == 0 {
		o.Txns = 1000
	}
	if o.Clients == 0 {
		o.Clients = 3
	}
	if o.Quiet == 0 {
		o.Quiet = 20 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = 30 * time.Second
	}
	return o
}

// Outcome is one finished run.
type Outcome struct {
	Scenario string
	System   System
	Seed     uint64
	// Options are the run's options with the defaults filled in.
	Options Options
	Plan    faults.Plan
	History *model.History
	Report  *checker.Report
	Hash    uint64
	Stats   sim.Stats
	Virtual time.Duration
	Wall    time.Duration // the whole run: building, simulating, checking
	SimWall time.Duration // simulating only (the world's event loop)
	Blocked []string
	Trace   *sim.Trace
	// Stopped, when set, says in one line that the capture refused input
	// it can never capture (it stopped with pipeline.ErrUnsupported or
	// ErrRecordTooLarge) and why. The history is then judged up to the
	// transaction it refused: the run is neither a pass nor, unless the
	// report found a violation before that point, a failure.
	Stopped string
	// Metrics are what the system cost the application: throughput,
	// commit latency, unavailability.
	Metrics Metrics
}

// Violated reports whether the system under test broke a property it claims.
func (o *Outcome) Violated() bool { return !o.Report.OK() }

// Refused reports whether the pipeline stopped on input it cannot capture.
func (o *Outcome) Refused() bool { return o.Stopped != "" }

// Repro is the command that replays this run exactly.
func (o *Outcome) Repro() string { return "lockstep repro " + o.Token().String() }

// Token is everything that shaped this run; options at their defaults are
// left out, so a default run's token stays scenario/system/seed. A run
// given an explicit plan (Options.Plan) is not named by its token alone:
// a ReproFile holds the token and the plan.
func (o *Outcome) Token() Repro {
	return reproOf(o.Scenario, o.System, o.Seed, o.Options)
}

// reproOf is the token of a simulated run with options opts.
func reproOf(scenario string, sys System, seed uint64, opts Options) Repro {
	base, _, _ := strings.Cut(scenario, "+")
	sc := ByName(base)
	opts, def := opts.forScenario(sc).withDefaults(), Options{}.forScenario(sc).withDefaults()
	r := Repro{Scenario: scenario, System: sys, Seed: seed}
	if opts.Txns != def.Txns {
		r.Txns = opts.Txns
	}
	if opts.Clients != def.Clients {
		r.Clients = opts.Clients
	}
	if opts.Quiet != def.Quiet {
		r.Quiet = opts.Quiet
	}
	if opts.Settle != def.Settle {
		r.Settle = opts.Settle
	}
	r.Keys = opts.Keys
	r.ObserverDelay = opts.ObserverDelay
	return r
}

// Store names in every world.
const (
	ReplicaStore = "replica"
	CacheStore   = "cache"
	SearchStore  = "search"
)

var storeKinds = []struct {
	name string
	kind model.StoreKind
}{{ReplicaStore, model.Replica}, {CacheStore, model.Cache}, {SearchStore, model.Search}}

// world is one simulated run under construction.
type world struct {
	sc   *Scenario
	sys  System
	seed uint64
	opts Options

	w        *sim.World
	rec      *services.Recorder
	db       *sim.Node
	cluster  *services.Cluster
	stores   []*sim.Node
	observer *sim.Node
	roles    []faults.Node
	// processes are the pipeline's process nodes' boot functions, by
	// name, for starting second instances.
	processes map[string]func(n *sim.Node) any

	wl   workload.Workload
	busy int // clients inside an operation: a transaction, its retries, its store writes
	// lastCommitted is the source's committed application transactions
	// when last seen up (see committed).
	lastCommitted int
	quietAt       time.Duration
	hist          *model.History
	// convergedLSN is the source position each store's ConvergedAt was
	// recorded against (see noteConvergence).
	convergedLSN map[string]model.LSN

	// stopped is the error the capture stopped on, for good (nil while it
	// runs); cut is the index in the WAL of the transaction it refused,
	// where the judged history ends (-1 until known).
	stopped error
	cut     int
	// added is set once the scenario's AddsTable exists; rawRows counts
	// the rows written to it.
	added   bool
	rawRows int

	// tl is the run's timeline for its report; tlNodes the nodes it
	// follows (see noteTimeline).
	tl      *model.Timeline
	tlNodes []*sim.Node
	// cutFrom is, per followed node, whom a partition cuts it off from,
	// as of the last fault (see noteTimeline); tlPos is scratch.
	cutFrom []string
	tlPos   []model.StorePosition
	// tlLast is each followed node's last noted state and detail, so a
	// step only calls Note on a change.
	tlLast [][2]string

	// ops are the application's operations, for the run's Metrics;
	// atQuiet the committed transactions when the fault phase ended (-1
	// before).
	ops     opLog
	atQuiet int

	logger  *slog.Logger
	keys    []model.Key
	keySeen map[model.Key]bool
	walSeen int
}

// ErrNoDebezium is the simulator's refusal of the Debezium system, which
// runs only against real services.
var ErrNoDebezium = errors.New("the simulator has no Debezium: run --system debezium with --world containers (or world=containers in the token)")

// Run runs one seed of a scenario against a system in the simulator and
// judges it.
func Run(sc *Scenario, sys System, seed uint64, opts Options) (*Outcome, error) {
	start := time.Now()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if sys == Debezium {
		return nil, ErrNoDebezium
	}
	if err := sc.checkBugs(sys); err != nil {
		return nil, err
	}
	opts = opts.forScenario(sc).withDefaults()
	wl, err := workload.NewSized(sc.Workload, opts.Keys)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
	}
	x := &world{sc: sc, sys: sys, seed: seed, opts: opts, wl: wl, quietAt: opts.Quiet, keySeen: map[model.Key]bool{},
		convergedLSN: map[string]model.LSN{}, cut: -1, atQuiet: -1}
	x.w = sim.New(sim.Config{Seed: seed, KeepTrace: opts.KeepTrace})
	x.logger = newLogger(opts.Log, x.w)
	x.hist = &model.History{Scenario: sc.Name, System: string(sys), Seed: seed,
		QuietAt: opts.Quiet, Deadline: opts.Quiet + opts.Settle, ConvergedAt: map[string]time.Duration{}}
	x.build()
	x.followNodes()
	plan := x.planFaults()
	x.hist.Faults = plan.Windows()
	simStart := time.Now()
	if err := x.run(plan); err != nil {
		return nil, fmt.Errorf("%s: %w", reproOf(sc.Name, sys, seed, opts), err)
	}
	simWall := time.Since(simStart)
	x.tl.Finish(x.w.Now())
	res := x.w.Stop()
	if err := x.finish(); err != nil {
		return nil, fmt.Errorf("%s: %w", reproOf(sc.Name, sys, seed, opts), err)
	}
	for _, f := range x.hist.Final {
		res.Trace.Mix(model.DocsHash(f.Docs))
		res.Trace.Mix(uint64(f.Position.LSN))
	}
	res.Trace.Mix(uint64(len(x.hist.Reads)))
	out := &Outcome{
		Scenario: sc.Name, System: sys, Seed: seed, Options: opts, Plan: plan, History: x.hist,
		Report:  checker.Check(x.hist, opts.Checker),
		Hash:    res.Trace.Hash(),
		Stats:   res.Stats,
		Virtual: res.End,
		SimWall: simWall,
		Blocked: res.Blocked,
	}
	out.Metrics = x.metrics()
	if x.stopped != nil {
		out.Stopped = fmt.Sprintf("the pipeline refused input it cannot capture, judged up to the transaction before it: %v", x.stopped)
	}
	if opts.KeepTrace {
		out.Trace = res.Trace
	}
	out.Wall = time.Since(start)
	return out, nil
}

func (x *world) build() {
	w := x.w
	x.rec = &services.Recorder{}
	bootDB := services.BootSourceDB(x.rec)
	if x.sys == TwoPC {
		bootDB = services.BootParticipant(bootDB)
	}
	x.db = w.AddNode("db", bootDB)
	x.roles = append(x.roles, faults.Node{Name: "db", Role: faults.RoleDB})
	initial := x.wl.Initial()
	src := x.db.State().(*services.SourceDB)
	for _, t := range x.wl.Keyless() {
		if err := src.CreateTable(t); err != nil {
			panic(err) // a fresh database holds no tables
		}
	}
	for _, t := range x.wl.Tables() {
		if err := src.Define(t); err != nil {
			panic(err) // a fresh database holds no tables
		}
	}
	load, err := src.Exec(func(tx pipeline.Tx) error {
		for _, c := range initial {
			tx.Put(c.Table, c.PK, c.Row)
		}
		return nil
	})
	if err != nil {
		panic(err) // the initial load cannot fail
	}
	for _, s := range storeKinds {
		boot := services.BootAuditedStore(s.kind, func(p model.PositionWrite) { x.hist.Positions = append(x.hist.Positions, p) })
		if x.sys == TwoPC {
			boot = services.BootParticipant(boot)
		}
		n := w.AddNode(s.name, boot)
		if x.sys != Pipeline {
			// The application creates the replica's tables and loads its
			// initial rows into every store too; the pipeline gets both
			// from the capture's snapshot instead.
			st := n.State().(*services.Store)
			st.CreateTables(src.Schema())
			if err := st.Load(load); err != nil {
				panic(err) // the source committed it: it breaks no constraint
			}
		}
		x.stores = append(x.stores, n)
		x.roles = append(x.roles, faults.Node{Name: s.name, Role: faults.RoleStore})
		x.hist.Stores = append(x.hist.Stores, model.StoreSpec{Name: s.name, Kind: s.kind, Claims: x.sc.Claims(x.sys, s.kind)})
	}
	switch x.sys {
	case Pipeline:
		x.buildPipeline()
	case TwoPC:
		x.buildTwoPC()
	}
	for i := 1; i <= x.opts.Clients; i++ {
		name := fmt.Sprintf("app%d", i)
		w.AddNode(name, func(n *sim.Node) any {
			n.Go("client", x.client(n))
			return nil
		})
		x.roles = append(x.roles, faults.Node{Name: name, Role: faults.RoleApp})
	}
	if t := x.sc.AddsTable; t != nil {
		x.migrate(*t)
	}
	x.observer = w.AddNode("observer", func(n *sim.Node) any {
		n.Go("sampler", x.observe)
		return nil
	})
	x.roles = append(x.roles, faults.Node{Name: "observer", Role: faults.RoleObserver})
}

func (x *world) buildPipeline() {
	w, bugs := x.w, x.sc.Bugs
	x.cluster = services.NewCluster(w, "broker")
	for _, b := range x.cluster.Brokers() {
		x.roles = append(x.roles, faults.Node{Name: b.Name(), Role: faults.RoleBroker})
	}
	x.processes = map[string]func(n *sim.Node) any{}
	x.addProcess("capture", faults.RoleCapture, func(n *sim.Node) any {
		c := &pipeline.Capture{
			Env:    n.Env(),
			Source: &services.StreamClient{From: n, DB: x.db},
			Log:    &services.LogClient{From: n, Cluster: x.cluster},
			Bugs:   bugs,
			Logger: x.logger.With("node", n.Name()),
			// Small chunks, so simulated snapshots span several records
			// and appliers resume inside them.
			ChunkRows: 32,
		}
		n.Go("capture", func(ctx context.Context) {
			// Run ends on its own only on input no retry gets past.
			if err := c.Run(ctx); err != nil && ctx.Err() == nil && x.stopped == nil {
				x.stopped = err
			}
		})
		return nil
	})
	for i, s := range storeKinds {
		store := x.stores[i]
		kind := s.kind
		name := "applier-" + s.name
		x.addProcess(name, faults.RoleApplier, func(n *sim.Node) any {
			a := &pipeline.Applier{
				Env: n.Env(),
				Log: &services.LogClient{From: n, Cluster: x.cluster},
				Store: &services.StoreClient{From: n, To: store, StoreKind: kind, Blind: bugs.NonIdempotentApply, ImmediateUnique: bugs.UniqueRowByRow,
					DDLReset: bugs.DDLReset},
				Group:  name, // a second instance joins the same group
				Bugs:   bugs,
				Logger: x.logger.With("node", n.Name()),
			}
			n.Go("apply", func(ctx context.Context) { _ = a.Run(ctx) })
			return nil
		})
	}
}

// addProcess adds a pipeline process node and remembers how it boots, so
// that a second instance of it can be started (faults.SecondInstance).
func (x *world) addProcess(name string, role faults.Role, boot func(n *sim.Node) any) {
	x.w.AddNode(name, boot)
	x.processes[name] = boot
	x.roles = append(x.roles, faults.Node{Name: name, Role: role})
}

// SecondInstanceName is the node name of the second instance of a process.
func SecondInstanceName(node string) string { return node + "-2" }

// startSecond starts a second instance of process node: a node of its own,
// booted as the first (same slot, log, store and consumer group), running
// until the run ends. A world without that process (dual writes have no
// capture or appliers) has nothing to start.
func (x *world) startSecond(node string) error {
	boot, ok := x.processes[node]
	if !ok {
		if x.sys == Pipeline {
			return fmt.Errorf("no pipeline process %q to start a second instance of", node)
		}
		return nil
	}
	name := SecondInstanceName(node)
	if _, dup := x.w.Node(name); dup {
		return fmt.Errorf("%s has a second instance already (%s)", node, name)
	}
	x.w.AddNode(name, boot)
	x.logger.Info("second instance started", "of", node, "node", name)
	return nil
}

// migrate creates t during the fault phase, between a quarter and a half
// of it, at a time drawn from the seed's own stream (so it does not shift
// any other draw); while the source is down it tries again shortly after.
func (x *world) migrate(t pipeline.KeylessTable) {
	rng := rand.New(rand.NewPCG(x.seed, 0x7ab1e))
	at := x.opts.Quiet/4 + time.Duration(rng.Int64N(int64(x.opts.Quiet/4)))
	var try func()
	try = func() {
		db, up := x.db.State().(*services.SourceDB)
		if !up {
			x.w.At(x.w.Now()+100*time.Millisecond, 0, try)
			return
		}
		if err := db.CreateTable(t); err != nil {
			panic(err) // only the migration creates it, once
		}
		x.added = true
		x.logger.Info("migration: created a table without a primary key", "table", t.Name, "full_identity", t.Full)
	}
	x.w.At(at, 0, try)
}

// withRawRow is op, then a row appended to the migration's table in one
// transaction of four once it exists.
func (x *world) withRawRow(op pipeline.TxnFunc, r *rand.Rand) pipeline.TxnFunc {
	if !x.added || r.IntN(4) != 0 {
		return op
	}
	x.rawRows++
	table, row := x.sc.AddsTable.Name, model.R("at", fmt.Sprint(x.rawRows), "what", "audit "+fmt.Sprint(x.rawRows))
	return func(tx pipeline.Tx) error {
		if err := op(tx); err != nil {
			return err
		}
		tx.InsertRow(table, row)
		return nil
	}
}

// client is an application client: it issues its share of the workload
// through the fault phase, retrying timeouts as applications do.
func (x *world) client(n *sim.Node) func(ctx context.Context) {
	return func(ctx context.Context) {
		env := n.Env()
		src := &services.SourceClient{From: n, DB: x.db}
		dw := &pipeline.DualWriter{Env: env, Source: src}
		for i, s := range storeKinds {
			dw.Stores = append(dw.Stores, &services.StoreClient{From: n, To: x.stores[i], StoreKind: s.kind})
		}
		// No client starts an operation once the fault phase is over or
		// Txns transactions committed: see settled. Rolled-back and
		// failed operations do not count, so a run commits Txns
		// transactions unless the fault phase ends first (or a retry
		// after a timeout commits one twice). While the operations in
		// flight could make up the rest, a client waits to see.
		for x.w.Now() < x.quietAt && x.committed() < x.opts.Txns {
			if x.committed()+x.busy >= x.opts.Txns {
				if env.Sleep(ctx, 10*time.Millisecond) != nil {
					return
				}
				continue
			}
			op := x.withRawRow(x.wl.Next(env.Rand()), env.Rand())
			func() {
				x.busy++
				o := x.ops.begin(x.w.Now())
				// Also when a crash unwinds the task: the operation failed.
				defer func() { x.busy--; x.ops.end(o, x.w.Now()) }()
				switch x.sys {
				case DualWrite:
					o.err = dw.Do(ctx, op)
					return
				case TwoPC:
					o.err = x.do2PC(ctx, n, op)
					return
				}
				err := src.Commit(ctx, op)
				for retry := 0; retry < 2 && err == pipeline.ErrTimeout; retry++ {
					err = src.Commit(ctx, op)
				}
				o.err = err
			}()
			// Pace the rest over nine tenths of what is left of the
			// fault phase, so the clients together commit Txns before
			// its end, going faster when rollbacks, failures and
			// crashed clients put them behind.
			// A client sleeps at most 1.5 times think: at most three
			// quarters of what is left, so the last few transactions
			// are not left to a sleep past the end.
			left := max(x.quietAt-x.w.Now(), 0)
			think := min(left*9/10*time.Duration(x.opts.Clients)/time.Duration(max(x.opts.Txns-x.committed(), 1)), left/2)
			if env.Sleep(ctx, think/2+time.Duration(env.Rand().Int64N(int64(think)+1))) != nil {
				return
			}
		}
	}
}

// committed is how many application transactions the source committed
// (its WAL after the initial load), as of when it was last up.
func (x *world) committed() int {
	if db, ok := x.db.State().(*services.SourceDB); ok {
		x.lastCommitted = len(db.WAL()) - 1
	}
	return x.lastCommitted
}

// observe samples the stores during the whole run: one key from one store
// every few milliseconds, and the whole replica now and then.
func (x *world) observe(ctx context.Context) {
	n := x.observer
	env := n.Env()
	const timeout = 100 * time.Millisecond
	if d := x.opts.ObserverDelay; d > 0 && env.Sleep(ctx, d) != nil {
		return
	}
	for i := 0; ; i++ {
		if env.Sleep(ctx, 25*time.Millisecond) != nil {
			return
		}
		x.learnKeys()
		if len(x.keys) == 0 {
			continue
		}
		si := env.Rand().IntN(len(x.stores))
		k := x.keys[env.Rand().IntN(len(x.keys))]
		call := x.w.Now()
		r, err := services.Read(ctx, n, x.stores[si], k, timeout)
		if err == nil {
			x.hist.Reads = append(x.hist.Reads, model.Read{Store: storeKinds[si].name, Key: k, Call: call, Return: x.w.Now(), Found: r.Found, Doc: r.Doc})
		}
		if i%20 == 0 {
			snap, err := services.ReadAll(ctx, n, x.stores[0], timeout)
			if err == nil {
				snap.At = x.w.Now()
				x.hist.Snapshots = append(x.hist.Snapshots, snap)
			}
		}
	}
}

// learnKeys adds the keys of newly committed transactions to the set the
// observer samples from (deleted keys stay in it: reading them is useful).
func (x *world) learnKeys() {
	db, ok := x.db.State().(*services.SourceDB)
	if !ok {
		return
	}
	wal := db.WAL()
	for _, t := range wal[x.walSeen:] {
		for _, c := range t.Changes {
			if k := c.Key(); !x.keySeen[k] {
				x.keySeen[k] = true
				x.keys = append(x.keys, k)
			}
		}
	}
	x.walSeen = len(wal)
}

func (x *world) topology() faults.Topology {
	var t faults.Topology
	for _, n := range x.roles {
		if !x.faultable(n) {
			n.Role = faults.RoleObserver
		}
		t.Nodes = append(t.Nodes, n)
	}
	return t
}

func (x *world) faultable(n faults.Node) bool {
	if n.Role == faults.RoleObserver {
		return false
	}
	if len(x.sc.Nodes) > 0 {
		for _, name := range x.sc.Nodes {
			if name == n.Name {
				return true
			}
		}
		return false
	}
	for _, r := range x.sc.Roles {
		if r == n.Role {
			return true
		}
	}
	return false
}

// planFaults draws the seed's fault plan from its own PRNG stream, so the
// plan depends on the seed alone and can be printed before the run.
func (x *world) planFaults() faults.Plan {
	if x.opts.Plan != nil {
		return *x.opts.Plan
	}
	if x.sc.StallSourceAtStart {
		// The source stops answering as the capture asks for its first
		// snapshot, for longer than a request waits: the capture asks
		// again, and the requests that timed out run late, in any order.
		return x.sc.StallPlan(x.seed, x.opts.Quiet, "db")
	}
	if len(x.sc.Kinds) == 0 {
		return faults.Plan{Quiet: x.opts.Quiet}
	}
	rng := rand.New(rand.NewPCG(x.seed, 0x5eedfa17))
	return x.sc.DrawPlan(rng, x.topology(), x.opts.Quiet)
}

func (x *world) run(plan faults.Plan) error {
	w := x.w
	target := &simTarget{x: x}
	inj := faults.NewInjector(target)
	var injErr error
	for i, f := range plan.Faults {
		w.At(f.At, int64(i), func() {
			if err := inj.Apply(f); err != nil && injErr == nil {
				injErr = err
			}
			x.noteCuts()
			x.noteTimeline()
		})
	}
	w.At(plan.Quiet, -2, func() {
		if err := inj.HealAll(); err != nil && injErr == nil {
			injErr = err
		}
		target.healEverything()
		x.noteCuts()
		x.noteTimeline()
	})
	// Step through the whole run, fault phase included, so convergence is
	// timed to within a step wherever it happens; stepping does not change
	// what the world does.
	const step = 50 * time.Millisecond
	quietRestarted := false
	x.noteTimeline()
	for w.Now() < x.hist.Deadline {
		next := min(w.Now()+step, x.hist.Deadline)
		if w.Now() < plan.Quiet {
			next = min(next, plan.Quiet)
		}
		if err := w.Run(next); err != nil {
			return err
		}
		if injErr != nil {
			return injErr
		}
		x.noteTimeline()
		x.noteConvergence()
		if x.atQuiet < 0 && w.Now() >= plan.Quiet {
			x.atQuiet = x.committed()
		}
		if x.settled() {
			if !quietRestarted && len(x.sc.QuietRestart) > 0 {
				// Everything caught up and nothing new is coming: the
				// moment a lost store goes unnoticed unless its applier
				// looks.
				quietRestarted = true
				for _, name := range x.sc.QuietRestart {
					if err := target.Crash(name); err != nil {
						return err
					}
					if err := target.Restart(name); err != nil {
						return err
					}
				}
				x.noteTimeline()
				for _, name := range x.sc.QuietRestart {
					x.hist.Faults = append(x.hist.Faults, model.FaultWindow{Start: w.Now(), End: w.Now(), What: "restart " + name + " (all quiet)"})
				}
				continue
			}
			break
		}
	}
	return injErr
}

// noteConvergence keeps History.ConvergedAt: for each store, the first
// step from which it has been up and at or past the source's last commit,
// recorded against that commit. A newer commit, or the store falling
// behind, losing its position or going down, clears the record. So the
// record left at the end is against the final source position, whether or
// not clients were still idling or paused then, and its time is when the
// store was first seen there: at most one step after it got there, never
// before.
func (x *world) noteConvergence() {
	db, ok := x.db.State().(*services.SourceDB)
	if !ok {
		return // the source is down: nothing commits, records stand
	}
	last := db.LastLSN()
	if i := x.cutAt(db); i >= 0 && i < len(db.WAL()) {
		last = db.WAL()[i-1].CommitLSN
	}
	for i, n := range x.stores {
		name := storeKinds[i].name
		var pos model.Position
		var has bool
		if s, up := n.State().(*services.Store); up {
			pos, has = s.Position()
		}
		if !has || pos.LSN < last {
			delete(x.hist.ConvergedAt, name)
			continue
		}
		if _, seen := x.hist.ConvergedAt[name]; !seen || x.convergedLSN[name] != last {
			x.hist.ConvergedAt[name] = x.w.Now()
			x.convergedLSN[name] = last
		}
	}
}

// settled says whether the run can stop. The source is final once no
// client will issue anything more: the fault phase is over (no client
// starts an operation after it) and no client is inside one, however long
// idle or paused clients still sleep. Then dual writes are done, and the
// pipeline is done when every store has converged on the final position.
func (x *world) settled() bool {
	if x.w.Now() < x.quietAt || x.busy > 0 {
		return false
	}
	switch x.sys {
	case DualWrite:
		return true
	case TwoPC:
		return !x.inDoubt()
	}
	for _, s := range storeKinds {
		if _, ok := x.hist.ConvergedAt[s.name]; !ok {
			return false
		}
	}
	return true
}

// cutAt is where the judged history ends once the capture has stopped on
// input it cannot capture: the index in the WAL of the transaction it
// refused (the one the NoKeyError names, or else the first the source
// refuses to stream), so that the stores are judged on what the pipeline
// could deliver. -1 while the capture runs; len(WAL) when nothing is cut.
func (x *world) cutAt(db *services.SourceDB) int {
	if x.stopped == nil || x.cut >= 0 {
		return x.cut
	}
	wal := db.WAL()
	var nk *pipeline.NoKeyError
	byXID := errors.As(x.stopped, &nk) && nk.XID != 0
	x.cut = len(wal)
	for i, t := range wal {
		if (byXID && t.XID == nk.XID) || (!byXID && db.Refuses(t)) {
			x.cut = max(i, 1) // the initial load is never refused
			break
		}
	}
	return x.cut
}

// finish reads the ground truth and the final stores from the world. The
// source and every store are up by then (the quiet phase restarted them):
// one that is not is the harness's failure, not the system's, and judging
// an empty store would report every key lost.
func (x *world) finish() error {
	db, ok := x.db.State().(*services.SourceDB)
	if !ok {
		return fmt.Errorf("harness: the source database is down at the end of the run")
	}
	x.hist.Committed = db.WAL()
	if i := x.cutAt(db); i >= 0 {
		x.hist.Committed = x.hist.Committed[:i]
	}
	x.hist.Aborted = x.rec.Aborted
	for i, n := range x.stores {
		name := storeKinds[i].name
		s, ok := n.State().(*services.Store)
		if !ok {
			return fmt.Errorf("harness: store %s is down at the end of the run", name)
		}
		x.hist.Final = append(x.hist.Final, s.Snapshot(name, x.w.Now()))
	}
	if x.cluster != nil {
		x.hist.LogLosses = x.cluster.Losses()
	}
	return nil
}

// followNodes starts the run's timeline: the nodes a fault can touch, in
// the order they were built.
func (x *world) followNodes() {
	x.tl = &model.Timeline{}
	x.hist.Timeline = x.tl
	for _, r := range x.roles {
		if r.Role == faults.RoleObserver {
			continue
		}
		if n, ok := x.w.Node(r.Name); ok {
			x.tlNodes = append(x.tlNodes, n)
			x.tl.Nodes = append(x.tl.Nodes, r.Name)
		}
	}
	x.cutFrom = make([]string, len(x.tlNodes))
	x.tlLast = make([][2]string, len(x.tlNodes))
	x.tlPos = make([]model.StorePosition, len(x.stores))
}

// noteTimeline records every followed node's state and every store's
// position now, for the report. It only reads the world (no event, no
// random draw), so a run and its trace hash are the same with it or
// without it. It runs after every fault and every step of the run loop,
// so a node state that lasts less than a step and comes from outside the
// plan (a failed-over leader's restart) is placed within a step.
// Partitions change only with faults, so the cut-offs are read then
// (noteCuts), not at every step.
func (x *world) noteTimeline() {
	now := x.w.Now()
	for i, n := range x.tlNodes {
		state, detail := model.NodeUp, ""
		switch {
		case !n.Up():
			state = model.NodeCrashed
		case n.Paused():
			state = model.NodePaused
		case x.cutFrom[i] != "":
			state, detail = model.NodeCutOff, "from "+x.cutFrom[i]
		}
		if last := [2]string{string(state), detail}; last != x.tlLast[i] {
			x.tlLast[i] = last
			x.tl.Note(n.Name(), now, state, detail)
		}
	}
	var source model.LSN
	if db, ok := x.db.State().(*services.SourceDB); ok {
		source = db.LastLSN()
	} else if k := len(x.tl.Positions); k > 0 {
		source = x.tl.Positions[k-1].Source // down: nothing commits
	}
	pos := x.tlPos // Sample copies what it keeps
	for i, n := range x.stores {
		pos[i] = model.StorePosition{}
		if s, up := n.State().(*services.Store); up {
			p, has := s.Position()
			pos[i] = model.StorePosition{Up: true, Has: has, LSN: p.LSN}
		}
	}
	x.tl.Sample(now, source, pos)
}

// noteCuts reads whom a partition cuts each followed node off from.
func (x *world) noteCuts() {
	for i, n := range x.tlNodes {
		x.cutFrom[i] = x.cutOffFrom(n)
	}
}

// cutOffFrom names the followed nodes a partition cuts n off from, in
// either direction, comma-separated; "" when none.
func (x *world) cutOffFrom(n *sim.Node) string {
	net := x.w.Net()
	var from []string
	for _, m := range x.tlNodes {
		if m != n && (net.Blocked(n, m) || net.Blocked(m, n)) {
			from = append(from, m.Name())
		}
	}
	return strings.Join(from, ",")
}
