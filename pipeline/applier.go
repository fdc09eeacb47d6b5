package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"lockstep/model"
)

// Applier keeps one store in step with the log: it resumes from the position
// saved in the store itself, applies transactions in log order, skips what
// the store already holds (redelivered or duplicated records), and rebuilds a
// store that lost its data by folding the whole log into one atomic batch.
type Applier struct {
	Env    Env
	Log    Log
	Store  Store
	Group  string // consumer group, for offsets others can monitor
	Logger *slog.Logger

	MaxBatch int // records per fetch (default 64)
	// CommitEvery spaces out consumer-group offset commits, which are only
	// for monitoring here (default 500ms).
	CommitEvery time.Duration
	Poll        time.Duration // wait when caught up (default 20ms)
	Backoff     time.Duration // wait after an error (default 200ms)
	// IdleCheck is how long the applier may go without a word from the
	// store while the log has nothing new before it asks the store for
	// its position (default 1s): a store that restarted empty in a quiet
	// period is rebuilt then, not when traffic comes back.
	IdleCheck time.Duration
	Bugs      Bugs
}

func (a *Applier) defaults() {
	if a.MaxBatch == 0 {
		a.MaxBatch = 64
	}
	if a.Poll == 0 {
		a.Poll = 20 * time.Millisecond
	}
	if a.Backoff == 0 {
		a.Backoff = 200 * time.Millisecond
	}
	if a.CommitEvery == 0 {
		a.CommitEvery = 500 * time.Millisecond
	}
	if a.IdleCheck == 0 {
		a.IdleCheck = time.Second
	}
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run applies until ctx is done, starting over from the store's position
// after every error.
func (a *Applier) Run(ctx context.Context) error {
	a.defaults()
	for {
		err := a.follow(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := a.Backoff
		if errors.Is(err, ErrLogGap) {
			// Only a new snapshot in the log ends this: look again now
			// and then, without flooding the log with the same line.
			a.Logger.Error("applier: stopped at a hole in the log", "store", a.Store.Kind(), "err", err)
			wait = max(wait, GapRecheck)
		} else {
			a.Logger.Warn("applier: restarting", "store", a.Store.Kind(), "err", err)
		}
		if err := a.Env.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func (a *Applier) follow(ctx context.Context) error {
	pos, ok, err := a.Store.Position(ctx)
	if err != nil {
		return fmt.Errorf("applier %s: read position: %w", a.Store.Kind(), err)
	}
	if a.Bugs.CommitOffsetFirst {
		// Broken: trusts the group offset, which it commits before the
		// store write is durable.
		off, err := a.Log.Committed(ctx, a.Group)
		if err != nil {
			return fmt.Errorf("applier %s: read group offset: %w", a.Store.Kind(), err)
		}
		pos = model.Position{Offset: off}
		ok = true
	}
	if !ok {
		if pos, err = a.rebuild(ctx, nil); err != nil {
			return err
		}
	}
	var lastCommit time.Time
	lastWord := a.Env.Now() // when the store last confirmed where it is
	var planned []Batch     // plan's output, reused from fetch to fetch
	for {
		recs, err := a.Log.Fetch(ctx, pos.Offset, a.MaxBatch)
		if errors.Is(err, ErrOffsetOutOfRange) {
			// Retention deleted records this store has not applied.
			if pos, err = a.behindStart(ctx, pos, err); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("applier %s: fetch from offset %d: %w", a.Store.Kind(), pos.Offset, err)
		}
		if len(recs) == 0 {
			if now := a.Env.Now(); !a.Bugs.NoIdleCheck && now.Sub(lastWord) >= a.IdleCheck {
				if err := a.checkIdle(ctx, pos); err != nil {
					return err
				}
				lastWord = now
			}
			if err := a.Env.Sleep(ctx, a.Poll); err != nil {
				return err
			}
			continue
		}
		if recs, err = a.whole(ctx, pos, recs); err != nil {
			return err
		}
		batches, _, gap := plan(planned[:0], pos, recs, a.Bugs.NonIdempotentApply)
		planned = batches
		for _, b := range batches {
			if b.Reset && len(b.Txns) > 1 {
				// A new snapshot and what followed it: fold them, as a
				// rebuild does, so that a store which takes the batch in
				// several requests and has to take it again after a
				// failure never shows a key going back to the
				// snapshot's version.
				b = Fold([]Batch{b})
			}
			if !a.Bugs.CommitOffsetFirst && !a.Bugs.UnconditionalApply {
				// The fence: the store takes the batch only where this
				// applier left it. A second applier of the store, or this
				// one's zombie waking with an old batch, is refused, a
				// new snapshot's reset included: a stale reset would take
				// the store back to an old state.
				base := pos
				b.Base = &base
			}
			if a.Bugs.CommitOffsetFirst {
				if err := a.Log.Commit(ctx, a.Group, b.Position.Offset); err != nil {
					return fmt.Errorf("applier %s: commit offset: %w", a.Store.Kind(), err)
				}
			}
			if !a.Bugs.LSNOnlyVersion {
				b.Txns = netTxns(b.Txns)
			}
			if a.Bugs.DropUnchangedToast {
				b.Txns = dropUnchanged(b.Txns)
			}
			if a.Bugs.ReorderBatch {
				b.Txns = reorderDeletesFirst(b.Txns)
			}
			if err := a.Store.Apply(ctx, b); err != nil {
				return fmt.Errorf("applier %s: apply up to %s: %w", a.Store.Kind(), b.Position, err)
			}
			pos = b.Position
			lastWord = a.Env.Now()
		}
		clear(planned) // let the applied transactions go
		if gap != nil {
			// Stay before the hole: applying past it would show states
			// never committed (an update's unchanged columns merged into
			// a row that missed earlier changes).
			return fmt.Errorf("applier %s: %w", a.Store.Kind(), gap)
		}
		if now := a.Env.Now(); !a.Bugs.CommitOffsetFirst && now.Sub(lastCommit) >= a.CommitEvery {
			// Informational only: the store's own position is what resumes.
			_ = a.Log.Commit(ctx, a.Group, pos.Offset)
			lastCommit = now
		}
	}
}

// behindStart handles a store whose next record the log deleted (a fetch
// at its position failed with ErrOffsetOutOfRange, err): what it missed is
// gone, so it is rebuilt from the newest snapshot the log still holds, as
// a store that lost its data is. Until the capture appended one, rebuild
// says so and the applier waits.
func (a *Applier) behindStart(ctx context.Context, pos model.Position, err error) (model.Position, error) {
	if a.Bugs.ResetToEarliest {
		return a.resetToEarliest(ctx, pos)
	}
	a.Logger.Warn("applier: the log deleted records this store has not applied; rebuilding it from a snapshot the log still holds",
		"store", a.Store.Kind(), "at", pos, "err", err)
	return a.rebuild(ctx, &pos)
}

// resetToEarliest is the broken rule behind ResetToEarliest, Kafka's
// auto.offset.reset=earliest: the reader goes on from the log's start as if
// nothing were missing.
func (a *Applier) resetToEarliest(ctx context.Context, pos model.Position) (model.Position, error) {
	start, err := a.Log.Start(ctx)
	if err != nil {
		return pos, fmt.Errorf("applier %s: read the log's start: %w", a.Store.Kind(), err)
	}
	a.Logger.Warn("applier: offset out of range; resetting to the earliest offset", "store", a.Store.Kind(), "from", pos.Offset, "to", start) // Broken: what was deleted is skipped.
	pos.Offset = start
	return pos, nil
}

// checkIdle asks a store the applier has not heard from for a while where
// it is. A store that lost its data (it restarted empty) or that is not
// where the applier left it (another writer moved it) is an error: follow
// starts over from the store's own position, and rebuilds one that has
// none.
func (a *Applier) checkIdle(ctx context.Context, pos model.Position) error {
	got, ok, err := a.Store.Position(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("applier %s: read position while idle: %w", a.Store.Kind(), err)
	case !ok:
		return fmt.Errorf("applier %s: the store lost its data while no changes came (at %s): %w", a.Store.Kind(), pos, ErrStoreLost)
	case got != pos && !a.Bugs.CommitOffsetFirst:
		return fmt.Errorf("applier %s: the store is at %s, not %s where this applier left it: %w", a.Store.Kind(), got, pos, ErrPositionMismatch)
	}
	return nil
}

// whole extends recs until a snapshot that starts in them is there with
// every chunk, and a transaction split into parts that starts in them with
// every part, so that the store takes each in one batch: a replica must
// never show half a snapshot or half a transaction (that is no committed
// state), nor say it is at its LSN before it holds all of it. It stops
// waiting when a newer snapshot starts (the capture gave up on this one),
// or when the log moves on from a split transaction without finishing it
// (a capture that failed half-way appends it again, or something newer).
func (a *Applier) whole(ctx context.Context, pos model.Position, recs []Record) ([]Record, error) {
	for {
		missing := max(incompleteSnapshot(pos, recs), incompleteTxn(pos, recs))
		if missing == 0 {
			return recs, nil
		}
		more, err := a.Log.Fetch(ctx, recs[len(recs)-1].Offset+1, max(missing, a.MaxBatch))
		if err != nil {
			return nil, fmt.Errorf("applier %s: fetch the rest of a snapshot or split transaction: %w", a.Store.Kind(), err)
		}
		recs = append(recs, more...)
	}
}

// isPart tells a part of a split transaction: an ordinary transaction the
// capture appended as several records (snapshot chunks are not parts).
func isPart(t model.Txn) bool { return !t.Snapshot && t.Chunks > 1 }

// incompleteTxn returns how many parts of a split transaction that starts
// in recs (newer than pos) are still to come, or 0.
func incompleteTxn(pos model.Position, recs []Record) int {
	for _, r := range recs {
		if isPart(r.Txn) {
			_, missing, _ := plan(nil, pos, recs, false)
			return missing
		}
	}
	return 0
}

// wholeSnapshots lists the snapshots (by LSN) of which recs hold every chunk.
func wholeSnapshots(recs []Record) map[model.LSN]bool {
	if !slices.ContainsFunc(recs, func(r Record) bool { return r.Txn.Snapshot }) {
		return nil // the usual fetch: no maps to build
	}
	chunks := map[model.LSN]map[int]bool{}
	want := map[model.LSN]int{}
	for _, r := range recs {
		if t := r.Txn; t.Snapshot {
			if chunks[t.CommitLSN] == nil {
				chunks[t.CommitLSN] = map[int]bool{}
			}
			chunks[t.CommitLSN][t.Chunk] = true
			want[t.CommitLSN] = max(t.Chunks, 1)
		}
	}
	whole := map[model.LSN]bool{}
	for lsn, cs := range chunks {
		whole[lsn] = len(cs) >= want[lsn]
	}
	return whole
}

// incompleteSnapshot returns how many chunks of the last snapshot that
// starts in recs (at pos's LSN or newer) are still to come, or 0. One at
// pos's LSN, which the store holds already, is gathered too, so that plan
// sees its first chunk with the rest and skips them all.
func incompleteSnapshot(pos model.Position, recs []Record) int {
	var snap *model.Txn
	have := map[int]bool{}
	for i := range recs {
		t := &recs[i].Txn
		if !t.Snapshot {
			continue
		}
		if t.Chunk == 0 && t.CommitLSN >= pos.LSN && (snap == nil || t.CommitLSN > snap.CommitLSN) {
			snap = t
			clear(have)
		}
		if snap != nil && t.CommitLSN == snap.CommitLSN {
			have[t.Chunk] = true
		}
	}
	if snap == nil {
		return 0
	}
	return max(0, max(snap.Chunks, 1)-len(have))
}

// rebuild folds the whole log into one batch, so a store that lost its data
// goes from empty to current in one atomic step and never shows a key going
// back through old versions.
//
// It reads up to the log's end as of its start, no further: a log that
// keeps growing (the capture appends while the store is rebuilt) would
// otherwise keep the store empty until writes pause, and an empty fetch
// before that end (a failover, a slow broker) is not the end of the log.
// It folds each page of records as it reads it, planned as follow plans
// them (whole snapshots and split transactions, duplicates skipped), so
// its memory follows the store's state, not the log's length.
func (a *Applier) rebuild(ctx context.Context, base *model.Position) (model.Position, error) {
	end, err := a.Log.End(ctx)
	if err != nil {
		return model.Position{}, fmt.Errorf("applier %s: rebuild: read the log's end: %w", a.Store.Kind(), err)
	}
	var f folding
	pos := model.Position{} // where the fold is, as plan sees it
	// cut is set when the log's front was deleted: only a snapshot after
	// it will do, and what comes before one is of no use. cutAt is the
	// log's start then.
	cut, cutAt := false, int64(0)
	for pos.Offset < end {
		recs, err := a.Log.Fetch(ctx, pos.Offset, 1024)
		if errors.Is(err, ErrOffsetOutOfRange) {
			start, serr := a.Log.Start(ctx)
			if serr != nil {
				return model.Position{}, fmt.Errorf("applier %s: rebuild: read the log's start: %w", a.Store.Kind(), serr)
			}
			if start <= pos.Offset {
				return model.Position{}, fmt.Errorf("applier %s: rebuild: fetch from %d: %w", a.Store.Kind(), pos.Offset, err)
			}
			// Fold again from the new start: what was folded so far
			// may be before it, and is of no use without the snapshot
			// before it.
			f, pos, cut, cutAt = folding{}, model.Position{Offset: start}, true, start
			continue
		}
		if err != nil {
			return model.Position{}, fmt.Errorf("applier %s: rebuild: fetch from %d: %w", a.Store.Kind(), pos.Offset, err)
		}
		if len(recs) == 0 {
			if err := a.Env.Sleep(ctx, a.Poll); err != nil {
				return model.Position{}, err
			}
			continue
		}
		from := pos.Offset
		if cut {
			// Nothing before a snapshot is of use (its transactions
			// follow ones the log deleted).
			i := slices.IndexFunc(recs, func(r Record) bool { return r.Txn.Snapshot && r.Txn.Chunk == 0 })
			if i < 0 {
				pos = model.Position{Offset: recs[len(recs)-1].Offset + 1}
				continue
			}
			recs, pos = recs[i:], model.Position{Offset: recs[i].Offset}
		}
		// A snapshot still being appended is waited for, not skipped.
		if recs, err = a.whole(ctx, pos, recs); err != nil {
			return model.Position{}, err
		}
		batches, _, gap := plan(nil, pos, recs, false)
		if gap != nil {
			return model.Position{}, fmt.Errorf("applier %s: rebuild: %w", a.Store.Kind(), gap)
		}
		for _, b := range batches {
			if cut && !b.Reset {
				// The snapshot was one the capture never finished
				// appending: look for the next.
				pos = model.Position{Offset: b.Position.Offset}
				continue
			}
			cut = false
			f.add(b)
			pos = b.Position
		}
		if pos.Offset <= from {
			return model.Position{}, fmt.Errorf("applier %s: rebuild: no progress at offset %d", a.Store.Kind(), from)
		}
	}
	if cut {
		return model.Position{}, fmt.Errorf("applier %s: rebuild: %w", a.Store.Kind(), &NoSnapshotError{Start: cutAt, End: end})
	}
	b := f.batch()
	// Only into a store that is where the applier found it: one that still
	// holds no position (base nil), or, for a store behind the log's start,
	// the position it was at. A second applier, or this one's zombie, may
	// have moved it meanwhile, and folding an older log over it would take
	// it back.
	if !a.Bugs.UnconditionalApply {
		b.Base, b.Fresh = base, base == nil
	}
	a.Logger.Debug("applier: rebuilding", "store", a.Store.Kind(), "rows", len(b.Txns[0].Changes), "to", b.Position)
	if err := a.Store.Apply(ctx, b); err != nil {
		return model.Position{}, fmt.Errorf("applier %s: rebuild: %w", a.Store.Kind(), err)
	}
	return b.Position, nil
}

// lastSnapshotStart is the index in recs of the first chunk of the newest
// snapshot that starts in them, or -1.
func lastSnapshotStart(recs []Record) int {
	for i := len(recs) - 1; i >= 0; i-- {
		if t := recs[i].Txn; t.Snapshot && t.Chunk == 0 {
			return i
		}
	}
	return -1
}

// NoSnapshotError is a rebuild that found the log's front deleted
// (retention) and no snapshot in what is left: nothing can bring a store
// back until the capture appends one. It is ErrLogGap: the applier waits
// for a new snapshot as it does at a hole.
type NoSnapshotError struct {
	Start, End int64 // what the log holds
}

func (e *NoSnapshotError) Error() string {
	return fmt.Sprintf("%v: retention deleted the log before offset %d, and offsets %d to %d hold no snapshot to rebuild from; waiting for the capture to append one",
		ErrLogGap, e.Start, e.Start, e.End)
}

func (e *NoSnapshotError) Unwrap() error { return ErrLogGap }

// Plan turns fetched records into store batches, given the store's position:
// records whose transaction the store already holds are dropped (a duplicate
// from a producer retry, or a redelivery after a source crash), and a
// snapshot's first chunk starts a batch of its own that resets the store;
// its further chunks continue it. The parts of a split transaction become
// that one transaction again, applied where its last part is; parts of an
// attempt the log moved on from (a capture failed half-way, then appended
// it again) and copies of parts are dropped. Every batch carries the
// position after its last record, so progress past duplicates is saved too,
// and none lands between the parts of a transaction: Plan stops before a
// split transaction whose parts are not all in recs. Pure, so it is tested
// on its own.
func Plan(pos model.Position, recs []Record, reapply bool) []Batch {
	out, _, _ := plan(make([]Batch, 0, 1), pos, recs, reapply)
	return out
}

// GapRecheck is how often an applier stopped at a hole in the log looks
// for a new snapshot.
const GapRecheck = 5 * time.Second

// ErrLogGap: a record's transaction follows one the store never got (its
// PrevLSN is past the store's position): the log lost acknowledged records,
// or a capture skipped some. An applier stops before it; only a new
// snapshot in the log gets the store going again.
var ErrLogGap = errors.New("the log has a hole")

// GapError is ErrLogGap with where: the first record past the hole.
type GapError struct {
	Offset  int64
	LSN     model.LSN // the record's transaction
	PrevLSN model.LSN // the transaction it says came before it
	Have    model.LSN // the last transaction the store holds
}

func (e *GapError) Error() string {
	return fmt.Sprintf("%v: the record at offset %d (lsn %s) follows lsn %s, but the store holds only up to %s; records between were lost (an unclean leader election, a capture bug); stopping before it until a new snapshot is in the log",
		ErrLogGap, e.Offset, e.LSN, e.PrevLSN, e.Have)
}

func (e *GapError) Unwrap() error { return ErrLogGap }

// plan is Plan, appending the batches to out; it also returns how many
// parts the split transaction it stopped before still lacks (0 when it did
// not stop), and the hole it stopped before, if any (the batches end
// before it).
func plan(out []Batch, pos model.Position, recs []Record, reapply bool) ([]Batch, int, *GapError) {
	cur := Batch{Position: pos, Txns: make([]model.Txn, 0, len(recs))}
	lsn := pos.LSN
	held, holds := model.LSN(0), false // a snapshot the store is at already, whose chunk 0 was skipped
	whole := wholeSnapshots(recs)
	var g *gathering // the split transaction whose parts are being gathered
	var gap *GapError
	for _, r := range recs {
		t := r.Txn
		if t.PrevLSN > lsn && !t.Snapshot && t.CommitLSN > lsn && g == nil && !reapply {
			// A chained transaction whose predecessor the store never
			// got: stop here (a newer snapshot would have reset lsn).
			gap = &GapError{Offset: r.Offset, LSN: t.CommitLSN, PrevLSN: t.PrevLSN, Have: lsn}
			break
		}
		if g != nil {
			switch g.take(t) {
			case partTaken:
				continue
			case partLast:
				t, g = g.txn(), nil
			case partOlder:
				// A copy of an older transaction: handled below, as
				// anywhere (the position waits for the parts).
			case partAbandoned:
				g = nil
			}
		}
		switch {
		case isPart(t) && t.Chunk == 0 && t.CommitLSN > lsn:
			g = &gathering{parts: []model.Txn{t}, applied: len(cur.Txns)}
		case isPart(t):
			// A copy of a transaction the store holds, or a part of one
			// being gathered, or of an abandoned attempt.
		case t.Snapshot && t.Chunk == 0 && !whole[t.CommitLSN]:
			// A snapshot the capture never finished appending (a newer one
			// follows): applying it would show a state never committed.
		case t.Snapshot && t.Chunk == 0 && (t.CommitLSN > lsn || lsn == 0):
			if len(cur.Txns) > 0 || cur.Position != pos {
				out = append(out, cur)
			}
			cur = Batch{Reset: true, Txns: []model.Txn{t}}
			lsn = t.CommitLSN
		case t.Snapshot && t.Chunk == 0:
			// A snapshot at the store's LSN (taken right after the
			// transaction the store holds last): what the store holds.
			// Its later chunks go with it: loaded as inserts without the
			// reset, they would count their search revisions from one.
			held, holds = t.CommitLSN, true
		case t.Snapshot && t.Chunk > 0 && t.CommitLSN == lsn && !(holds && held == lsn):
			// The rest of the snapshot this store is loading.
			cur.Txns = append(cur.Txns, t)
		case !t.Snapshot && (t.CommitLSN > lsn || reapply):
			cur.Txns = append(cur.Txns, t)
			if t.CommitLSN > lsn {
				lsn = t.CommitLSN
			}
		}
		if g == nil {
			cur.Position = model.Position{Offset: r.Offset + 1, LSN: lsn}
		}
	}
	missing := 0
	if g != nil {
		// Stop before its first part: what came after it is read again.
		cur.Txns = cur.Txns[:g.applied]
		missing = g.parts[0].Chunks - len(g.parts)
	}
	if len(cur.Txns) > 0 || cur.Reset || cur.Position != pos {
		out = append(out, cur)
	}
	return out, missing, gap
}

// gathering collects the parts of one attempt at appending a split
// transaction, in order, from its first part on.
type gathering struct {
	parts   []model.Txn
	applied int // len(Batch.Txns) when its first part came
}

// What gathering.take did with a record.
const (
	partTaken     = iota // the next part, or a copy of one it has: nothing else to do
	partLast             // the last part: the transaction is whole
	partOlder            // an older transaction's record: not its business
	partAbandoned        // the log moved on: this attempt will never be whole
)

// take looks at the record after the parts so far. Only a capture that
// failed half-way leaves an attempt unfinished, and it then appends the
// same transaction again from its first part (a new attempt), or, with a
// larger limit, whole; anything newer, or a snapshot, means it gave up.
// Older records in between are copies from a producer retry or a zombie
// capture.
func (g *gathering) take(t model.Txn) int {
	first := g.parts[0]
	switch {
	case t.Snapshot || t.CommitLSN > first.CommitLSN:
		return partAbandoned
	case t.CommitLSN < first.CommitLSN:
		return partOlder
	case !isPart(t) || t.XID != first.XID:
		return partAbandoned // appended again whole
	case t.Chunk == 0:
		g.parts = append(g.parts[:0], t) // a new attempt: start again
		return partTaken
	case t.Chunks == first.Chunks && t.Chunk == len(g.parts):
		g.parts = append(g.parts, t)
		if len(g.parts) == first.Chunks {
			return partLast
		}
	}
	return partTaken // a copy of a part it has (or a stray): skipped
}

// txn is the whole transaction: its parts' changes, in order, as one.
func (g *gathering) txn() model.Txn {
	t := g.parts[0]
	n := 0
	for _, p := range g.parts {
		n += len(p.Changes)
	}
	t.Changes = make([]model.Change, 0, n)
	for _, p := range g.parts {
		t.Changes = append(t.Changes, p.Changes...)
	}
	t.Chunk, t.Chunks = 0, 0
	return t
}

// Fold compacts planned batches into one reset batch holding a single
// snapshot transaction: every live row once, at its latest version, and the
// table definitions of the last snapshot. Like any snapshot it carries no
// revision counts: a search index rebuilt from it counts revisions from its
// LSN (model.Snapshot.RevsFrom). A store rebuilt from it goes straight from empty to
// current, even one that takes the batch in several requests (the search
// index), so no reader ever sees a key step back through old versions.
func Fold(batches []Batch) Batch {
	var f folding
	for _, b := range batches {
		f.add(b)
	}
	return f.batch()
}

// folding is a Fold under way, taking batches one at a time: the state
// they leave (the zero value is before any).
type folding struct {
	state  *model.State
	schema []model.Table
	pos    model.Position
}

func (f *folding) add(b Batch) {
	if b.Reset || f.state == nil {
		f.state, f.schema = model.NewState(), nil
	}
	for _, t := range b.Txns {
		f.schema = model.AddTables(f.schema, t.Schema)
		f.state.Apply(t)
	}
	f.pos = b.Position
}

// batch is the folded batch.
func (f *folding) batch() Batch {
	snap := model.Txn{CommitLSN: f.pos.LSN, Snapshot: true, Schema: f.schema}
	if f.state != nil {
		for _, k := range f.state.Keys() {
			e, _ := f.state.Get(k)
			snap.Changes = append(snap.Changes, model.Change{Table: k.Table, PK: k.PK, Op: model.OpInsert, Row: e.Row})
		}
	}
	return Batch{Reset: true, Txns: []model.Txn{snap}, Position: f.pos}
}

// reorderDeletesFirst is the broken batching seen in the field: it applies
// every delete of a batch before its upserts, so an insert followed by a
// delete of the same key in one batch leaves the row alive.
func reorderDeletesFirst(txns []model.Txn) []model.Txn {
	var deletes, upserts []model.Txn
	for _, t := range txns {
		d, u := t, t
		d.Changes, u.Changes = nil, nil
		for _, c := range t.Changes {
			if c.Op == model.OpDelete {
				d.Changes = append(d.Changes, c)
			} else {
				u.Changes = append(u.Changes, c)
			}
		}
		if len(d.Changes) > 0 {
			deletes = append(deletes, d)
		}
		if len(u.Changes) > 0 || t.Snapshot {
			upserts = append(upserts, u)
		}
	}
	return append(deletes, upserts...)
}

// netTxns replaces each transaction by its net effect per row (model.Net),
// which is what a store versioned by commit LSN can apply change by change:
// a transaction that wrote a row twice has one change for it.
func netTxns(txns []model.Txn) []model.Txn {
	var out []model.Txn
	for i, t := range txns {
		n := model.Net(t)
		if out == nil && len(n.Changes) == len(t.Changes) && (len(n.Changes) == 0 || &n.Changes[0] == &t.Changes[0]) {
			continue // unchanged so far: no copy yet
		}
		if out == nil {
			out = append(make([]model.Txn, 0, len(txns)), txns[:i]...)
		}
		out = append(out, n)
	}
	if out == nil {
		return txns
	}
	return out
}

// dropUnchanged is the broken rule behind DropUnchangedToast: the marker
// for unchanged columns is lost on the way, so a store writes the row
// without them.
func dropUnchanged(txns []model.Txn) []model.Txn {
	out := make([]model.Txn, len(txns))
	for i, t := range txns {
		out[i] = t
		out[i].Changes = make([]model.Change, len(t.Changes))
		for j, c := range t.Changes {
			c.Unchanged = nil
			out[i].Changes[j] = c
		}
	}
	return out
}
