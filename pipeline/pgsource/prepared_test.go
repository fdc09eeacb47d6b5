package pgsource

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"lockstep/pipeline"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/realenv"
	"lockstep/pipeline/twopc"
)

// PREPARE TRANSACTION needs max_prepared_transactions above its default 0.
func init() { pgtest.Settings["max_prepared_transactions"] = "10" }

// memLog is a decision log in memory that can kill its coordinator (end
// its context) the moment a decision is durable.
type memLog struct {
	ds       []twopc.Decision
	onCommit func()
}

func (l *memLog) Commit(_ context.Context, d twopc.Decision) error {
	l.ds = append(l.ds, d)
	if l.onCommit != nil {
		l.onCommit()
	}
	return nil
}

func (l *memLog) Done(_ context.Context, gid string) error {
	l.ds = slices.DeleteFunc(l.ds, func(d twopc.Decision) bool { return d.GID == gid })
	return nil
}

func (l *memLog) Decisions(context.Context) ([]twopc.Decision, error) { return slices.Clone(l.ds), nil }

// The coordinator on real PostgreSQL: one killed right after logging its
// decision leaves the transaction prepared in PostgreSQL, holding its row
// (another transaction on it gets ErrLockTimeout); one killed before
// deciding leaves another prepared. A restarted coordinator's recovery
// commits the first and rolls back the second (presumed abort), and
// nothing is left in doubt. The simulated source's rules are these.
func TestCoordinatorOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: needs a PostgreSQL server (-short)")
	}
	e := newEnv(t, pgtest.NewDatabase(t, pgtest.Start(t)), map[string][]string{"t": {"v"}})
	src := &Prepared{Source: *e.src, LockTimeout: 200 * time.Millisecond}
	put := func(pk, v string) pipeline.TxnFunc {
		return func(tx pipeline.Tx) error { tx.Put("t", pk, map[string]string{"v": v}); return nil }
	}
	log := &memLog{}
	killed, kill := context.WithCancel(e.ctx)
	log.onCommit = kill
	first := &twopc.Coordinator{Env: &realenv.Env{}, ID: "c#1", Source: src, Log: log}
	if err := first.Do(killed, put("a", "1")); err == nil {
		t.Fatal("the killed coordinator's transaction returned no error")
	}
	if _, err := src.Prepare(e.ctx, "c#1.2", put("b", "1")); err != nil { // killed before deciding
		t.Fatal(err)
	}
	if gids, err := src.Prepared(e.ctx); err != nil || !slices.Equal(gids, []string{"c#1.1", "c#1.2"}) {
		t.Fatalf("prepared in PostgreSQL: %v, %v; want c#1.1 and c#1.2", gids, err)
	}
	if _, err := src.Prepare(e.ctx, "other", put("a", "2")); !errors.Is(err, twopc.ErrLockTimeout) {
		t.Errorf("a transaction on the in-doubt row: %v, want ErrLockTimeout", err)
	}
	if _, err := src.CommitPrepared(e.ctx, "no-such"); !errors.Is(err, twopc.ErrUnknownGID) {
		t.Errorf("commit of an unknown gid: %v, want ErrUnknownGID", err)
	}

	log.onCommit = nil
	second := &twopc.Coordinator{Env: &realenv.Env{}, ID: "c#2", Source: src, Log: log}
	if err := second.Recover(e.ctx); err != nil {
		t.Fatal(err)
	}
	if gids, err := src.Prepared(e.ctx); err != nil || len(gids) != 0 || len(log.ds) != 0 {
		t.Fatalf("after recovery: prepared %v (%v), decisions %v; want none", gids, err, log.ds)
	}
	var got []string
	rows, err := e.pool.Query(e.ctx, "SELECT pk || '=' || v FROM t ORDER BY pk")
	if err == nil {
		for rows.Next() {
			var s string
			_ = rows.Scan(&s)
			got = append(got, s)
		}
		err = rows.Err()
	}
	if err != nil || !slices.Equal(got, []string{"a=1"}) {
		t.Errorf("rows %v (%v): want the decided a=1 alone", got, err)
	}
	if err := second.Do(e.ctx, put("a", "3")); err != nil {
		t.Errorf("a transaction on the row once it was resolved: %v", err)
	}
}
