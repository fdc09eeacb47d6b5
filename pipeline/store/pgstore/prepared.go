package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"lockstep/model"
	"lockstep/pipeline/store"
	"lockstep/pipeline/twopc"
	"lockstep/pipeline/twopc/pgxa"
)

// Prepared is the replica or the search index as a two-phase-commit
// participant (twopc.Store) on PostgreSQL's prepared transactions: Prepare
// writes a transaction's changes, blind, in one database transaction
// (the search index too: one request for the whole transaction) and
// prepares it; they become visible at CommitPrepared. A prepared
// transaction cannot be changed, so its rows keep the version they were
// written with: the Txn's CommitLSN at Prepare (a client cannot know the
// source's commit LSN; the harness labels them with the XID, as it labels
// dual writes), and CommitPrepared does not write its lsn.
type Prepared struct {
	t *tables
	// queue queues t's writes in tx.
	queue func(ctx context.Context, tx pgx.Tx, t model.Txn) (*pgx.Batch, error)
	// LockTimeout is each transaction's lock_timeout (default
	// pgxa.DefaultLockTimeout).
	LockTimeout time.Duration
}

var _ twopc.Store = (*Prepared)(nil)

// PreparedReplica is r as a 2PC participant.
func PreparedReplica(r *Replica) *Prepared {
	return &Prepared{t: r.t, queue: func(ctx context.Context, tx pgx.Tx, t model.Txn) (*pgx.Batch, error) {
		rels, err := r.relations(ctx, tx)
		if err != nil {
			return nil, err
		}
		return r.apply(ctx, tx, rels, []model.Txn{t}, false)
	}}
}

// PreparedSearch is s as a 2PC participant.
func PreparedSearch(s *Search) *Prepared {
	return &Prepared{t: s.t, queue: func(ctx context.Context, tx pgx.Tx, t model.Txn) (*pgx.Batch, error) {
		txns, err := s.t.resolve(ctx, tx, []model.Txn{t}, false)
		if err != nil {
			return nil, err
		}
		batch := &pgx.Batch{}
		for _, chunk := range store.Chunks(txns, len(t.Changes)+1) {
			for _, c := range chunk {
				if err := s.t.queueChange(batch, c.Change, c.LSN, false); err != nil {
					return nil, err
				}
			}
		}
		return batch, nil
	}}
}

// branch is the store's branch of a 2PC transaction, its name (see pgxa).
func (p *Prepared) branch() string { return p.t.name }

// Kind implements twopc.Store.
func (p *Prepared) Kind() model.StoreKind { return p.t.kind }

// Prepare implements twopc.Store.
func (p *Prepared) Prepare(ctx context.Context, gid string, t model.Txn) error {
	wrap := func(err error) error {
		return fmt.Errorf("pgstore: %s: prepare %s: %w", p.t.kind, gid, pgxa.LockTimeout(err))
	}
	tx, err := p.t.pool.Begin(ctx)
	if err != nil {
		return wrap(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op once prepared
	if err := pgxa.SetLockTimeout(ctx, tx, p.LockTimeout); err != nil {
		return wrap(err)
	}
	batch, err := p.queue(ctx, tx, t)
	if err != nil {
		return wrap(err)
	}
	if err := send(ctx, tx, batch); err != nil {
		return wrap(err)
	}
	if err := pgxa.Prepare(ctx, tx, gid, p.branch()); err != nil {
		return wrap(err)
	}
	return nil
}

// CommitPrepared implements twopc.Store; lsn is not written (see Prepared).
func (p *Prepared) CommitPrepared(ctx context.Context, gid string, _ model.LSN) error {
	if err := pgxa.Commit(ctx, p.t.pool, gid, p.branch()); err != nil {
		return fmt.Errorf("pgstore: %s: %w", p.t.kind, err)
	}
	return nil
}

// RollbackPrepared implements twopc.Store.
func (p *Prepared) RollbackPrepared(ctx context.Context, gid string) error {
	if err := pgxa.Rollback(ctx, p.t.pool, gid, p.branch()); err != nil {
		return fmt.Errorf("pgstore: %s: %w", p.t.kind, err)
	}
	return nil
}

// Prepared implements twopc.Store: the store's prepared transactions.
func (p *Prepared) Prepared(ctx context.Context) ([]string, error) {
	gids, err := pgxa.List(ctx, p.t.pool, p.branch())
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s: %w", p.t.kind, err)
	}
	return gids, nil
}
