package containers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"lockstep/checker"
	"lockstep/faults"
	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/kafkalog"
	"lockstep/pipeline/pgsource"
	"lockstep/pipeline/store/pgstore"
	"lockstep/pipeline/store/redisstore"
	"lockstep/pipeline/twopc/pgxa"
	"lockstep/scenarios"
	"lockstep/scenarios/workload"
)

// Config is one container run.
type Config struct {
	Scenario *scenarios.Scenario
	System   scenarios.System
	Seed     uint64
	Txns     int           // application transactions (default 300)
	Clients  int           // application clients (default 3)
	Faults   time.Duration // fault phase (default 30s)
	Settle   time.Duration // how long the stores may take to converge (default 60s)
	LogDir   string
	Logger   *slog.Logger
	// Bench measures throughput and commit-to-store lag (the pgbench scenario).
	Bench bool
	// Plan, when set, is the fault plan to run instead of one drawn from
	// the seed (its Quiet is the fault phase's length).
	Plan *faults.Plan
	// World, when set, is a world from Start to run in instead of one
	// started and closed for this run alone: Run resets it first when a
	// run used it before (World.Reset) and leaves it open. LogDir then
	// gets only this run's pipeline logs (default: a folder of its own in
	// the world's LogDir).
	World *World
	// Phase, when set, is told each phase as the run enters it (the
	// Phase* constants), so a caller can say what a minute-long run is
	// doing.
	Phase func(phase string)
}

// A container run's phases, in order.
const (
	PhaseStarting = "starting" // the containers, the source's tables and the pipeline
	PhaseFaults   = "faults"   // the workload under the fault plan
	PhaseQuiet    = "quiet"    // faults healed: reading the truth, waiting for the stores
	PhaseChecking = "checking" // the stores' final reads and the checker
)

func (c *Config) phase(p string) {
	if c.Phase != nil {
		c.Phase(p)
	}
}

func (c *Config) defaults() {
	if sc := c.Scenario; sc != nil {
		// The scenario's own size first (long-haul's), as in the
		// simulator; the container world's defaults after it.
		c.Txns = cmp.Or(c.Txns, sc.Size.Txns)
		c.Clients = cmp.Or(c.Clients, sc.Size.Clients)
		c.Faults = cmp.Or(c.Faults, sc.Size.Quiet)
		c.Settle = cmp.Or(c.Settle, sc.Size.Settle)
	}
	if c.Txns == 0 {
		c.Txns = 300
	}
	if c.Clients == 0 {
		c.Clients = 3
	}
	if c.Faults == 0 {
		c.Faults = 30 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Outcome is a finished container run.
type Outcome struct {
	Scenario string
	System   scenarios.System
	Seed     uint64
	Plan     faults.Plan
	History  *model.History
	Report   *checker.Report
	Wall     time.Duration
	LogDir   string
	Bench    *Bench
	// InDoubt is, for two-phase commit, what the run left in doubt.
	InDoubt *InDoubt
}

// Violated reports whether the system under test broke a claimed property.
func (o *Outcome) Violated() bool { return !o.Report.OK() }

// Lookup finds a scenario for the container world: pgbench, or a simulator
// scenario whose faults containers can make.
func Lookup(name string) (*scenarios.Scenario, error) {
	if name == Pgbench.Name {
		return Pgbench, nil
	}
	sc, err := scenarios.Resolve(name)
	if err != nil {
		return nil, err
	}
	return sc, Supported(sc)
}

// Supported reports whether a scenario can run in containers and why not.
func Supported(sc *scenarios.Scenario) error {
	if sc.AddsTable != nil {
		// The real capture's refusal is tested on its own (the capture
		// command's tests, pgsource's and the conformance suite's).
		return fmt.Errorf("scenario %s creates a table mid-run, which only the simulator does", sc.Name)
	}
	for _, k := range sc.Kinds {
		if k == faults.ClockJump {
			return fmt.Errorf("scenario %s draws clock jumps, which containers sharing the host clock cannot do", sc.Name)
		}
	}
	if sc.Workload != "pgbench" {
		if _, err := workload.New(sc.Workload); err != nil {
			return err
		}
	}
	return nil
}

// run is one container run in progress.
type run struct {
	cfg    Config
	w      *World
	start  time.Time
	log    *slog.Logger
	source *pgxpool.Pool
	stores []*storeConn
	hist   *model.History
	bench  *Bench
	// inDoubt is two-phase commit's prepared transactions over the run.
	inDoubt *InDoubt
	// initial is the initial load's committed transaction.
	initial model.Txn
	// tables are the workload's table definitions, which dual writes'
	// replica is created with.
	tables []model.Table

	mu    sync.Mutex
	keys  []model.Key
	known map[model.Key]bool
}

type storeConn struct {
	name  string
	kind  model.StoreKind
	store interface {
		pipeline.Store
		pipeline.DirectStore
		Read(ctx context.Context, k model.Key) (model.Doc, bool, error)
		ReadAll(ctx context.Context) (model.Snapshot, error)
	}
	close func()
}

func (r *run) since() time.Duration { return time.Since(r.start) }

// Run runs one scenario for one system against real services in containers
// and judges it with the same checker as the simulator.
func Run(ctx context.Context, cfg Config) (out *Outcome, err error) {
	cfg.defaults()
	if err := Supported(cfg.Scenario); err != nil {
		return nil, err
	}
	if err := SupportsSystem(cfg.Scenario, cfg.System, cfg.Plan != nil); err != nil {
		return nil, err
	}
	if cfg.Plan != nil {
		// Before starting anything: a misspelt node would otherwise
		// fail the run when its fault comes due, half a minute in.
		if err := CheckPlan(cfg.System, *cfg.Plan); err != nil {
			return nil, fmt.Errorf("containers: fault plan: %w", err)
		}
	}
	began := time.Now()
	cfg.phase(PhaseStarting)
	w, logDir := cfg.World, ""
	if w != nil {
		if logDir, err = w.claim(ctx, cfg); err != nil {
			return nil, err
		}
	} else {
		w, err = Start(ctx, Options{LogDir: cfg.LogDir, Pipeline: cfg.System == scenarios.Pipeline, Bugs: bugNames(cfg.Scenario), Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		logDir = w.LogDir
		defer func() {
			if cerr := w.Close(ctx); cerr != nil && err == nil {
				err = fmt.Errorf("containers: cleanup: %w", cerr)
			}
		}()
	}
	r := &run{cfg: cfg, w: w, log: cfg.Logger, known: map[model.Key]bool{}, hist: &model.History{
		Scenario: cfg.Scenario.Name, System: string(cfg.System), Seed: cfg.Seed, ConvergedAt: map[string]time.Duration{}}}
	defer r.closeConns()
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	if err := checkTopology(w, cfg.System); err != nil {
		return nil, err
	}
	r.start = time.Now()
	cfg.phase(PhaseFaults)
	plan, err := r.drive(ctx)
	if err != nil {
		return nil, err
	}
	report := checker.Check(r.hist, checker.Options{})
	return &Outcome{Scenario: cfg.Scenario.Name, System: cfg.System, Seed: cfg.Seed, Plan: plan, History: r.hist,
		Report: report, Wall: time.Since(began), LogDir: logDir, Bench: r.bench, InDoubt: r.inDoubt}, nil
}

func bugNames(sc *scenarios.Scenario) string {
	_, bugs, _ := strings.Cut(sc.Name, "+")
	return strings.ReplaceAll(bugs, "+", ",")
}

// auditSlot is the replication slot that reads the ground truth; the
// pipeline under test never touches it.
const auditSlot = "lockstep_audit"

// prepare creates the topic, the source tables, the audit slot, the initial
// rows, the store connections and (for the pipeline) its processes.
func (r *run) prepare(ctx context.Context) error {
	w := r.w
	klog, err := kafkalog.New(kafkalog.Config{Brokers: w.Kafka, Topic: Topic})
	if err != nil {
		return fmt.Errorf("containers: kafka: %w", err)
	}
	err = klog.EnsureTopic(ctx)
	klog.Close()
	if err != nil {
		return fmt.Errorf("containers: create topic: %w", err)
	}
	if r.source, err = pgxpool.New(ctx, w.SourceDSN); err != nil {
		return fmt.Errorf("containers: source: %w", err)
	}
	// Truncates are not part of the change stream (pgbench's data load
	// starts with one): publish inserts, updates and deletes only.
	if _, err := r.source.Exec(ctx, `CREATE PUBLICATION lockstep FOR ALL TABLES WITH (publish = 'insert, update, delete')`); err != nil {
		return fmt.Errorf("containers: publication: %w", err)
	}
	var initial []model.Change
	if r.cfg.Scenario.Workload == "pgbench" {
		if err := r.pgbenchTables(ctx); err != nil {
			return err
		}
	} else {
		wl, _ := workload.New(r.cfg.Scenario.Workload)
		initial = wl.Initial()
		// The workload's definitions, unique constraints included; a
		// table it writes without one gets text columns.
		for _, t := range wl.Tables() {
			if err := pgsource.CreateTable(ctx, r.source, t); err != nil {
				return fmt.Errorf("containers: source tables: %w", err)
			}
			r.tables = append(r.tables, t)
		}
		if err := pgsource.CreateTables(ctx, r.source, tablesOf(initial)); err != nil {
			return fmt.Errorf("containers: source tables: %w", err)
		}
		for _, t := range wl.Keyless() {
			if err := pgsource.CreateKeylessTable(ctx, r.source, t); err != nil {
				return fmt.Errorf("containers: source tables: %w", err)
			}
		}
	}
	if err := pgsource.CreateTables(ctx, r.source, map[string][]string{markerTable: {"v"}}); err != nil {
		return fmt.Errorf("containers: marker table: %w", err)
	}
	audit, err := pgsource.NewStream(pgsource.Config{DSN: w.SourceDSN, Slot: auditSlot})
	if err != nil {
		return err
	}
	snap, err := audit.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("containers: create the audit slot: %w", err)
	}
	snap.Close(ctx) // only the slot is wanted
	audit.Close(ctx)
	if r.cfg.System == scenarios.Debezium {
		// Before any row is written: Debezium's snapshot reads carry no
		// transaction, so it takes none (SystemDebezium) and streams the
		// initial rows like any other transaction.
		if err := w.StartDebezium(ctx, SystemDebezium); err != nil {
			return err
		}
	}
	beforeLoad, err := r.sourceLSN(ctx)
	if err != nil {
		return err
	}
	loaded := r.cfg.Scenario.Workload == "pgbench" || len(initial) > 0
	if r.cfg.Scenario.Workload == "pgbench" {
		if err := pgbench(ctx, w.SourceDSN, "-i", "-I", "g", "-s", "1"); err != nil {
			return err
		}
	} else if len(initial) > 0 {
		src := &pgsource.Source{Pool: r.source}
		load, err := src.Exec(ctx, func(tx pipeline.Tx) error {
			for _, c := range initial {
				tx.Put(c.Table, c.PK, c.Row)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("containers: initial rows: %w", err)
		}
		for _, c := range initial {
			r.learn(c.Key())
		}
		r.initial = load
	}
	if err := r.connectStores(ctx); err != nil {
		return err
	}
	if !captured(r.cfg.System) && len(r.initial.Changes) > 0 {
		// The application creates the replica's tables and loads its
		// initial rows into every store too (dual writes, two-phase
		// commit); the pipeline gets both from the capture's snapshot
		// instead.
		for _, s := range r.stores {
			if rep, ok := s.store.(*pgstore.Replica); ok {
				if err := rep.CreateTables(ctx, r.tables); err != nil {
					return fmt.Errorf("containers: %s: %w", s.name, err)
				}
			}
			if err := (labeled{s.store}).Write(ctx, r.initial); err != nil {
				return fmt.Errorf("containers: initial rows into %s: %w", s.name, err)
			}
		}
	}
	if r.cfg.System == scenarios.TwoPC {
		if err := w.StartCoordinator(ctx); err != nil {
			return err
		}
	}
	if r.cfg.System == scenarios.Pipeline || r.cfg.System == scenarios.Debezium {
		start := w.StartPipeline
		if r.cfg.System == scenarios.Debezium {
			start = func(ctx context.Context) error {
				if loaded {
					if err := w.awaitDebezium(ctx, SystemDebezium, beforeLoad, 3*time.Minute); err != nil {
						return err
					}
				}
				return w.StartDebeziumAppliers(ctx, SystemDebezium)
			}
		}
		if err := start(ctx); err != nil {
			return err
		}
		// Start the workload once the snapshot reached every store (a
		// marker committed after the pipeline started has arrived), so
		// the search index's revision counts start from the source's rows.
		if _, err := r.source.Exec(ctx, `INSERT INTO `+markerTable+` (pk, v) VALUES ('ready', 'ready')`); err != nil {
			return fmt.Errorf("containers: ready marker: %w", err)
		}
		ready := model.Key{Table: markerTable, PK: "ready"}
		deadline := time.Now().Add(3 * time.Minute)
		for _, s := range r.stores {
			for {
				if _, found, err := s.store.Read(ctx, ready); err == nil && found {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("containers: %s did not load the snapshot within 3 minutes; see the logs in %s", s.name, w.LogDir)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	return nil
}

func tablesOf(rows []model.Change) map[string][]string {
	cols := map[string]map[string]bool{}
	for _, c := range rows {
		if cols[c.Table] == nil {
			cols[c.Table] = map[string]bool{}
		}
		for col := range c.Row.All() {
			cols[c.Table][col] = true
		}
	}
	out := map[string][]string{}
	for t, cs := range cols {
		for c := range cs {
			out[t] = append(out[t], c)
		}
		sort.Strings(out[t])
	}
	return out
}

func (r *run) connectStores(ctx context.Context) error {
	w := r.w
	for _, s := range []struct {
		name string
		kind model.StoreKind
	}{{scenarios.ReplicaStore, model.Replica}, {scenarios.CacheStore, model.Cache}, {scenarios.SearchStore, model.Search}} {
		c := &storeConn{name: s.name, kind: s.kind}
		switch s.kind {
		case model.Cache:
			rdb := redis.NewClient(&redis.Options{Addr: w.RedisAddr, MaxRetries: -1, ReadTimeout: 30 * time.Second})
			st, err := redisstore.New(ctx, rdb, redisstore.Options{Name: s.name})
			if err != nil {
				rdb.Close()
				return fmt.Errorf("containers: redis: %w", err)
			}
			c.store, c.close = st, func() { rdb.Close() }
		default:
			dsn := w.ReplicaDSN
			if s.kind == model.Search {
				dsn = w.SearchDSN
			}
			pool, err := pgxpool.New(ctx, dsn)
			if err != nil {
				return fmt.Errorf("containers: %s: %w", s.name, err)
			}
			c.close = pool.Close
			if s.kind == model.Replica {
				c.store, err = pgstore.NewReplica(ctx, pool, pgstore.Options{Name: s.name})
			} else {
				c.store, err = pgstore.NewSearch(ctx, pool, pgstore.Options{Name: s.name})
			}
			if err != nil {
				pool.Close()
				return fmt.Errorf("containers: %s: %w", s.name, err)
			}
		}
		r.stores = append(r.stores, c)
		r.hist.Stores = append(r.hist.Stores, model.StoreSpec{Name: s.name, Kind: s.kind, Claims: r.cfg.Scenario.Claims(r.cfg.System, s.kind)})
	}
	return nil
}

func (r *run) closeConns() {
	for _, s := range r.stores {
		s.close()
	}
	if r.source != nil {
		r.source.Close()
	}
}

func (r *run) learn(k model.Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.known[k] {
		r.known[k] = true
		r.keys = append(r.keys, k)
	}
}

func (r *run) randomKey(rng *rand.Rand) (model.Key, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.keys) == 0 {
		return model.Key{}, false
	}
	return r.keys[rng.IntN(len(r.keys))], true
}

// topology names the run's containers with their roles, limited to those
// the scenario may fault.
// seedPlan is the seed's fault plan in the container world: the
// scenario's kinds (late in the fault phase for LateFaults, as in the
// simulator) at a container's pace.
func seedPlan(cfg Config, topo faults.Topology) faults.Plan {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eedfa17))
	return cfg.Scenario.DrawPlanPaced(rng, topo, faults.GenConfig{
		Quiet: cfg.Faults, MeanInterval: 5 * time.Second, MeanOutage: 4 * time.Second, FailoverDowntime: 12 * time.Second,
	})
}

func (r *run) topology() faults.Topology {
	t := Topology(r.cfg.System)
	for i, n := range t.Nodes {
		if !faultable(r.cfg.Scenario, n) {
			t.Nodes[i].Role = faults.RoleObserver
		}
	}
	return t
}

func faultable(sc *scenarios.Scenario, n faults.Node) bool {
	if len(sc.Nodes) > 0 {
		for _, name := range sc.Nodes {
			if name == n.Name || name == "cache" && n.Name == "redis" {
				return true
			}
		}
		return false
	}
	for _, role := range sc.Roles {
		if role == n.Role {
			return true
		}
	}
	return false
}

// drive runs the fault phase (workload, observer, faults), then the quiet
// phase, and records the history.
func (r *run) drive(ctx context.Context) (faults.Plan, error) {
	cfg := r.cfg
	plan := faults.Plan{Quiet: cfg.Faults}
	switch {
	case cfg.Plan != nil:
		plan = *cfg.Plan
		cfg.Faults = plan.Quiet
		r.cfg.Faults = plan.Quiet
	case cfg.Scenario.StallSourceAtStart:
		plan = cfg.Scenario.StallPlan(cfg.Seed, cfg.Faults, sourceNode)
	case len(cfg.Scenario.Kinds) > 0:
		plan = seedPlan(cfg, r.topology())
	}
	if err := plan.Validate(); err != nil {
		return plan, fmt.Errorf("containers: fault plan: %w", err)
	}
	r.hist.Faults = plan.Windows()
	r.hist.QuietAt = cfg.Faults
	r.hist.Deadline = cfg.Faults + cfg.Settle
	target := NewTarget(ctx, r.w)
	if cfg.System == scenarios.Debezium {
		target.Topic = SystemDebezium.TransactionTopic()
	}
	tl := &model.Timeline{}
	for _, n := range Topology(cfg.System).Nodes {
		tl.Nodes = append(tl.Nodes, n.Name)
	}
	r.hist.Timeline = tl
	target.Follow(tl, r.since)
	inj := faults.NewInjector(target)

	phase, stopPhase := context.WithTimeout(ctx, cfg.Faults)
	defer stopPhase()
	observe, stopObserve := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.observe(observe) }()
	go func() { defer wg.Done(); r.positions(observe, tl) }()
	var ps participants
	if cfg.System == scenarios.TwoPC {
		var err error
		if ps, err = r.participants(ctx); err != nil {
			stopObserve()
			wg.Wait()
			return plan, err
		}
		defer ps.close()
		r.inDoubt = &InDoubt{}
		wg.Add(1)
		go func() { defer wg.Done(); r.sampleInDoubt(observe, ps, r.inDoubt) }()
	}
	var bench *benchProbe
	if cfg.Bench {
		bench = newBenchProbe(ctx, r)
		wg.Add(1)
		go func() { defer wg.Done(); bench.sample(observe) }()
	}
	var faultErr error
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		for _, f := range plan.Faults {
			if !sleepUntil(phase, r.start.Add(f.At)) {
				return
			}
			r.log.Info("fault", "at", r.since().Round(time.Millisecond), "fault", f.What())
			if err := inj.Apply(f); err != nil {
				// Said now, not only when the run ends in this error a
				// minute later: the phase goes on without the fault.
				r.log.Warn("fault not applied; the run will end in this error", "fault", f.What(), "err", err)
				if faultErr == nil {
					faultErr = err
				}
			}
		}
	}()
	wlErr := r.workload(phase)
	<-phase.Done()
	fwg.Wait()
	r.log.Info("quiet phase", "at", r.since().Round(time.Millisecond))
	r.cfg.phase(PhaseQuiet)
	if err := inj.HealAll(); err != nil && faultErr == nil {
		faultErr = err
	}
	target.Settle()
	if faultErr != nil {
		stopObserve()
		wg.Wait()
		return plan, fmt.Errorf("containers: fault injection: %w", faultErr)
	}
	if wlErr != nil {
		stopObserve()
		wg.Wait()
		return plan, wlErr
	}
	if r.inDoubt != nil {
		// What recovery leaves in doubt is judged: the stores are read
		// once it resolved everything, or the settle time is up.
		r.awaitResolved(ctx, ps, r.inDoubt)
	}
	truth, err := r.readTruth(ctx)
	if err != nil {
		stopObserve()
		wg.Wait()
		return plan, err
	}
	r.hist.Committed = truth
	r.converge(ctx)
	stopObserve()
	wg.Wait()
	r.cfg.phase(PhaseChecking)
	for _, s := range r.stores {
		snap, err := s.store.ReadAll(ctx)
		if err != nil {
			return plan, fmt.Errorf("containers: final read of %s: %w", s.name, err)
		}
		snap.Store, snap.At = s.name, r.since()
		r.hist.Final = append(r.hist.Final, snap)
	}
	r.samplePositions(ctx, tl) // where the run ended, after the sampler stopped
	tl.Finish(r.since())
	dropMarker(r.hist)
	if !captured(cfg.System) {
		relabel(r.hist)
	}
	if bench != nil {
		r.bench = bench.result(r.hist)
	}
	return plan, nil
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// workload drives the source through the fault phase: the scenario's
// workload from several clients, or pgbench's TPC-B-like script.
func (r *run) workload(ctx context.Context) error {
	cfg := r.cfg
	if cfg.Scenario.Workload == "pgbench" {
		err := pgbench(ctx, r.w.SourceDSN, "-n", "-c", "4", "-j", "2", "-T", fmt.Sprint(int(cfg.Faults.Seconds())))
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	wl, _ := workload.New(cfg.Scenario.Workload)
	wl.Initial() // advances the workload's own counters past the initial rows
	var (
		mu     sync.Mutex
		issued int
	)
	rng := rand.New(rand.NewPCG(cfg.Seed, 0xa99))
	next := func() (pipeline.TxnFunc, bool) {
		mu.Lock()
		defer mu.Unlock()
		if issued >= cfg.Txns {
			return nil, false
		}
		issued++
		return wl.Next(rng), true
	}
	think := cfg.Faults * time.Duration(cfg.Clients) / time.Duration(cfg.Txns)
	var wg sync.WaitGroup
	for i := 0; i < cfg.Clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := &pgsource.Source{Pool: r.source}
			dw := &pipeline.DualWriter{Source: src}
			for _, s := range r.stores {
				dw.Stores = append(dw.Stores, labeled{s.store})
			}
			for ctx.Err() == nil {
				op, ok := next()
				if !ok {
					return
				}
				// An operation started in the fault phase finishes after it:
				// cutting a dual write off half-way would charge the harness's
				// own interruption to the baseline.
				opCtx, cancelOp := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				var txn model.Txn
				var err error
				switch cfg.System {
				case scenarios.DualWrite:
					err = dw.Do(opCtx, op)
				case scenarios.TwoPC:
					err = r.do2PC(ctx, opCtx, op)
				default:
					txn, err = src.Exec(opCtx, op)
					for retry := 0; retry < 2 && err != nil && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil; retry++ {
						txn, err = src.Exec(opCtx, op)
					}
				}
				cancelOp()
				for _, c := range txn.Changes {
					r.learn(c.Key())
				}
				if err != nil {
					r.log.Debug("workload: operation failed", "err", err)
				}
				if !sleepUntil(ctx, time.Now().Add(think/2+time.Duration(rand.Int64N(int64(think)+1)))) {
					return
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// labeled marks a dual write's documents with its transaction's XID, since a
// client cannot know its commit LSN; relabel turns XIDs into commit LSNs
// from the ground truth once it is read.
type labeled struct{ pipeline.DirectStore }

// xidLabel marks an XID in an LSN's place (two-phase commit's coordinator
// labels its rows alike).
const xidLabel = pgxa.XIDLabel

func (l labeled) Write(ctx context.Context, t model.Txn) error {
	t.CommitLSN = xidLabel | model.LSN(t.XID)
	return l.DirectStore.Write(ctx, t)
}

func relabel(h *model.History) {
	byXID := map[uint64]model.LSN{}
	for _, t := range h.Committed {
		byXID[t.XID] = t.CommitLSN
	}
	fix := func(d model.Doc) model.Doc {
		if d.LSN&xidLabel != 0 {
			if lsn, ok := byXID[uint64(d.LSN&^xidLabel)]; ok {
				d.LSN = lsn
			}
		}
		return d
	}
	for i := range h.Reads {
		h.Reads[i].Doc = fix(h.Reads[i].Doc)
	}
	for _, snaps := range [][]model.Snapshot{h.Snapshots, h.Final} {
		for _, s := range snaps {
			for k, d := range s.Docs {
				s.Docs[k] = fix(d)
			}
		}
	}
}

// observe samples stores during the whole run, as the simulator's observer
// does: one key from one store every 50ms and, on its own goroutine so a
// large store cannot hold the key reads up, the whole replica every second.
func (r *run) observe(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.snapshots(ctx) }()
	defer wg.Wait()
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0x0b5))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		k, ok := r.randomKey(rng)
		if !ok {
			continue
		}
		s := r.stores[rng.IntN(len(r.stores))]
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		call := r.since()
		doc, found, err := s.store.Read(rctx, k)
		cancel()
		if err == nil {
			r.mu.Lock()
			r.hist.Reads = append(r.hist.Reads, model.Read{Store: s.name, Key: k, Call: call, Return: r.since(), Found: found, Doc: doc})
			r.mu.Unlock()
		}
	}
}

func (r *run) snapshots(ctx context.Context) {
	every := time.Second
	for sleepUntil(ctx, time.Now().Add(every)) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snap, err := r.stores[0].store.ReadAll(rctx)
		cancel()
		if err == nil {
			snap.Store, snap.At = r.stores[0].name, r.since()
			r.mu.Lock()
			r.hist.Snapshots = append(r.hist.Snapshots, snap)
			r.mu.Unlock()
			every = snapshotEvery(len(snap.Docs))
		}
	}
}

// snapshotEvery is how long the observer waits between two whole reads of
// a store holding docs documents: a second, and a second more per
// snapshotDocs. The history keeps every snapshot whole for the torn check,
// so a pgbench soak (tables of about 160k rows, ten minutes) read every
// second kept about 10^8 documents; thinned, the same soak keeps about 40
// snapshots, and small stores are still read every second.
func snapshotEvery(docs int) time.Duration {
	return time.Second * time.Duration(1+docs/snapshotDocs)
}

// snapshotDocs is the store size that adds a second between snapshots.
const snapshotDocs = 10_000

// markerTable holds the end-of-run marker: a transaction committed after
// the workload, so the truth reader knows it has read everything before it.
// It is part of no history.
const markerTable = "lockstep_marker"

// readTruth reads every committed transaction from the audit slot, up to
// the end-of-run marker it commits first (waiting for silence instead would
// stop early behind a large transaction still being decoded).
func (r *run) readTruth(ctx context.Context) ([]model.Txn, error) {
	nonce := fmt.Sprintf("%d-%d", r.cfg.Seed, time.Now().UnixNano())
	if _, err := r.source.Exec(ctx, `INSERT INTO `+markerTable+` (pk, v) VALUES ('end', $1) ON CONFLICT (pk) DO UPDATE SET v = excluded.v`, nonce); err != nil {
		return nil, fmt.Errorf("containers: end-of-run marker: %w", err)
	}
	audit, err := pgsource.NewStream(pgsource.Config{DSN: r.w.SourceDSN, Slot: auditSlot})
	if err != nil {
		return nil, err
	}
	defer audit.Close(ctx)
	from, err := audit.Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("containers: audit slot: %w", err)
	}
	r.log.Info("reading the ground truth", "slot", auditSlot, "from", from)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var all []model.Txn
	for {
		txns, err := audit.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("containers: read the audit slot (%d transactions so far): %w", len(all), err)
		}
		for _, t := range txns {
			kept := t.Changes[:0:0]
			end := false
			for _, c := range t.Changes {
				if c.Table == markerTable {
					end = end || c.Row.Get("v") == nonce
					continue
				}
				kept = append(kept, c)
				r.learn(c.Key())
			}
			if len(kept) > 0 {
				t.Changes = kept
				all = append(all, t)
			}
			if end {
				return all, nil
			}
		}
	}
}

// dropMarker removes the marker's documents from what the stores showed.
func dropMarker(h *model.History) {
	reads := h.Reads[:0]
	for _, rd := range h.Reads {
		if rd.Key.Table != markerTable {
			reads = append(reads, rd)
		}
	}
	h.Reads = reads
	for _, snaps := range [][]model.Snapshot{h.Snapshots, h.Final} {
		for _, s := range snaps {
			for k := range s.Docs {
				if k.Table == markerTable {
					delete(s.Docs, k)
				}
			}
		}
	}
}

// converge waits until every store's position reaches the last committed
// transaction (pipeline), or a little while (dual writes), and records when.
func (r *run) converge(ctx context.Context) {
	var last model.LSN
	if n := len(r.hist.Committed); n > 0 {
		last = r.hist.Committed[n-1].CommitLSN
	}
	if !captured(r.cfg.System) {
		return // no store keeps a position: judged by what they hold
	}
	// The settle time starts now: healing and reading the truth must not
	// eat into it, or a slow failover would read as never converging.
	r.hist.Deadline = r.since() + r.cfg.Settle
	deadline := r.start.Add(r.hist.Deadline)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for _, s := range r.stores {
			if _, done := r.hist.ConvergedAt[s.name]; done {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			pos, ok, err := s.store.Position(pctx)
			cancel()
			if err == nil && ok && pos.LSN >= last {
				r.hist.ConvergedAt[s.name] = r.since()
			} else {
				all = false
			}
		}
		if all {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pgbench runs PostgreSQL's own benchmark client against the source.
func pgbench(ctx context.Context, dsn string, args ...string) error {
	path, err := exec.LookPath("pgbench")
	if err != nil {
		return fmt.Errorf("containers: pgbench not found (apt-get install -y postgresql-client-15)")
	}
	cmd := exec.CommandContext(ctx, path, append(args, dsn)...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("containers: pgbench %s: %v: %s", strings.Join(args, " "), err, lastLines(string(out), 5))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// pgbenchTables creates pgbench's tables with primary keys (before any data,
// so every change is keyed; pgbench_history gets a surrogate key).
func (r *run) pgbenchTables(ctx context.Context) error {
	return pgbenchTables(ctx, r.w.SourceDSN, r.source, r.cfg.System == scenarios.Debezium)
}

// pgbenchTables creates pgbench's keyed tables on the source at dsn (db
// is a connection to it); forDebezium makes pgbench_history.mtime text.
func pgbenchTables(ctx context.Context, dsn string, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, forDebezium bool) error {
	if err := pgbench(ctx, dsn, "-i", "-I", "dt", "-s", "1"); err != nil {
		return err
	}
	for _, sql := range []string{
		`ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)`,
		`ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid)`,
		`ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid)`,
		`ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY`,
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			return fmt.Errorf("containers: pgbench keys: %s: %w", sql, err)
		}
	}
	if forDebezium {
		// Debezium's JSON gives a timestamp as a number since the epoch,
		// which pipeline/debezium does not translate back into
		// PostgreSQL's text yet: compared with the source's text, every
		// history row would read as a phantom. As text, pgbench's
		// CURRENT_TIMESTAMP is stored (an assignment cast) and sent as
		// the same string by both.
		const sql = `ALTER TABLE pgbench_history ALTER COLUMN mtime TYPE text`
		if _, err := db.Exec(ctx, sql); err != nil {
			return fmt.Errorf("containers: pgbench for Debezium: %s: %w", sql, err)
		}
	}
	return nil
}

// positions samples the source's WAL position and every store's own
// position twice a second, for the report's position and lag charts.
func (r *run) positions(ctx context.Context, tl *model.Timeline) {
	for sleepUntil(ctx, time.Now().Add(500*time.Millisecond)) {
		r.samplePositions(ctx, tl)
	}
}

// sourceLSN is the source's current WAL position.
func (r *run) sourceLSN(ctx context.Context) (model.LSN, error) {
	var lsn string
	if err := r.source.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("containers: source position: %w", err)
	}
	return model.ParseLSN(lsn)
}

// samplePositions takes one sample. A store that does not answer in time
// counts as down for it; a source that does not, as where it last was.
func (r *run) samplePositions(ctx context.Context, tl *model.Timeline) {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	source, err := r.sourceLSN(qctx)
	if k := len(tl.Positions); err != nil && k > 0 {
		source = tl.Positions[k-1].Source
	}
	pos := make([]model.StorePosition, len(r.stores))
	for i, s := range r.stores {
		if p, has, err := s.store.Position(qctx); err == nil {
			pos[i] = model.StorePosition{Up: true, Has: has, LSN: p.LSN}
		}
	}
	if ctx.Err() != nil {
		return
	}
	tl.Sample(r.since(), source, pos)
}

// captured reports whether sys's stores are written by appliers from a
// captured log, each keeping its position (lockstep's pipeline, Debezium),
// rather than by the application itself (dual writes, 2PC).
func captured(sys scenarios.System) bool {
	return sys == scenarios.Pipeline || sys == scenarios.Debezium
}
