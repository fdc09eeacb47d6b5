package pgsource

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"lockstep/pipeline"
)

// Which tables a Stream captures, and how it names the rows of each.
//
// A row is named by its table's primary key. A table without one is
// captured only under REPLICA IDENTITY FULL, and then all its columns form
// the key (see rowKey); any other keyless table is refused: at CheckTables,
// in a snapshot, and when a change to it arrives, unless the Config's
// filter leaves it out.

// ErrNoTable is wrapped by CheckTables' error when Config.Tables names a
// table the publication does not hold.
var ErrNoTable = errors.New("no such published table")

// NoKeyError is a table lockstep cannot name the rows of: it has neither a
// primary key nor REPLICA IDENTITY FULL. It is the pipeline's, so the
// simulated source refuses such tables in the same words.
type NoKeyError = pipeline.NoKeyError

// normTable is lockstep's name for a table named on the command line:
// "public.t" is "t".
func normTable(name string) string {
	return strings.TrimPrefix(strings.TrimSpace(name), "public.")
}

// filter is the Config's table filter, names normalised.
type filter struct {
	only    map[string]bool // nil: every table
	exclude map[string]bool
}

func newFilter(only, exclude []string) (filter, error) {
	if len(only) > 0 && len(exclude) > 0 {
		return filter{}, errors.New("give the tables to capture or the tables to leave out, not both")
	}
	set := func(names []string) (map[string]bool, error) {
		if len(names) == 0 {
			return nil, nil
		}
		m := map[string]bool{}
		for _, n := range names {
			n = normTable(n)
			if n == "" {
				return nil, errors.New("empty table name")
			}
			m[n] = true
		}
		return m, nil
	}
	var f filter
	var err error
	if f.only, err = set(only); err != nil {
		return filter{}, err
	}
	if f.exclude, err = set(exclude); err != nil {
		return filter{}, err
	}
	return f, nil
}

// captures reports whether the filter lets table's changes through.
func (f filter) captures(table string) bool {
	if f.only != nil {
		return f.only[table]
	}
	return !f.exclude[table]
}

// keyless is the sorted names of the tables whose rows lockstep cannot name.
func keyless(tables []table) []string {
	var names []string
	for _, t := range tables {
		if len(t.key) == 0 {
			names = append(names, TableName(t.schema, t.name))
		}
	}
	slices.Sort(names)
	return names
}

// rowKey is the key of a row of a table without a primary key under
// REPLICA IDENTITY FULL: the row as PostgreSQL writes a row value
// (pipeline.RowKey, shared with the simulated source).
func rowKey(vals []string, null []bool) string { return pipeline.RowKey(vals, null) }

// CheckTables looks at the tables the stream would capture, before it
// creates anything: the publication's tables, or, while the publication
// does not exist, the ones FOR ALL TABLES would publish (permanent tables
// outside the system schemas), less those the filter leaves out. It
// returns their names, sorted; a *NoKeyError naming every one without a
// primary key and without REPLICA IDENTITY FULL; or an error wrapping
// ErrNoTable when Config.Tables names a table that is not published.
// Names in Config.ExcludeTables that match no table are logged as a
// warning. Tables created later are checked when their first change
// arrives.
func (s *Stream) CheckTables(ctx context.Context) (_ []string, err error) {
	defer func() { err = refused(err) }()
	db, err := s.connectSQL(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgsource: check tables: %w", err)
	}
	defer closeQuietly(db)
	tx, err := db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("pgsource: check tables: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // read only
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", s.cfg.Publication).Scan(&exists); err != nil {
		return nil, fmt.Errorf("pgsource: check tables: look for publication %s: %w", s.cfg.Publication, err)
	}
	if !exists {
		// Snapshot would create it FOR ALL TABLES, which PostgreSQL 15
		// allows a superuser only: say so now, before anything else is
		// set up, rather than fail at the snapshot.
		var super bool
		if err := tx.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil {
			return nil, fmt.Errorf("pgsource: check tables: may the user create the publication: %w", err)
		}
		if !super {
			return nil, &RefusedError{Err: fmt.Errorf("pgsource: publication %s does not exist", s.cfg.Publication), Hint: publicationHint}
		}
	}
	var all []table
	if exists {
		all, err = publishedTables(ctx, tx, s.cfg.Publication)
	} else {
		all, err = tablesFor(ctx, tx, allTablesSQL)
	}
	if err != nil {
		return nil, fmt.Errorf("pgsource: check tables: %w", err)
	}
	known := map[string]bool{}
	var captured []table
	var names []string
	for _, t := range all {
		name := TableName(t.schema, t.name)
		known[name] = true
		if s.filter.captures(name) {
			captured = append(captured, t)
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var missing []string
	for n := range s.filter.only {
		if !known[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		where := "publication " + s.cfg.Publication
		if !exists {
			where = "the database (publication " + s.cfg.Publication + " does not exist yet and would hold every table)"
		}
		return nil, fmt.Errorf("pgsource: tables to capture %s are not in %s: %w", strings.Join(missing, ", "), where, ErrNoTable)
	}
	for n := range s.filter.exclude {
		if !known[n] {
			s.log.Warn("pgsource: a table to leave out is not published", "table", n, "publication", s.cfg.Publication)
		}
	}
	if bad := keyless(captured); len(bad) > 0 {
		return nil, &NoKeyError{Tables: bad}
	}
	return names, nil
}
