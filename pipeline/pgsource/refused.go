package pgsource

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"lockstep/pipeline"
)

// RefusedError is the source turning the capture away for a reason only
// its operator can fix: the login, a privilege, the server's settings, a
// database that does not exist. Asking again gets the same answer, so it
// wraps pipeline.ErrSourceRefused and the capture stops on it with Hint,
// instead of retrying five times a second for ever (seen with a wrong
// password, wal_level=replica and a user who may not create the
// publication).
type RefusedError struct {
	Err  error
	Hint string // what to do about it
}

func (e *RefusedError) Error() string { return e.Err.Error() + "; " + e.Hint }

func (e *RefusedError) Unwrap() []error { return []error{e.Err, pipeline.ErrSourceRefused} }

// publicationHint is what to do when the capture may not create its
// publication.
const publicationHint = "the user may not create the publication (FOR ALL TABLES needs a superuser on PostgreSQL 15): " +
	"create one as a superuser (CREATE PUBLICATION lockstep FOR ALL TABLES, or FOR TABLE ...) and pass its name with --publication"

// refused wraps err in a *RefusedError when PostgreSQL's answer in it is one
// that no retry changes; other errors come back as they are.
func refused(err error) error {
	var pgErr *pgconn.PgError
	if err == nil || !errors.As(err, &pgErr) {
		return err
	}
	if _, done := errors.AsType[*RefusedError](err); done {
		return err
	}
	hint := ""
	switch {
	case pgErr.Code == "28P01" || pgErr.Code == "28000": // invalid_password, invalid_authorization_specification
		hint = "the source refused the login: check the user and password in --source (and pg_hba.conf for replication connections)"
	case pgErr.Code == "3D000": // invalid_catalog_name
		hint = "the database in --source does not exist"
	case pgErr.Code == "42501" && strings.Contains(strings.ToLower(pgErr.Message), "publication"):
		hint = publicationHint
	case pgErr.Code == "42501":
		hint = "the user lacks a privilege the capture needs (REPLICATION, and SELECT on the captured tables)"
	case pgErr.Code == "55000" && strings.Contains(pgErr.Message, "wal_level"):
		hint = "logical decoding is off: set wal_level = logical in postgresql.conf and restart PostgreSQL"
	default:
		return err
	}
	return &RefusedError{Err: err, Hint: hint}
}
