package conformance

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"pgregory.net/rapid"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/store/pgstore"
	"lockstep/pipeline/store/storetest"
	"lockstep/sim"
	"lockstep/sim/services"
)

// testReplicaUnique applies random net transactions over a table with a
// unique column (storetest.UniqueTable: unique email, integer age) to the
// simulated replica and to pgstore's replica on PostgreSQL 15, each with
// deferred constraints (the pipeline's) and with immediate ones (the
// unique-row-by-row bug), one transaction per batch after a snapshot.
// After every batch the two must agree on whether it was taken and on
// every document: the simulator refuses exactly what PostgreSQL refuses.
// Emails come from three values and NULL over four keys, so swaps, moves
// and real duplicates come up in every order.
func testReplicaUnique(t *testing.T, dsn string) {
	ctx, pool := openPool(t, dsn, 5*time.Minute)
	pg := map[bool]*pgstore.Replica{}
	for _, immediate := range []bool{false, true} {
		r, err := pgstore.NewReplica(ctx, pool, pgstore.Options{Prefix: fmt.Sprintf("uniq_%v_", immediate), ImmediateUnique: immediate})
		if err != nil {
			t.Fatal(err)
		}
		pg[immediate] = r
	}
	taken, refused := 0, 0
	rapid.Check(t, func(rt *rapid.T) {
		txns := drawUniqueTxns(rt)
		for _, immediate := range []bool{false, true} {
			sr := newSimReplica(immediate)
			p := model.Position{Offset: 1, LSN: storetest.UniqueSnapshot.CommitLSN}
			snap := pipeline.Batch{Reset: true, Txns: []model.Txn{storetest.UniqueSnapshot}, Position: p}
			if err := pg[immediate].Apply(ctx, snap); err != nil {
				rt.Fatalf("PostgreSQL: the snapshot: %v", err)
			}
			if err := sr.apply(snap); err != nil {
				rt.Fatalf("simulator: the snapshot: %v", err)
			}
			for i, txn := range txns {
				base := p
				b := pipeline.Batch{Txns: []model.Txn{txn}, Position: model.Position{Offset: base.Offset + 1, LSN: txn.CommitLSN}, Base: &base}
				perr := pg[immediate].Apply(ctx, b)
				serr := sr.apply(b)
				if (perr == nil) != (serr == nil) {
					rt.Fatalf("immediate=%v, transaction %d %v: PostgreSQL %v, simulator %v", immediate, i, txn, orTaken(perr), orTaken(serr))
				}
				if perr == nil {
					p = b.Position
					taken++
				} else {
					refused++
				}
				got, err := pg[immediate].ReadAll(ctx)
				if err != nil {
					rt.Fatal(err)
				}
				if d := simPGDiff(sr.docs(), got.Docs); d != "" {
					rt.Fatalf("immediate=%v, after transaction %d %v: simulator against PostgreSQL:%s", immediate, i, txn, d)
				}
			}
			sr.w.Stop()
		}
	})
	t.Logf("%d batches taken, %d refused", taken, refused)
	if taken == 0 || refused == 0 {
		t.Fatalf("%d batches taken, %d refused: want both", taken, refused)
	}
}

// openPool connects to dsn for a test of at most limit, both closed when
// it ends.
func openPool(t *testing.T, dsn string, limit time.Duration) (context.Context, *pgxpool.Pool) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return ctx, pool
}

func orTaken(err error) string {
	if err == nil {
		return "took it"
	}
	return "refused it: " + err.Error()
}

// drawUniqueTxns draws one to five net transactions over four keys: each
// changes one to four distinct keys, in a drawn order.
func drawUniqueTxns(t *rapid.T) []model.Txn {
	keys := []string{"a", "b", "c", "d"}
	emails := []string{"x", "y", "z", ""}
	n := rapid.IntRange(1, 5).Draw(t, "txns")
	out := make([]model.Txn, n)
	for i := range out {
		perm := rapid.Permutation(keys).Draw(t, "keys")
		k := rapid.IntRange(1, 4).Draw(t, "changes")
		txn := model.Txn{XID: uint64(i + 1), CommitLSN: model.LSN(0x100 * (i + 1))}
		for _, pk := range perm[:k] {
			c := model.Change{Table: storetest.UniqueTable.Name, PK: pk}
			switch rapid.IntRange(0, 4).Draw(t, "op") {
			case 0:
				c.Op = model.OpDelete
			case 1:
				c.Op = model.OpInsert
			default:
				c.Op = model.OpUpdate
			}
			if c.Op != model.OpDelete {
				c.Row = model.R("age", strconv.Itoa(rapid.IntRange(0, 99).Draw(t, "age")))
				if e := rapid.SampledFrom(emails).Draw(t, "email"); e != "" {
					c.Row.Set("email", e)
				}
			}
			txn.Changes = append(txn.Changes, c)
		}
		out[i] = txn
	}
	return out
}

// simReplica is a simulated replica in a fault-free world of its own.
type simReplica struct {
	w      *sim.World
	store  *sim.Node
	client *services.StoreClient
}

func newSimReplica(immediate bool) *simReplica {
	w := sim.New(sim.Config{Seed: 1})
	st := w.AddNode("replica", services.BootStore(model.Replica))
	app := w.AddNode("applier", nil)
	return &simReplica{w: w, store: st, client: &services.StoreClient{From: app, To: st, StoreKind: model.Replica, ImmediateUnique: immediate}}
}

func (s *simReplica) apply(b pipeline.Batch) error {
	var err error
	done := false
	s.client.From.Go("apply", func(ctx context.Context) { err = s.client.Apply(ctx, b); done = true })
	for !done {
		if rerr := s.w.Run(s.w.Now() + time.Second); rerr != nil {
			return fmt.Errorf("simulator: %w", rerr)
		}
	}
	return err
}

func (s *simReplica) docs() model.Docs {
	return s.store.State().(*services.Store).Snapshot("replica", 0).Docs
}

func simPGDiff(sim, pg model.Docs) string {
	var b strings.Builder
	for _, k := range model.SortedKeys(pg) {
		if d, ok := sim[k]; !ok || d != pg[k] {
			fmt.Fprintf(&b, "\n  %v: simulator %+v (%v), PostgreSQL %+v", k, d, ok, pg[k])
		}
	}
	for _, k := range model.SortedKeys(sim) {
		if _, ok := pg[k]; !ok {
			fmt.Fprintf(&b, "\n  %v: simulator %+v, PostgreSQL none", k, sim[k])
		}
	}
	return b.String()
}
