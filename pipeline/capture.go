package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"lockstep/model"
	"lockstep/pipeline/logcodec"
)

// Capture moves committed transactions from the source's replication slot to
// the log, in commit order, and confirms a position to the source only once
// that transaction and every earlier one are acknowledged by the log.
//
// On first start (empty log) it takes a snapshot that creates the slot
// atomically with a consistent read of every table, appends it to the log
// chunk by chunk (never holding it whole, see snapshot), then streams from
// the snapshot's LSN: no gap, and any overlap is harmless because stores
// skip what their position already covers.
//
// A transaction too large for one log record goes to the log as several
// parts (Txn.Chunk of Chunks, at its CommitLSN), in one produce call, and
// appliers apply it only once they hold every part. A single change too
// large for a record stops the capture with a ChangeTooLargeError.
type Capture struct {
	Env    Env
	Source ChangeStream
	Log    Log
	Logger *slog.Logger

	// Backoff is the pause before reconnecting after an error (default 200ms).
	Backoff time.Duration
	// ChunkRows is the most rows one snapshot record carries (default
	// 2000): a large snapshot goes to the log as several records, and a
	// snapshot whose records did not all reach the log is taken again.
	ChunkRows int
	// MaxTxnBytes is the most bytes one record may take in the log,
	// counted as logcodec.RecordBytes does (default DefaultMaxTxnBytes,
	// and never more than the log says it takes, when it says: a
	// MaxRecordBytes method). A larger transaction, or snapshot chunk, is
	// cut into parts that fit.
	MaxTxnBytes int
	// ConfirmEvery spaces out confirmations to the source, as a standby
	// status update interval does (default 200ms). Confirming less often is
	// always safe: it only widens what the source redelivers after a
	// reconnect, which stores skip.
	ConfirmEvery time.Duration
	// StopTimeout bounds the confirmation a capture sends when it is
	// stopped (its context ends) with acknowledged transactions not yet
	// confirmed (default 2s).
	StopTimeout time.Duration
	// RetentionCheck spaces out the capture's look at the log's start
	// (default 1s): once retention deleted the start of the last snapshot
	// in the log, a store that falls behind the log's start, or loses its
	// data, would have nothing to rebuild from, so the capture takes a new
	// snapshot.
	RetentionCheck time.Duration
	// Bugs switches on deliberately broken behaviour, for proving the
	// checker catches it. Zero in production.
	Bugs Bugs

	// snapLSN is the LSN of the newest complete snapshot the capture knows
	// the log holds (it appended it, or found it in the log's tail); 0
	// when it does not know one. keptAt is the log start at which that
	// snapshot was last seen to be kept whole.
	snapLSN model.LSN
	keptAt  int64
}

// Bugs are known real CDC bugs the harness must be able to catch. Each one
// turns a correct step of the pipeline into the broken one seen in the field.
type Bugs struct {
	// ConfirmBeforeAck confirms the LSN to the source before the log
	// acknowledged the write: a capture crash loses the batch for good.
	ConfirmBeforeAck bool
	// SkipSnapshot starts streaming without the initial snapshot: rows that
	// existed before the slot are never copied (snapshot/stream gap).
	SkipSnapshot bool
	// NonIdempotentApply re-applies transactions a store already holds.
	NonIdempotentApply bool
	// CommitOffsetFirst resumes appliers from the consumer-group offset,
	// committed before the store write was durable.
	CommitOffsetFirst bool
	// ReorderBatch applies a batch's deletes before its upserts.
	ReorderBatch bool
	// NoSplitLargeTxn appends a transaction too large for the log as one
	// record anyway, and retries when the log refuses it: the capture
	// stalls for good behind it (with a Kafka client that writes the
	// records after a refused one, appending those again at every retry).
	NoSplitLargeTxn bool
	// LSNOnlyVersion hands stores a transaction's raw changes instead of
	// its net effect (model.Net): every change shares the commit LSN, so a
	// store that skips "this version or older" keeps the first of two
	// changes to one row and loses the rest (seen on real PostgreSQL with
	// multi-statement transactions).
	LSNOnlyVersion bool
	// DropUnchangedToast hands stores rows without their unchanged TOAST
	// columns and without saying so: a store writes the partial row and
	// the value is gone (the sink-side form of the placeholder bug seen
	// in CDC tools).
	DropUnchangedToast bool
	// KeylessWedge treats a change the source can never deliver
	// (ErrUnsupported: a table without a key, a TRUNCATE) as a passing
	// fault and reconnects at the same position for ever: every table's
	// stream stalls behind it, and a key added later does not help (the
	// change was written without one).
	KeylessWedge bool
	// NoIdleCheck leaves a store alone while the log has nothing new: one
	// that restarted empty in a quiet period (a cache) stays empty until
	// traffic returns and its next write is refused (seen with Redis).
	NoIdleCheck bool
	// ConfirmOnAppendTimeout takes an append that timed out (ErrTimeout:
	// its outcome unknown) for done and goes on, confirming its LSN to
	// the source in turn: when the append did not happen, those
	// transactions are gone for good (the slot released them).
	ConfirmOnAppendTimeout bool
	// TrustSlotPosition starts streaming from wherever the replication
	// slot is, even past the last transaction the log holds: a snapshot
	// request that timed out and ran late recreates the slot after the
	// snapshot the log holds, and the changes between are never captured
	// (found by the simulator: a source paused during the snapshot).
	TrustSlotPosition bool
	// UnconditionalApply has appliers write without saying where they
	// expect the store to be (no Batch.Base): a second applier of the
	// same store, or a zombie that wakes with an old batch, writes over
	// what the other wrote, and nothing refuses it.
	UnconditionalApply bool
	// ResetToEarliest moves an applier whose next record retention deleted
	// (ErrOffsetOutOfRange) to the log's start and goes on from there, as
	// a Kafka consumer with auto.offset.reset=earliest does: what was
	// deleted is skipped without a word.
	ResetToEarliest bool
	// IgnoreRetention has the capture never look at the log's start: once
	// retention deleted the last snapshot, a store that has to be rebuilt
	// (it fell behind the log's start, or lost its data) has nothing to
	// rebuild from, for good.
	IgnoreRetention bool
	// StreamAfterSlotLoss makes a new slot when the old one was dropped and
	// streams from it without a new snapshot: the changes between the
	// log's last transaction and the new slot are never captured.
	StreamAfterSlotLoss bool
	// UniqueRowByRow gives the replica unique constraints checked at
	// every row it writes (NOT DEFERRABLE, as the source has them), while
	// it applies each transaction's net changes row by row in their
	// order: a transaction that swapped two users' emails, or moved an
	// email to a row it touched before deleting the row that held it,
	// breaks a constraint half-way, and the replica refuses that batch
	// every time it is sent (the applier is stuck).
	UniqueRowByRow bool
	// DDLReset has the replica's rebuild drop its tables and create them
	// again (DROP SCHEMA ... CASCADE in the rebuild's transaction) with no
	// lock its readers take. DDL is not MVCC-safe: a reader whose
	// snapshot came before the rebuild committed finds the new tables,
	// empty to it, beside the old position (seen in the container soak).
	DDLReset bool
}

func (b Bugs) Any() bool { return b != Bugs{} }

// BugNames maps each bug's command-line name to a setter.
var BugNames = map[string]func(*Bugs){
	"confirm-before-ack":        func(b *Bugs) { b.ConfirmBeforeAck = true },
	"skip-snapshot":             func(b *Bugs) { b.SkipSnapshot = true },
	"non-idempotent-apply":      func(b *Bugs) { b.NonIdempotentApply = true },
	"commit-offset-first":       func(b *Bugs) { b.CommitOffsetFirst = true },
	"reorder-deletes-first":     func(b *Bugs) { b.ReorderBatch = true },
	"lsn-only-version":          func(b *Bugs) { b.LSNOnlyVersion = true },
	"drop-unchanged-toast":      func(b *Bugs) { b.DropUnchangedToast = true },
	"no-split-large-txn":        func(b *Bugs) { b.NoSplitLargeTxn = true },
	"keyless-wedge":             func(b *Bugs) { b.KeylessWedge = true },
	"no-idle-check":             func(b *Bugs) { b.NoIdleCheck = true },
	"confirm-on-append-timeout": func(b *Bugs) { b.ConfirmOnAppendTimeout = true },
	"trust-slot-position":       func(b *Bugs) { b.TrustSlotPosition = true },
	"unconditional-apply":       func(b *Bugs) { b.UnconditionalApply = true },
	"reset-to-earliest":         func(b *Bugs) { b.ResetToEarliest = true },
	"ignore-retention":          func(b *Bugs) { b.IgnoreRetention = true },
	"stream-after-slot-loss":    func(b *Bugs) { b.StreamAfterSlotLoss = true },
	"unique-row-by-row":         func(b *Bugs) { b.UniqueRowByRow = true },
	"reset-by-ddl":              func(b *Bugs) { b.DDLReset = true },
}

// ParseBugs reads a comma-separated list of bug names ("" is none).
func ParseBugs(s string) (Bugs, error) {
	var b Bugs
	if s == "" {
		return b, nil
	}
	for _, name := range strings.Split(s, ",") {
		set, ok := BugNames[strings.TrimSpace(name)]
		if !ok {
			names := make([]string, 0, len(BugNames))
			for n := range BugNames {
				names = append(names, n)
			}
			sort.Strings(names)
			return Bugs{}, fmt.Errorf("unknown bug %q (want one of: %s)", name, strings.Join(names, ", "))
		}
		set(&b)
	}
	return b, nil
}

func (c *Capture) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Run captures until ctx is done, reconnecting after every error but the
// permanent ones, which would only come back at every retry: a record too
// large for the log (ErrRecordTooLarge), a change the source can never
// deliver (ErrUnsupported) and a source that turns the capture away
// (ErrSourceRefused). Those stop it with that error.
func (c *Capture) Run(ctx context.Context) error {
	backoff := c.Backoff
	if backoff == 0 {
		backoff = 200 * time.Millisecond
	}
	for {
		err := c.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			continue // a new snapshot is in the log: stream from it
		}
		if c.permanent(err) {
			c.logger().Error("capture: stopped: retrying cannot get past this", "err", err)
			return err
		}
		c.logger().Warn("capture: reconnecting", "err", err)
		if err := c.Env.Sleep(ctx, backoff); err != nil {
			return err
		}
	}
}

// permanent reports whether err is one the capture stops on: the same
// input gives it again however often it reconnects.
func (c *Capture) permanent(err error) bool {
	switch {
	case errors.Is(err, ErrRecordTooLarge):
		return !c.Bugs.NoSplitLargeTxn
	case errors.Is(err, ErrUnsupported):
		return !c.Bugs.KeylessWedge // Broken: retried at the same position for ever.
	case errors.Is(err, ErrSourceRefused):
		return true
	}
	return false
}

// stream runs one replication session: (snapshot if needed,) start, then
// forward batches until an error.
func (c *Capture) stream(ctx context.Context) error {
	var last model.LSN // the log's last transaction, once it holds a complete snapshot
	if !c.Bugs.SkipSnapshot {
		var err error
		if last, err = c.snapshotIfNeeded(ctx); err != nil {
			return err
		}
	}
	from, err := c.Source.Start(ctx)
	if errors.Is(err, ErrNoSlot) {
		if c.Bugs.SkipSnapshot || c.Bugs.StreamAfterSlotLoss {
			// Broken: creates the slot and streams from it, never copying
			// the rows that existed before.
			snap, err := c.Source.Snapshot(ctx)
			if err != nil {
				return err
			}
			return snap.Close(ctx)
		}
		// The slot was dropped under us: WAL after the log's last record may
		// be gone, so only a fresh snapshot can restore a complete history.
		_, err := c.snapshot(ctx)
		return err
	}
	if err != nil {
		return fmt.Errorf("capture: start stream: %w", err)
	}
	if !c.trustsSlot() && from > last {
		// The slot starts past everything the log holds: WAL between is
		// gone for this slot (a snapshot request that timed out ran late
		// and made the slot again, after the one whose snapshot is in the
		// log). Streaming would leave a hole; only a new snapshot makes
		// the history whole.
		c.logger().Warn("capture: the slot starts past the log's last transaction; taking a new snapshot", "slot", from, "log", last)
		_, err := c.snapshot(ctx)
		return err
	}
	c.logger().Debug("capture: streaming", "from", from)
	f := forwarder{c: c, from: from, acked: from, confirmed: from, lastRetention: c.Env.Now()}
	err = f.run(ctx)
	if ctx.Err() != nil && f.acked > f.confirmed {
		c.confirmOnStop(ctx, f.acked)
	}
	if errors.Is(err, errSnapshotDeleted) {
		c.logger().Warn("capture: retention deleted the last snapshot in the log; taking a new one", "err", err)
		_, err := c.snapshot(ctx)
		return err
	}
	return err
}

// errSnapshotDeleted ends a replication session whose snapshot retention
// deleted: the capture takes a new one.
var errSnapshotDeleted = errors.New("the log no longer holds the start of its last snapshot")

// snapshotKept reports whether the log still holds the whole of its newest
// complete snapshot, which every store rebuilt from the log needs (see
// Applier.rebuild). It reads the log's start and, when that moved, the
// record there: the snapshot the capture knows of (snapLSN) is whole
// after it when that record is older than the snapshot, or is the
// snapshot's first chunk (the log is in commit order: the capture appends a
// snapshot only after what it streamed before, and streams only after it).
// A capture that knows no snapshot (it started on a log whose tail holds
// none) and finds the log's front deleted cannot tell, and answers false:
// a new snapshot costs a reload of every store, a missing one a store that
// can never be rebuilt.
func (c *Capture) snapshotKept(ctx context.Context) (bool, error) {
	if c.Bugs.IgnoreRetention {
		return true, nil // Broken: the last snapshot may be gone.
	}
	start, err := c.Log.Start(ctx)
	if err != nil {
		return false, fmt.Errorf("capture: read the log's start: %w", err)
	}
	if start == 0 || (start == c.keptAt && c.snapLSN != 0) {
		return true, nil
	}
	recs, err := c.Log.Fetch(ctx, start, 1)
	if err != nil {
		return false, fmt.Errorf("capture: read the log's first record at %d: %w", start, err)
	}
	if len(recs) == 0 {
		// Nothing after the start: every record was deleted, the
		// snapshot too (or a fetch came back empty: look again later).
		end, err := c.Log.End(ctx)
		if err != nil {
			return false, fmt.Errorf("capture: read the log's end: %w", err)
		}
		return end > start, nil
	}
	first := recs[0].Txn
	kept := c.snapLSN != 0 && first.CommitLSN < c.snapLSN ||
		first.Snapshot && first.Chunk == 0 && first.CommitLSN >= c.snapLSN
	if kept {
		if first.Snapshot && first.Chunk == 0 {
			c.snapLSN = max(c.snapLSN, first.CommitLSN)
		}
		c.keptAt = start
	}
	return kept, nil
}

// forwarder is one replication session's loop: it appends what the source
// streams to the log and confirms to the source what the log acknowledged.
type forwarder struct {
	c             *Capture
	from          model.LSN // the last transaction appended (or where the stream began)
	acked         model.LSN // the log holds this transaction and every one before it
	confirmed     model.LSN // the last position confirmed to the source
	lastConfirm   time.Time
	lastRetention time.Time // when the capture last looked at the log's start
}

func (f *forwarder) run(ctx context.Context) error {
	c := f.c
	every := c.ConfirmEvery
	if every == 0 {
		every = 200 * time.Millisecond
	}
	check := c.RetentionCheck
	if check == 0 {
		check = time.Second
	}
	for {
		if now := c.Env.Now(); now.Sub(f.lastRetention) >= check {
			f.lastRetention = now
			kept, err := c.snapshotKept(ctx)
			if err != nil {
				return err
			}
			if !kept {
				return errSnapshotDeleted
			}
		}
		txns, err := c.Source.Next(ctx)
		if err != nil {
			return fmt.Errorf("capture: read stream after %s: %w", f.from, err)
		}
		if len(txns) == 0 {
			// The source is quiet: confirm what the log acknowledged
			// since the last confirmation, or the slot stays behind
			// (holding WAL, and redelivering it after a restart) for as
			// long as no new transaction comes.
			if err := f.confirm(ctx); err != nil {
				return err
			}
			continue
		}
		last := txns[len(txns)-1].CommitLSN
		// Chain each transaction to the one appended before it, so
		// appliers can tell a hole in the log from a quiet source.
		prev := f.from
		for i := range txns {
			txns[i].PrevLSN, prev = prev, txns[i].CommitLSN
		}
		recs, err := c.records(txns)
		if err != nil {
			return err
		}
		if c.Bugs.ConfirmBeforeAck {
			// Broken: the log has not acknowledged last yet.
			if err := c.Source.Confirm(ctx, last); err != nil {
				return fmt.Errorf("capture: confirm %s: %w", last, err)
			}
			f.confirmed = last
		}
		if _, err := c.Log.Produce(ctx, recs); err != nil && !c.appendTakenAsDone(err) {
			return fmt.Errorf("capture: append %d txns (%d records) up to %s: %w", len(txns), len(recs), last, err)
		}
		f.acked, f.from = last, last
		if c.Env.Now().Sub(f.lastConfirm) >= every {
			if err := f.confirm(ctx); err != nil {
				return err
			}
		}
	}
}

// appendTakenAsDone reports whether a failed append counts as appended.
// Never: an append the log did not acknowledge may not have happened (a
// timeout says only that the outcome is unknown), and confirming past it
// would let the source release transactions the log may not hold. So the
// session ends, and the next one streams them again from the confirmed
// position; the log's dedupe, or the appliers' skipping of what they hold,
// takes care of a second copy.
func (c *Capture) appendTakenAsDone(err error) bool {
	if c.Bugs.ConfirmOnAppendTimeout && errors.Is(err, ErrTimeout) {
		c.logger().Warn("capture: append timed out; taking it as done", "err", err) // Broken: it may not have happened.
		return true
	}
	return false
}

// confirm confirms to the source what the log acknowledged, if that is
// more than it confirmed last.
func (f *forwarder) confirm(ctx context.Context) error {
	if f.acked <= f.confirmed {
		return nil
	}
	if err := f.c.Source.Confirm(ctx, f.acked); err != nil {
		return fmt.Errorf("capture: confirm %s: %w", f.acked, err)
	}
	f.confirmed, f.lastConfirm = f.acked, f.c.Env.Now()
	return nil
}

// confirmOnStop confirms lsn, which the log acknowledged, when the capture
// is stopped (ctx ended) with it not yet confirmed, so that the next start
// does not stream it again. It tries for at most StopTimeout: a stop must
// not hang on a source that does not answer, and confirming less is safe.
func (c *Capture) confirmOnStop(ctx context.Context, lsn model.LSN) {
	timeout := c.StopTimeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	stopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// The time limit is a task of the Env's, not a context deadline: time
	// comes from the Env only.
	c.Env.Go("capture: stop timeout", func(context.Context) {
		if c.Env.Sleep(stopCtx, timeout) == nil {
			cancel()
		}
	})
	if err := c.Source.Confirm(stopCtx, lsn); err != nil {
		c.logger().Warn("capture: stopping without confirming what the log holds; the next start streams it again", "lsn", lsn, "err", err)
		return
	}
	c.logger().Info("capture: stopping, confirmed what the log holds", "lsn", lsn)
}

// trustsSlot is the broken rule of --bug trust-slot-position, and of the
// captures that confirm what the log may not hold: they stream from
// wherever the slot is.
func (c *Capture) trustsSlot() bool {
	return c.Bugs.TrustSlotPosition || c.Bugs.ConfirmBeforeAck || c.Bugs.ConfirmOnAppendTimeout || c.Bugs.SkipSnapshot || c.Bugs.StreamAfterSlotLoss
}

// snapshotIfNeeded takes the initial snapshot unless the log already
// holds a complete one (every chunk of its last snapshot), and returns the
// commit LSN of the log's last transaction then: the most the capture can
// have confirmed to the slot.
func (c *Capture) snapshotIfNeeded(ctx context.Context) (model.LSN, error) {
	complete, last, err := c.snapshotInLog(ctx)
	if err != nil {
		return last, err
	}
	if complete {
		kept, err := c.snapshotKept(ctx)
		if err != nil || kept {
			return last, err
		}
		c.logger().Warn("capture: retention deleted the start of the last snapshot in the log; taking a new one")
	}
	return c.snapshot(ctx)
}

// tailRecords is how many records at the log's end the capture reads, at
// every start, to find the last snapshot. Any number works for a log the
// capture wrote (see snapshotInLog); more only judges a damaged log more
// carefully, at a cost that does not grow with the log.
const tailRecords = 256

// snapshotInLog reports whether the last snapshot in the log has every
// chunk there. A capture that failed or crashed half-way through appending
// one leaves some chunks only; streaming must not start before the snapshot
// is taken again, or the rows of the missing chunks would never reach the
// stores (appliers wait for a snapshot's chunks, and skip one a newer
// snapshot replaces).
//
// It reads only the log's tail, so a restart costs the same on a log of a
// thousand records as on one of a billion. That is enough because the
// capture streams only after snapshotIfNeeded found, or appended, a
// complete snapshot: every streamed record has a complete snapshot before
// it. So a tail of streamed records alone means the last snapshot is
// complete, and only a tail holding snapshot chunks needs judging, by
// looking back over about that snapshot's chunks (see judgeSnapshot).
//
// It also returns the commit LSN of the log's last record (0 when empty).
func (c *Capture) snapshotInLog(ctx context.Context) (complete bool, last model.LSN, err error) {
	// Ask for the end first: a fetch that comes back empty is no proof the
	// log is (a broker may be failing over), and a needless snapshot resets
	// every store.
	end, err := c.Log.End(ctx)
	if err != nil {
		return false, 0, fmt.Errorf("capture: look for the snapshot in the log: %w", err)
	}
	var floor int64 // the log's start, once a read found records deleted
	lo, tail, err := c.headsAbove(ctx, &floor, max(0, end-tailRecords), end)
	if err != nil {
		return false, 0, err
	}
	if len(tail) > 0 {
		last = tail[len(tail)-1].LSN
	}
	verdict, need := judgeSnapshot(lo, floor, tail)
	for verdict == snapshotUnknown {
		// The tail ends inside a snapshot whose first chunks are further
		// back: read back as far as judgeSnapshot asks, which that
		// snapshot's chunk count bounds.
		from, more, err := c.headsAbove(ctx, &floor, max(floor, lo-need), lo)
		if err != nil {
			return false, 0, err
		}
		lo, tail = from, append(more, tail...)
		verdict, need = judgeSnapshot(lo, floor, tail)
	}
	if verdict == snapshotComplete {
		for i := len(tail) - 1; i >= 0; i-- {
			if tail[i].Snapshot {
				// Its chunks are all in the tail, after the log's start.
				c.snapLSN, c.keptAt = tail[i].LSN, floor
				break
			}
		}
	}
	return verdict == snapshotComplete, last, nil
}

// headsAbove reads the heads of the records at offsets [lo, hi), or from
// the log's start when retention deleted those before it: then it sets
// *floor to the start. It returns where it read from.
func (c *Capture) headsAbove(ctx context.Context, floor *int64, lo, hi int64) (int64, []recordHead, error) {
	recs, err := c.heads(ctx, lo, hi)
	if !errors.Is(err, ErrOffsetOutOfRange) {
		return lo, recs, err
	}
	start, serr := c.Log.Start(ctx)
	if serr != nil {
		return lo, nil, fmt.Errorf("capture: read the log's start: %w", serr)
	}
	if start <= lo {
		return lo, nil, err
	}
	*floor = start
	lo = min(start, hi)
	recs, err = c.heads(ctx, lo, hi)
	return lo, recs, err
}

// recordHead is what the restart check keeps of a record: where it is and
// which snapshot chunk it is, not its rows, so the memory it takes does not
// grow with a snapshot's size.
type recordHead struct {
	Offset   int64
	Snapshot bool
	LSN      model.LSN
	Chunk    int
	Chunks   int
}

func headOf(r Record) recordHead {
	return recordHead{Offset: r.Offset, Snapshot: r.Txn.Snapshot, LSN: r.Txn.CommitLSN, Chunk: r.Txn.Chunk, Chunks: r.Txn.Chunks}
}

type snapshotVerdict int

const (
	snapshotUnknown  snapshotVerdict = iota // read further back
	snapshotComplete                        // streaming may start
	snapshotMissing                         // take a snapshot (again)
)

// judgeSnapshot judges the last snapshot in the log from recs, the heads of
// the log's records from offset lo to its end. It looks back from the last
// snapshot chunk, collecting the chunks of that snapshot (its parts may
// have been appended more than once, by a retry that lost its
// acknowledgement, or in part, by an append that failed half-way), and
// stops at the first record before that snapshot's chunks once it has seen
// a chunk 0. When recs do not reach back far enough it says
// snapshotUnknown and how many more records it wants; it never wants more,
// in all, than about twice the snapshot's chunk count plus tailRecords, and
// past that the snapshot counts as missing (taking it again is always
// safe). With no snapshot chunk in recs the last snapshot is complete
// (the capture streams only after one), unless recs are the whole log.
// Records before floor, the log's start, were deleted: recs reaching back
// to it are the whole log. Pure, so it is tested on its own.
func judgeSnapshot(lo, floor int64, recs []recordHead) (snapshotVerdict, int64) {
	last := -1
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Snapshot {
			last = i
			break
		}
	}
	if last < 0 {
		if lo <= floor {
			return snapshotMissing, 0 // the whole log, and no snapshot in it
		}
		return snapshotComplete, 0
	}
	snap := recs[last]
	chunks := max(snap.Chunks, 1)
	// A retried append doubles a snapshot at most once per retry; leave
	// room for one, and for what streamed records sit among the chunks.
	reach := snap.Offset - int64(2*chunks+tailRecords)
	seen := map[int]bool{}
	for i := last; i >= 0; i-- {
		r := recs[i]
		if r.Offset < reach {
			return snapshotMissing, 0
		}
		if !r.Snapshot || r.LSN != snap.LSN {
			if seen[0] {
				return snapshotMissing, 0 // past the chunks, some missing
			}
			continue
		}
		seen[r.Chunk] = true
		if len(seen) >= chunks {
			return snapshotComplete, 0
		}
	}
	if lo <= max(floor, reach) {
		return snapshotMissing, 0 // all of the reach read, or the whole log
	}
	return snapshotUnknown, min(lo-max(floor, reach), int64(max(chunks, tailRecords)))
}

// heads reads the heads of the records at offsets [lo, hi).
func (c *Capture) heads(ctx context.Context, lo, hi int64) ([]recordHead, error) {
	out := make([]recordHead, 0, hi-lo)
	empty := 0
	for off := lo; off < hi; {
		recs, err := c.Log.Fetch(ctx, off, int(hi-off))
		if err != nil {
			return nil, fmt.Errorf("capture: read the log at %d: %w", off, err)
		}
		if len(recs) == 0 {
			// A consumer moved to a new offset may take longer than
			// one long poll to bring records back: ask again a few
			// times before giving up on this start.
			if empty++; empty == emptyFetches {
				return nil, fmt.Errorf("capture: the log ends at %d but nothing came back from offset %d in %d fetches", hi, off, empty)
			}
			continue
		}
		empty = 0
		for _, r := range recs {
			if r.Offset >= off && r.Offset < hi {
				out = append(out, headOf(r))
			}
		}
		off = recs[len(recs)-1].Offset + 1
	}
	return out, nil
}

// emptyFetches is how many fetches in a row may come back empty, from an
// offset below the log's end, before the capture gives up a start.
const emptyFetches = 5

// snapshot takes a new snapshot, which also makes the slot again, and
// appends it; it returns the snapshot's LSN, the log's last transaction.
//
// A snapshot may be far larger than memory, so it is never held whole: a
// first read of its rows counts the records it takes (every chunk says how
// many there are, Txn.Chunks), a second cuts its rows the same way and
// appends each chunk as soon as it is full. Memory stays at about one
// chunk's rows, whatever the snapshot's size. The second read may hand out
// the rows in another order (PostgreSQL scans a table from wherever it
// likes), which the cut takes as they come: the same rows make the same
// number of chunks unless a cut falls differently, and then the snapshot
// is given up (errSnapshotCutMoved) and taken again.
func (c *Capture) snapshot(ctx context.Context) (model.LSN, error) {
	snap, err := c.Source.Snapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("capture: snapshot: %w", err)
	}
	defer func() {
		if err := snap.Close(ctx); err != nil {
			c.logger().Debug("capture: close the snapshot", "err", err)
		}
	}()
	head := snap.Head()
	rows, maxBytes := chunkRows(c.ChunkRows), c.maxTxnBytes()
	if c.Bugs.NoSplitLargeTxn {
		maxBytes = 0 // Broken: rows only, whatever their size.
	}
	counted, n := newCutter(head, rows, maxBytes), 0
	err = snap.Scan(ctx, func(page []model.Change) error {
		for _, ch := range page {
			if _, err := counted.add(ch); err != nil {
				return err
			}
		}
		n += len(page)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("capture: snapshot at %s: count its records: %w", head.CommitLSN, err)
	}
	w := chunkWriter{c: c, part: head, chunks: counted.count(), capacity: min(rows, 1024)}
	w.part.Chunk, w.part.Chunks = 0, w.chunks
	cut := newCutter(head, rows, maxBytes)
	err = snap.Scan(ctx, func(page []model.Change) error {
		for _, ch := range page {
			begins, err := cut.add(ch)
			if err != nil {
				return err
			}
			if begins {
				if err := w.flush(ctx, false); err != nil {
					return err
				}
			}
			w.add(ch)
		}
		return nil
	})
	if err == nil {
		err = w.flush(ctx, true)
	}
	if err != nil {
		return 0, fmt.Errorf("capture: append snapshot at %s (%d rows in %d chunks, %d appended): %w", head.CommitLSN, n, w.chunks, w.part.Chunk, err)
	}
	c.logger().Info("capture: snapshot appended", "lsn", head.CommitLSN, "rows", n, "chunks", w.chunks)
	c.snapLSN, c.keptAt = head.CommitLSN, -1
	return head.CommitLSN, nil
}

// errSnapshotCutMoved: a snapshot's second read cut its rows into another
// number of chunks than the first counted. The chunks appended so far are
// an incomplete snapshot, which the capture takes again (as after any
// append that failed half-way).
var errSnapshotCutMoved = errors.New("the snapshot's rows cut into another number of chunks at the second read")

// chunkWriter appends a snapshot chunk by chunk: it gathers one chunk's rows
// and appends them, numbered, when told the chunk is full.
type chunkWriter struct {
	c        *Capture
	part     model.Txn // the chunk being gathered: its head and rows
	chunks   int       // how many chunks the snapshot has
	capacity int
}

func (w *chunkWriter) add(ch model.Change) {
	if w.part.Changes == nil {
		w.part.Changes = make([]model.Change, 0, w.capacity)
	}
	w.part.Changes = append(w.part.Changes, ch)
}

// flush appends the chunk gathered and begins the next; last says the
// rows are all read. The last chunk goes only after the last row, so a
// cut that moved never leaves chunks that look like a whole snapshot.
// Each chunk gets rows of its own: the log may keep what it was given.
func (w *chunkWriter) flush(ctx context.Context, last bool) error {
	if last != (w.part.Chunk == w.chunks-1) {
		return errSnapshotCutMoved
	}
	if _, err := w.c.Log.Produce(ctx, []model.Txn{w.part}); err != nil {
		return fmt.Errorf("chunk %d: %w", w.part.Chunk, err)
	}
	w.part.Chunk++
	w.part.Schema = nil // the first chunk carries the table definitions
	w.part.Changes = nil
	return nil
}

// DefaultMaxTxnBytes is the capture's default for the most bytes one
// record may take in the log: under Kafka's default limit (message.max.bytes,
// 1,048,588) and under franz-go's default batch limit (1,000,012), so it fits
// a topic nobody configured, with some room to spare.
const DefaultMaxTxnBytes = 1_000_000

// maxTxnBytes is the record size the capture cuts transactions to.
func (c *Capture) maxTxnBytes() int {
	n := c.MaxTxnBytes
	if n <= 0 {
		n = DefaultMaxTxnBytes
	}
	if l, ok := c.Log.(interface{ MaxRecordBytes() int }); ok && l.MaxRecordBytes() > 0 {
		n = min(n, l.MaxRecordBytes())
	}
	return n
}

// records is what the capture appends for txns: each transaction as one
// record, or as parts when it is too large for one.
func (c *Capture) records(txns []model.Txn) ([]model.Txn, error) {
	if c.Bugs.NoSplitLargeTxn {
		// Broken: an oversize transaction goes whole, and the log
		// refuses it at every retry.
		return txns, nil
	}
	limit := c.maxTxnBytes()
	var out []model.Txn // a copy only once some transaction is split
	for i, t := range txns {
		parts, err := SplitTxn(t, 0, limit)
		if err != nil {
			return nil, fmt.Errorf("capture: txn %d at %s: %w", t.XID, t.CommitLSN, err)
		}
		if len(parts) == 1 && out == nil {
			continue
		}
		if len(parts) > 1 {
			c.logger().Debug("capture: split", "lsn", t.CommitLSN, "changes", len(t.Changes), "parts", len(parts))
		}
		if out == nil {
			out = append(make([]model.Txn, 0, len(txns)+len(parts)), txns[:i]...)
		}
		out = append(out, parts...)
	}
	if out == nil {
		return txns, nil
	}
	return out, nil
}

func chunkRows(rows int) int {
	if rows <= 0 {
		return 2000
	}
	return rows
}

// SplitSnapshot cuts a snapshot into chunks of at most rows changes (2000
// when rows is 0), numbered from 0, all at the snapshot's LSN.
func SplitSnapshot(snap model.Txn, rows int) []model.Txn {
	chunks, _ := SplitTxn(snap, chunkRows(rows), 0) // no byte limit: no error
	return chunks
}

// SplitTxn cuts t into parts of consecutive changes, each holding at most
// rows changes (when rows > 0) and taking at most maxBytes in the log (when
// maxBytes > 0; as logcodec.RecordBytes counts), numbered Chunk 0 to
// Chunks-1, all with t's CommitLSN and XID, the first with t's Schema. A
// transaction that fits in one
// record comes back as it is, unnumbered; a snapshot is always numbered
// (chunk 0 of 1). A change too large for a record on its own is a
// *ChangeTooLargeError. Pure, so it is tested on its own.
func SplitTxn(t model.Txn, rows, maxBytes int) ([]model.Txn, error) {
	var cuts []int // where each part after the first begins
	switch {
	case (rows <= 0 || len(t.Changes) <= rows) && (maxBytes <= 0 || logcodec.TxnBytesBound(t) <= maxBytes):
		// One part: the cheap bound settles it, as it does for almost
		// every transaction.
	case maxBytes <= 0:
		for i := rows; i < len(t.Changes); i += rows {
			cuts = append(cuts, i)
		}
	default:
		var err error
		if cuts, err = cutBytes(t, rows, maxBytes); err != nil {
			return nil, err
		}
	}
	if len(cuts) == 0 && !t.Snapshot {
		return []model.Txn{t}, nil
	}
	bounds := append(append([]int{0}, cuts...), len(t.Changes))
	parts := make([]model.Txn, len(bounds)-1)
	for i := range parts {
		p := t
		p.Chunk, p.Chunks = i, len(parts)
		if i > 0 {
			p.Schema = nil // the first part carries the table definitions
		}
		p.Changes = t.Changes[bounds[i]:bounds[i+1]:bounds[i+1]]
		parts[i] = p
	}
	return parts, nil
}

// cutBytes finds where SplitTxn cuts t (see cutter).
func cutBytes(t model.Txn, rows, maxBytes int) ([]int, error) {
	k := newCutter(t, rows, maxBytes)
	var cuts []int
	for i, c := range t.Changes {
		cut, err := k.add(c)
		if err != nil {
			return nil, err
		}
		if cut {
			cuts = append(cuts, i)
		}
	}
	return cuts, nil
}

// cutter cuts a transaction's changes, handed to it one at a time, into
// parts: greedily, each part as full as the limits let it be (at most rows
// changes when rows > 0, at most maxBytes in the log when maxBytes > 0),
// each change measured exactly (logcodec.EnvelopeBytes and ChangeBytes
// bound a part's encoding from above for any chunk numbers). It keeps
// sizes, not changes, so a snapshot of any size is cut in constant memory.
type cutter struct {
	t               model.Txn // the transaction's head, for errors
	env             int
	rows, maxBytes  int
	n, value, parts int // the part so far: its changes and its value's bytes; parts begun
	seen            int // changes added
}

func newCutter(t model.Txn, rows, maxBytes int) *cutter {
	head := t
	head.Changes = nil
	return &cutter{t: head, env: logcodec.EnvelopeBytes(head), rows: rows, maxBytes: maxBytes}
}

// add takes the next change and reports whether it begins a new part
// (never for the first change: the first part is begun already).
func (k *cutter) add(c model.Change) (bool, error) {
	if k.parts == 0 {
		k.parts = 1
	}
	k.seen++
	full := k.rows > 0 && k.n >= k.rows
	n := 0
	if k.maxBytes > 0 {
		var err error
		if n, err = logcodec.ChangeBytes(c); err != nil {
			return false, fmt.Errorf("measure change %d: %w", k.seen-1, err)
		}
		if alone := logcodec.RecordBytes(k.env + n); alone > k.maxBytes {
			return false, &ChangeTooLargeError{Table: c.Table, PK: c.PK, XID: k.t.XID, LSN: k.t.CommitLSN, Bytes: alone, Limit: k.maxBytes}
		}
		full = full || k.n > 0 && logcodec.RecordBytes(k.value+1+n) > k.maxBytes
	}
	if k.n > 0 && full {
		k.parts++
		k.n, k.value = 1, k.env+n
		return true, nil
	}
	if k.n > 0 {
		k.value++ // the comma
	} else {
		k.value = k.env
	}
	k.n++
	k.value += n
	return false, nil
}

// count is how many parts the changes added so far make (at least one).
func (k *cutter) count() int { return max(k.parts, 1) }

// ChangeTooLargeError is a change that takes more than a record may in the
// log on its own, so no split of its transaction can carry it. It is
// ErrRecordTooLarge: permanent until the limits are raised.
type ChangeTooLargeError struct {
	Table, PK string
	XID       uint64
	LSN       model.LSN
	Bytes     int // the record it needs
	Limit     int // the most a record may take
}

func (e *ChangeTooLargeError) Error() string {
	pk := e.PK
	if len(pk) > 64 {
		pk = pk[:64] + "..."
	}
	return fmt.Sprintf("a change to table %s key %q (txn %d at %s) needs a record of %d bytes, over the limit of %d: "+
		"no split can carry it; raise the topic's max.message.bytes (the broker's message.max.bytes) and the capture's limit "+
		"(Capture.MaxTxnBytes, and kafkalog's MaxRecordBytes) above %d", e.Table, pk, e.XID, e.LSN, e.Bytes, e.Limit, e.Bytes)
}

func (e *ChangeTooLargeError) Unwrap() error { return ErrRecordTooLarge }
