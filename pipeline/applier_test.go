package pipeline

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"lockstep/model"
)

func txn(lsn model.LSN, snapshot bool) model.Txn {
	return model.Txn{CommitLSN: lsn, Snapshot: snapshot, Changes: []model.Change{{Table: "t", PK: "k", Op: model.OpUpdate, Row: model.R("v", lsn.String())}}}
}

func recs(txns ...model.Txn) []Record {
	out := make([]Record, len(txns))
	for i, t := range txns {
		out[i] = Record{Offset: int64(10 + i), Txn: t}
	}
	return out
}

func lsns(b Batch) []model.LSN {
	var out []model.LSN
	for _, t := range b.Txns {
		out = append(out, t.CommitLSN)
	}
	return out
}

func TestPlanSkipsWhatTheStoreHolds(t *testing.T) {
	// Offsets 10..14; the store already holds up to LSN 20. A producer
	// retry duplicated LSN 30 at offset 13.
	got := Plan(model.Position{Offset: 10, LSN: 20}, recs(txn(10, false), txn(20, false), txn(30, false), txn(30, false), txn(40, false)), false)
	if len(got) != 1 {
		t.Fatalf("got %d batches, want 1", len(got))
	}
	if want := []model.LSN{30, 40}; !reflect.DeepEqual(lsns(got[0]), want) {
		t.Fatalf("applied %v, want %v", lsns(got[0]), want)
	}
	if got[0].Position != (model.Position{Offset: 15, LSN: 40}) {
		t.Fatalf("position %v, want offset 15 lsn 40", got[0].Position)
	}
}

func TestPlanAdvancesPastPureDuplicates(t *testing.T) {
	got := Plan(model.Position{Offset: 10, LSN: 50}, recs(txn(40, false), txn(50, false)), false)
	if len(got) != 1 || len(got[0].Txns) != 0 || got[0].Position != (model.Position{Offset: 12, LSN: 50}) {
		t.Fatalf("got %+v; want one empty batch moving to offset 12", got)
	}
}

func TestPlanSnapshotResetsInItsOwnBatch(t *testing.T) {
	got := Plan(model.Position{Offset: 10, LSN: 5}, recs(txn(6, false), txn(100, true), txn(90, false), txn(110, false)), false)
	if len(got) != 2 {
		t.Fatalf("got %d batches, want 2: %+v", len(got), got)
	}
	if got[0].Reset || !reflect.DeepEqual(lsns(got[0]), []model.LSN{6}) {
		t.Fatalf("first batch %+v, want LSN 6 without reset", got[0])
	}
	if !got[1].Reset || !reflect.DeepEqual(lsns(got[1]), []model.LSN{100, 110}) {
		t.Fatalf("second batch %+v, want reset with the snapshot then LSN 110 (90 is inside the snapshot)", got[1])
	}
}

// A snapshot taken right after a commit is at that commit's LSN (the
// simulated source's always is). A store that applied that transaction
// holds what the snapshot holds and skips it whole: loading its later
// chunks again as inserts, without the reset, restarted their search
// revision counts (retention/pipeline/30, once the simulated snapshot
// stopped carrying write counts, as PostgreSQL's never did).
func TestPlanSkipsASnapshotAtTheStoresPosition(t *testing.T) {
	snap := rows(50, 6)
	snap.Snapshot = true
	chunks := SplitSnapshot(snap, 2)
	got := Plan(model.Position{Offset: 9, LSN: 50}, recs(append(chunks, txn(60, false))...), false)
	if len(got) != 1 || got[0].Reset || !reflect.DeepEqual(lsns(got[0]), []model.LSN{60}) {
		t.Fatalf("a store at the snapshot's LSN got %+v; want only LSN 60, no reset", got)
	}
	// A fetch that ends after the first chunk waits for the others, so
	// that they are skipped with it (seen with the chunks appended one
	// call each: a plan of the others alone took the store to be resuming
	// inside the snapshot).
	if n := incompleteSnapshot(model.Position{Offset: 9, LSN: 50}, recs(chunks[0])); n != 2 {
		t.Fatalf("a store at the snapshot's LSN, with its first chunk fetched, waits for %d more; want 2", n)
	}
}

func TestPlanReapplyBugKeepsDuplicates(t *testing.T) {
	got := Plan(model.Position{Offset: 10, LSN: 20}, recs(txn(10, false), txn(30, false)), true)
	if !reflect.DeepEqual(lsns(got[0]), []model.LSN{10, 30}) {
		t.Fatalf("with the bug on, applied %v, want the duplicate 10 too", lsns(got[0]))
	}
}

func TestReorderDeletesFirstBreaksInsertThenDelete(t *testing.T) {
	ins := model.Txn{CommitLSN: 1, Changes: []model.Change{{Table: "t", PK: "k", Op: model.OpInsert, Row: model.R("v", "1")}}}
	del := model.Txn{CommitLSN: 2, Changes: []model.Change{{Table: "t", PK: "k", Op: model.OpDelete}}}
	got := reorderDeletesFirst([]model.Txn{ins, del})
	s := model.NewState()
	for _, t := range got {
		s.Apply(t)
	}
	if _, alive := s.Get(model.Key{Table: "t", PK: "k"}); !alive {
		t.Fatal("the broken reordering should leave the deleted row alive")
	}
}

// A fold is a snapshot: the latest versions, and no revision counts (a
// search index rebuilt from it counts from its LSN), even of rows whose
// snapshot said how often they were written.
func TestFoldKeepsLatestVersionsNotRevs(t *testing.T) {
	k := func(pk string, op model.Op, v string) model.Change {
		c := model.Change{Table: "t", PK: pk, Op: op}
		if op != model.OpDelete {
			c.Row = model.R("v", v)
		}
		return c
	}
	snap := model.Txn{CommitLSN: 10, Snapshot: true, Changes: []model.Change{{Table: "t", PK: "a", Op: model.OpInsert, Row: model.R("v", "a0"), Revs: 3}, k("b", model.OpInsert, "b0")}}
	batches := []Batch{
		{Txns: []model.Txn{{CommitLSN: 5, Changes: []model.Change{k("zombie", model.OpInsert, "gone with the reset")}}}, Position: model.Position{Offset: 1, LSN: 5}},
		{Reset: true, Txns: []model.Txn{snap, {CommitLSN: 20, Changes: []model.Change{k("a", model.OpUpdate, "a1"), k("b", model.OpDelete, "")}}}, Position: model.Position{Offset: 3, LSN: 20}},
		{Txns: []model.Txn{{CommitLSN: 30, Changes: []model.Change{k("c", model.OpInsert, "c0")}}}, Position: model.Position{Offset: 4, LSN: 30}},
	}
	got := Fold(batches)
	if !got.Reset || got.Position != (model.Position{Offset: 4, LSN: 30}) || len(got.Txns) != 1 || !got.Txns[0].Snapshot {
		t.Fatalf("fold = %+v; want one reset snapshot batch at offset 4 lsn 30", got)
	}
	var s []string
	for _, c := range got.Txns[0].Changes {
		s = append(s, c.PK+"="+c.Row.Get("v")+"/"+string(rune('0'+c.Revs)))
	}
	if want := []string{"a=a1/0", "c=c0/0"}; !reflect.DeepEqual(s, want) {
		t.Fatalf("folded rows %v, want %v (no revision counts)", s, want)
	}
}

func TestSnapshotChunksResetThenContinue(t *testing.T) {
	snap := model.Txn{CommitLSN: 50, Snapshot: true}
	for i := 0; i < 5; i++ {
		snap.Changes = append(snap.Changes, model.Change{Table: "t", PK: string(rune('a' + i)), Op: model.OpInsert, Row: model.R("v", "1")})
	}
	chunks := SplitSnapshot(snap, 2)
	if len(chunks) != 3 || chunks[2].Chunk != 2 || chunks[0].Chunks != 3 || len(chunks[2].Changes) != 1 {
		t.Fatalf("split into %+v; want 3 chunks of 2, 2, 1", chunks)
	}
	// A store at an older position takes chunk 0 as a reset and the rest
	// as its continuation, then the stream.
	got := Plan(model.Position{Offset: 10, LSN: 5}, recs(chunks[0], chunks[1], chunks[2], txn(60, false)), false)
	if len(got) != 1 || !got[0].Reset || len(got[0].Txns) != 4 {
		t.Fatalf("plan %+v; want one reset batch with 3 chunks and the txn at 60", got)
	}
	// Resuming inside the snapshot (the store holds chunk 0): the next
	// chunks continue it, with no reset.
	got = Plan(model.Position{Offset: 11, LSN: 50}, recs(chunks[1], chunks[2]), false)
	if len(got) != 1 || got[0].Reset || len(got[0].Txns) != 2 {
		t.Fatalf("resumed plan %+v; want the two remaining chunks, no reset", got)
	}
	// A store past the snapshot skips its chunks.
	got = Plan(model.Position{Offset: 11, LSN: 70}, recs(chunks[0], chunks[1]), false)
	if len(got[0].Txns) != 0 {
		t.Fatalf("a store past the snapshot applied %v", lsns(got[0]))
	}
	folded := Fold(Plan(model.Position{}, recs(chunks[0], chunks[1], chunks[2]), false))
	if len(folded.Txns[0].Changes) != 5 {
		t.Fatalf("fold of the chunks holds %d rows, want 5", len(folded.Txns[0].Changes))
	}
}

func TestIncompleteSnapshotCountsMissingChunks(t *testing.T) {
	snap := model.Txn{CommitLSN: 50, Snapshot: true}
	for i := 0; i < 6; i++ {
		snap.Changes = append(snap.Changes, model.Change{Table: "t", PK: string(rune('a' + i)), Op: model.OpInsert, Row: model.R("v", "1")})
	}
	c := SplitSnapshot(snap, 2) // 3 chunks
	if n := incompleteSnapshot(model.Position{LSN: 5}, recs(c[0])); n != 2 {
		t.Fatalf("missing %d chunks, want 2", n)
	}
	if n := incompleteSnapshot(model.Position{LSN: 5}, recs(c[0], c[1], c[2], txn(60, false))); n != 0 {
		t.Fatalf("missing %d chunks of a whole snapshot", n)
	}
	if n := incompleteSnapshot(model.Position{LSN: 70}, recs(c[0])); n != 0 {
		t.Fatalf("a store past the snapshot waits for %d chunks", n)
	}
	newer := SplitSnapshot(model.Txn{CommitLSN: 80, Snapshot: true, Changes: snap.Changes[:1]}, 2)
	if n := incompleteSnapshot(model.Position{LSN: 5}, recs(c[0], newer[0])); n != 0 {
		t.Fatalf("a newer whole snapshot replaced the half one, yet %d chunks are awaited", n)
	}
}

// A snapshot the capture never finished appending, replaced by a newer
// one, is never applied: between the two the store would show half a
// snapshot, a state that was never committed.
func TestPlanSkipsAnAbandonedSnapshot(t *testing.T) {
	rows := func(lsn model.LSN, n int) model.Txn {
		s := model.Txn{CommitLSN: lsn, Snapshot: true}
		for i := 0; i < n; i++ {
			s.Changes = append(s.Changes, model.Change{Table: "t", PK: string(rune('a' + i)), Op: model.OpInsert, Row: model.R("v", lsn.String())})
		}
		return s
	}
	half := SplitSnapshot(rows(50, 6), 2)[:1] // chunk 0 of 3 only
	whole := SplitSnapshot(rows(60, 6), 2)
	got := Plan(model.Position{}, recs(append(append(half, whole...), txn(70, false))...), false)
	for _, b := range got {
		for _, tx := range b.Txns {
			if tx.CommitLSN == 50 {
				t.Fatalf("applied the abandoned snapshot at 50: %+v", got)
			}
		}
	}
	last := got[len(got)-1]
	if !last.Reset || len(last.Txns) != 4 || last.Position.LSN != 70 {
		t.Fatalf("plan %+v; want it to end with one reset batch: the 3 chunks at 60 and the txn at 70", got)
	}
	for _, b := range got[:len(got)-1] {
		if len(b.Txns) > 0 || b.Reset {
			t.Fatalf("before the whole snapshot only moving past the half one is allowed: %+v", got)
		}
	}
}

// memLog is an in-memory pipeline.Log for capture tests. Records before
// start were deleted (retention): fetching them fails as Kafka's log does.
type memLog struct {
	recs  []Record
	start int64
}

func (l *memLog) Produce(_ context.Context, txns []model.Txn) (int64, error) {
	for _, t := range txns {
		l.recs = append(l.recs, Record{Offset: int64(len(l.recs)), Txn: t})
	}
	return int64(len(l.recs) - 1), nil
}

func (l *memLog) Fetch(_ context.Context, off int64, max int) ([]Record, error) {
	if off < l.start {
		return nil, fmt.Errorf("fetch %d: log starts at %d: %w", off, l.start, ErrOffsetOutOfRange)
	}
	if off >= int64(len(l.recs)) {
		return nil, nil
	}
	return l.recs[off:min(int(off)+max, len(l.recs))], nil
}

func (l *memLog) End(context.Context) (int64, error)               { return int64(len(l.recs)), nil }
func (l *memLog) Start(context.Context) (int64, error)             { return l.start, nil }
func (l *memLog) Commit(context.Context, string, int64) error      { return nil }
func (l *memLog) Committed(context.Context, string) (int64, error) { return 0, nil }

// The capture judges the last snapshot in the log: a complete first one
// does not excuse a later one left half-appended.
func TestSnapshotInLogJudgesTheLastSnapshot(t *testing.T) {
	snap := func(lsn model.LSN) []model.Txn {
		s := model.Txn{CommitLSN: lsn, Snapshot: true}
		for i := 0; i < 5; i++ {
			s.Changes = append(s.Changes, model.Change{Table: "t", PK: string(rune('a' + i)), Op: model.OpInsert})
		}
		return SplitSnapshot(s, 2)
	}
	ctx := context.Background()
	l := &memLog{}
	c := &Capture{Log: l}
	if ok, _, err := c.snapshotInLog(ctx); ok || err != nil {
		t.Fatalf("empty log: %v, %v; want no snapshot", ok, err)
	}
	l.Produce(ctx, snap(10))
	for i := 0; i < 600; i++ { // a long stream, more than two scan windows
		l.Produce(ctx, []model.Txn{txn(model.LSN(100+i), false)})
	}
	if ok, _, err := c.snapshotInLog(ctx); !ok || err != nil {
		t.Fatalf("complete snapshot then a stream: %v, %v; want complete", ok, err)
	}
	l.Produce(ctx, snap(900)[:2]) // a re-snapshot that failed half-way
	l.Produce(ctx, []model.Txn{txn(901, false)})
	if ok, _, _ := c.snapshotInLog(ctx); ok {
		t.Fatal("the last snapshot is missing a chunk, yet the log was judged complete")
	}
	l.Produce(ctx, snap(950))
	if ok, _, _ := c.snapshotInLog(ctx); !ok {
		t.Fatal("a complete snapshot after the half one was not seen")
	}
}

// parts is t split into n parts of consecutive changes (n must divide its
// changes), as the capture appends a transaction too large for a record.
func parts(t model.Txn, n int) []model.Txn {
	out := make([]model.Txn, n)
	per := len(t.Changes) / n
	for i := range out {
		p := t
		p.Chunk, p.Chunks = i, n
		p.Changes = t.Changes[i*per : (i+1)*per]
		out[i] = p
	}
	return out
}

// rows is an ordinary transaction at lsn writing n keys.
func rows(lsn model.LSN, n int) model.Txn {
	t := model.Txn{XID: uint64(lsn), CommitLSN: lsn}
	for i := range n {
		t.Changes = append(t.Changes, model.Change{Table: "t", PK: fmt.Sprintf("k%d", i), Op: model.OpUpdate, Row: model.R("v", lsn.String())})
	}
	return t
}

// cat concatenates transaction lists.
func cat(lists ...[]model.Txn) []model.Txn {
	var out []model.Txn
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// applied lists the transactions of batches, checking none is a part of a
// split transaction.
func applied(t *testing.T, batches []Batch) []model.Txn {
	t.Helper()
	var out []model.Txn
	for _, b := range batches {
		for _, tx := range b.Txns {
			if !tx.Snapshot && (tx.Chunk != 0 || tx.Chunks != 0) {
				t.Fatalf("a store was handed a part: %s chunk %d of %d", tx.CommitLSN, tx.Chunk, tx.Chunks)
			}
			out = append(out, tx)
		}
	}
	return out
}

// A split transaction reaches the store as the one transaction it was, in
// its place among the others, in one batch.
func TestPlanAppliesASplitTxnWhole(t *testing.T) {
	big := rows(30, 6)
	got := Plan(model.Position{Offset: 10, LSN: 10}, recs(cat([]model.Txn{txn(20, false)}, parts(big, 3), []model.Txn{txn(40, false)})...), false)
	if len(got) != 1 || got[0].Position != (model.Position{Offset: 15, LSN: 40}) {
		t.Fatalf("plan %+v; want one batch to offset 15 lsn 40", got)
	}
	txns := applied(t, got)
	if !reflect.DeepEqual(lsns(got[0]), []model.LSN{20, 30, 40}) || !reflect.DeepEqual(txns[1], big) {
		t.Fatalf("applied %v; want 20, the whole of 30 (%v), 40", txns, big)
	}
}

// A split transaction whose parts are not all there yet is not applied,
// and the position stops before its first part, so the parts are read again
// with the rest; incompleteTxn says how many are still to come.
func TestPlanStopsBeforeAnIncompleteSplitTxn(t *testing.T) {
	p := parts(rows(30, 6), 3)
	in := recs(txn(20, false), p[0], p[1])
	got := Plan(model.Position{Offset: 10, LSN: 10}, in, false)
	if len(got) != 1 || !reflect.DeepEqual(lsns(got[0]), []model.LSN{20}) || got[0].Position != (model.Position{Offset: 11, LSN: 20}) {
		t.Fatalf("plan %+v; want 20 only, to offset 11", got)
	}
	if n := incompleteTxn(model.Position{Offset: 10, LSN: 10}, in); n != 1 {
		t.Fatalf("%d parts awaited, want 1", n)
	}
	if got := Plan(model.Position{Offset: 11, LSN: 20}, in[1:], false); len(got) != 0 {
		t.Fatalf("plan of the first parts alone %+v; want nothing", got)
	}
	// A store that holds the transaction does not wait for a copy's parts.
	if n := incompleteTxn(model.Position{Offset: 10, LSN: 30}, in); n != 0 {
		t.Fatalf("a store past 30 awaits %d parts of a copy", n)
	}
	if n := incompleteTxn(model.Position{}, recs(cat(p, p[:1])...)); n != 0 {
		t.Fatalf("after a whole 30, %d parts of its copy are awaited", n)
	}
}

// Parts duplicated by a producer retry, an attempt a crashed capture left
// half-appended and appended again, a zombie capture's parts interleaved
// with the new one's, and whole copies: the transaction is applied once,
// exactly as it was, and no half of it ever.
func TestPlanSkipsDuplicatedAndAbandonedParts(t *testing.T) {
	big := rows(30, 6)
	p := parts(big, 3)
	for name, log := range map[string][]model.Txn{
		"duplicated parts":          {txn(20, false), p[0], p[1], p[1], p[2], p[2], txn(40, false)},
		"half-appended then again":  {txn(20, false), p[0], p[1], txn(20, false), p[0], p[1], p[2], txn(40, false)},
		"abandoned twice":           {txn(20, false), p[0], p[0], p[1], p[0], p[1], p[2], txn(40, false)},
		"zombie interleaved":        {txn(20, false), p[0], txn(20, false), p[0], p[1], p[1], p[2], p[2], txn(40, false)},
		"whole copy after":          {txn(20, false), p[0], p[1], p[2], txn(20, false), p[0], p[1], p[2], txn(40, false)},
		"again whole, not split":    {txn(20, false), p[0], p[1], big, txn(40, false)},
		"again with other parts":    cat([]model.Txn{txn(20, false), p[0], p[1]}, parts(big, 2), []model.Txn{txn(40, false)}),
		"stray part of an old copy": {txn(20, false), p[0], p[1], p[2], p[1], txn(40, false)},
	} {
		got := Plan(model.Position{Offset: 10, LSN: 10}, recs(log...), false)
		txns := applied(t, got)
		if len(txns) != 3 || !reflect.DeepEqual(txns[1], big) || txns[0].CommitLSN != 20 || txns[2].CommitLSN != 40 {
			t.Fatalf("%s: applied %v; want 20, the whole of 30 once, 40", name, txns)
		}
		if last := got[len(got)-1].Position; last.Offset != int64(10+len(log)) || last.LSN != 40 {
			t.Fatalf("%s: ends at %v, want offset %d lsn 40", name, last, 10+len(log))
		}
	}
	// The log moved on from a half-appended transaction: its parts are
	// never applied (only a capture that lost its slot does that, and then
	// a snapshot follows).
	got := Plan(model.Position{Offset: 10, LSN: 10}, recs(txn(20, false), p[0], p[1], txn(40, false)), false)
	if !reflect.DeepEqual(lsns(got[0]), []model.LSN{20, 40}) {
		t.Fatalf("applied %v; want 20 and 40, no part of 30", lsns(got[0]))
	}
}

// A rebuild folds a split transaction whole; a half one is not folded.
func TestFoldOfASplitTxn(t *testing.T) {
	big := rows(30, 6)
	folded := Fold(Plan(model.Position{}, recs(cat([]model.Txn{rows(20, 8)}, parts(big, 3))...), false))
	var got []string
	for _, c := range folded.Txns[0].Changes {
		got = append(got, c.PK+"="+c.Row.Get("v"))
	}
	want := []string{"k0=0/1E", "k1=0/1E", "k2=0/1E", "k3=0/1E", "k4=0/1E", "k5=0/1E", "k6=0/14", "k7=0/14"}
	if folded.Position != (model.Position{Offset: 14, LSN: 30}) || !reflect.DeepEqual(got, want) {
		t.Fatalf("fold at %v holds %v; want %v at offset 14 lsn 30", folded.Position, got, want)
	}
	half := Fold(Plan(model.Position{}, recs(cat([]model.Txn{rows(20, 8)}, parts(big, 3)[:2])...), false))
	if half.Position != (model.Position{Offset: 11, LSN: 20}) {
		t.Fatalf("fold with half of 30 ends at %v; want offset 11 lsn 20", half.Position)
	}
}

// scriptLog is memLog that runs onEnd when a fetch finds nothing, as if a
// capture appended then.
type scriptLog struct {
	memLog
	onEnd []func(*memLog)
}

func (l *scriptLog) Fetch(ctx context.Context, off int64, max int) ([]Record, error) {
	recs, err := l.memLog.Fetch(ctx, off, max)
	if len(recs) == 0 && len(l.onEnd) > 0 {
		l.onEnd[0](&l.memLog)
		l.onEnd = l.onEnd[1:]
	}
	return recs, err
}

// batchStore records the batches it is handed and ends the test's context
// once it is at offset end.
type batchStore struct {
	pos     model.Position
	batches []Batch
	end     int64
	done    context.CancelFunc
}

func (s *batchStore) Kind() model.StoreKind { return model.Replica }

func (s *batchStore) Apply(_ context.Context, b Batch) error {
	if b.Base != nil && *b.Base != s.pos {
		return ErrPositionMismatch
	}
	s.batches = append(s.batches, b)
	s.pos = b.Position
	if s.pos.Offset >= s.end {
		s.done()
	}
	return nil
}

func (s *batchStore) Position(context.Context) (model.Position, bool, error) {
	return s.pos, true, nil
}

// A transaction over the log's limit goes from the capture to the store as
// one transaction in one batch; while only some of its parts are in the log
// (a capture crashed appending it), the store gets none of it and its
// position stays before them, and once the capture appended it again the
// store takes it whole.
func TestSplitTxnReachesTheStoreWhole(t *testing.T) {
	const limit = 16 << 10
	big := wide(30, 100, 1000)
	src := &fakeSource{txns: []model.Txn{wide(20, 1, 10), big, wide(40, 1, 10)}, batch: 3}
	captured := &limitLog{max: limit}
	c := &Capture{Env: &testEnv{}, Source: src, Log: captured}
	if err := c.stream(context.Background()); !errors.Is(err, errDrained) {
		t.Fatalf("capture: %v", err)
	}
	all := captured.recs // snapshot, 20, the parts of 30, 40
	var firstPart int
	for firstPart = 0; all[firstPart].Txn.CommitLSN != 30; firstPart++ {
	}
	n := all[firstPart].Txn.Chunks
	if n < 3 {
		t.Fatalf("30 went in %d parts, want several", n)
	}

	// The log as a capture that crashed half-way through left it; then
	// the rest, as the next capture appends it again from the first part.
	log := &scriptLog{}
	for _, r := range all[:firstPart+2] {
		log.recs = append(log.recs, Record{Offset: int64(len(log.recs)), Txn: r.Txn})
	}
	var seenHalf []Batch
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := &batchStore{pos: model.Position{}, done: cancel}
	log.onEnd = append(log.onEnd, func(l *memLog) {
		seenHalf = append(seenHalf, store.batches...)
		var again []model.Txn
		for _, r := range all[firstPart-1:] { // 20 again, every part, 40
			again = append(again, r.Txn)
		}
		l.Produce(ctx, again)
		store.end = int64(len(l.recs))
	})
	for range 100 { // a fetch that keeps finding nothing ends the test
		log.onEnd = append(log.onEnd, func(*memLog) {})
	}
	log.onEnd = append(log.onEnd, func(*memLog) { t.Error("the store never reached the end of the log"); cancel() })
	store.end = 1 << 62
	a := &Applier{Env: &testEnv{}, Log: log, Store: store, MaxBatch: 2} // the first fetch ends at 30's first part
	a.defaults()
	if err := a.follow(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("follow: %v", err)
	}

	if len(seenHalf) == 0 || seenHalf[len(seenHalf)-1].Position.Offset != int64(firstPart) {
		t.Fatalf("with half of 30 in the log the store got %+v; want it up to 30's first part, offset %d", seenHalf, firstPart)
	}
	for _, b := range store.batches {
		if off := b.Position.Offset; off > int64(firstPart) && off < int64(firstPart+2+1+n) {
			t.Fatalf("the store moved to %v, between parts of 30 (offsets %d to %d)", b.Position, firstPart, firstPart+2+n)
		}
	}
	txns := applied(t, store.batches)
	var got []model.LSN
	for _, tx := range txns {
		got = append(got, tx.CommitLSN)
	}
	// The snapshot and 20 came in one reset batch: the applier folds such
	// a batch into one snapshot at 20's LSN.
	if !reflect.DeepEqual(got, []model.LSN{20, 30, 40}) {
		t.Fatalf("the store applied %v, want the snapshot folded with 20, then 30 and 40 once each", got)
	}
	want := big
	want.PrevLSN = 20 // the capture chains it to the transaction before
	if !reflect.DeepEqual(txns[1], want) {
		t.Fatal("30 reached the store changed")
	}
	for _, b := range store.batches {
		for _, tx := range b.Txns {
			if tx.CommitLSN == 30 && b.Position.LSN != 40 && b.Position.LSN != 30 {
				t.Fatalf("30 came in a batch at %v", b.Position)
			}
		}
	}
}

// Each captured transaction names the one appended before it. A record
// whose predecessor the store never got marks a hole in the log: the plan
// ends before it and says where; a duplicate or an overlap is no hole.
func TestPlanStopsAtAHoleInTheLog(t *testing.T) {
	snap := model.Txn{CommitLSN: 10, Snapshot: true}
	txn := func(lsn, prev model.LSN) model.Txn {
		return model.Txn{CommitLSN: lsn, PrevLSN: prev, Changes: []model.Change{{Table: "t", PK: "k", Op: model.OpInsert, Row: model.R("v", fmt.Sprint(lsn))}}}
	}
	recs := func(ts ...model.Txn) []Record {
		var out []Record
		for i, t := range ts {
			out = append(out, Record{Offset: int64(i), Txn: t})
		}
		return out
	}
	// 30 was acknowledged and lost: 40 follows it.
	batches, _, gap := plan(nil, model.Position{}, recs(snap, txn(20, 10), txn(40, 30), txn(50, 40)), false)
	if gap == nil || gap.Offset != 2 || gap.Have != 20 || gap.PrevLSN != 30 || !errors.Is(gap, ErrLogGap) {
		t.Fatalf("gap = %+v, want the record at offset 2, after 30, with the store at 20", gap)
	}
	if last := batches[len(batches)-1].Position; last != (model.Position{Offset: 2, LSN: 20}) {
		t.Fatalf("the batches end at %v, want before the hole (offset 2, lsn 20)", last)
	}
	// A capture that restarted from an older confirmed position appends
	// 20 again after 40: an overlap, skipped, no hole.
	if _, _, gap := plan(nil, model.Position{}, recs(snap, txn(20, 10), txn(40, 20), txn(20, 10), txn(50, 40)), false); gap != nil {
		t.Fatalf("an overlap was taken for a hole: %v", gap)
	}
	// A new snapshot after the hole gets the store going again.
	if _, _, gap := plan(nil, model.Position{Offset: 2, LSN: 20}, recs(txn(40, 30), model.Txn{CommitLSN: 60, Snapshot: true}, txn(70, 60))[1:], false); gap != nil {
		t.Fatalf("a snapshot did not heal the hole: %v", gap)
	}
}

// lostStore is a store at pos that loses everything (no position) once
// lost is set, as a cache restarted empty does.
type lostStore struct {
	pos   model.Position
	lost  bool
	asked int // Position calls after the loss
}

func (s *lostStore) Kind() model.StoreKind { return model.Cache }

func (s *lostStore) Apply(_ context.Context, b Batch) error {
	if b.Base != nil && (s.lost || *b.Base != s.pos) {
		return ErrPositionMismatch
	}
	s.pos, s.lost = b.Position, false
	return nil
}

func (s *lostStore) Position(context.Context) (model.Position, bool, error) {
	if s.lost {
		s.asked++
		return model.Position{}, false, nil
	}
	return s.pos, true, nil
}

// A store that loses its data while the log has nothing new for it (a
// cache restarted empty once all is quiet) is noticed by its idle applier,
// which stops following so that Run rebuilds it; under no-idle-check the
// applier goes on polling the log and the store stays empty.
func TestIdleApplierNoticesALostStore(t *testing.T) {
	for _, bug := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		log := &scriptLog{}
		log.Produce(ctx, []model.Txn{{XID: 1, CommitLSN: 10, Changes: []model.Change{{Table: "t", PK: "1", Op: model.OpInsert, Row: model.R("v", "a")}}}})
		store := &lostStore{pos: model.Position{Offset: 1, LSN: 10}}
		log.onEnd = append(log.onEnd, func(*memLog) { store.lost = true })
		for range 20 {
			log.onEnd = append(log.onEnd, func(*memLog) {})
		}
		log.onEnd = append(log.onEnd, func(*memLog) { cancel() })
		a := &Applier{Env: &testEnv{}, Log: log, Store: store, Bugs: Bugs{NoIdleCheck: bug}}
		a.defaults()
		err := a.follow(ctx)
		cancel()
		switch {
		case !bug && !errors.Is(err, ErrStoreLost):
			t.Fatalf("follow: %v; want the lost store noticed while idle (ErrStoreLost)", err)
		case !bug && len(log.onEnd) < 15:
			t.Fatalf("noticed after %d idle fetches; want within a couple (IdleCheck)", 22-len(log.onEnd))
		case bug && (!errors.Is(err, context.Canceled) || store.asked > 0):
			t.Fatalf("no-idle-check: follow %v, store asked %d times; want it never asked until cancelled", err, store.asked)
		}
	}
}

// Every batch an applier hands its store in follow says where it expects
// the store to be, the reset of a new snapshot included: that is what
// fences off a second applier of the store, or a zombie waking with an old
// batch. Under unconditional-apply no batch says it.
func TestFollowFencesEveryBatch(t *testing.T) {
	for _, bug := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		log := &scriptLog{}
		snap := model.Txn{CommitLSN: 10, Snapshot: true, Chunks: 1, Changes: []model.Change{{Table: "t", PK: "1", Op: model.OpInsert, Row: model.R("v", "a")}}}
		later := model.Txn{XID: 2, CommitLSN: 20, PrevLSN: 10, Changes: []model.Change{{Table: "t", PK: "1", Op: model.OpUpdate, Row: model.R("v", "b")}}}
		resnap := snap
		resnap.CommitLSN = 30
		log.Produce(ctx, []model.Txn{snap, later})
		log.onEnd = append(log.onEnd, func(l *memLog) { l.Produce(ctx, []model.Txn{resnap}) })
		store := &batchStore{end: 3, done: cancel}
		a := &Applier{Env: &testEnv{}, Log: log, Store: store, Bugs: Bugs{UnconditionalApply: bug}, MaxBatch: 1}
		a.defaults()
		if err := a.follow(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("follow: %v", err)
		}
		cancel()
		resets := 0
		prev := model.Position{}
		for _, b := range store.batches {
			if b.Reset {
				resets++
			}
			switch {
			case bug && b.Base != nil:
				t.Fatalf("unconditional-apply: batch to %s has base %s; want none", b.Position, *b.Base)
			case !bug && (b.Base == nil || *b.Base != prev):
				t.Fatalf("batch to %s (reset %t) has base %v; want %s, where the store was", b.Position, b.Reset, b.Base, prev)
			}
			prev = b.Position
		}
		if resets != 2 {
			t.Fatalf("%d reset batches, want the two snapshots'", resets)
		}
	}
}

// chained is a streamed transaction at lsn that follows prev, writing key k.
func chained(lsn, prev model.LSN, k string) model.Txn {
	return model.Txn{CommitLSN: lsn, PrevLSN: prev, Changes: []model.Change{{Table: "t", PK: k, Op: model.OpInsert, Row: model.R("v", lsn.String())}}}
}

// A store whose next record retention deleted is rebuilt from the newest
// snapshot the log still holds, and waits while there is none: it never
// steps over what was deleted. Under reset-to-earliest it goes on from the
// log's start as if nothing were missing, and the log's chain stops it at
// the hole for good, a newer snapshot behind the hole or not.
func TestStoreBehindTheLogStart(t *testing.T) {
	ctx := context.Background()
	snap := func(lsn model.LSN, keys ...string) model.Txn {
		s := model.Txn{CommitLSN: lsn, Snapshot: true, Chunks: 1}
		for _, k := range keys {
			s.Changes = append(s.Changes, model.Change{Table: "t", PK: k, Op: model.OpInsert, Row: model.R("v", "snap")})
		}
		return s
	}
	newLog := func() *memLog {
		l := &memLog{}
		l.Produce(ctx, []model.Txn{snap(10, "a"), chained(20, 10, "b"), chained(30, 20, "c"), chained(40, 30, "d")})
		l.start = 3 // retention deleted the snapshot and the next two
		return l
	}
	for _, bug := range []bool{false, true} {
		l := newLog()
		store := &batchStore{pos: model.Position{Offset: 1, LSN: 10}, end: 1 << 60}
		a := &Applier{Env: &testEnv{}, Log: l, Store: store, Bugs: Bugs{ResetToEarliest: bug}}
		a.defaults()
		err := a.follow(ctx)
		if !bug {
			var ns *NoSnapshotError
			if !errors.As(err, &ns) || !errors.Is(err, ErrLogGap) || ns.Start != 3 {
				t.Fatalf("no snapshot after the log's start: follow says %v, want a NoSnapshotError from offset 3", err)
			}
		} else if !errors.Is(err, ErrLogGap) {
			t.Fatalf("reset-to-earliest: follow says %v, want the hole at offset 3", err)
		}
		if len(store.batches) != 0 {
			t.Fatalf("bug=%v: the store was handed %+v past deleted records", bug, store.batches)
		}
		// The capture takes a new snapshot; a store rebuilt from it has
		// what the deleted records wrote.
		l.Produce(ctx, []model.Txn{snap(50, "a", "b", "c", "d"), chained(60, 50, "e")})
		store.end, store.done = 7, func() {}
		pos, err := a.behindStart(ctx, store.pos, ErrOffsetOutOfRange)
		if bug {
			if err != nil || pos.Offset != 3 || pos.LSN != 10 {
				t.Fatalf("reset-to-earliest moves the reader to the log's start, keeping its LSN: got %v, %v", pos, err)
			}
			if _, _, gap := plan(nil, pos, l.recs[3:], false); gap == nil || gap.Offset != 3 {
				t.Fatalf("reset-to-earliest: the chain did not stop the store at the hole: %v", gap)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if want := (model.Position{Offset: 6, LSN: 60}); pos != want || store.pos != want {
			t.Fatalf("rebuilt to %v (store at %v), want %v", pos, store.pos, want)
		}
		b := store.batches[len(store.batches)-1]
		if !b.Reset || len(b.Txns) != 1 || len(b.Txns[0].Changes) != 5 {
			t.Fatalf("the rebuild is not one reset batch of the five rows: %+v", b)
		}
	}
}
