package conformance

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/store/pgstore"
	"lockstep/pipeline/store/storetest"
	"lockstep/sim"
	"lockstep/sim/services"
)

// testReplicaReadDuringReset runs each of storetest.ResetCases on the
// simulated replica and on pgstore's replica on PostgreSQL 15, with the
// correct rebuild and with the reset-by-ddl bug: a whole reader takes its
// snapshot, the rebuild runs, then the reader reads the rows. Both worlds
// must show the reader the same thing: the replica before the rebuild,
// whole, with the correct rebuild (on PostgreSQL a rebuild that drops a
// table waits for the reader: the test lets the reader finish once the
// rebuild waits for a lock); the rebuilt tables empty beside the old
// position (torn), or an error for a table gone, with the bug.
func testReplicaReadDuringReset(t *testing.T, dsn string) {
	ctx, pool := openPool(t, dsn, 2*time.Minute)
	for i, c := range storetest.ResetCases {
		for _, ddl := range []bool{false, true} {
			name := fmt.Sprintf("%s/reset-by-ddl=%v", c.Name, ddl)
			pg, err := pgstore.NewReplica(ctx, pool, pgstore.Options{Prefix: fmt.Sprintf("rr%d_%v_", i, ddl), DDLReset: ddl})
			if err != nil {
				t.Fatal(err)
			}
			pgSaw, pgDetail, err := pgReadDuringReset(ctx, pool, pg, c)
			if err != nil {
				t.Fatalf("%s: PostgreSQL: %v", name, err)
			}
			simSaw, simDetail, err := simReadDuringReset(c, ddl)
			if err != nil {
				t.Fatalf("%s: simulator: %v", name, err)
			}
			t.Logf("%s: PostgreSQL's reader saw %s, the simulator's %s", name, pgSaw, simSaw)
			if pgSaw != simSaw {
				t.Errorf("%s: PostgreSQL's reader saw %s (%s), the simulator's %s (%s)", name, pgSaw, pgDetail, simSaw, simDetail)
			}
			if want := c.Want(ddl); pgSaw != want {
				t.Errorf("%s: PostgreSQL's reader saw %s, want %s: %s", name, pgSaw, want, pgDetail)
			}
		}
	}
}

// pgReadDuringReset applies c.Before, begins a whole read, runs c.After in
// the background and finishes the read once the rebuild is done or waits
// for a lock, then checks the rebuild left c.After.
func pgReadDuringReset(ctx context.Context, pool *pgxpool.Pool, r *pgstore.Replica, c storetest.ResetCase) (storetest.ReadOutcome, string, error) {
	if err := r.Apply(ctx, c.Before); err != nil {
		return "", "", fmt.Errorf("before: %w", err)
	}
	wr, err := r.BeginRead(ctx)
	if err != nil {
		return "", "", err
	}
	done := make(chan error, 1)
	go func() { done <- r.Apply(ctx, c.After) }()
	var resetErr error
	finished := false
	stop := func() bool {
		select {
		case resetErr = <-done:
			finished = true
		default:
		}
		return finished
	}
	if err := pgtest.AwaitLockWaiters(ctx, pool, 1, stop); err != nil {
		return "", "", fmt.Errorf("wait for the rebuild to finish or wait: %w", err)
	}
	snap, rerr := wr.Finish(ctx)
	saw, detail := c.Classify(snap, rerr)
	if !finished {
		resetErr = <-done
	}
	if resetErr != nil {
		return "", "", fmt.Errorf("the rebuild: %w", resetErr)
	}
	after, err := r.ReadAll(ctx)
	if got, d := c.Classify(after, err); got != storetest.SawAfter {
		return "", "", fmt.Errorf("after the rebuild the replica is %s: %s", got, d)
	}
	return saw, detail, nil
}

// simReadDuringReset is pgReadDuringReset on the simulated replica, where a
// rebuild commits at once.
func simReadDuringReset(c storetest.ResetCase, ddl bool) (storetest.ReadOutcome, string, error) {
	s := newSimReplica(false)
	defer s.w.Stop()
	s.client.DDLReset = ddl
	if err := s.apply(c.Before); err != nil {
		return "", "", fmt.Errorf("before: %w", err)
	}
	reader := s.w.AddNode("reader", nil)
	var wr *services.WholeRead
	var err error
	if rerr := s.do(reader, func(ctx context.Context) { wr, err = services.BeginReadAll(ctx, reader, s.store, time.Second) }); rerr != nil || err != nil {
		return "", "", fmt.Errorf("begin the read: %v %v", rerr, err)
	}
	if err := s.apply(c.After); err != nil {
		return "", "", fmt.Errorf("the rebuild: %w", err)
	}
	var snap model.Snapshot
	if rerr := s.do(reader, func(ctx context.Context) { snap, err = wr.Finish(ctx) }); rerr != nil {
		return "", "", rerr
	}
	saw, detail := c.Classify(snap, err)
	return saw, detail, nil
}

// do runs fn as a task on n until it returns.
func (s *simReplica) do(n *sim.Node, fn func(ctx context.Context)) error {
	done := false
	n.Go("step", func(ctx context.Context) { fn(ctx); done = true })
	for !done {
		if err := s.w.Run(s.w.Now() + time.Second); err != nil {
			return fmt.Errorf("simulator: %w", err)
		}
	}
	return nil
}
