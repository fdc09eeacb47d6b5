package pgsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
)

// Source is PostgreSQL as application clients see it: a pipeline.Source
// over a connection pool. Its tables have a text primary key column named
// pk and text columns (CreateTables makes them).
//
// The Txn that Exec returns has the transaction's XID (the 32-bit xid that
// pgoutput's Begin carries, so a stream's transaction can be matched with
// it) and the changes it made, each with the row as stored after the write,
// but CommitLSN 0: a client cannot learn its commit record's LSN.
type Source struct {
	Pool *pgxpool.Pool
	// IsoLevel is every transaction's isolation level (default
	// serializable). Serialization failures and deadlocks come back as
	// errors (SQLSTATE 40001, 40P01) that the caller may retry.
	IsoLevel pgx.TxIsoLevel
}

var _ pipeline.Source = (*Source)(nil)

// Exec runs fn in one transaction. When fn returns an error, or one of its
// reads or writes failed, the transaction is rolled back and the error
// returned wrapped, together with what fn wrote before (XID and Changes,
// so a history can name the values that must never be seen). Errors that
// certainly left nothing committed wrap pipeline.ErrUnavailable when the
// connection failed; a commit whose outcome is unknown wraps
// pipeline.ErrTimeout.
func (s *Source) Exec(ctx context.Context, fn pipeline.TxnFunc) (model.Txn, error) {
	iso := s.IsoLevel
	if iso == "" {
		iso = pgx.Serializable
	}
	ptx, err := s.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
	if err != nil {
		return model.Txn{}, fmt.Errorf("pgsource: begin: %w", unsent(err))
	}
	defer ptx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
	tx := &sqlTx{ctx: ctx, tx: ptx}
	ferr := fn(tx)
	if ferr != nil || tx.err != nil {
		aborted := model.Txn{Changes: tx.changes}
		if tx.err == nil {
			aborted.XID, _ = currentXID(ctx, ptx, true)
		}
		if rerr := ptx.Rollback(context.WithoutCancel(ctx)); rerr != nil && tx.err == nil {
			ferr = errors.Join(ferr, fmt.Errorf("roll back: %w", rerr))
		}
		if tx.err != nil {
			if ferr != nil {
				return aborted, fmt.Errorf("pgsource: transaction rolled back: %w (the transaction function returned: %v)", unsent(tx.err), ferr)
			}
			return aborted, fmt.Errorf("pgsource: transaction rolled back: %w", unsent(tx.err))
		}
		return aborted, fmt.Errorf("pgsource: transaction rolled back: %w", ferr)
	}
	txn := model.Txn{Changes: tx.changes}
	if len(tx.changes) > 0 {
		if txn.XID, err = currentXID(ctx, ptx, false); err != nil {
			return model.Txn{}, fmt.Errorf("pgsource: read the transaction id: %w", unsent(err))
		}
	}
	if err := ptx.Commit(ctx); err != nil {
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr), errors.Is(err, pgx.ErrTxCommitRollback):
			return model.Txn{}, fmt.Errorf("pgsource: commit: %w", err)
		case pgconn.SafeToRetry(err):
			return model.Txn{}, fmt.Errorf("pgsource: commit not sent: %w: %w", pipeline.ErrUnavailable, err)
		}
		return model.Txn{}, fmt.Errorf("pgsource: commit of xid %d: %w: %w", txn.XID, pipeline.ErrTimeout, err)
	}
	return txn, nil
}

// unsent marks an error before COMMIT: a server's error is passed on as is,
// a failed connection certainly committed nothing.
func unsent(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", pipeline.ErrUnavailable, err)
}

// currentXID is the transaction's 32-bit xid, the one pgoutput reports (the
// epoch is not on the wire). ifAssigned asks without forcing one: 0 then.
func currentXID(ctx context.Context, tx pgx.Tx, ifAssigned bool) (uint64, error) {
	fn := "pg_current_xact_id()"
	if ifAssigned {
		fn = "pg_current_xact_id_if_assigned()"
	}
	var s *string
	if err := tx.QueryRow(ctx, "SELECT "+fn+"::text").Scan(&s); err != nil {
		return 0, err
	}
	if s == nil {
		return 0, nil
	}
	x, err := strconv.ParseUint(*s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("transaction id %q: %w", *s, err)
	}
	return x & 0xFFFF_FFFF, nil
}

// sqlTx is the pipeline.Tx of one Exec. Its methods cannot return errors,
// so the first failure is kept, later calls do nothing, and Exec reports it.
type sqlTx struct {
	ctx     context.Context
	tx      pgx.Tx
	changes []model.Change
	err     error
}

func (t *sqlTx) fail(op, table, pk string, err error) {
	if t.err == nil {
		t.err = fmt.Errorf("%s %s/%s: %w", op, table, pk, err)
	}
}

// tableIdent quotes lockstep's table name ("table" or "schema.table").
func tableIdent(table string) string {
	if schema, name, ok := strings.Cut(table, "."); ok {
		return pgx.Identifier{schema, name}.Sanitize()
	}
	return pgx.Identifier{table}.Sanitize()
}

// textResults asks for every result column in text form, which is what
// pgoutput sends, so rows read here and rows streamed compare equal.
var textResults = pgx.QueryResultFormats{pgx.TextFormatCode}

func (t *sqlTx) Get(table, pk string) (model.Row, bool) {
	if t.err != nil {
		return nil, false
	}
	rows, err := t.tx.Query(t.ctx, "SELECT * FROM "+tableIdent(table)+" WHERE pk = $1", textResults, pk)
	if err != nil {
		t.fail("get", table, pk, err)
		return nil, false
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			t.fail("get", table, pk, err)
		}
		return nil, false
	}
	return rowOf(rows.FieldDescriptions(), rows.RawValues(), 0), true
}

// rowOf is a result row's non-key, non-NULL columns from index from on.
func rowOf(fields []pgconn.FieldDescription, vals [][]byte, from int) model.Row {
	r := model.Row{}
	for i := from; i < len(fields) && i < len(vals); i++ {
		if fields[i].Name != "pk" && vals[i] != nil {
			r.Set(fields[i].Name, string(vals[i]))
		}
	}
	return r
}

// Put inserts the row or, when pk exists, sets the columns the row names
// (others keep their values). The change recorded carries the row as stored.
func (t *sqlTx) Put(table, pk string, row model.Row) {
	if t.err != nil {
		return
	}
	if _, named := row.Lookup("pk"); named {
		t.fail("put", table, pk, errors.New(`the row names the key column "pk"`))
		return
	}
	names := []string{"pk"}
	params := []string{"$1"}
	sets := make([]string, 0, len(row))
	args := []any{textResults, pk}
	for i, c := range row {
		q := pgx.Identifier{c.Name}.Sanitize()
		names = append(names, q)
		params = append(params, "$"+strconv.Itoa(i+2))
		sets = append(sets, q+" = EXCLUDED."+q)
		args = append(args, c.Value)
	}
	if len(sets) == 0 {
		sets = append(sets, "pk = EXCLUDED.pk") // still an update, as the stream will show
	}
	// xmax is 0 on a freshly inserted row version and our own xid on one
	// that ON CONFLICT locked and updated: that tells insert from update
	// exactly as the WAL records it, even when a concurrent insert won.
	sql := "INSERT INTO " + tableIdent(table) + " (" + strings.Join(names, ", ") + ") VALUES (" + strings.Join(params, ", ") +
		") ON CONFLICT (pk) DO UPDATE SET " + strings.Join(sets, ", ") + " RETURNING (xmax = 0), *"
	rows, err := t.tx.Query(t.ctx, sql, args...)
	if err != nil {
		t.fail("put", table, pk, err)
		return
	}
	defer rows.Close()
	if !rows.Next() {
		err := rows.Err()
		if err == nil {
			err = errors.New("no row returned")
		}
		t.fail("put", table, pk, err)
		return
	}
	vals := rows.RawValues()
	op := model.OpUpdate
	if string(vals[0]) == "t" {
		op = model.OpInsert
	}
	stored := rowOf(rows.FieldDescriptions(), vals, 1)
	rows.Close()
	if err := rows.Err(); err != nil {
		t.fail("put", table, pk, err)
		return
	}
	t.changes = append(t.changes, model.Change{Table: table, PK: pk, Op: op, Row: stored})
}

// Delete removes the row; deleting a missing row changes nothing.
func (t *sqlTx) Delete(table, pk string) {
	if t.err != nil {
		return
	}
	tag, err := t.tx.Exec(t.ctx, "DELETE FROM "+tableIdent(table)+" WHERE pk = $1", pk)
	if err != nil {
		t.fail("delete", table, pk, err)
		return
	}
	if tag.RowsAffected() > 0 {
		t.changes = append(t.changes, model.Change{Table: table, PK: pk, Op: model.OpDelete})
	}
}

// InsertRow appends row to a table without a primary key; the change
// recorded carries the row as stored and its whole-row key (rowKey, every
// column in the table's order).
func (t *sqlTx) InsertRow(table string, row model.Row) {
	if t.err != nil {
		return
	}
	names := make([]string, len(row))
	params := make([]string, len(row))
	args := []any{textResults}
	for i, c := range row {
		names[i] = pgx.Identifier{c.Name}.Sanitize()
		params[i] = "$" + strconv.Itoa(i+1)
		args = append(args, c.Value)
	}
	sql := "INSERT INTO " + tableIdent(table) + " (" + strings.Join(names, ", ") + ") VALUES (" + strings.Join(params, ", ") + ") RETURNING *"
	if len(row) == 0 {
		sql = "INSERT INTO " + tableIdent(table) + " DEFAULT VALUES RETURNING *"
	}
	changes, err := t.wholeRows(table, model.OpInsert, sql, args...)
	if err != nil {
		t.fail("insert row", table, "", err)
		return
	}
	t.changes = append(t.changes, changes...)
}

// DeleteRow deletes every row of a table without a primary key that equals
// row, NULL where row names no column: one change per row deleted, as the
// stream has them.
func (t *sqlTx) DeleteRow(table string, row model.Row) {
	if t.err != nil {
		return
	}
	want, err := json.Marshal(row)
	if err != nil {
		t.fail("delete row", table, "", err)
		return
	}
	// The table's columns are not known here: compare the row as JSON,
	// NULL columns left out, with the wanted one.
	sql := "DELETE FROM " + tableIdent(table) + " AS r WHERE jsonb_strip_nulls(to_jsonb(r)) = $1::jsonb RETURNING *"
	changes, err := t.wholeRows(table, model.OpDelete, sql, textResults, string(want))
	if err != nil {
		t.fail("delete row", table, "", err)
		return
	}
	t.changes = append(t.changes, changes...)
}

// wholeRows runs sql, which returns whole rows of a keyless table, and
// makes a change of op for each: its key is rowKey of every column.
func (t *sqlTx) wholeRows(table string, op model.Op, sql string, args ...any) ([]model.Change, error) {
	rows, err := t.tx.Query(t.ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []model.Change
	for rows.Next() {
		fields, raw := rows.FieldDescriptions(), rows.RawValues()
		vals := make([]string, len(raw))
		null := make([]bool, len(raw))
		stored := model.Row{}
		for i, v := range raw {
			vals[i], null[i] = string(v), v == nil
			if v != nil {
				stored.Set(fields[i].Name, string(v))
			}
		}
		c := model.Change{Table: table, PK: rowKey(vals, null), Op: op}
		if op != model.OpDelete {
			c.Row = stored
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// CreateKeylessTable creates a table without a primary key, its text
// columns in the given order, unless it exists: under REPLICA IDENTITY FULL
// when t.Full (its rows are then named by all their columns), with the
// default identity otherwise (a capture refuses such a table). Its columns
// are STORAGE EXTERNAL, as CreateTables makes them.
func CreateKeylessTable(ctx context.Context, pool *pgxpool.Pool, t pipeline.KeylessTable) error {
	if len(t.Columns) == 0 {
		return fmt.Errorf("pgsource: create table %s: no columns", t.Name)
	}
	defs := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		defs[i] = pgx.Identifier{c}.Sanitize() + " text"
	}
	ident := tableIdent(t.Name)
	stmts := []string{"CREATE TABLE IF NOT EXISTS " + ident + " (" + strings.Join(defs, ", ") + ")"}
	for _, c := range t.Columns { // PostgreSQL 15 takes STORAGE only in ALTER TABLE
		stmts = append(stmts, "ALTER TABLE "+ident+" ALTER COLUMN "+pgx.Identifier{c}.Sanitize()+" SET STORAGE EXTERNAL")
	}
	if t.Full {
		stmts = append(stmts, "ALTER TABLE "+ident+" REPLICA IDENTITY FULL")
	}
	for _, q := range stmts {
		if _, err := pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("pgsource: create keyless table %s: %w", t.Name, err)
		}
	}
	return nil
}

// CreateTables creates each table (a text primary key column named pk and
// the given text columns) unless it exists, as applications have them: the
// default replica identity (the key), so an update that leaves an
// out-of-line value alone sends it as unchanged TOAST, and every text
// column STORAGE EXTERNAL, so a value is out of line exactly when it makes
// the row too long, never compressed back in (the simulated source's rule).
// It creates the publication DefaultPublication FOR ALL TABLES unless it
// exists.
func CreateTables(ctx context.Context, pool *pgxpool.Pool, tables map[string][]string) error {
	names := make([]string, 0, len(tables))
	for t := range tables {
		names = append(names, t)
	}
	slices.Sort(names)
	for _, t := range names {
		defs := []string{"pk text PRIMARY KEY"}
		for _, c := range tables[t] {
			if c == "pk" {
				return fmt.Errorf("pgsource: create table %s: column %q is the key column's name", t, c)
			}
			defs = append(defs, pgx.Identifier{c}.Sanitize()+" text")
		}
		ident := tableIdent(t)
		if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+ident+" ("+strings.Join(defs, ", ")+")"); err != nil {
			return fmt.Errorf("pgsource: create table %s: %w", t, err)
		}
		for _, c := range tables[t] { // PostgreSQL 15 takes STORAGE only here
			if _, err := pool.Exec(ctx, "ALTER TABLE "+ident+" ALTER COLUMN "+pgx.Identifier{c}.Sanitize()+" SET STORAGE EXTERNAL"); err != nil {
				return fmt.Errorf("pgsource: set storage of %s.%s: %w", t, c, err)
			}
		}
	}
	if err := ensurePublication(ctx, pool, DefaultPublication); err != nil {
		return fmt.Errorf("pgsource: %w", err)
	}
	return nil
}

// CreateTable creates a table from its definition unless it exists, as
// CreateTables does for text tables: the key is the one text column pk
// (the Tx methods name rows by it), the unique constraints are the
// definition's (checked at every statement, PostgreSQL's default), text
// columns are STORAGE EXTERNAL. It does not create the publication.
func CreateTable(ctx context.Context, pool *pgxpool.Pool, t model.Table) error {
	if err := t.Check(); err != nil {
		return fmt.Errorf("pgsource: create table: %w", err)
	}
	if len(t.Key) != 1 || t.Key[0] != "pk" {
		return fmt.Errorf("pgsource: create table %s: the key must be the column pk", t.Name)
	}
	var defs []string
	for _, c := range t.Columns {
		typ := c.Type
		if typ == "" {
			typ = "text"
		}
		d := pgx.Identifier{c.Name}.Sanitize() + " " + typ
		if c.Name == "pk" {
			d += " PRIMARY KEY"
		}
		defs = append(defs, d)
	}
	for _, u := range t.Unique {
		cols := make([]string, len(u))
		for i, c := range u {
			cols[i] = pgx.Identifier{c}.Sanitize()
		}
		defs = append(defs, "UNIQUE ("+strings.Join(cols, ", ")+")")
	}
	ident := tableIdent(t.Name)
	if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+ident+" ("+strings.Join(defs, ", ")+")"); err != nil {
		return fmt.Errorf("pgsource: create table %s: %w", t.Name, err)
	}
	for _, c := range t.Columns {
		if c.Name == "pk" || (c.Type != "" && c.Type != "text") {
			continue
		}
		if _, err := pool.Exec(ctx, "ALTER TABLE "+ident+" ALTER COLUMN "+pgx.Identifier{c.Name}.Sanitize()+" SET STORAGE EXTERNAL"); err != nil {
			return fmt.Errorf("pgsource: set storage of %s.%s: %w", t.Name, c.Name, err)
		}
	}
	return nil
}

// Rekey moves a row to a new primary key; moving a missing row changes
// nothing, and a new key that exists fails the transaction (a unique
// violation). The change recorded carries the row as stored and OldPK.
func (t *sqlTx) Rekey(table, pk, newPK string) {
	if t.err != nil || newPK == pk {
		return
	}
	rows, err := t.tx.Query(t.ctx, "UPDATE "+tableIdent(table)+" SET pk = $2 WHERE pk = $1 RETURNING *", textResults, pk, newPK)
	if err != nil {
		t.fail("rekey", table, pk, err)
		return
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			t.fail("rekey", table, pk, err)
		}
		return
	}
	stored := rowOf(rows.FieldDescriptions(), rows.RawValues(), 0)
	rows.Close()
	if err := rows.Err(); err != nil {
		t.fail("rekey", table, pk, err)
		return
	}
	t.changes = append(t.changes, model.Change{Table: table, PK: newPK, OldPK: pk, Op: model.OpUpdate, Row: stored})
}
