// Package pipeline is the system under test: a change-data-capture pipeline
// that captures the source database's committed transactions in commit order,
// appends them to a durable log and has every store apply that log in order
// from its own saved position. It also holds the naive dual-write baseline
// the pipeline is compared with.
//
// Everything here is written against ports (Env, ChangeStream, Log, Store) so
// the same code runs inside the deterministic simulator and against real
// services. Code in this package never touches the clock, goroutines or
// randomness except through Env.
package pipeline

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"lockstep/model"
)

// Env is the only source of time, concurrency and randomness for pipeline
// code. The simulator implements it with virtual time and parked tasks; the
// real world with the wall clock and goroutines.
type Env interface {
	Now() time.Time
	// Sleep waits d or until ctx is done, returning ctx's error then.
	Sleep(ctx context.Context, d time.Duration) error
	// Go starts fn as a new task of the same process.
	Go(name string, fn func(ctx context.Context))
	Rand() *rand.Rand
}

// ChangeStream is a logical replication stream of committed transactions
// in commit order.
//
// Its errors are transient (the capture reconnects and reads again) except
// those that wrap ErrUnsupported: a change, or a table, that the adapter can
// never express as row changes (a change to a table whose rows have no name,
// a TRUNCATE). Reading the same WAL again gives the same error at the same
// position, so an adapter wraps it only for what no retry can get past, and
// the capture stops on it rather than hold up every table behind it.
type ChangeStream interface {
	// Snapshot (re)creates the replication slot together with a consistent
	// snapshot of every table: the rows as of the snapshot's CommitLSN,
	// after which the slot streams. It drops any previous slot. The
	// snapshot stays open for reading until it is closed; its rows are
	// never all in memory at once (see SnapshotReader).
	Snapshot(ctx context.Context) (SnapshotReader, error)
	// Start opens the stream at the slot's confirmed position and returns
	// that position; transactions after it will follow. ErrNoSlot when the
	// slot does not exist.
	Start(ctx context.Context) (model.LSN, error)
	// Next returns the next committed transactions of the open stream, in
	// commit order, or none (and no error) once it has waited a while, a
	// second or so, without a whole one: a quiet source must not keep the
	// caller from confirming what it stored meanwhile. A transaction it can
	// never deliver is an error wrapping ErrUnsupported, every time the
	// stream reaches it; the whole transactions before it come back first.
	Next(ctx context.Context) ([]model.Txn, error)
	// Confirm tells the source that everything up to lsn is safely stored
	// downstream, so the slot may release it. It gives up when ctx ends.
	Confirm(ctx context.Context, lsn model.LSN) error
}

// SnapshotReader is a consistent snapshot of the source's tables, open for
// reading (PostgreSQL: a REPEATABLE READ transaction on the snapshot the slot
// exported). A snapshot of a million rows does not fit in memory the way one
// transaction does, so its rows come a page at a time, and as often as the
// reader asks: the capture reads them twice, once to count the records it
// will append and once to append them.
type SnapshotReader interface {
	// Head is the snapshot without its rows: Snapshot set, CommitLSN the
	// slot's consistent point, Schema the captured tables' definitions.
	// Its XID is 0.
	Head() model.Txn
	// Scan calls fn with the snapshot's rows, as inserts, a page at a time
	// until all were handed out, fn fails (Scan returns its error) or the
	// source does. Every Scan hands out the same rows; their order may
	// differ from one Scan to the next. fn may keep the pages.
	Scan(ctx context.Context, fn func(rows []model.Change) error) error
	// Close releases the snapshot. The slot stays: a capture that did not
	// append the whole snapshot must not stream from it (it takes a new
	// snapshot, see Capture).
	Close(ctx context.Context) error
}

// ReadSnapshot takes a snapshot and reads it whole into one transaction,
// for callers whose snapshots are small (tests, an empty audit slot).
func ReadSnapshot(ctx context.Context, cs ChangeStream) (model.Txn, error) {
	r, err := cs.Snapshot(ctx)
	if err != nil {
		return model.Txn{}, err
	}
	snap := r.Head()
	err = r.Scan(ctx, func(rows []model.Change) error {
		snap.Changes = append(snap.Changes, rows...)
		return nil
	})
	if cerr := r.Close(ctx); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return model.Txn{}, err
	}
	return snap, nil
}

// HeldSnapshot is a snapshot already in memory as one transaction, as a
// SnapshotReader handing out Page rows at a time (all at once when 0): for
// sources whose snapshots are small, such as fakes in tests.
type HeldSnapshot struct {
	Txn  model.Txn
	Page int
}

func (s HeldSnapshot) Head() model.Txn {
	h := s.Txn
	h.Changes = nil
	return h
}

func (s HeldSnapshot) Scan(ctx context.Context, fn func([]model.Change) error) error {
	rows := s.Txn.Changes
	page := s.Page
	if page <= 0 {
		page = max(len(rows), 1)
	}
	for i := 0; i < len(rows); i += page {
		if err := fn(rows[i:min(i+page, len(rows)):min(i+page, len(rows))]); err != nil {
			return err
		}
	}
	return nil
}

func (HeldSnapshot) Close(context.Context) error { return nil }

// Record is one entry of the log: a whole source transaction, so a store can
// apply it atomically and in order.
type Record struct {
	Offset int64
	Txn    model.Txn
}

// Log is an append-only, replicated, single-partition log (a Kafka topic
// partition) with consumer-group offsets.
type Log interface {
	// Produce appends txns in order. Retries of the same producer session
	// are deduplicated; a new session (after a crash) may duplicate.
	Produce(ctx context.Context, txns []model.Txn) (lastOffset int64, err error)
	// Fetch returns up to max records from offset on, only acknowledged ones.
	// An offset before Start is an error wrapping ErrOffsetOutOfRange: the
	// log deleted those records (retention), and nothing of them comes back.
	Fetch(ctx context.Context, offset int64, max int) ([]Record, error)
	// Start is the offset of the oldest record the log still holds (Kafka's
	// log start offset): 0 until retention deletes records.
	Start(ctx context.Context) (int64, error)
	// End is the offset after the last acknowledged record (the high
	// watermark): what tells an empty log from a slow fetch.
	End(ctx context.Context) (int64, error)
	// Commit stores a consumer group's next offset; Committed reads it back.
	Commit(ctx context.Context, group string, offset int64) error
	Committed(ctx context.Context, group string) (int64, error)
}

// Batch is what a sink applier hands a store in one call: transactions in
// log order and the position after them. Reset asks the store to drop
// everything first (a rebuild). Base, when set, is the position the applier
// believes the store is at: a store elsewhere (it restarted empty, or another
// writer moved it) refuses the batch with ErrPositionMismatch. Fresh, for a
// rebuild, says the applier believes the store holds no position: a store
// that has one (another applier brought it up meanwhile) refuses the batch
// the same way. Base and Fresh are the applier's fence: with either, a
// second applier of the store, or a zombie waking with an old batch, cannot
// write over what the other wrote.
type Batch struct {
	Txns     []model.Txn
	Position model.Position
	Reset    bool
	Base     *model.Position
	Fresh    bool
}

// Refuses reports whether a store at pos (has: whether it holds one) must
// refuse b: its Base is not pos, or it is Fresh and the store has a
// position. The stores' shared rule, for adapters that check in Go.
func (b Batch) Refuses(pos model.Position, has bool) bool {
	return b.Base != nil && (!has || pos != *b.Base) || b.Fresh && has
}

// Store is a downstream store as a sink applier sees it.
type Store interface {
	Kind() model.StoreKind
	// Apply writes the batch; where the store allows it, data and position
	// change atomically. Changes already reflected (doc LSN >= txn LSN) must
	// not be applied again.
	Apply(ctx context.Context, b Batch) error
	// Position returns the store's saved position; ok is false when the
	// store holds none (it is new or lost its data).
	Position(ctx context.Context) (pos model.Position, ok bool, err error)
}

// Errors shared by adapters.
var (
	// ErrNoSlot: the replication slot does not exist (yet, or any more).
	ErrNoSlot = errors.New("replication slot does not exist")
	// ErrTimeout: the call's outcome is unknown; it may have taken effect.
	ErrTimeout = errors.New("timed out: outcome unknown")
	// ErrUnavailable: the call certainly did not take effect.
	ErrUnavailable = errors.New("unavailable")
	// ErrPositionMismatch: the store is not where the batch expected it.
	ErrPositionMismatch = errors.New("store position is not the batch's base")
	// ErrStoreLost: the store holds no position any more (it restarted
	// empty, or its data was dropped); it must be rebuilt from the log.
	ErrStoreLost = errors.New("store lost its data")
	// ErrRecordTooLarge: the log refused a record over its maximum size
	// (Kafka's MESSAGE_TOO_LARGE). Permanent: the same record is refused
	// again until the limit is raised; nothing of the produce call from
	// that record on was written.
	ErrRecordTooLarge = errors.New("record larger than the log's maximum")
	// ErrUnsupported: the source holds a change lockstep cannot express as
	// row changes (see ChangeStream). Permanent: decoding the same WAL
	// gives it again, so the capture stops instead of retrying.
	ErrUnsupported = errors.New("unsupported change")
	// ErrOffsetOutOfRange: a fetch asked for an offset before the log's
	// start (Kafka's OFFSET_OUT_OF_RANGE below the log start offset):
	// retention deleted those records. A reader behind it can only start
	// again from a snapshot the log still holds; skipping to the start
	// would lose what was deleted without a word.
	ErrOffsetOutOfRange = errors.New("offset before the log's start: retention deleted it")
	// ErrSourceRefused: the source turns the capture away for a reason
	// only its operator can fix (the login, a privilege, its settings).
	// Permanent: the capture stops instead of asking again.
	ErrSourceRefused = errors.New("the source refuses the capture")
)

// Tx is a source database transaction as application code sees it. Reads
// see the transaction's own writes.
type Tx interface {
	Get(table, pk string) (model.Row, bool)
	// Put inserts the row or, when pk exists, sets the columns the row
	// names; the others keep their values (INSERT ... ON CONFLICT DO
	// UPDATE SET those columns).
	Put(table, pk string, row model.Row)
	Delete(table, pk string)
	// Rekey changes a row's primary key (UPDATE ... SET pk = newPK WHERE
	// pk = pk); nothing when the row does not exist. A newPK that exists
	// fails the transaction, as a unique violation does.
	Rekey(table, pk, newPK string)
	// InsertRow appends row to a table without a primary key (INSERT; a
	// column row does not name is NULL). Such a table is named by whole
	// rows (KeylessTable), so applications write it as an append-only
	// log: insert rows, delete old ones, no updates. Two identical rows
	// are one row to lockstep, and DeleteRow removes both.
	InsertRow(table string, row model.Row)
	// DeleteRow deletes every row of a table without a primary key that
	// equals row (DELETE ... WHERE each column IS NOT DISTINCT FROM row's
	// value, NULL for a column row does not name); none is no change.
	// Without REPLICA IDENTITY FULL the source refuses it, as PostgreSQL
	// does once a publication holds the table: the transaction fails.
	DeleteRow(table string, row model.Row)
}

// TxnFunc is an application transaction. Returning an error rolls it back.
type TxnFunc func(tx Tx) error

// Source is the database of record as application clients see it.
type Source interface {
	// Exec runs fn in one transaction and returns what it committed (with
	// its commit LSN). ErrTimeout leaves the outcome unknown.
	Exec(ctx context.Context, fn TxnFunc) (model.Txn, error)
}

// DirectStore is a store written directly by application code, as naive
// dual writes do: one blind request with a transaction's changes (a replica
// transaction, a cache pipeline, a search bulk request), no version check.
type DirectStore interface {
	Kind() model.StoreKind
	Write(ctx context.Context, t model.Txn) error
}
