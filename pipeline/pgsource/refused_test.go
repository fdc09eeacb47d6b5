package pgsource

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"lockstep/pipeline"
)

// The answers no retry changes become a *RefusedError with what to do;
// everything else (a serialization failure, a broken connection) stays
// transient.
func TestRefusedSortsPermanentAnswers(t *testing.T) {
	for _, c := range []struct {
		code, msg string
		hint      string // "" when transient
	}{
		{"28P01", `password authentication failed for user "app"`, "check the user and password"},
		{"28000", `no pg_hba.conf entry for replication connection`, "check the user and password"},
		{"3D000", `database "nope" does not exist`, "does not exist"},
		{"42501", `must be superuser to create FOR ALL TABLES publication`, "--publication"},
		{"42501", `permission denied for table accounts`, "lacks a privilege"},
		{"55000", `logical decoding requires wal_level >= logical`, "wal_level = logical"},
		{"55000", `replication slot "lockstep" is active for PID 42`, ""},
		{"40001", `could not serialize access`, ""},
	} {
		pgErr := &pgconn.PgError{Code: c.code, Message: c.msg}
		err := refused(fmt.Errorf("pgsource: snapshot: %w", pgErr))
		if got := errors.Is(err, pipeline.ErrSourceRefused); got != (c.hint != "") {
			t.Errorf("%s %q: refused = %v, want %v", c.code, c.msg, got, c.hint != "")
			continue
		}
		if c.hint != "" && (!strings.Contains(err.Error(), c.hint) || !strings.Contains(err.Error(), c.msg) || !errors.Is(err, pgErr)) {
			t.Errorf("%s: %q; want the server's words, the cause and %q", c.code, err, c.hint)
		}
		if again := refused(err); again != err {
			t.Errorf("%s: wrapped twice: %q", c.code, again)
		}
	}
	if err := refused(errors.New("connection reset")); errors.Is(err, pipeline.ErrSourceRefused) {
		t.Error("a broken connection must stay transient")
	}
}
