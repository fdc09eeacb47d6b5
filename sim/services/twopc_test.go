package services

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
)

// A prepared transaction holds its rows: a second transaction on one of them
// waits, and gives up after its lock timeout with ErrLockTimeout having
// prepared nothing; one on other rows prepares at once; once the first
// commits, a waiting one goes through, having read the committed value.
func TestSourcePreparedTransactionHoldsItsRows(t *testing.T) {
	r := newSourceRig(t, 1)
	src := &SourceParticipant{From: r.app, DB: r.db, LockTimeout: 200 * time.Millisecond}
	read := func(pk string, into *string) pipeline.TxnFunc {
		return func(tx pipeline.Tx) error {
			row, _ := tx.Get("t", pk)
			*into = row.Get("v")
			tx.Put("t", pk, model.R("v", *into+"+"))
			return nil
		}
	}
	var errBlocked, errOther, errWaited error
	var seenWaited, seenBlocked string
	var lsn model.LSN
	var blockedAt time.Duration
	r.app.Go("first", func(ctx context.Context) {
		if _, err := src.Prepare(ctx, "g1", put("a", "1")); err != nil {
			t.Errorf("prepare g1: %v", err)
			return
		}
		sleepUntil(ctx, r.app, time.Second)
		lsn, _ = src.CommitPrepared(ctx, "g1")
	})
	r.app.Go("blocked", func(ctx context.Context) {
		sleepUntil(ctx, r.app, 100*time.Millisecond)
		_, errBlocked = src.Prepare(ctx, "g2", read("a", &seenBlocked))
		blockedAt = r.w.Now()
	})
	r.app.Go("other", func(ctx context.Context) {
		sleepUntil(ctx, r.app, 100*time.Millisecond)
		_, errOther = src.Prepare(ctx, "g3", put("b", "1"))
	})
	r.app.Go("waits", func(ctx context.Context) {
		sleepUntil(ctx, r.app, 900*time.Millisecond)
		_, errWaited = src.Prepare(ctx, "g4", read("a", &seenWaited))
	})
	run(t, r.w, 2*time.Second)
	if !errors.Is(errBlocked, twopc.ErrLockTimeout) || blockedAt < 300*time.Millisecond {
		t.Errorf("a prepare on a held row: %v at %v, want ErrLockTimeout after waiting its lock timeout", errBlocked, blockedAt)
	}
	if errOther != nil {
		t.Errorf("a prepare on another row: %v", errOther)
	}
	if errWaited != nil || seenWaited != "1" {
		t.Errorf("a prepare waiting for the commit: %v, read %q; want it prepared, having read the committed %q", errWaited, seenWaited, "1")
	}
	db := r.source()
	if got := db.twopc().gids(); !slices.Equal(got, []string{"g3", "g4"}) {
		t.Errorf("prepared after the run: %v, want [g3 g4]", got)
	}
	if wal := db.WAL(); len(wal) != 1 || wal[0].CommitLSN != lsn {
		t.Errorf("WAL %v, want g1 alone at %v", wal, lsn)
	}
}

// Prepared transactions survive a crash, locks included, and commit after
// the restart; committing again gives the same LSN, committing an unknown
// one fails with ErrUnknownGID, and a rollback leaves no trace.
func TestSourcePreparedTransactionSurvivesACrash(t *testing.T) {
	r := newSourceRig(t, 2)
	src := &SourceParticipant{From: r.app, DB: r.db}
	var lsn, again model.LSN
	var errUnknown, errHeld error
	var listed []string
	r.app.Go("coordinator", func(ctx context.Context) {
		_, _ = src.Prepare(ctx, "keep", put("a", "1"))
		_, _ = src.Prepare(ctx, "drop", put("b", "1"))
		sleepUntil(ctx, r.app, 200*time.Millisecond) // crashed and restarted meanwhile
		listed, _ = src.Prepared(ctx)
		_, errHeld = src.Prepare(ctx, "late", put("a", "2"))
		_ = src.RollbackPrepared(ctx, "drop")
		lsn, _ = src.CommitPrepared(ctx, "keep")
		again, _ = src.CommitPrepared(ctx, "keep")
		_, errUnknown = src.CommitPrepared(ctx, "drop")
	})
	r.w.At(100*time.Millisecond, 1, r.db.Crash)
	r.w.At(150*time.Millisecond, 2, r.db.Restart)
	run(t, r.w, 3*time.Second)
	if !slices.Equal(listed, []string{"drop", "keep"}) {
		t.Errorf("prepared after the restart: %v, want [drop keep]", listed)
	}
	if !errors.Is(errHeld, twopc.ErrLockTimeout) {
		t.Errorf("a prepare on a row held across the restart: %v, want ErrLockTimeout", errHeld)
	}
	if lsn == 0 || again != lsn {
		t.Errorf("commit prepared gave %v, then %v: want one LSN twice", lsn, again)
	}
	if !errors.Is(errUnknown, twopc.ErrUnknownGID) {
		t.Errorf("committing a rolled-back transaction: %v, want ErrUnknownGID", errUnknown)
	}
	db := r.source()
	if e, ok := db.State().Get(key("a")); !ok || e.Row.Get("v") != "1" {
		t.Errorf("a = %v, want the committed 1", e.Row)
	}
	if _, ok := db.State().Get(key("b")); ok {
		t.Error("b exists: the rolled-back transaction committed")
	}
}

// A store's prepared changes are invisible until the commit, which labels
// them with the LSN it is given; they survive a crash; a rollback drops
// them. With a heuristic timeout the store rolls back on its own.
func TestStorePreparedTransaction(t *testing.T) {
	for _, heuristic := range []time.Duration{0, 300 * time.Millisecond} {
		w := newWorld(t, 3)
		st := w.AddNode("replica", BootParticipant(BootStore(model.Replica)))
		app := w.AddNode("app", nil)
		p := &StoreParticipant{From: app, To: st, StoreKind: model.Replica, HeuristicAfter: heuristic}
		var visibleEarly bool
		var errCommit error
		app.Go("coordinator", func(ctx context.Context) {
			_ = p.Prepare(ctx, "g1", model.Txn{Changes: []model.Change{ins("a", "1")}})
			_ = p.Prepare(ctx, "g2", model.Txn{Changes: []model.Change{ins("b", "1")}})
			r, _ := Read(ctx, app, st, key("a"), time.Second)
			visibleEarly = r.Found
			sleepUntil(ctx, app, 500*time.Millisecond) // crashed and restarted meanwhile
			errCommit = p.CommitPrepared(ctx, "g1", 42)
			_ = p.RollbackPrepared(ctx, "g2")
		})
		w.At(100*time.Millisecond, 1, st.Crash)
		w.At(150*time.Millisecond, 2, st.Restart)
		run(t, w, time.Second)
		if visibleEarly {
			t.Errorf("heuristic %v: a prepared change was visible before the commit", heuristic)
		}
		s := st.State().(*Store)
		d, ok := s.Snapshot("replica", 0).Docs[key("a")]
		switch {
		case heuristic == 0 && (errCommit != nil || !ok || d.LSN != 42):
			t.Errorf("commit after a restart: %v, doc %v %v; want it at lsn 42", errCommit, d, ok)
		case heuristic > 0 && (!errors.Is(errCommit, twopc.ErrUnknownGID) || ok):
			t.Errorf("heuristic rollback: commit gave %v, doc present %v; want ErrUnknownGID and no doc", errCommit, ok)
		}
		if _, ok := s.Snapshot("replica", 0).Docs[key("b")]; ok || len(PreparedOn(st)) > 0 {
			t.Errorf("heuristic %v: rolled back b is there, or %v still prepared", heuristic, PreparedOn(st))
		}
	}
}
