// Package pgxa is what every PostgreSQL participant of two-phase commit
// shares (the source in pgsource, the replica and the search index in
// pgstore): a transaction prepared under a gid, COMMIT and ROLLBACK
// PREPARED, pg_prepared_xacts, and PostgreSQL's errors as twopc's.
package pgxa

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
)

// SQLSTATEs PostgreSQL answers with.
const (
	lockNotAvailable = "55P03" // lock_timeout passed
	undefinedObject  = "42704" // no prepared transaction of that gid
)

// DefaultLockTimeout is a participant's lock_timeout when none is set.
const DefaultLockTimeout = 500 * time.Millisecond

// PostgreSQL's transaction identifiers are the whole cluster's, while one
// 2PC transaction prepares on several participants under one gid: each
// participant prepares its branch (XA's branch qualifier) as gid@branch,
// so two participants on one cluster do not collide, and lists only its
// own.
func branchGID(gid, branch string) string { return gid + "@" + branch }

// gidLiteral quotes gid's branch as the SQL string literal PREPARE
// TRANSACTION and its relatives take (they take no parameters).
func gidLiteral(gid, branch string) string {
	return "'" + strings.ReplaceAll(branchGID(gid, branch), "'", "''") + "'"
}

// SetLockTimeout sets tx's lock_timeout (DefaultLockTimeout for 0).
func SetLockTimeout(ctx context.Context, tx pgx.Tx, d time.Duration) error {
	if d == 0 {
		d = DefaultLockTimeout
	}
	_, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", d.Milliseconds()))
	return err
}

// Prepare prepares tx as gid's branch (PREPARE TRANSACTION): it leaves
// the session, durable, holding its locks.
func Prepare(ctx context.Context, tx pgx.Tx, gid, branch string) error {
	_, err := tx.Exec(ctx, "PREPARE TRANSACTION "+gidLiteral(gid, branch))
	return LockTimeout(err)
}

// LockTimeout marks a lock_timeout error as twopc.ErrLockTimeout.
func LockTimeout(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == lockNotAvailable {
		return fmt.Errorf("%w: %w", twopc.ErrLockTimeout, err)
	}
	return err
}

// Querier is a pool or a connection.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func finish(ctx context.Context, q Querier, verb, gid, branch string) error {
	_, err := q.Exec(ctx, verb+" PREPARED "+gidLiteral(gid, branch))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == undefinedObject {
		return fmt.Errorf("%s prepared %s: %w", strings.ToLower(verb), gid, twopc.ErrUnknownGID)
	}
	if err != nil {
		return fmt.Errorf("%s prepared %s: %w", strings.ToLower(verb), gid, err)
	}
	return nil
}

// Commit commits gid's branch (COMMIT PREPARED); twopc.ErrUnknownGID when
// no such prepared transaction exists (PostgreSQL cannot say whether it
// committed or rolled back).
func Commit(ctx context.Context, q Querier, gid, branch string) error {
	return finish(ctx, q, "COMMIT", gid, branch)
}

// Rollback rolls gid's branch back (ROLLBACK PREPARED); nothing when it is
// not prepared.
func Rollback(ctx context.Context, q Querier, gid, branch string) error {
	if err := finish(ctx, q, "ROLLBACK", gid, branch); err != nil && !errors.Is(err, twopc.ErrUnknownGID) {
		return err
	}
	return nil
}

// List is the gids of the branch's prepared transactions in this
// database (pg_prepared_xacts), sorted.
func List(ctx context.Context, q Querier, branch string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT left(gid, -length($1)) FROM pg_prepared_xacts
		WHERE database = current_database() AND right(gid, length($1)) = $1 ORDER BY 1`, "@"+branch)
	if err != nil {
		return nil, fmt.Errorf("list prepared transactions: %w", err)
	}
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list prepared transactions: %w", err)
	}
	slices.Sort(gids) // in Go's order, whatever the database's collation
	return gids, nil
}

// XIDLabel marks, in a version's place, the XID of the transaction that
// wrote a row, where the commit LSN is not known to whoever writes the
// store: PostgreSQL does not tell a client its commit record's LSN, so
// dual writes and two-phase commit label the rows they write with XIDLabel
// | XID (bit 62, beyond any real LSN and within a signed 64-bit column),
// and the harness turns labels into commit LSNs once it read the ground
// truth.
const XIDLabel = model.LSN(1) << 62

// XIDVersion is the label of rows transaction xid wrote.
func XIDVersion(xid uint64) model.LSN { return XIDLabel | model.LSN(xid) }

// XIDStore is a participant whose rows are labelled with their
// transaction's XID (XIDLabel).
type XIDStore struct{ twopc.Store }

// Prepare implements twopc.Store.
func (s XIDStore) Prepare(ctx context.Context, gid string, t model.Txn) error {
	t.CommitLSN = XIDVersion(t.XID)
	return s.Store.Prepare(ctx, gid, t)
}

// XIDCache is a store written after the decision whose rows are labelled
// with their transaction's XID (XIDLabel).
type XIDCache struct{ pipeline.DirectStore }

// Write implements pipeline.DirectStore.
func (s XIDCache) Write(ctx context.Context, t model.Txn) error {
	t.CommitLSN = XIDVersion(t.XID)
	return s.DirectStore.Write(ctx, t)
}

// A call to a PostgreSQL that was cut off waits until TCP gives up, many
// minutes; a transaction manager bounds each call instead, so that a
// prepare that does not answer rolls back (presumed abort) and a commit
// that does not answer is tried again. The simulated participants time out
// on their own.

// BoundedSource is a source whose calls each end after Timeout, except
// Prepare, which runs the application's statements too and ends after
// PrepareTimeout.
type BoundedSource struct {
	twopc.Source
	Timeout, PrepareTimeout time.Duration
}

func bounded[T any](ctx context.Context, d time.Duration, call func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return call(ctx)
}

// Prepare implements twopc.Source.
func (s BoundedSource) Prepare(ctx context.Context, gid string, fn pipeline.TxnFunc) (model.Txn, error) {
	return bounded(ctx, s.PrepareTimeout, func(ctx context.Context) (model.Txn, error) { return s.Source.Prepare(ctx, gid, fn) })
}

// CommitPrepared implements twopc.Source.
func (s BoundedSource) CommitPrepared(ctx context.Context, gid string) (model.LSN, error) {
	return bounded(ctx, s.Timeout, func(ctx context.Context) (model.LSN, error) { return s.Source.CommitPrepared(ctx, gid) })
}

// RollbackPrepared implements twopc.Source.
func (s BoundedSource) RollbackPrepared(ctx context.Context, gid string) error {
	_, err := bounded(ctx, s.Timeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, s.Source.RollbackPrepared(ctx, gid) })
	return err
}

// Prepared implements twopc.Source.
func (s BoundedSource) Prepared(ctx context.Context) ([]string, error) {
	return bounded(ctx, s.Timeout, s.Source.Prepared)
}

// BoundedStore is a store participant whose calls each end after Timeout.
type BoundedStore struct {
	twopc.Store
	Timeout time.Duration
}

// Prepare implements twopc.Store.
func (s BoundedStore) Prepare(ctx context.Context, gid string, t model.Txn) error {
	_, err := bounded(ctx, s.Timeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, s.Store.Prepare(ctx, gid, t) })
	return err
}

// CommitPrepared implements twopc.Store.
func (s BoundedStore) CommitPrepared(ctx context.Context, gid string, lsn model.LSN) error {
	_, err := bounded(ctx, s.Timeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, s.Store.CommitPrepared(ctx, gid, lsn) })
	return err
}

// RollbackPrepared implements twopc.Store.
func (s BoundedStore) RollbackPrepared(ctx context.Context, gid string) error {
	_, err := bounded(ctx, s.Timeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, s.Store.RollbackPrepared(ctx, gid) })
	return err
}

// Prepared implements twopc.Store.
func (s BoundedStore) Prepared(ctx context.Context) ([]string, error) {
	return bounded(ctx, s.Timeout, s.Store.Prepared)
}
