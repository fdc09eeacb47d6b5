package pipeline

import (
	"context"
	"reflect"
	"testing"

	"lockstep/model"
)

func txn(lsn model.LSN, snapshot bool) model.Txn {
	return model.Txn{CommitLSN: lsn, Snapshot: snapshot, Changes: []model.Change{{Table: "t", PK: "k", Op: model.OpUpdate, Row: model.Row{"v": lsn.String()}}}}
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

func TestPlanReapplyBugKeepsDuplicates(t *testing.T) {
	got := Plan(model.Position{Offset: 10, LSN: 20}, recs(txn(10, false), txn(30, false)), true)
	if !reflect.DeepEqual(lsns(got[0]), []model.LSN{10, 30}) {
		t.Fatalf("with the bug on, applied %v, want the duplicate 10 too", lsns(got[0]))
	}
}

func TestReorderDeletesFirstBreaksInsertThenDelete(t *testing.T) {
	ins := model.Txn{CommitLSN: 1, Changes: []model.Change{{Table: "t", PK: "k", Op: model.OpInsert, Row: model.Row{"v": "1"}}}}
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

func TestFoldKeepsLatestVersionsAndRevs(t *testing.T) {
	k := func(pk string, op model.Op, v string) model.Change {
		c := model.Change{Table: "t", PK: pk, Op: op}
		if op != model.OpDelete {
			c.Row = model.Row{"v": v}
		}
		return c
	}
	snap := model.Txn{CommitLSN: 10, Snapshot: true, Changes: []model.Change{{Table: "t", PK: "a", Op: model.OpInsert, Row: model.Row{"v": "a0"}, Revs: 3}, k("b", model.OpInsert, "b0")}}
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
		s = append(s, c.PK+"="+c.Row["v"]+"/"+string(rune('0'+c.Revs)))
	}
	if want := []string{"a=a1/4", "c=c0/1"}; !reflect.DeepEqual(s, want) {
		t.Fatalf("folded rows %v, want %v (a: 3 revs from the snapshot + 1)", s, want)
	}
}

func TestSnapshotChunksResetThenContinue(t *testing.T) {
	snap := model.Txn{CommitLSN: 50, Snapshot: true}
	for i := 0; i < 5; i++ {
		snap.Changes = append(snap.Changes, model.Change{Table: "t", PK: string(rune('a' + i)), Op: model.OpInsert, Row: model.Row{"v": "1"}})
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
		snap.Changes = append(snap.Changes, model.Change{Table: "t", PK: string(rune('a' + i)), Op: model.OpInsert, Row: model.Row{"v": "1"}})
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
			s.Changes = append(s.Changes, model.Change{Table: "t", PK: string(rune('a' + i)), Op: model.OpInsert, Row: model.Row{"v": lsn.String()}})
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

// memLog is an in-memory pipeline.Log for capture tests.
type memLog struct{ recs []Record }

func (l *memLog) Produce(_ context.Context, txns []model.Txn) (int64, error) {
	for _, t := range txns {
		l.recs = append(l.recs, Record{Offset: int64(len(l.recs)), Txn: t})
	}
	return int64(len(l.recs) - 1), nil
}

func (l *memLog) Fetch(_ context.Context, off int64, max int) ([]Record, error) {
	if off >= int64(len(l.recs)) {
		return nil, nil
	}
	return l.recs[off:min(int(off)+max, len(l.recs))], nil
}

func (l *memLog) End(context.Context) (int64, error)               { return int64(len(l.recs)), nil }
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
	if ok, err := c.snapshotInLog(ctx); ok || err != nil {
		t.Fatalf("empty log: %v, %v; want no snapshot", ok, err)
	}
	l.Produce(ctx, snap(10))
	for i := 0; i < 600; i++ { // a long stream, more than two scan windows
		l.Produce(ctx, []model.Txn{txn(model.LSN(100+i), false)})
	}
	if ok, err := c.snapshotInLog(ctx); !ok || err != nil {
		t.Fatalf("complete snapshot then a stream: %v, %v; want complete", ok, err)
	}
	l.Produce(ctx, snap(900)[:2]) // a re-snapshot that failed half-way
	l.Produce(ctx, []model.Txn{txn(901, false)})
	if ok, _ := c.snapshotInLog(ctx); ok {
		t.Fatal("the last snapshot is missing a chunk, yet the log was judged complete")
	}
	l.Produce(ctx, snap(950))
	if ok, _ := c.snapshotInLog(ctx); !ok {
		t.Fatal("a complete snapshot after the half one was not seen")
	}
}
