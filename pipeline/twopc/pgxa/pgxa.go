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
