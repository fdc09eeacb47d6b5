package pgsource

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
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
	// LockTimeout is each transaction's lock_timeout (default 500ms).
	LockTimeout time.Duration
}

var _ twopc.Source = (*Prepared)(nil)

// SQLSTATEs PostgreSQL answers with.
const (
	lockNotAvailable = "55P03" // lock_timeout passed
	undefinedObject  = "42704" // no prepared transaction of that gid
)

// gidLiteral quotes gid as the SQL string literal PREPARE TRANSACTION and
// its relatives take (they take no parameters).
func gidLiteral(gid string) string { return "'" + strings.ReplaceAll(gid, "'", "''") + "'" }

// Prepare implements twopc.Source: fn runs in one transaction (as Exec
// runs it) that is then prepared under gid, unless it wrote nothing.
func (p *Prepared) Prepare(ctx context.Context, gid string, fn pipeline.TxnFunc) (model.Txn, error) {
	lt := p.LockTimeout
	if lt == 0 {
		lt = 500 * time.Millisecond
	}
	iso := p.IsoLevel
	if iso == "" {
		iso = pgx.Serializable
	}
	ptx, err := p.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
	if err != nil {
		return model.Txn{}, fmt.Errorf("pgsource: begin: %w", unsent(err))
	}
	defer ptx.Rollback(context.WithoutCancel(ctx)) // a no-op once prepared
	if _, err := ptx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", lt.Milliseconds())); err != nil {
		return model.Txn{}, fmt.Errorf("pgsource: set lock_timeout: %w", unsent(err))
	}
	tx := &sqlTx{ctx: ctx, tx: ptx}
	ferr := fn(tx)
	switch {
	case tx.err != nil:
		return model.Txn{}, fmt.Errorf("pgsource: prepare %s: %w", gid, lockTimeout(unsent(tx.err)))
	case ferr != nil:
		return model.Txn{}, fmt.Errorf("pgsource: prepare %s: transaction rolled back: %w", gid, ferr)
	case len(tx.changes) == 0:
		return model.Txn{}, nil // read-only: nothing to prepare
	}
	txn := model.Txn{Changes: tx.changes}
	if txn.XID, err = currentXID(ctx, ptx, false); err != nil {
		return model.Txn{}, fmt.Errorf("pgsource: read the transaction id: %w", unsent(err))
	}
	if _, err := ptx.Exec(ctx, "PREPARE TRANSACTION "+gidLiteral(gid)); err != nil {
		return model.Txn{}, fmt.Errorf("pgsource: prepare %s: %w", gid, lockTimeout(unsent(err)))
	}
	return txn, nil
}

// lockTimeout marks a lock_timeout error as twopc.ErrLockTimeout.
func lockTimeout(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == lockNotAvailable {
		return fmt.Errorf("%w: %w", twopc.ErrLockTimeout, err)
	}
	return err
}

// finishPrepared runs COMMIT or ROLLBACK PREPARED; no such gid is
// ErrUnknownGID.
func (p *Prepared) finishPrepared(ctx context.Context, verb, gid string) error {
	_, err := p.Pool.Exec(ctx, verb+" PREPARED "+gidLiteral(gid))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == undefinedObject {
		return fmt.Errorf("pgsource: %s prepared %s: %w", strings.ToLower(verb), gid, twopc.ErrUnknownGID)
	}
	if err != nil {
		return fmt.Errorf("pgsource: %s prepared %s: %w", strings.ToLower(verb), gid, err)
	}
	return nil
}

// CommitPrepared implements twopc.Source (LSN 0: see Prepared).
func (p *Prepared) CommitPrepared(ctx context.Context, gid string) (model.LSN, error) {
	return 0, p.finishPrepared(ctx, "COMMIT", gid)
}

// RollbackPrepared implements twopc.Source.
func (p *Prepared) RollbackPrepared(ctx context.Context, gid string) error {
	if err := p.finishPrepared(ctx, "ROLLBACK", gid); err != nil && !errors.Is(err, twopc.ErrUnknownGID) {
		return err
	}
	return nil
}

// Prepared implements twopc.Source: this database's prepared transactions
// (pg_prepared_xacts), sorted.
func (p *Prepared) Prepared(ctx context.Context) ([]string, error) {
	rows, err := p.Pool.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid")
	if err != nil {
		return nil, fmt.Errorf("pgsource: list prepared transactions: %w", err)
	}
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("pgsource: list prepared transactions: %w", err)
	}
	return gids, nil
}
