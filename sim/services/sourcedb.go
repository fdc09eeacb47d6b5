package services

import (
	"context"
	"fmt"
	"sort"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/sim"
)

// Recorder is the harness's view of the source that survives crashes: what
// was rolled back (values that must never be seen downstream).
type Recorder struct {
	Aborted []model.Txn
}

// SourceDB is a simulated PostgreSQL: tables with primary keys, transactions
// that commit atomically in one total order with increasing LSNs, a durable
// WAL synced at every commit, and one logical replication slot whose
// confirmed position is saved only at checkpoints, so after a crash it moves
// back a little, as PostgreSQL's does.
type SourceDB struct {
	n     *sim.Node
	rec   *Recorder
	state *model.State
	wal   []model.Txn
	lsn   model.LSN
	xid   uint64
	slot  slot
	// streams are walsenders waiting for the next commit.
	streams []*streamWaiter
}

type streamWaiter struct {
	sess  int
	after model.LSN
	max   int
	reply func([]model.Txn, error)
	done  bool
}

// StreamWait is how long a walsender holds a read open waiting for commits
// before answering with nothing (a keepalive).
const StreamWait = 250 * time.Millisecond

func (db *SourceDB) nextWait(sess int, after model.LSN, max int, reply func([]model.Txn, error)) {
	txns, err := db.next(sess, after, max)
	if err != nil || len(txns) > 0 {
		reply(txns, err)
		return
	}
	sw := &streamWaiter{sess: sess, after: after, max: max, reply: reply}
	db.streams = append(db.streams, sw)
	db.n.At(db.n.World().Now()+StreamWait, func() {
		if !sw.done {
			sw.done = true
			reply(db.next(sw.sess, sw.after, sw.max))
		}
	})
}

// wakeStreams pushes a new commit to the walsenders waiting for one.
func (db *SourceDB) wakeStreams() {
	for _, sw := range db.streams {
		if !sw.done {
			sw.done = true
			sw.reply(db.next(sw.sess, sw.after, sw.max))
		}
	}
	clear(db.streams)
	db.streams = db.streams[:0]
}

type slot struct {
	Exists    bool
	Confirmed model.LSN
}

// CheckpointEvery is how often the slot's confirmed position reaches disk.
const CheckpointEvery = time.Second

// BootSourceDB returns the boot function of a source database node.
func BootSourceDB(rec *Recorder) func(n *sim.Node) any {
	return func(n *sim.Node) any {
		db := &SourceDB{n: n, rec: rec, state: model.NewState()}
		if v, ok := n.Disk().Get("wal"); ok {
			db.wal = v.([]model.Txn)
		}
		for _, t := range db.wal {
			db.state.Apply(t)
			db.lsn, db.xid = t.CommitLSN, t.XID
		}
		if v, ok := n.Disk().Get("slot"); ok {
			db.slot = v.(slot)
		}
		n.Go("checkpointer", func(ctx context.Context) {
			for n.Env().Sleep(ctx, CheckpointEvery) == nil {
				db.checkpoint()
			}
		})
		return db
	}
}

func (db *SourceDB) checkpoint() {
	db.n.Disk().Put("slot", db.slot)
	db.n.Disk().Sync()
}

// WAL is every committed transaction in commit order (the ground truth).
func (db *SourceDB) WAL() []model.Txn { return db.wal }

// LastLSN is the commit LSN of the newest transaction.
func (db *SourceDB) LastLSN() model.LSN { return db.lsn }

// State is the current table content.
func (db *SourceDB) State() *model.State { return db.state }

// Exec runs fn as one transaction: on error it rolls back (and the attempt
// is recorded as aborted), otherwise it commits durably.
func (db *SourceDB) Exec(fn pipeline.TxnFunc) (model.Txn, error) {
	tx := &dbTx{db: db, view: map[model.Key]*model.Row{}}
	db.xid++
	err := fn(tx)
	if err == nil {
		err = tx.err
	}
	if err != nil {
		db.rec.Aborted = append(db.rec.Aborted, model.Txn{XID: db.xid, Changes: tx.changes})
		return model.Txn{}, fmt.Errorf("%w: %v", ErrAborted, err)
	}
	if len(tx.changes) == 0 {
		return model.Txn{XID: db.xid}, nil
	}
	db.lsn += model.LSN(8 * (1 + db.n.Rand().IntN(64)))
	t := model.Txn{XID: db.xid, CommitLSN: db.lsn, Changes: tx.changes}
	// The WAL and the tables keep their own rows: the caller's t and
	// what readers are handed later (clones) cannot alter the truth.
	own := t.Clone()
	db.state.Apply(own)
	db.wal = append(db.wal, own)
	db.n.Disk().Put("wal", db.wal)
	db.n.Disk().Sync()
	db.wakeStreams()
	return t, nil
}

// ToastThreshold is the value size from which the simulated source stores a
// column value out of line, as PostgreSQL's TOAST does for a row over about
// 2 kB (with STORAGE EXTERNAL, no compression first). Workloads keep their
// values either well under it or well over it, so the exact boundary, which
// in PostgreSQL depends on the whole row, never decides.
const ToastThreshold = 2000

type dbTx struct {
	db      *SourceDB
	view    map[model.Key]*model.Row // own writes; nil row = deleted
	changes []model.Change
	err     error // the first failed statement; the transaction rolls back
}

func (tx *dbTx) Get(table, pk string) (model.Row, bool) {
	k := model.Key{Table: table, PK: pk}
	if r, ok := tx.view[k]; ok {
		return *r, *r != nil
	}
	e, ok := tx.db.state.Get(k)
	return e.Row, ok
}

func (tx *dbTx) Put(table, pk string, row model.Row) {
	k := model.Key{Table: table, PK: pk}
	old, exists := tx.Get(table, pk)
	if !exists {
		tx.view[k] = &row
		tx.changes = append(tx.changes, model.Change{Table: table, PK: pk, Op: model.OpInsert, Row: row})
		return
	}
	merged := row
	for c := range old {
		if _, set := row[c]; !set {
			merged = nil // some column keeps its value: merge
			break
		}
	}
	if merged == nil {
		merged = make(model.Row, len(old)+len(row))
		for c, v := range old {
			merged[c] = v
		}
		for c, v := range row {
			merged[c] = v
		}
	}
	tx.view[k] = &merged
	sent, unchanged := toastImage(merged, func(c string) bool { _, set := row[c]; return !set })
	tx.changes = append(tx.changes, model.Change{Table: table, PK: pk, Op: model.OpUpdate, Row: sent, Unchanged: unchanged})
}

// toastImage is what pgoutput sends of an updated row on a table whose
// replica identity is its key: every column, except the out-of-line ones
// the update did not set, which it marks unchanged (their data is not in
// the WAL record).
func toastImage(row model.Row, untouched func(col string) bool) (model.Row, []string) {
	big := false
	for c, v := range row {
		big = big || (len(v) >= ToastThreshold && untouched(c))
	}
	if !big {
		return row, nil
	}
	var unchanged []string
	for _, c := range row.Columns() {
		if len(row[c]) >= ToastThreshold && untouched(c) {
			unchanged = append(unchanged, c)
		}
	}
	if unchanged == nil {
		return row, nil
	}
	sent := make(model.Row, len(row))
	for c, v := range row {
		sent[c] = v
	}
	for _, c := range unchanged {
		delete(sent, c)
	}
	return sent, unchanged
}

func (tx *dbTx) Delete(table, pk string) {
	if _, ok := tx.Get(table, pk); !ok {
		return
	}
	var none model.Row
	tx.view[model.Key{Table: table, PK: pk}] = &none
	tx.changes = append(tx.changes, model.Change{Table: table, PK: pk, Op: model.OpDelete})
}

func (tx *dbTx) Rekey(table, pk, newPK string) {
	row, ok := tx.Get(table, pk)
	if !ok || tx.err != nil || newPK == pk {
		return
	}
	if _, taken := tx.Get(table, newPK); taken {
		tx.err = fmt.Errorf("rekey %s/%s: duplicate key %s", table, pk, newPK)
		return
	}
	var none model.Row
	tx.view[model.Key{Table: table, PK: pk}] = &none
	tx.view[model.Key{Table: table, PK: newPK}] = &row
	sent, unchanged := toastImage(row, func(string) bool { return true })
	tx.changes = append(tx.changes, model.Change{Table: table, PK: newPK, OldPK: pk, Op: model.OpUpdate, Row: sent, Unchanged: unchanged})
}

// Snapshot (re)creates the slot at the current LSN and returns every row as
// of that LSN, in key order, in one atomic step.
func (db *SourceDB) Snapshot() model.Txn {
	db.slot = slot{Exists: true, Confirmed: db.lsn}
	db.checkpoint()
	snap := model.Txn{CommitLSN: db.lsn, Snapshot: true}
	for _, k := range db.state.Keys() {
		e, _ := db.state.Get(k)
		snap.Changes = append(snap.Changes, model.Change{Table: k.Table, PK: k.PK, Op: model.OpInsert, Row: e.Row, Revs: e.Writes})
	}
	return snap.Clone() // the rows are the source's own: hand out copies
}

// DropSlot removes the replication slot (a fault: an operator or a WAL
// retention limit dropped it).
func (db *SourceDB) DropSlot() {
	db.slot = slot{}
	db.checkpoint()
}

// Confirmed is the slot's confirmed position in memory.
func (db *SourceDB) Confirmed() model.LSN { return db.slot.Confirmed }

type session struct {
	ID        int
	Confirmed model.LSN
}

func (db *SourceDB) start() (session, error) {
	if !db.slot.Exists {
		return session{}, pipeline.ErrNoSlot
	}
	return session{ID: db.n.Incarnation(), Confirmed: db.slot.Confirmed}, nil
}

func (db *SourceDB) next(sess int, after model.LSN, max int) ([]model.Txn, error) {
	if sess != db.n.Incarnation() || !db.slot.Exists {
		return nil, ErrStaleSession
	}
	i := sort.Search(len(db.wal), func(i int) bool { return db.wal[i].CommitLSN > after })
	j := min(i+max, len(db.wal))
	out := make([]model.Txn, j-i)
	for k := range out {
		out[k] = db.wal[i+k].Clone() // the WAL is the ground truth: hand out copies
	}
	return out, nil
}

func (db *SourceDB) confirm(lsn model.LSN) {
	if db.slot.Exists && lsn > db.slot.Confirmed {
		db.slot.Confirmed = lsn
	}
}

// SourceClient is the application's connection to the source (pipeline.Source).
type SourceClient struct {
	From, DB *sim.Node
	Timeout  time.Duration
}

func (c *SourceClient) timeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Exec implements pipeline.Source.
func (c *SourceClient) Exec(ctx context.Context, fn pipeline.TxnFunc) (model.Txn, error) {
	return sim.Call(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB) (model.Txn, error) { return db.Exec(fn) })
}

// StreamClient is the capture's replication connection (pipeline.ChangeStream).
type StreamClient struct {
	From, DB *sim.Node
	Timeout  time.Duration
	Max      int // transactions per message (default 64)

	session int
	after   model.LSN
}

func (c *StreamClient) timeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Snapshot implements pipeline.ChangeStream.
func (c *StreamClient) Snapshot(ctx context.Context) (model.Txn, error) {
	return sim.Call(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB) (model.Txn, error) { return db.Snapshot(), nil })
}

// Start implements pipeline.ChangeStream.
func (c *StreamClient) Start(ctx context.Context) (model.LSN, error) {
	s, err := sim.Call(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB) (session, error) { return db.start() })
	if err != nil {
		return 0, err
	}
	c.session, c.after = s.ID, s.Confirmed
	return s.Confirmed, nil
}

// Next implements pipeline.ChangeStream: the source holds each read open
// until a commit arrives (or answers empty after StreamWait, and it asks
// again), as a walsender streams WAL.
func (c *StreamClient) Next(ctx context.Context) ([]model.Txn, error) {
	max := c.Max
	if max == 0 {
		max = 64
	}
	for {
		sess, after := c.session, c.after
		txns, err := sim.CallAsync(ctx, c.From, c.DB, StreamWait+c.timeout(), func(db *SourceDB, reply func([]model.Txn, error)) {
			db.nextWait(sess, after, max, reply)
		})
		if err != nil {
			return nil, err
		}
		if len(txns) > 0 {
			c.after = txns[len(txns)-1].CommitLSN
			return txns, nil
		}
	}
}

// Confirm implements pipeline.ChangeStream.
func (c *StreamClient) Confirm(ctx context.Context, lsn model.LSN) error {
	_, err := sim.Call(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB) (struct{}, error) { db.confirm(lsn); return struct{}{}, nil })
	return err
}
