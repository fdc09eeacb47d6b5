package pgsource

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
	"lockstep/pipeline/twopc/pgxa"
)

// Prepared is the source as a two-phase-commit participant (twopc.Source)
// on PostgreSQL's PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK
// PREPARED. The server needs max_prepared_transactions above 0.
//
// A prepared transaction keeps its row locks, across a server restart too,
// until COMMIT or ROLLBACK PREPARED. A transaction that waits longer than
// LockTimeout for one fails with twopc.ErrLockTimeout (lock_timeout).
// PostgreSQL does not tell a client its commit record's LSN, nor whether a
// gid it no longer holds was committed or rolled back: CommitPrepared
// returns LSN 0, and ErrUnknownGID for a gid it does not hold.
type Prepared struct {
	Source
	// LockTimeout is each transaction's lock_timeout (default
	// pgxa.DefaultLockTimeout).
	LockTimeout time.Duration
}

var _ twopc.Source = (*Prepared)(nil)

// Branch is the source's branch of a 2PC transaction: it prepares gid as
// gid@source (see pgxa).
const Branch = "source"

// Prepare implements twopc.Source: fn runs in one transaction (as Exec
// runs it) that is then prepared under gid, unless it wrote nothing. The
// Txn has the transaction's XID.
func (p *Prepared) Prepare(ctx context.Context, gid string, fn pipeline.TxnFunc) (model.Txn, error) {
	iso := p.IsoLevel
	if iso == "" {
		iso = pgx.Serializable
	}
	ptx, err := p.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
	if err != nil {
		return model.Txn{}, fmt.Errorf("pgsource: begin: %w", unsent(err))
	}
	defer ptx.Rollback(context.WithoutCancel(ctx)) // a no-op once prepared
	if err := pgxa.SetLockTimeout(ctx, ptx, p.LockTimeout); err != nil {
		return model.Txn{}, fmt.Errorf("pgsource: set lock_timeout: %w", unsent(err))
	}
	tx := &sqlTx{ctx: ctx, tx: ptx}
	ferr := fn(tx)
	switch {
	case tx.err != nil:
		return model.Txn{}, fmt.Errorf("pgsource: prepare %s: %w", gid, pgxa.LockTimeout(unsent(tx.err)))
	case ferr != nil:
		return model.Txn{}, fmt.Errorf("pgsource: prepare %s: transaction rolled back: %w", gid, ferr)
	case len(tx.changes) == 0:
		return model.Txn{}, nil // read-only: nothing to prepare
	}
	txn := model.Txn{Changes: tx.changes}
	if txn.XID, err = currentXID(ctx, ptx, false); err != nil {
		return model.Txn{}, fmt.Errorf("pgsource: read the transaction id: %w", unsent(err))
	}
	if err := pgxa.Prepare(ctx, ptx, gid, Branch); err != nil {
		return model.Txn{}, fmt.Errorf("pgsource: prepare %s: %w", gid, unsent(err))
	}
	return txn, nil
}

// CommitPrepared implements twopc.Source (LSN 0: see Prepared).
func (p *Prepared) CommitPrepared(ctx context.Context, gid string) (model.LSN, error) {
	if err := pgxa.Commit(ctx, p.Pool, gid, Branch); err != nil {
		return 0, fmt.Errorf("pgsource: %w", err)
	}
	return 0, nil
}

// RollbackPrepared implements twopc.Source.
func (p *Prepared) RollbackPrepared(ctx context.Context, gid string) error {
	if err := pgxa.Rollback(ctx, p.Pool, gid, Branch); err != nil {
		return fmt.Errorf("pgsource: %w", err)
	}
	return nil
}

// Prepared implements twopc.Source.
func (p *Prepared) Prepared(ctx context.Context) ([]string, error) {
	gids, err := pgxa.List(ctx, p.Pool, Branch)
	if err != nil {
		return nil, fmt.Errorf("pgsource: %w", err)
	}
	return gids, nil
}
