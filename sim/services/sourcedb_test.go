package services

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/sim"
)

// sourceRig is a source database node and an application node that talks to
// it.
type sourceRig struct {
	w       *sim.World
	rec     *Recorder
	db, app *sim.Node
}

func newSourceRig(t *testing.T, seed uint64) *sourceRig {
	t.Helper()
	w := newWorld(t, seed)
	rec := &Recorder{}
	return &sourceRig{w: w, rec: rec, db: w.AddNode("db", BootSourceDB(rec)), app: w.AddNode("app", nil)}
}

// source is the database's current incarnation (nil while it is down).
func (r *sourceRig) source() *SourceDB {
	db, _ := r.db.State().(*SourceDB)
	return db
}

func (r *sourceRig) client() *SourceClient { return &SourceClient{From: r.app, DB: r.db} }

func (r *sourceRig) stream() *StreamClient { return &StreamClient{From: r.app, DB: r.db} }

// Every commit gets a larger LSN than the one before, and since the WAL is
// synced at each commit, a crash keeps exactly what was committed: the WAL
// after the restart starts with the WAL at the crash, holds every commit the
// client saw acknowledged, and later commits continue above it.
func TestSourceCommitsGetIncreasingLSNsAndSurviveACrash(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		r := newSourceRig(t, seed)
		src := r.client()
		var acked []model.Txn
		r.app.Go("writer", func(ctx context.Context) {
			for i := 0; i < 40; i++ {
				if c, err := src.Exec(ctx, put(fmt.Sprintf("k%d", i%7), fmt.Sprint(i))); err == nil {
					acked = append(acked, c)
				}
				_ = r.app.Env().Sleep(ctx, 5*time.Millisecond)
			}
		})
		var atCrash []model.Txn
		var lsnAtCrash model.LSN
		r.w.At(60*time.Millisecond, 1, func() {
			atCrash, lsnAtCrash = r.source().WAL(), r.source().LastLSN()
			r.db.Crash()
		})
		r.w.At(150*time.Millisecond, 2, r.db.Restart)
		run(t, r.w, 2*time.Second)

		db := r.source()
		wal := db.WAL()
		if len(atCrash) == 0 || len(wal) <= len(atCrash) {
			t.Fatalf("seed %d: %d commits before the crash, %d in all; want some on both sides", seed, len(atCrash), len(wal))
		}
		if !reflect.DeepEqual(wal[:len(atCrash)], atCrash) {
			t.Fatalf("seed %d: the WAL after the restart does not start with the WAL at the crash:\n got %v\nwant %v", seed, wal[:len(atCrash)], atCrash)
		}
		for i := 1; i < len(wal); i++ {
			if wal[i].CommitLSN <= wal[i-1].CommitLSN {
				t.Fatalf("seed %d: commit %d has LSN %v after %v: not strictly increasing", seed, i, wal[i].CommitLSN, wal[i-1].CommitLSN)
			}
		}
		if wal[len(atCrash)].CommitLSN <= lsnAtCrash {
			t.Fatalf("seed %d: first commit after the restart has LSN %v, not above %v", seed, wal[len(atCrash)].CommitLSN, lsnAtCrash)
		}
		byLSN := map[model.LSN]model.Txn{}
		for _, c := range wal {
			byLSN[c.CommitLSN] = c
		}
		for _, a := range acked {
			if got, ok := byLSN[a.CommitLSN]; !ok || !reflect.DeepEqual(got, a) {
				t.Fatalf("seed %d: acknowledged %v; the WAL has %v", seed, a, got)
			}
		}
		if want := truth(wal...); db.State().Hash() != want.Hash() || db.State().Position() != db.LastLSN() {
			t.Fatalf("seed %d: table state is not the replay of the WAL", seed)
		}
	}
}

// A transaction whose function returns an error rolls back: its changes never
// reach the WAL or the tables (not even after a crash), and the recorder
// keeps the attempt with the changes it made, so the checker can name them.
func TestSourceRolledBackTxnIsRecordedButNeverCommitted(t *testing.T) {
	r := newSourceRig(t, 1)
	src := r.client()
	var committed, after model.Txn
	var commitErr, abortErr, afterErr error
	ownWriteSeen := false
	r.app.Go("bank", func(ctx context.Context) {
		committed, commitErr = src.Exec(ctx, put("acct1", "100"))
		_, abortErr = src.Exec(ctx, func(tx pipeline.Tx) error {
			tx.Put("t", "acct1", row("0"))   // the debit
			tx.Put("t", "acct2", row("100")) // the credit
			got, _ := tx.Get("t", "acct1")
			ownWriteSeen = got.Get("v") == "0"
			return errors.New("overdrawn")
		})
		sleepUntil(ctx, r.app, 300*time.Millisecond) // after the crash and restart
		after, afterErr = src.Exec(ctx, put("acct3", "1"))
	})
	r.w.At(100*time.Millisecond, 1, r.db.Crash)
	r.w.At(200*time.Millisecond, 2, r.db.Restart)
	run(t, r.w, time.Second)

	if commitErr != nil || afterErr != nil {
		t.Fatalf("commits failed: %v, %v", commitErr, afterErr)
	}
	if !errors.Is(abortErr, ErrAborted) || !strings.Contains(abortErr.Error(), "overdrawn") {
		t.Fatalf("rolled-back Exec returned %v; want ErrAborted wrapping the function's error", abortErr)
	}
	if !ownWriteSeen {
		t.Fatal("the transaction did not read its own write")
	}
	db := r.source()
	if got, want := lsns(db.WAL()), []model.LSN{committed.CommitLSN, after.CommitLSN}; !reflect.DeepEqual(got, want) {
		t.Fatalf("WAL LSNs %v, want only the two commits %v", got, want)
	}
	if e, _ := db.State().Get(key("acct1")); e.Row.Get("v") != "100" {
		t.Fatalf("acct1 = %v after the rollback, want 100", e.Row)
	}
	if _, ok := db.State().Get(key("acct2")); ok {
		t.Fatal("acct2 exists: the rolled-back insert was applied")
	}
	wantAborted := []model.Txn{{XID: committed.XID + 1, Changes: []model.Change{upd("acct1", "0"), ins("acct2", "100")}}}
	if !reflect.DeepEqual(r.rec.Aborted, wantAborted) {
		t.Fatalf("recorder has %v, want %v", r.rec.Aborted, wantAborted)
	}
}

// Start needs a slot: a fresh database has none, Snapshot creates it, and
// after the slot is dropped Start fails again and an open session ends.
func TestSourceStartWithoutASlotFails(t *testing.T) {
	r := newSourceRig(t, 2)
	src, stream := r.client(), r.stream()
	var before, afterSnap, afterDrop, nextErr error
	r.app.Go("capture", func(ctx context.Context) {
		_, _ = src.Exec(ctx, put("a", "1"))
		_, before = stream.Start(ctx)
		_, _ = stream.Snapshot(ctx)
		_, afterSnap = stream.Start(ctx)
		sleepUntil(ctx, r.app, 200*time.Millisecond)
		_, nextErr = stream.Next(ctx)
		_, afterDrop = stream.Start(ctx)
	})
	r.w.At(100*time.Millisecond, 1, func() { r.source().DropSlot() })
	run(t, r.w, time.Second)

	if !errors.Is(before, pipeline.ErrNoSlot) {
		t.Fatalf("Start before any snapshot: %v, want ErrNoSlot", before)
	}
	if afterSnap != nil {
		t.Fatalf("Start after the snapshot: %v", afterSnap)
	}
	if !errors.Is(nextErr, ErrStaleSession) {
		t.Fatalf("Next after the slot was dropped: %v, want ErrStaleSession", nextErr)
	}
	if !errors.Is(afterDrop, pipeline.ErrNoSlot) {
		t.Fatalf("Start after DropSlot: %v, want ErrNoSlot", afterDrop)
	}
}

// Snapshot returns every live row as of the newest commit, in key order, as
// inserts without revision counts (as PostgreSQL's), and creates the slot there,
// durably: a crash right after it (before any checkpoint) keeps the slot.
func TestSourceSnapshotReturnsEveryRowAndCreatesTheSlot(t *testing.T) {
	r := newSourceRig(t, 3)
	src, stream := r.client(), r.stream()
	var snap, later model.Txn
	var snapErr error
	var from model.LSN
	var startErr error
	var next []model.Txn
	r.app.Go("capture", func(ctx context.Context) {
		_, _ = src.Exec(ctx, func(tx pipeline.Tx) error {
			tx.Put("t", "c", row("1"))
			tx.Put("t", "a", row("1"))
			tx.Put("t", "b", row("1"))
			return nil
		})
		_, _ = src.Exec(ctx, put("a", "2"))
		_, _ = src.Exec(ctx, func(tx pipeline.Tx) error { tx.Delete("t", "b"); return nil })
		snap, snapErr = pipeline.ReadSnapshot(ctx, stream)
		sleepUntil(ctx, r.app, 300*time.Millisecond) // the database crashed and restarted
		from, startErr = stream.Start(ctx)
		later, _ = src.Exec(ctx, put("d", "1"))
		next, _ = stream.Next(ctx)
	})
	var lastLSN model.LSN
	r.w.At(100*time.Millisecond, 1, func() { lastLSN = r.source().LastLSN(); r.db.Crash() })
	r.w.At(200*time.Millisecond, 2, r.db.Restart)
	run(t, r.w, time.Second)

	if snapErr != nil {
		t.Fatal(snapErr)
	}
	want := model.Txn{CommitLSN: lastLSN, Snapshot: true, Changes: []model.Change{
		{Table: "t", PK: "a", Op: model.OpInsert, Row: row("2")}, // no write counts, as PostgreSQL's
		{Table: "t", PK: "c", Op: model.OpInsert, Row: row("1")},
	}}
	if !reflect.DeepEqual(snap, want) {
		t.Fatalf("snapshot\n got %v\nwant %v", snap, want)
	}
	if startErr != nil || from != snap.CommitLSN {
		t.Fatalf("Start after a crash = %v, %v; want the snapshot's LSN %v", from, startErr, snap.CommitLSN)
	}
	if len(next) != 1 || !reflect.DeepEqual(next[0], later) {
		t.Fatalf("Next = %v, want only the commit after the snapshot %v", next, later)
	}
}

// After Confirm(x), a new session starts at x and streams exactly the
// transactions committed after x, in commit order, at most Max per message.
// Confirming an older LSN does not move the slot back.
func TestSourceNextAfterConfirmedLSNReturnsExactlyTheLaterTxns(t *testing.T) {
	r := newSourceRig(t, 4)
	src := r.client()
	first := r.stream()
	var committed, streamed []model.Txn
	var from, confirmedAfterOld model.LSN
	var startErr error
	batches := 0
	r.app.Go("capture", func(ctx context.Context) {
		_, _ = first.Snapshot(ctx)
		for i := 0; i < 10; i++ {
			c, _ := src.Exec(ctx, put(fmt.Sprintf("k%d", i%3), fmt.Sprint(i)))
			committed = append(committed, c)
		}
		_, _ = first.Start(ctx)
		_ = first.Confirm(ctx, committed[3].CommitLSN)
		_ = first.Confirm(ctx, committed[1].CommitLSN) // a late, older confirm
		confirmedAfterOld = r.source().Confirmed()

		second := &StreamClient{From: r.app, DB: r.db, Max: 3}
		from, startErr = second.Start(ctx)
		for len(streamed) < 6 {
			txns, err := second.Next(ctx)
			if err != nil || len(txns) > 3 {
				return
			}
			batches++
			streamed = append(streamed, txns...)
		}
	})
	run(t, r.w, time.Second)

	if startErr != nil || from != committed[3].CommitLSN {
		t.Fatalf("Start = %v, %v; want the confirmed LSN %v", from, startErr, committed[3].CommitLSN)
	}
	if confirmedAfterOld != committed[3].CommitLSN {
		t.Fatalf("confirming an older LSN moved the slot to %v", confirmedAfterOld)
	}
	if !reflect.DeepEqual(streamed, committed[4:]) {
		t.Fatalf("streamed %v\nwant %v", lsns(streamed), lsns(committed[4:]))
	}
	if batches != 2 {
		t.Fatalf("6 transactions came in %d messages; want 2 of Max=3", batches)
	}
}

// The slot's confirmed position reaches disk only at checkpoints
// (CheckpointEvery). A crash before the first checkpoint after a Confirm
// moves the slot back to the snapshot, one after it keeps the confirm. Either
// way, a session opened before the crash is over.
func TestSourceSlotMovesBackToLastCheckpointAfterCrash(t *testing.T) {
	for _, tc := range []struct {
		name     string
		crashAt  time.Duration
		wantBack bool
	}{
		{"crash before the checkpoint", CheckpointEvery / 2, true},
		{"crash after the checkpoint", CheckpointEvery * 3 / 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSourceRig(t, 5)
			src, stream := r.client(), r.stream()
			var snap model.Txn
			var committed, replayed []model.Txn
			var from model.LSN
			var staleErr, startErr error
			r.app.Go("capture", func(ctx context.Context) {
				snap, _ = pipeline.ReadSnapshot(ctx, stream)
				_, _ = stream.Start(ctx)
				for i := 0; i < 3; i++ {
					c, _ := src.Exec(ctx, put("k", fmt.Sprint(i)))
					committed = append(committed, c)
				}
				_, _ = stream.Next(ctx)
				_ = stream.Confirm(ctx, committed[2].CommitLSN)
				sleepUntil(ctx, r.app, tc.crashAt+200*time.Millisecond) // restarted by then
				_, staleErr = stream.Next(ctx)
				fresh := r.stream()
				from, startErr = fresh.Start(ctx)
				if from < committed[2].CommitLSN {
					replayed, _ = fresh.Next(ctx)
				}
			})
			r.w.At(tc.crashAt, 1, r.db.Crash)
			r.w.At(tc.crashAt+100*time.Millisecond, 2, r.db.Restart)
			run(t, r.w, 3*time.Second)

			if !errors.Is(staleErr, ErrStaleSession) {
				t.Fatalf("Next on the session from before the crash: %v, want ErrStaleSession", staleErr)
			}
			if startErr != nil {
				t.Fatal(startErr)
			}
			if !tc.wantBack {
				if from != committed[2].CommitLSN {
					t.Fatalf("slot at %v after a checkpoint, want the confirmed %v", from, committed[2].CommitLSN)
				}
				return
			}
			if from != snap.CommitLSN {
				t.Fatalf("slot at %v after a crash before any checkpoint, want it back at the snapshot %v", from, snap.CommitLSN)
			}
			if !reflect.DeepEqual(replayed, committed) {
				t.Fatalf("after moving back the stream redelivers %v, want %v", lsns(replayed), lsns(committed))
			}
		})
	}
}

// A walsender read is held open: a commit answers it at once, well before
// StreamWait, even when StreamClient.Next has already returned empty (once
// per StreamWait, so a capture can confirm while the source is quiet) a few
// times and was asked again.
func TestSourceNextLongPollsUntilACommit(t *testing.T) {
	for _, commitAt := range []time.Duration{100 * time.Millisecond, 3*StreamWait + 50*time.Millisecond} {
		t.Run(fmt.Sprint("commit at ", commitAt), func(t *testing.T) {
			r := newSourceRig(t, 6)
			writer := r.w.AddNode("writer", nil)
			stream := r.stream()
			var got []model.Txn
			var nextErr error
			var answeredAt time.Duration
			empty := 0
			r.app.Go("capture", func(ctx context.Context) {
				_, _ = stream.Snapshot(ctx)
				_, _ = stream.Start(ctx)
				for {
					got, nextErr = stream.Next(ctx)
					if nextErr != nil || len(got) > 0 {
						break
					}
					empty++
				}
				answeredAt = r.w.Now()
			})
			writer.Go("app", func(ctx context.Context) {
				sleepUntil(ctx, writer, commitAt)
				_, _ = (&SourceClient{From: writer, DB: r.db}).Exec(ctx, put("k", "v"))
			})
			run(t, r.w, 2*time.Second)

			if nextErr != nil || len(got) != 1 {
				t.Fatalf("Next = %v, %v; want the one commit", got, nextErr)
			}
			if want := int(commitAt / StreamWait); empty != want {
				t.Fatalf("Next returned empty %d times before a commit at %v, want %d (once per StreamWait)", empty, commitAt, want)
			}
			// The commit reaches the database within 5ms and the answer
			// comes back within 5ms more.
			if answeredAt < commitAt || answeredAt > commitAt+10*time.Millisecond {
				t.Fatalf("commit at %v, Next answered at %v: want the answer right after the commit", commitAt, answeredAt)
			}
		})
	}
}

// With no commit, the walsender answers a read with nothing once StreamWait
// has passed, not before (a keepalive), and without error.
func TestSourceStreamReadAnswersEmptyAfterStreamWait(t *testing.T) {
	r := newSourceRig(t, 7)
	stream := r.stream()
	var got []model.Txn
	var err error
	var askedAt, answeredAt time.Duration
	r.app.Go("capture", func(ctx context.Context) {
		_, _ = stream.Snapshot(ctx)
		_, _ = stream.Start(ctx)
		sess, after := stream.session, stream.after
		askedAt = r.w.Now()
		got, err = sim.CallAsync(ctx, r.app, r.db, time.Second, func(db *SourceDB, reply func([]model.Txn, error)) {
			db.nextWait(sess, after, 64, reply)
		})
		answeredAt = r.w.Now()
	})
	run(t, r.w, 2*time.Second)

	if err != nil || len(got) != 0 {
		t.Fatalf("read with no commit = %v, %v; want empty, no error", got, err)
	}
	if wait := answeredAt - askedAt; wait < StreamWait || wait > StreamWait+10*time.Millisecond {
		t.Fatalf("empty answer after %v, want StreamWait (%v) plus the round trip", wait, StreamWait)
	}
}

// What the source hands out is a copy: a capture that scribbles over the
// transactions it read (or an application over its own) cannot change the
// WAL, which is the ground truth, nor what the next reader gets.
func TestSourceHandsOutCopies(t *testing.T) {
	r := newSourceRig(t, 5)
	src := r.client()
	var committed model.Txn
	var firstRead, secondRead []model.Txn
	r.app.Go("capture", func(ctx context.Context) {
		_, _ = r.stream().Snapshot(ctx)
		committed, _ = src.Exec(ctx, put("k", "v"))
		s := r.stream()
		_, _ = s.Start(ctx)
		firstRead, _ = s.Next(ctx)
		firstRead[0].Changes[0].Row.Set("v", "scribbled")
		firstRead[0].Changes[0].PK = "other"
		committed.Changes[0].Row.Set("v", "scribbled too")
		s2 := r.stream()
		_, _ = s2.Start(ctx)
		secondRead, _ = s2.Next(ctx)
	})
	run(t, r.w, time.Second)
	wal := r.source().WAL()
	if len(wal) != 1 || wal[0].Changes[0].PK != "k" || wal[0].Changes[0].Row.Get("v") != "v" {
		t.Fatalf("the WAL changed under its readers: %v", wal)
	}
	if len(secondRead) != 1 || secondRead[0].Changes[0].Row.Get("v") != "v" {
		t.Fatalf("a later reader got %v, want the committed row", secondRead)
	}
	if e, _ := r.source().State().Get(model.Key{Table: "t", PK: "k"}); e.Row.Get("v") != "v" {
		t.Fatalf("the table holds %v, want the committed row", e.Row)
	}
}

// events is a keyless table under REPLICA IDENTITY FULL; bare one with the
// default identity, whose rows have no name.
var (
	eventsTable = pipeline.KeylessTable{Name: "events", Columns: []string{"seq", "what", "note"}, Full: true}
	bareTable   = pipeline.KeylessTable{Name: "bare", Columns: []string{"at", "what"}}
)

// A keyless table under FULL identity is named by whole rows, as pgsource
// names it (pipeline.RowKey over the declared column order, NULL for a
// column the row leaves out) in the snapshot and the stream; two identical
// rows are two inserts and, deleted, two deletes, and the snapshot reads
// them one by one; keyed statements on it fail the transaction.
func TestSourceKeylessFullTableIsNamedByWholeRows(t *testing.T) {
	r := newSourceRig(t, 8)
	src, stream := r.client(), r.stream()
	boot := model.R("seq", "1", "what", "boot, (cold)")
	twin := model.R("seq", "2", "what", "tick", "note", `say "hi"`)
	var snap model.Txn
	var streamed []model.Txn
	var putErr, createAgain error
	r.app.Go("capture", func(ctx context.Context) {
		createAgain = r.source().CreateTable(eventsTable)
		_, _ = src.Exec(ctx, func(tx pipeline.Tx) error { tx.InsertRow("events", boot); tx.InsertRow("events", twin); return nil })
		_, _ = src.Exec(ctx, func(tx pipeline.Tx) error { tx.InsertRow("events", twin); return nil })
		snap, _ = pipeline.ReadSnapshot(ctx, stream)
		_, _ = stream.Start(ctx)
		_, _ = src.Exec(ctx, func(tx pipeline.Tx) error {
			tx.DeleteRow("events", twin)
			tx.DeleteRow("events", model.R("seq", "9"))
			return nil
		})
		_, _ = src.Exec(ctx, func(tx pipeline.Tx) error { tx.DeleteRow("events", boot); tx.InsertRow("events", boot); return nil })
		_, putErr = src.Exec(ctx, func(tx pipeline.Tx) error { tx.Put("events", "(1,x,)", row("v")); return nil })
		for len(streamed) < 2 {
			txns, err := stream.Next(ctx)
			if err != nil {
				return
			}
			streamed = append(streamed, txns...)
		}
	})
	if err := r.source().CreateTable(eventsTable); err != nil {
		t.Fatal(err)
	}
	run(t, r.w, time.Second)

	if createAgain == nil {
		t.Error("creating events twice succeeded")
	}
	bootKey, twinKey := `(1,"boot, (cold)",)`, `(2,tick,"say ""hi""")`
	ev := func(pk string, op model.Op, row model.Row) model.Change {
		return model.Change{Table: "events", PK: pk, Op: op, Row: row}
	}
	var got []model.Change
	for _, c := range snap.Changes {
		c.Revs = 0
		got = append(got, c)
	}
	if want := []model.Change{ev(bootKey, model.OpInsert, boot), ev(twinKey, model.OpInsert, twin), ev(twinKey, model.OpInsert, twin)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot\n got %v\nwant %v", got, want)
	}
	if len(streamed) != 2 {
		t.Fatalf("streamed %v, want two transactions", streamed)
	}
	if want := []model.Change{ev(twinKey, model.OpDelete, nil), ev(twinKey, model.OpDelete, nil)}; !reflect.DeepEqual(streamed[0].Changes, want) {
		t.Errorf("deleting two identical rows (and a missing one) streamed %v, want %v", streamed[0].Changes, want)
	}
	if want := []model.Change{ev(bootKey, model.OpDelete, nil), ev(bootKey, model.OpInsert, boot)}; !reflect.DeepEqual(streamed[1].Changes, want) {
		t.Errorf("delete and re-insert streamed %v, want %v", streamed[1].Changes, want)
	}
	if !errors.Is(putErr, ErrAborted) || !strings.Contains(putErr.Error(), "no primary key") {
		t.Errorf("Put on a keyless table: %v, want the transaction to fail", putErr)
	}
	if _, ok := r.source().State().Get(model.Key{Table: "events", PK: twinKey}); ok {
		t.Error("the identical rows are still in the table after their delete")
	}
}

// A keyless table with the default identity: a snapshot refuses it (naming
// every such table, and leaving no slot to stream from), a delete from it
// fails, and when it is created while the stream runs, the stream hands out
// the transactions before the first one that wrote it and then fails there
// with a NoKeyError for that transaction, every time it reads it again, in
// this session or a new one, after a crash of the database too.
func TestSourceKeylessDefaultTableIsRefused(t *testing.T) {
	r := newSourceRig(t, 9)
	src, stream := r.client(), r.stream()
	var before, blocked, after model.Txn
	var first, again, restarted []error
	var firstTxns []model.Txn
	var delErr, snapErr, startErr error
	r.app.Go("capture", func(ctx context.Context) {
		_, _ = stream.Snapshot(ctx)
		_, _ = stream.Start(ctx)
		before, _ = src.Exec(ctx, put("a", "1"))
		if err := r.source().CreateTable(bareTable); err != nil {
			t.Error(err)
		}
		blocked, _ = src.Exec(ctx, func(tx pipeline.Tx) error {
			tx.Put("t", "b", row("1"))
			tx.InsertRow("bare", model.R("at", "1", "what", "boot"))
			return nil
		})
		after, _ = src.Exec(ctx, put("c", "1"))
		_, delErr = src.Exec(ctx, func(tx pipeline.Tx) error { tx.DeleteRow("bare", model.R("at", "1", "what", "boot")); return nil })
		var err error
		firstTxns, err = stream.Next(ctx)
		first = append(first, err)
		for range 2 {
			_, err = stream.Next(ctx)
			again = append(again, err)
		}
		sleepUntil(ctx, r.app, 300*time.Millisecond) // the database crashed and restarted
		fresh := r.stream()
		_, _ = fresh.Start(ctx)
		for {
			txns, err := fresh.Next(ctx)
			if err != nil {
				restarted = append(restarted, err)
				break
			}
			if txns[len(txns)-1].CommitLSN >= blocked.CommitLSN {
				restarted = append(restarted, errors.New("the stream went past the refused transaction"))
				break
			}
		}
		_, snapErr = fresh.Snapshot(ctx)
		_, startErr = fresh.Start(ctx)
	})
	r.w.At(100*time.Millisecond, 1, r.db.Crash)
	r.w.At(200*time.Millisecond, 2, r.db.Restart)
	run(t, r.w, time.Second)

	if len(firstTxns) != 0 && (len(firstTxns) != 1 || !reflect.DeepEqual(firstTxns[0], before)) {
		t.Fatalf("first read = %v, want only the transaction before the refused one", firstTxns)
	}
	all := append(append(append([]error(nil), first...), again...), restarted...)
	if len(firstTxns) == 1 {
		all = all[1:] // the first read handed out the transaction before
	}
	if len(all) < 3 {
		t.Fatalf("errors %v: want the refusal at least three times", all)
	}
	for i, err := range all {
		var nk *pipeline.NoKeyError
		if !errors.As(err, &nk) || !errors.Is(err, pipeline.ErrUnsupported) || nk.XID != blocked.XID || !reflect.DeepEqual(nk.Tables, []string{"bare"}) {
			t.Fatalf("read %d: %v; want a NoKeyError naming bare and xid %d", i, err, blocked.XID)
		}
	}
	if after.CommitLSN == 0 {
		t.Fatal("the transaction after the refused one did not commit: the source refuses streaming it, not writing it")
	}
	if !errors.Is(delErr, ErrAborted) || !strings.Contains(delErr.Error(), "does not have a replica identity") {
		t.Errorf("delete from bare: %v, want PostgreSQL's refusal", delErr)
	}
	var nk *pipeline.NoKeyError
	if !errors.As(snapErr, &nk) || nk.XID != 0 || !reflect.DeepEqual(nk.Tables, []string{"bare"}) || !strings.Contains(snapErr.Error(), "--exclude-tables bare") {
		t.Errorf("snapshot with bare: %v, want a NoKeyError naming it", snapErr)
	}
	if !errors.Is(startErr, pipeline.ErrNoSlot) {
		t.Errorf("Start after the refused snapshot: %v, want ErrNoSlot", startErr)
	}
}

// Exactly one process streams from the slot, as in PostgreSQL: a second
// capture is refused while the first streams (and while it is paused, until
// wal_sender_timeout ends its session); then the second takes the slot and
// the first, woken as a zombie, can neither read nor confirm. A snapshot
// ends the holder's session too, and a process that died frees the slot
// at once.
func TestSourceSlotHasOneHolder(t *testing.T) {
	r := newSourceRig(t, 3)
	other := r.w.AddNode("other", nil)
	src, first := r.client(), r.stream()
	second := &StreamClient{From: other, DB: r.db}
	var refused, paused, zombieNext, zombieConfirm, took, afterSnap, afterCrash error
	r.app.Go("first", func(ctx context.Context) {
		_, _ = src.Exec(ctx, put("a", "1"))
		_, _ = first.Snapshot(ctx)
		if _, err := first.Start(ctx); err != nil {
			t.Errorf("first Start: %v", err)
		}
		_, _ = first.Next(ctx)
		sleepUntil(ctx, r.app, WalSenderTimeout+5*time.Second) // paused meanwhile
		_, zombieNext = first.Next(ctx)
		zombieConfirm = first.Confirm(ctx, 1)
	})
	other.Go("second", func(ctx context.Context) {
		sleepUntil(ctx, other, time.Second)
		_, refused = second.Start(ctx)
		sleepUntil(ctx, other, WalSenderTimeout-time.Second)
		_, paused = second.Start(ctx)
		sleepUntil(ctx, other, WalSenderTimeout+3*time.Second)
		_, took = second.Start(ctx)
	})
	r.w.At(2*time.Second, 1, r.app.Pause)
	r.w.At(WalSenderTimeout+4*time.Second, 1, r.app.Resume)
	run(t, r.w, WalSenderTimeout+10*time.Second)
	switch {
	case !errors.Is(refused, ErrSlotInUse):
		t.Fatalf("second Start while the first streams: %v, want ErrSlotInUse", refused)
	case !errors.Is(paused, ErrSlotInUse):
		t.Fatalf("second Start while the first is paused, before wal_sender_timeout: %v, want ErrSlotInUse", paused)
	case took != nil:
		t.Fatalf("second Start past wal_sender_timeout: %v, want the slot", took)
	case !errors.Is(zombieNext, ErrStaleSession) || !errors.Is(zombieConfirm, ErrStaleSession):
		t.Fatalf("the woken first: Next %v, Confirm %v; want ErrStaleSession for both", zombieNext, zombieConfirm)
	}

	// A snapshot ends the holder's session.
	r = newSourceRig(t, 4)
	other = r.w.AddNode("other", nil)
	first, second = r.stream(), &StreamClient{From: other, DB: r.db}
	var holderNext error
	r.app.Go("first", func(ctx context.Context) {
		_, _ = first.Snapshot(ctx)
		_, _ = first.Start(ctx)
		sleepUntil(ctx, r.app, 2*time.Second)
		_, holderNext = first.Next(ctx)
	})
	other.Go("second", func(ctx context.Context) {
		sleepUntil(ctx, other, time.Second)
		_, _ = second.Snapshot(ctx)
		_, afterSnap = second.Start(ctx)
	})
	run(t, r.w, 3*time.Second)
	if afterSnap != nil || !errors.Is(holderNext, ErrStaleSession) {
		t.Fatalf("after another process's snapshot: its Start %v, the old holder's Next %v; want the slot, and ErrStaleSession", afterSnap, holderNext)
	}

	// A holder that died frees the slot at once: its connection is gone.
	r = newSourceRig(t, 5)
	other = r.w.AddNode("other", nil)
	first, second = r.stream(), &StreamClient{From: other, DB: r.db}
	r.app.Go("first", func(ctx context.Context) {
		_, _ = first.Snapshot(ctx)
		if _, err := first.Start(ctx); err != nil {
			t.Errorf("first Start: %v", err)
		}
	})
	other.Go("second", func(ctx context.Context) {
		sleepUntil(ctx, other, 2*time.Second)
		_, afterCrash = second.Start(ctx)
	})
	r.w.At(time.Second, 1, r.app.Crash)
	run(t, r.w, 3*time.Second)
	if afterCrash != nil {
		t.Fatalf("Start after the holder crashed: %v, want the slot at once", afterCrash)
	}
}

// A table defined after the snapshot reaches a replica with its
// definition, as pgoutput's Relation message brings it: the stream hands
// out a table's columns and key (not its unique constraints) with the
// first transaction of a session that changes it, and again after a new
// Start; the simulated replica takes it for a table it has none of.
func TestStreamCarriesDefinitionsOfTablesCreatedAfterTheSnapshot(t *testing.T) {
	r := newSourceRig(t, 1)
	src, stream := r.client(), r.stream()
	items := model.Table{Name: "items", Key: []string{"pk"}, Columns: []model.Column{{Name: "pk", Type: "integer"}, {Name: "v", Type: "text"}}, Unique: [][]string{{"v"}}}
	var got, again []model.Txn
	var errs []error
	r.app.Go("capture", func(ctx context.Context) {
		_, err := pipeline.ReadSnapshot(ctx, stream)
		errs = append(errs, err)
		_, err = stream.Start(ctx)
		errs = append(errs, err, r.source().Define(items))
		for i := range 2 {
			_, err = src.Exec(ctx, func(tx pipeline.Tx) error { tx.Put("items", fmt.Sprint(i), row(fmt.Sprint(i))); return nil })
			errs = append(errs, err)
		}
		for len(got) < 2 && ctx.Err() == nil {
			txns, err := stream.Next(ctx)
			errs, got = append(errs, err), append(got, txns...)
		}
		_, err = stream.Start(ctx)
		errs = append(errs, err)
		again, err = stream.Next(ctx)
		errs = append(errs, err)
	})
	run(t, r.w, 5*time.Second)
	relation := items.Clone()
	relation.Unique = nil
	if err := errors.Join(errs...); err != nil || len(got) != 2 || len(again) != 2 {
		t.Fatalf("streamed %d then %d transactions: %v", len(got), len(again), err)
	}
	if !reflect.DeepEqual(got[0].Schema, []model.Table{relation}) || got[1].Schema != nil || !reflect.DeepEqual(again[0].Schema, []model.Table{relation}) {
		t.Fatalf("definitions carried: %v, %v, then after a new Start %v; want %v, none, %v", got[0].Schema, got[1].Schema, again[0].Schema, relation, relation)
	}
	replica := BootStore(model.Replica)(r.w.AddNode("replica", nil)).(*Store)
	replica.writeTxn(got[0], true)
	if def, ok := replica.Tables()["items"]; !ok || !reflect.DeepEqual(def, relation) {
		t.Fatalf("the replica's items: %v (%v); want %v", def, ok, relation)
	}
}
