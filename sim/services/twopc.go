package services

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
	"lockstep/sim"
)

// Two-phase commit on the simulated source and stores: a participant's
// prepared transactions, durable on its node's disk (PostgreSQL keeps them
// in pg_twophase), each holding the locks of the rows it wrote (and, on the
// source, read) until its decision comes. A transaction that wants a lock
// another holds waits, and gives up after its lock timeout with
// twopc.ErrLockTimeout. A crash keeps what was prepared: the restarted node
// holds the same transactions and the same locks.

// prepared is one prepared transaction.
type prepared struct {
	GID     string
	Changes []model.Change
	Locks   []string
	// At is when it was prepared and Heuristic, when set, how long the
	// participant waits for its decision before rolling it back on its own
	// (the HeuristicRollback bug).
	At        time.Duration
	Heuristic time.Duration
}

// committedGID is a transaction the source committed with COMMIT PREPARED,
// as its commit record names it.
type committedGID struct {
	GID string
	LSN model.LSN
}

// participant is a node's 2PC state, rebuilt from its disk after a restart
// (see SourceDB.twopc and Store.twopc).
type participant struct {
	n       *sim.Node
	prep    map[string]*prepared
	locks   map[string]string // lock -> the gid holding it
	waiters []*lockWaiter
	// done is, on the source, every gid committed, in commit order
	// (durable), and doneAt its index by gid.
	done   []committedGID
	doneAt map[string]model.LSN
}

// lockWaiter is a prepare waiting for locks.
type lockWaiter struct {
	try  func() bool // true once it is answered
	done bool
}

const (
	prepKey = "2pc-prep\x00"
	doneKey = "2pc-done"
)

func loadParticipant(n *sim.Node) *participant {
	p := &participant{n: n, prep: map[string]*prepared{}, locks: map[string]string{}, doneAt: map[string]model.LSN{}}
	for _, k := range n.Disk().Keys() {
		if !strings.HasPrefix(k, prepKey) {
			continue
		}
		v, _ := n.Disk().Get(k)
		rec := v.(*prepared)
		p.hold(rec)
	}
	if v, ok := n.Disk().Get(doneKey); ok {
		p.done = v.([]committedGID)
		for _, d := range p.done {
			p.doneAt[d.GID] = d.LSN
		}
	}
	return p
}

// hold makes rec prepared: its locks taken and, with the heuristic bug, its
// timer armed.
func (p *participant) hold(rec *prepared) {
	p.prep[rec.GID] = rec
	for _, l := range rec.Locks {
		p.locks[l] = rec.GID
	}
	if rec.Heuristic > 0 {
		p.n.At(rec.At+rec.Heuristic, func() {
			if p.prep[rec.GID] == rec {
				p.drop(rec.GID) // no decision yet: taken as a rollback
			}
		})
	}
}

// conflicts reports whether a lock of locks is held by a transaction other
// than gid.
func (p *participant) conflicts(gid string, locks []string) bool {
	for _, l := range locks {
		if h, ok := p.locks[l]; ok && h != gid {
			return true
		}
	}
	return false
}

// prepare makes rec durable and takes its locks.
func (p *participant) prepare(rec *prepared) {
	rec.At = p.n.World().Now()
	p.n.Disk().Put(prepKey+rec.GID, rec)
	p.n.Disk().Sync()
	p.hold(rec)
}

// drop ends gid's prepared transaction (after its commit or rollback),
// durably, and wakes the prepares its locks held up.
func (p *participant) drop(gid string) {
	rec := p.prep[gid]
	if rec == nil {
		return
	}
	delete(p.prep, gid)
	for _, l := range rec.Locks {
		if p.locks[l] == gid {
			delete(p.locks, l)
		}
	}
	p.n.Disk().Delete(prepKey + gid)
	p.n.Disk().Sync()
	p.wake()
}

// wake retries the waiting prepares in the order they came.
func (p *participant) wake() {
	waiting := p.waiters
	p.waiters = nil
	for _, w := range waiting {
		if !w.done && !w.try() {
			p.waiters = append(p.waiters, w)
		}
	}
}

// acquire answers a prepare: attempt runs it against the current state and
// says which locks it needs (ok false: it answered already, e.g. a failed
// transaction); once none is held by another, take runs. While some is, it
// waits for releases, at most timeout, then answers ErrLockTimeout.
func (p *participant) acquire(gid string, timeout time.Duration, attempt func() (locks []string, ok bool), take func(locks []string), fail func(error)) {
	w := &lockWaiter{}
	w.try = func() bool {
		locks, ok := attempt()
		if !ok {
			w.done = true
			return true
		}
		if p.conflicts(gid, locks) {
			return false
		}
		w.done = true
		take(locks)
		return true
	}
	if w.try() {
		return
	}
	p.waiters = append(p.waiters, w)
	p.n.At(p.n.World().Now()+timeout, func() {
		if !w.done {
			w.done = true
			fail(fmt.Errorf("%s: %w", gid, twopc.ErrLockTimeout))
		}
	})
}

// gids is the prepared transactions' ids, sorted.
func (p *participant) gids() []string { return slices.Sorted(maps.Keys(p.prep)) }

func keyLock(k model.Key) string { return "k\x00" + k.Table + "\x00" + k.PK }

// changeLocks is the locks of the rows a transaction's changes write.
func changeLocks(changes []model.Change) []string {
	var locks []string
	for _, c := range changes {
		locks = append(locks, keyLock(c.Key()))
		if c.OldPK != "" {
			locks = append(locks, keyLock(model.Key{Table: c.Table, PK: c.OldPK}))
		}
	}
	slices.Sort(locks)
	return slices.Compact(locks)
}

// twopc is the source's 2PC state, loaded from its disk on first use.
func (db *SourceDB) twopc() *participant {
	if db.part == nil {
		db.part = loadParticipant(db.n)
	}
	return db.part
}

// lockingTx is a source transaction that notes every row it reads or
// writes: under 2PC a transaction locks them all (as SELECT ... FOR UPDATE
// and its writes do), so none changes under it until its decision. (The
// PostgreSQL source reads with a plain SELECT under SERIALIZABLE, which
// waits for no lock: there a conflicting read ends in a serialization
// failure instead, which this model does not have.)
type lockingTx struct {
	*dbTx
	keys []model.Key
}

func (t *lockingTx) note(table, pk string) { t.keys = append(t.keys, model.Key{Table: table, PK: pk}) }

func (t *lockingTx) Get(table, pk string) (model.Row, bool) {
	t.note(table, pk)
	return t.dbTx.Get(table, pk)
}

// The writes lock what they change (writeLocks), and only that: as on
// PostgreSQL, a delete or a key change of a row the transaction cannot see
// (one a prepared transaction inserted) finds nothing to change and waits
// for no one.

// locks is every lock the transaction needs: its rows' and the unique
// values its writes free or take (another transaction must not take a
// value this one frees, nor the one it takes, before the decision).
func (t *lockingTx) locks() []string {
	locks := make([]string, 0, len(t.keys)+len(t.changes))
	for _, k := range t.keys {
		locks = append(locks, keyLock(k))
	}
	locks = append(locks, t.writeLocks()...)
	slices.Sort(locks)
	return slices.Compact(locks)
}

// writeLocks is the locks of what the transaction writes: its changes'
// rows and the unique values they free or take. A transaction outside
// two-phase commit needs these only: PostgreSQL's plain reads take no row
// lock.
func (t *lockingTx) writeLocks() []string {
	locks := changeLocks(t.changes)
	db := t.db
	for _, c := range t.changes {
		for _, k := range []model.Key{c.Key(), {Table: c.Table, PK: c.OldPK}} {
			def, ok := db.defs[k.Table]
			if !ok || k.PK == "" {
				continue
			}
			own, _ := t.view.get(k)
			rows := []model.Row{own}
			if e, ok := db.state.Get(k); ok {
				rows = append(rows, e.Row)
			}
			for i := range def.Unique {
				for _, r := range rows {
					if r == nil {
						continue
					}
					if v, ok := def.UniqueValue(i, k.PK, r); ok {
						locks = append(locks, fmt.Sprintf("u\x00%s\x00%d\x00%s", k.Table, i, v))
					}
				}
			}
		}
	}
	slices.Sort(locks)
	return slices.Compact(locks)
}

// prepare2PC runs fn and prepares it under gid (twopc.Source.Prepare). The
// transaction runs again each time locks it needs are released, since
// what it read may have changed; it fails on its own only once it ran
// with every lock it needs free.
func (db *SourceDB) prepare2PC(gid string, fn pipeline.TxnFunc, lockTimeout time.Duration, reply func(model.Txn, error)) {
	p := db.twopc()
	if rec, ok := p.prep[gid]; ok { // a retried request
		reply(model.Txn{Changes: rec.Changes}.Clone(), nil) // the record's own rows stay here
		return
	}
	var tx *lockingTx
	var ferr error
	attempt := func() ([]string, bool) {
		tx, ferr = db.runLocking(fn)
		locks := tx.locks()
		if ferr != nil && !p.conflicts(gid, locks) {
			db.xid++
			db.rec.Aborted = append(db.rec.Aborted, model.Txn{XID: db.xid, Changes: tx.changes})
			reply(model.Txn{}, fmt.Errorf("%w: %w", ErrAborted, ferr))
			return nil, false
		}
		return locks, true
	}
	take := func(locks []string) {
		if len(tx.changes) == 0 {
			reply(model.Txn{}, nil) // read-only: nothing to prepare
			return
		}
		rec := &prepared{GID: gid, Changes: model.Txn{Changes: tx.changes}.Clone().Changes, Locks: locks}
		p.prepare(rec)
		reply(model.Txn{Changes: tx.changes}, nil)
	}
	p.acquire(gid, lockTimeout, attempt, take, func(err error) { reply(model.Txn{}, err) })
}

// runLocking runs fn once on a new transaction that records the locks it
// needs, and returns it with fn's error or the transaction's own.
func (db *SourceDB) runLocking(fn pipeline.TxnFunc) (*lockingTx, error) {
	tx := &lockingTx{dbTx: &dbTx{db: db}}
	err := fn(tx)
	if err == nil {
		err = tx.err
	}
	return tx, err
}

// execWaiting is Exec on a source that may hold prepared transactions: as
// on PostgreSQL, a transaction that writes a row (or takes or frees a
// unique value) a prepared transaction holds waits until the decision
// releases it, at most lockTimeout, then fails with twopc.ErrLockTimeout;
// it runs again each time locks are released, since what it read may have
// changed. Without prepared transactions it is Exec, answered at once.
func (db *SourceDB) execWaiting(fn pipeline.TxnFunc, lockTimeout time.Duration, reply func(model.Txn, error)) {
	p := db.part
	if p == nil || len(p.prep) == 0 {
		reply(db.exec(fn))
		return
	}
	var tx *lockingTx
	var ferr error
	attempt := func() ([]string, bool) {
		tx, ferr = db.runLocking(fn)
		return tx.writeLocks(), true
	}
	take := func([]string) {
		db.xid++
		reply(db.commitTx(tx.dbTx, ferr))
	}
	p.acquire("", lockTimeout, attempt, take, func(err error) { reply(model.Txn{}, err) })
}

// commitPrepared commits gid (twopc.Source.CommitPrepared): a new commit
// LSN, the WAL and the tables, as Exec commits.
func (db *SourceDB) commitPrepared(gid string) (model.LSN, error) {
	p := db.twopc()
	rec, ok := p.prep[gid]
	if !ok {
		if lsn, done := p.doneAt[gid]; done {
			return lsn, nil
		}
		return 0, fmt.Errorf("commit prepared %s: %w", gid, twopc.ErrUnknownGID)
	}
	db.xid++
	db.lsn += model.LSN(8 * (1 + db.n.Rand().IntN(64)))
	own := model.Txn{XID: db.xid, CommitLSN: db.lsn, Changes: rec.Changes}.Clone()
	db.applyCommitted(own)
	db.wal = append(db.wal, own)
	db.n.Disk().Put("wal", db.wal)
	p.done = append(p.done, committedGID{GID: gid, LSN: db.lsn})
	p.doneAt[gid] = db.lsn
	db.n.Disk().Put(doneKey, p.done)
	p.drop(gid) // syncs
	return db.lsn, nil
}

// BootParticipant wraps the boot function of a source or store node so that
// its prepared transactions are loaded at boot, not at the first 2PC call:
// a restarted participant holds their locks, and runs their heuristic
// timers, from the start.
func BootParticipant(boot func(n *sim.Node) any) func(n *sim.Node) any {
	return func(n *sim.Node) any {
		st := boot(n)
		if h, ok := st.(twopcHolder); ok {
			h.twopc()
		}
		return st
	}
}

// twopc is the store's 2PC state, loaded from its disk on first use.
func (s *Store) twopc() *participant {
	if s.part == nil {
		s.part = loadParticipant(s.n)
	}
	return s.part
}

// prepare2PC prepares t's changes under gid (twopc.Store.Prepare).
func (s *Store) prepare2PC(gid string, t model.Txn, lockTimeout, heuristic time.Duration, reply func(struct{}, error)) {
	p := s.twopc()
	if _, ok := p.prep[gid]; ok {
		reply(struct{}{}, nil)
		return
	}
	changes := t.Clone().Changes
	locks := changeLocks(changes)
	p.acquire(gid, lockTimeout, func() ([]string, bool) { return locks, true }, func(locks []string) {
		p.prepare(&prepared{GID: gid, Changes: changes, Locks: locks, Heuristic: heuristic})
		reply(struct{}{}, nil)
	}, func(err error) { reply(struct{}{}, err) })
}

// commitPrepared writes gid's changes at lsn (twopc.Store.CommitPrepared).
// Unique constraints are not checked again here: the source, which locked
// every value the transaction frees or takes, checked them.
func (s *Store) commitPrepared(gid string, lsn model.LSN) error {
	p := s.twopc()
	rec, ok := p.prep[gid]
	if !ok {
		return fmt.Errorf("commit prepared %s: %w", gid, twopc.ErrUnknownGID)
	}
	s.writeTxn(model.Txn{CommitLSN: lsn, Changes: rec.Changes}, false)
	p.drop(gid) // syncs
	return nil
}

// twopcHolder is a node state that holds prepared transactions.
type twopcHolder interface{ twopc() *participant }

func rollbackPrepared(ctx context.Context, from, to *sim.Node, timeout time.Duration, gid string) error {
	_, err := sim.Call(ctx, from, to, timeout, func(h twopcHolder) (struct{}, error) {
		h.twopc().drop(gid)
		return struct{}{}, nil
	})
	return err
}

func listPrepared(ctx context.Context, from, to *sim.Node, timeout time.Duration) ([]string, error) {
	return sim.Call(ctx, from, to, timeout, func(h twopcHolder) ([]string, error) { return h.twopc().gids(), nil })
}

// PreparedOn lists the transactions a source or store node holds prepared
// (none when it is down): for the harness, outside the simulation.
func PreparedOn(n *sim.Node) []string {
	if h, ok := n.State().(twopcHolder); ok && n.Up() {
		return h.twopc().gids()
	}
	return nil
}

// DefaultLockTimeout is how long a prepare waits for locks (lock_timeout).
const DefaultLockTimeout = 500 * time.Millisecond

// SourceParticipant is the coordinator's connection to the source
// (twopc.Source).
type SourceParticipant struct {
	From, DB    *sim.Node
	Timeout     time.Duration
	LockTimeout time.Duration
}

func (c *SourceParticipant) timeout() time.Duration { return orDefault(c.Timeout, DefaultTimeout) }

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Prepare implements twopc.Source.
func (c *SourceParticipant) Prepare(ctx context.Context, gid string, fn pipeline.TxnFunc) (model.Txn, error) {
	lt := orDefault(c.LockTimeout, DefaultLockTimeout)
	return sim.CallAsync(ctx, c.From, c.DB, lt+c.timeout(), func(db *SourceDB, reply func(model.Txn, error)) {
		db.prepare2PC(gid, fn, lt, reply)
	})
}

// CommitPrepared implements twopc.Source.
func (c *SourceParticipant) CommitPrepared(ctx context.Context, gid string) (model.LSN, error) {
	return sim.Call(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB) (model.LSN, error) { return db.commitPrepared(gid) })
}

// RollbackPrepared implements twopc.Source.
func (c *SourceParticipant) RollbackPrepared(ctx context.Context, gid string) error {
	return rollbackPrepared(ctx, c.From, c.DB, c.timeout(), gid)
}

// Prepared implements twopc.Source.
func (c *SourceParticipant) Prepared(ctx context.Context) ([]string, error) {
	return listPrepared(ctx, c.From, c.DB, c.timeout())
}

// StoreParticipant is the coordinator's connection to a store (twopc.Store).
type StoreParticipant struct {
	From, To    *sim.Node
	StoreKind   model.StoreKind
	Timeout     time.Duration
	LockTimeout time.Duration
	// HeuristicAfter, when set, has the store roll back a prepared
	// transaction whose decision has not come by then (the
	// HeuristicRollback bug).
	HeuristicAfter time.Duration
}

func (c *StoreParticipant) timeout() time.Duration { return orDefault(c.Timeout, DefaultTimeout) }

// Kind implements twopc.Store.
func (c *StoreParticipant) Kind() model.StoreKind { return c.StoreKind }

// Prepare implements twopc.Store.
func (c *StoreParticipant) Prepare(ctx context.Context, gid string, t model.Txn) error {
	lt, h := orDefault(c.LockTimeout, DefaultLockTimeout), c.HeuristicAfter
	_, err := sim.CallAsync(ctx, c.From, c.To, lt+c.timeout(), func(s *Store, reply func(struct{}, error)) {
		s.prepare2PC(gid, t, lt, h, reply)
	})
	return err
}

// CommitPrepared implements twopc.Store.
func (c *StoreParticipant) CommitPrepared(ctx context.Context, gid string, lsn model.LSN) error {
	_, err := sim.Call(ctx, c.From, c.To, c.timeout(), func(s *Store) (struct{}, error) { return struct{}{}, s.commitPrepared(gid, lsn) })
	return err
}

// RollbackPrepared implements twopc.Store.
func (c *StoreParticipant) RollbackPrepared(ctx context.Context, gid string) error {
	return rollbackPrepared(ctx, c.From, c.To, c.timeout(), gid)
}

// Prepared implements twopc.Store.
func (c *StoreParticipant) Prepared(ctx context.Context) ([]string, error) {
	return listPrepared(ctx, c.From, c.To, c.timeout())
}

// DiskDecisionLog is a coordinator's decision log on its node's disk,
// synced at every write (twopc.DecisionLog).
type DiskDecisionLog struct{ N *sim.Node }

const decisionsKey = "2pc-decisions"

func (l DiskDecisionLog) read() []twopc.Decision {
	v, _ := l.N.Disk().Get(decisionsKey)
	ds, _ := v.([]twopc.Decision)
	return ds
}

func (l DiskDecisionLog) write(ds []twopc.Decision) {
	l.N.Disk().Put(decisionsKey, ds)
	l.N.Disk().Sync()
}

// Commit implements twopc.DecisionLog.
func (l DiskDecisionLog) Commit(_ context.Context, d twopc.Decision) error {
	ds := l.read()
	l.write(append(ds[:len(ds):len(ds)], twopc.Decision{GID: d.GID, Txn: d.Txn.Clone()}))
	return nil
}

// Done implements twopc.DecisionLog.
func (l DiskDecisionLog) Done(_ context.Context, gid string) error {
	ds := l.read()
	if i := slices.IndexFunc(ds, func(d twopc.Decision) bool { return d.GID == gid }); i >= 0 {
		l.write(slices.Delete(slices.Clone(ds), i, i+1))
	}
	return nil
}

// Decisions implements twopc.DecisionLog.
func (l DiskDecisionLog) Decisions(context.Context) ([]twopc.Decision, error) {
	return slices.Clone(l.read()), nil
}

// CoordinatorServer is a coordinator process: it serves application
// clients' transactions, each in a task of its own, and runs recovery.
type CoordinatorServer struct {
	n *sim.Node
	c *twopc.Coordinator
}

// RecoveryEvery is how often a coordinator looks for in-doubt
// transactions (a transaction manager's periodic recovery scan).
const RecoveryEvery = time.Second

// BootCoordinator returns the boot function of a coordinator node: build
// makes the coordinator of each incarnation (its ID tells incarnations
// apart), and recovery starts at once.
func BootCoordinator(build func(n *sim.Node) *twopc.Coordinator) func(n *sim.Node) any {
	return func(n *sim.Node) any {
		c := build(n)
		n.Go("recovery", func(ctx context.Context) { c.RunRecovery(ctx, RecoveryEvery) })
		return &CoordinatorServer{n: n, c: c}
	}
}

// CoordinatorClient is an application's connection to the coordinator.
type CoordinatorClient struct {
	From, To *sim.Node
	Timeout  time.Duration
}

// DefaultCoordinatorTimeout is how long an application waits for the
// coordinator: every phase, lock waits included.
const DefaultCoordinatorTimeout = 2 * time.Second

// Do runs fn as one distributed transaction. ErrTimeout leaves its outcome
// unknown.
func (c *CoordinatorClient) Do(ctx context.Context, fn pipeline.TxnFunc) error {
	_, err := sim.CallAsync(ctx, c.From, c.To, orDefault(c.Timeout, DefaultCoordinatorTimeout), func(s *CoordinatorServer, reply func(struct{}, error)) {
		s.n.Go("txn", func(ctx context.Context) { reply(struct{}{}, s.c.Do(ctx, fn)) })
	})
	return err
}
