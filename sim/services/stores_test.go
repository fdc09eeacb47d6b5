package services

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/sim"
)

// storeRig is one store node and the applier node that writes it.
type storeRig struct {
	w       *sim.World
	kind    model.StoreKind
	store   *sim.Node
	applier *sim.Node
}

func newStoreRig(t *testing.T, seed uint64, kind model.StoreKind) *storeRig {
	t.Helper()
	w := newWorld(t, seed)
	return &storeRig{w: w, kind: kind, store: w.AddNode(kind.String(), BootStore(kind)), applier: w.AddNode("applier", nil)}
}

func (r *storeRig) client() *StoreClient {
	return &StoreClient{From: r.applier, To: r.store, StoreKind: r.kind}
}

// snapshot is the store's whole content now.
func (r *storeRig) snapshot() model.Snapshot {
	return r.store.State().(*Store).Snapshot(r.store.Name(), r.w.Now())
}

var allKinds = []model.StoreKind{model.Replica, model.Cache, model.Search}

// A small history: a and b inserted, a updated, then b deleted and c
// inserted.
var (
	t10 = txn(0x10, ins("a", "1"), ins("b", "1"))
	t20 = txn(0x20, upd("a", "2"))
	t30 = txn(0x30, del("b"), ins("c", "1"))
)

func pos(off int64, lsn model.LSN) model.Position { return model.Position{Offset: off, LSN: lsn} }

// The replica applies a batch's data and position in one step: a crash of the
// store at about the time the batch arrives leaves either all of it or none,
// never a part, and what it applied stays across the crash. Across seeds the
// batch lands in some runs and not in others.
func TestReplicaAppliesBatchAtomicallyAndKeepsIt(t *testing.T) {
	b := pipeline.Batch{Txns: []model.Txn{t10, t20, t30}, Position: pos(3, 0x30)}
	want := truth(b.Txns...).Project(model.Replica)
	all, none := 0, 0
	for seed := uint64(1); seed <= 40; seed++ {
		r := newStoreRig(t, seed, model.Replica)
		sc := r.client()
		r.applier.Go("apply", func(ctx context.Context) { _ = sc.Apply(ctx, b) })
		r.w.At(3*time.Millisecond, 1, r.store.Crash) // requests take 1ms to 5ms
		r.w.At(50*time.Millisecond, 2, r.store.Restart)
		run(t, r.w, 100*time.Millisecond)

		snap := r.snapshot()
		switch {
		case !snap.HasPosition && len(snap.Docs) == 0:
			none++
		case snap.HasPosition && snap.Position == b.Position && diffDocs(snap.Docs, want) == "":
			all++
		default:
			t.Fatalf("seed %d: after a crash the replica holds position %v (saved: %v) and %d docs:%s", seed, snap.Position, snap.HasPosition, len(snap.Docs), diffDocs(snap.Docs, want))
		}
	}
	if all == 0 || none == 0 {
		t.Fatalf("batch kept in %d seeds, absent in %d; want both outcomes", all, none)
	}
}

// After a restart the durable stores (replica, search) hold what they held,
// position included; the cache comes back empty with no position, so it
// refuses a batch based on its old position until it is rebuilt.
func TestStoresAcrossARestart(t *testing.T) {
	for _, kind := range allKinds {
		t.Run(kind.String(), func(t *testing.T) {
			r := newStoreRig(t, 1, kind)
			sc := r.client()
			p1, p2 := pos(2, 0x20), pos(3, 0x30)
			var first, resumed, rebuilt error
			var before, afterRestart, end model.Snapshot
			r.applier.Go("apply", func(ctx context.Context) {
				first = sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10, t20}, Position: p1})
				before = r.snapshot()
				sleepUntil(ctx, r.applier, 200*time.Millisecond) // the store restarted
				afterRestart = r.snapshot()
				resumed = sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t30}, Position: p2, Base: &p1})
				if errors.Is(resumed, pipeline.ErrPositionMismatch) {
					rebuilt = sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10, t20, t30}, Position: p2, Reset: true})
				}
				end = r.snapshot()
			})
			r.w.At(100*time.Millisecond, 1, r.store.Crash)
			r.w.At(150*time.Millisecond, 2, r.store.Restart)
			run(t, r.w, time.Second)

			if first != nil || rebuilt != nil {
				t.Fatalf("apply: %v; rebuild: %v", first, rebuilt)
			}
			if kind == model.Cache {
				if afterRestart.HasPosition || len(afterRestart.Docs) != 0 {
					t.Fatalf("cache after a restart: position %v (saved: %v), %d docs; want empty", afterRestart.Position, afterRestart.HasPosition, len(afterRestart.Docs))
				}
				if !errors.Is(resumed, pipeline.ErrPositionMismatch) {
					t.Fatalf("batch based on the lost position: %v, want ErrPositionMismatch", resumed)
				}
			} else {
				if !afterRestart.HasPosition || afterRestart.Position != p1 {
					t.Fatalf("position after a restart %v (saved: %v), want %v", afterRestart.Position, afterRestart.HasPosition, p1)
				}
				if d := diffDocs(afterRestart.Docs, before.Docs); d != "" {
					t.Fatalf("docs changed across a restart:%s", d)
				}
				if resumed != nil {
					t.Fatalf("batch based on the kept position: %v", resumed)
				}
			}
			if d := diffDocs(end.Docs, truth(t10, t20, t30).Project(kind)); d != "" || end.Position != p2 {
				t.Fatalf("at the end: position %v, want %v; docs:%s", end.Position, p2, d)
			}
		})
	}
}

// A batch whose Base is not the store's position is refused with
// ErrPositionMismatch and changes nothing, in every kind of store; the same
// batch with the right Base applies.
func TestStoreRefusesBatchAtTheWrongBase(t *testing.T) {
	for _, kind := range allKinds {
		t.Run(kind.String(), func(t *testing.T) {
			r := newStoreRig(t, 2, kind)
			sc := r.client()
			p1, p2, stale := pos(2, 0x20), pos(3, 0x30), pos(1, 0x10)
			var wrong, right error
			var before, after model.Snapshot
			r.applier.Go("apply", func(ctx context.Context) {
				_ = sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10, t20}, Position: p1})
				before = r.snapshot()
				wrong = sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t30}, Position: p2, Base: &stale})
				after = r.snapshot()
				right = sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t30}, Position: p2, Base: &p1})
			})
			run(t, r.w, time.Second)

			if !errors.Is(wrong, pipeline.ErrPositionMismatch) {
				t.Fatalf("batch based at %v on a store at %v: %v, want ErrPositionMismatch", stale, p1, wrong)
			}
			if d := diffDocs(after.Docs, before.Docs); d != "" || after.Position != p1 {
				t.Fatalf("a refused batch changed the store: position %v, docs:%s", after.Position, d)
			}
			if right != nil {
				t.Fatalf("batch with the right base: %v", right)
			}
			if d := diffDocs(r.snapshot().Docs, truth(t10, t20, t30).Project(kind)); d != "" || r.snapshot().Position != p2 {
				t.Fatalf("after the right batch: position %v; docs:%s", r.snapshot().Position, d)
			}
		})
	}
}

// Guarded writes skip what the store already holds: redelivering a whole
// applied batch changes nothing in any store (the search index's revision
// counts included), and in the search index the tombstone of a deleted
// document, kept across a restart, stops an older insert from bringing it
// back.
func TestGuardedApplySkipsVersionsTheStoreHolds(t *testing.T) {
	for _, kind := range allKinds {
		t.Run(kind.String(), func(t *testing.T) {
			r := newStoreRig(t, 3, kind)
			sc := r.client()
			p := pos(3, 0x30)
			var errs []error
			var once, redelivered model.Snapshot
			r.applier.Go("apply", func(ctx context.Context) {
				errs = append(errs, sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10, t20, t30}, Position: p}))
				once = r.snapshot()
				errs = append(errs, sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10, t20, t30}, Position: p, Base: &p}))
				redelivered = r.snapshot()
			})
			run(t, r.w, time.Second)

			for i, err := range errs {
				if err != nil {
					t.Fatalf("apply %d: %v", i, err)
				}
			}
			want := truth(t10, t20, t30).Project(kind)
			if d := diffDocs(once.Docs, want); d != "" {
				t.Fatalf("after one apply:%s", d)
			}
			if d := diffDocs(redelivered.Docs, want); d != "" {
				t.Fatalf("redelivery changed the store:%s", d)
			}
		})
	}

	t.Run("search tombstones", func(t *testing.T) {
		r := newStoreRig(t, 4, model.Search)
		sc := r.client()
		var err error
		r.applier.Go("apply", func(ctx context.Context) {
			_ = sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10, t20, t30}, Position: pos(3, 0x30)})
			sleepUntil(ctx, r.applier, 200*time.Millisecond) // the index restarted
			err = sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10}, Position: pos(3, 0x30)})
		})
		r.w.At(100*time.Millisecond, 1, r.store.Crash)
		r.w.At(150*time.Millisecond, 2, r.store.Restart)
		run(t, r.w, time.Second)

		if err != nil {
			t.Fatal(err)
		}
		if d := diffDocs(r.snapshot().Docs, truth(t10, t20, t30).Project(model.Search)); d != "" {
			t.Fatalf("re-applying the insert at 0/10 over a delete at 0/30:%s", d)
		}
	})
}

// Without the version check, writes apply again: a blind applier (the
// non-idempotent-apply bug) and a direct dual write each bump the search
// index's revision count for a change it already holds, bring back a deleted
// document, and let an older write take a replica's row back in time.
func TestBlindAndDirectWritesApplyAgain(t *testing.T) {
	t.Run("search", func(t *testing.T) {
		r := newStoreRig(t, 5, model.Search)
		guarded, blind := r.client(), r.client()
		blind.Blind = true
		var revs []int
		var errs []error
		resurrected := false
		r.applier.Go("apply", func(ctx context.Context) {
			a := func() int { return r.snapshot().Docs[key("a")].Revs }
			errs = append(errs, guarded.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10, t20, t30}, Position: pos(3, 0x30)}))
			revs = append(revs, a())
			errs = append(errs, guarded.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t20}, Position: pos(3, 0x30)}))
			revs = append(revs, a())
			errs = append(errs, blind.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t20}, Position: pos(3, 0x30)}))
			revs = append(revs, a())
			errs = append(errs, guarded.Write(ctx, t20))
			revs = append(revs, a())
			errs = append(errs, blind.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10}, Position: pos(3, 0x30)}))
			_, resurrected = r.snapshot().Docs[key("b")]
		})
		run(t, r.w, time.Second)

		for i, err := range errs {
			if err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		if want := []int{2, 2, 3, 4}; fmt.Sprint(revs) != fmt.Sprint(want) {
			t.Fatalf("revisions of a: %v; want %v (guarded skips, blind and direct bump)", revs, want)
		}
		if !resurrected {
			t.Fatal("a blind insert at 0/10 over the tombstone at 0/30 was skipped; want it applied")
		}
	})

	t.Run("replica", func(t *testing.T) {
		r := newStoreRig(t, 6, model.Replica)
		sc := r.client()
		var guardedDoc, directDoc model.Doc
		var errs []error
		r.applier.Go("apply", func(ctx context.Context) {
			errs = append(errs, sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10, t20}, Position: pos(2, 0x20)}))
			errs = append(errs, sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10}, Position: pos(2, 0x20)}))
			guardedDoc = r.snapshot().Docs[key("a")]
			errs = append(errs, sc.Write(ctx, t10))
			directDoc = r.snapshot().Docs[key("a")]
		})
		run(t, r.w, time.Second)

		for i, err := range errs {
			if err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		if guardedDoc.LSN != 0x20 {
			t.Fatalf("guarded re-apply of 0/10 left a at %+v, want it kept at 0/20", guardedDoc)
		}
		if directDoc.LSN != 0x10 || directDoc.Value != row("1").Encode() {
			t.Fatalf("direct write of 0/10 left a at %+v, want it taken back to 0/10", directDoc)
		}
	})
}

// The search index takes a batch in bulk requests of BulkDocs documents,
// each on its own. The applier dies after the second of three requests: the
// index holds part of the batch (some documents updated, some not, the
// position not moved). Re-applying the same batch with guarded writes
// completes it with every revision count right; a blind re-apply counts the
// first part's updates twice.
func TestSearchPartialBulkApplyConvergesOnRetry(t *testing.T) {
	// 20 rows inserted at 0/50 (already in the index), updated at 0/100 and
	// again at 0/200: 40 documents, so bulk requests of 16, 16 and 8 (the
	// last also writing the position).
	var rows, upd100, upd200 []model.Change
	for i := 0; i < 20; i++ {
		pk := fmt.Sprintf("k%02d", i)
		rows = append(rows, ins(pk, "zero"))
		upd100 = append(upd100, upd(pk, "one"))
		upd200 = append(upd200, upd(pk, "two"))
	}
	t0, t1, t2 := txn(0x50, rows...), txn(0x100, upd100...), txn(0x200, upd200...)
	p0, p1 := pos(1, 0x50), pos(3, 0x200)
	b := pipeline.Batch{Txns: []model.Txn{t1, t2}, Position: p1, Base: &p0}
	if len(upd100)+len(upd200) <= 2*BulkDocs {
		t.Fatalf("the batch must take three bulk requests; BulkDocs is %d", BulkDocs)
	}

	for _, blind := range []bool{false, true} {
		t.Run(fmt.Sprint("blind=", blind), func(t *testing.T) {
			r := newStoreRig(t, 7, model.Search)
			// Exactly 10ms each way: request i is handled at 20i-10 ms.
			fixed := sim.LinkConfig{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond}
			r.w.Net().SetLink(r.applier, r.store, fixed)
			r.w.Net().SetLink(r.store, r.applier, fixed)
			if err := r.store.State().(*Store).applyBatch(pipeline.Batch{Txns: []model.Txn{t0}, Position: p0}, true, false, false); err != nil {
				t.Fatal(err)
			}
			sc := r.client()
			sc.Blind = blind
			var firstErr, retryErr error
			r.applier.Go("apply", func(ctx context.Context) { firstErr = sc.Apply(ctx, b) })
			r.w.At(35*time.Millisecond, 1, r.applier.Crash) // after request 2 was handled at 30ms
			run(t, r.w, 100*time.Millisecond)

			partial := r.snapshot()
			if firstErr != nil || !partial.HasPosition || partial.Position != p0 {
				t.Fatalf("after the crash: apply returned %v, position %v; want the task killed and the position still %v", firstErr, partial.Position, p0)
			}
			for i := 0; i < 20; i++ {
				// Request 1 updates k00..k15 to one; request 2 updates
				// k16..k19 to one, then k00..k11 to two.
				want := model.Doc{Value: "one", LSN: 0x100, Revs: 2}
				if i < 12 {
					want = model.Doc{Value: "two", LSN: 0x200, Revs: 3}
				}
				if got := partial.Docs[key(fmt.Sprintf("k%02d", i))]; got != want {
					t.Fatalf("partial batch: k%02d = %+v, want %+v", i, got, want)
				}
			}

			r.applier.Restart()
			r.applier.Go("retry", func(ctx context.Context) { retryErr = sc.Apply(ctx, b) })
			run(t, r.w, time.Second)

			end := r.snapshot()
			if retryErr != nil || end.Position != p1 {
				t.Fatalf("retry: %v, position %v; want %v", retryErr, end.Position, p1)
			}
			d := diffDocs(end.Docs, truth(t0, t1, t2).Project(model.Search))
			if blind && d == "" {
				t.Fatal("a blind retry converged; want the first part's updates counted twice")
			}
			if !blind && d != "" {
				t.Fatalf("after a guarded retry:%s", d)
			}
		})
	}
}

// A store keeps its own copy of what it was sent, as a real one gets it
// over the network: the sender writing to a row it already sent (which
// model.Row forbids, but the harness exists to catch) changes no document.
func TestStoreKeepsItsOwnCopyOfARow(t *testing.T) {
	for _, kind := range allKinds {
		r := newStoreRig(t, 1, kind)
		sc := r.client()
		rw := model.R("v", "alpha")
		b := pipeline.Batch{Txns: []model.Txn{txn(0x10, model.Change{Table: "t", PK: "a", Op: model.OpInsert, Row: rw})}, Position: pos(1, 0x10)}
		var err error
		r.applier.Go("apply", func(ctx context.Context) {
			err = sc.Apply(ctx, b)
			rw.Set("v", "mutated") // after the store acknowledged
		})
		run(t, r.w, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := r.snapshot().Docs[model.Key{Table: "t", PK: "a"}]
		want := model.ProjectEntry(kind, model.Entry{Row: model.R("v", "alpha"), LSN: 0x10, Writes: 1})
		if got != want {
			t.Errorf("%s: after the sender changed its row the store holds %+v, want %+v", kind, got, want)
		}
	}
}

// A search index reset to a snapshot counts revisions from the snapshot's
// LSN (model.Snapshot.RevsFrom), as pgstore's does, also across a restart:
// the snapshot's rows count one revision there, whatever came before.
func TestSearchCountsRevisionsFromTheSnapshotItLoaded(t *testing.T) {
	r := newStoreRig(t, 1, model.Search)
	sc := r.client()
	snap := model.Txn{CommitLSN: 0x25, Snapshot: true, Changes: []model.Change{ins("a", "2")}}
	var errs []error
	r.applier.Go("apply", func(ctx context.Context) {
		errs = append(errs, sc.Apply(ctx, pipeline.Batch{Txns: []model.Txn{t10, t20}, Position: pos(2, 0x20)}))
		errs = append(errs, sc.Apply(ctx, pipeline.Batch{Reset: true, Txns: []model.Txn{snap, txn(0x30, upd("a", "3"))}, Position: pos(4, 0x30)}))
	})
	r.w.At(50*time.Millisecond, 1, r.store.Crash)
	r.w.At(60*time.Millisecond, 2, r.store.Restart)
	run(t, r.w, 100*time.Millisecond)
	s := r.snapshot()
	if d := s.Docs[model.Key{Table: "t", PK: "a"}]; errors.Join(errs...) != nil || s.RevsFrom != 0x25 || d.Revs != 2 || d.LSN != 0x30 {
		t.Fatalf("after a reset to a snapshot at 0/25 and one update (%v): counts from %s, a at %s with %d revs; want from 0/25, a at 0/30 with 2 revs", errs, s.RevsFrom, d.LSN, d.Revs)
	}
}

// Two rebuilds of an empty search index that overlap: both are Fresh (the
// index holds no position) and the index takes each in several requests,
// setting the position with the last. Without more than the Fresh check,
// the later rebuild's reset removes documents the earlier one wrote, the
// earlier one's last request still passes (no position yet) and saves its
// position over an index that lacks them. Every request of a reset batch
// must belong to the newest reset: then the earlier rebuild is refused and
// whatever saved a position holds every document.
func TestOverlappingRebuildsOfAnEmptySearchIndex(t *testing.T) {
	const docs = 10 * BulkDocs // ten requests each
	snap := model.Txn{CommitLSN: 0x50, Snapshot: true}
	for i := range docs {
		snap.Changes = append(snap.Changes, ins(fmt.Sprintf("k%03d", i), "1"))
	}
	rebuild := pipeline.Batch{Reset: true, Fresh: true, Txns: []model.Txn{snap}, Position: pos(9, 0x50)}
	refused := 0
	for _, offset := range []time.Duration{0, 5, 10, 20, 30, 40, 50, 60} {
		for seed := uint64(1); seed <= 5; seed++ {
			r := newStoreRig(t, seed, model.Search)
			second := r.w.AddNode("applier-2", nil)
			var errs [2]error
			r.applier.Go("rebuild", func(ctx context.Context) { errs[0] = r.client().Apply(ctx, rebuild) })
			sc := &StoreClient{From: second, To: r.store, StoreKind: model.Search}
			second.Go("rebuild", func(ctx context.Context) {
				sleepUntil(ctx, second, offset*time.Millisecond)
				errs[1] = sc.Apply(ctx, rebuild)
			})
			run(t, r.w, time.Second)
			s := r.snapshot()
			if !s.HasPosition {
				t.Fatalf("offset %dms seed %d: neither rebuild saved a position (%v)", offset, seed, errs)
			}
			if len(s.Docs) != docs {
				t.Fatalf("offset %dms seed %d: the index is at %s with %d of %d documents (rebuilds: %v, %v)", offset, seed, s.Position, len(s.Docs), docs, errs[0], errs[1])
			}
			for _, err := range errs {
				if errors.Is(err, pipeline.ErrPositionMismatch) {
					refused++
				} else if err != nil {
					t.Fatalf("offset %dms seed %d: %v", offset, seed, err)
				}
			}
		}
	}
	if refused == 0 {
		t.Fatal("no rebuild was ever refused: the two never overlapped")
	}
}
