package pgstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/store"
)

// Replica is a transactional replica database (model.Replica) in
// PostgreSQL: a copy of the source's tables. Safe for concurrent use;
// concurrent Apply calls serialise on the position row.
//
// Its tables live in the schema Prefix+"replica" (lockstep_replica by
// default), one per source table, under lockstep's name for it ("users",
// "app.scratch"). A batch that resets the store (a snapshot, a rebuild)
// gives it the tables of the definitions the snapshot carries
// (model.Txn.Schema): the source's columns with their types, its primary
// key and its unique constraints. Two columns are lockstep's own:
// lockstep_lsn, the commit LSN that wrote the row (its version, for the
// guard that skips a change the replica holds already), and, in a table
// whose source has no primary key (named by whole rows, under REPLICA
// IDENTITY FULL), lockstep_key, the whole-row key, as its primary key.
// Prefix+"replica_tables" lists the definitions the tables were made from.
//
// Unique constraints are DEFERRABLE INITIALLY DEFERRED: PostgreSQL checks
// them when the batch's transaction commits, so the changes of a source
// transaction apply in any order, one row at a time. A transaction that
// swapped two rows' values cannot be applied row by row under a constraint
// checked at each row, in any order (one of the two writes comes first),
// and one that moved a value to a row it touched before deleting the row
// that held it fails in the net order; checked at commit, both pass, and
// a state the source could not have committed is still refused. The
// primary key stays immediate: a net transaction writes each key once.
//
// A table created after the snapshot is made from the definition the
// stream carries with the first transaction that changes it (Txn.Schema,
// from pgoutput's Relation messages: columns, types and key, no unique
// constraints), and a column added to a table later gets its type the
// same way. A change to a table the replica has no definition for at all
// (a log written without definitions) creates one from the change:
// lockstep_key text as the key and a text column per column seen; a
// column a table lacks is added as text. Values are written as
// text and cast to the column's type, and read back in text form, as
// pgoutput sends them.
//
// A reset never shows a reader a torn replica. DDL is not MVCC-safe in
// PostgreSQL: a reader whose snapshot predates a DROP and CREATE TABLE
// that committed finds the new table (names are looked up in the catalog
// as it is now), all of whose rows are invisible to it, beside the old
// position. So a reset deletes the rows of tables whose definitions stay
// (DELETE is MVCC-safe: older snapshots still see them) and drops a table
// only when its definition changed or went, holding the definitions'
// table (Prefix+"replica_tables") ACCESS EXCLUSIVE until it commits. A
// whole read (ReadAll, BeginRead) locks that table ACCESS SHARE before its
// first query, which takes its snapshot: the reset waits for readers that
// started before it, and readers that come during it wait for it. An
// application that reads several replica tables in one REPEATABLE READ
// transaction does the same to be safe across a rebuild that changed
// table definitions:
//
//	BEGIN ISOLATION LEVEL REPEATABLE READ;
//	LOCK TABLE lockstep_replica_tables IN ACCESS SHARE MODE;
//	SELECT ... FROM lockstep_replica.users ...;
type Replica struct {
	t         *tables // the position; t.docs is the definitions' table
	schema    string  // the data schema's name
	immediate bool
	blind     bool
	ddlReset  bool
}

var (
	_ pipeline.Store       = (*Replica)(nil)
	_ pipeline.DirectStore = (*Replica)(nil)
)

// Lockstep's own columns in every replica table.
const (
	lsnColumn = "lockstep_lsn"
	keyColumn = "lockstep_key"
)

// NewReplica creates the replica's schema Prefix+"replica", its
// definitions' table Prefix+"replica_tables" and its position table
// Prefix+"replica_position" (one row) when missing.
func NewReplica(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Replica, error) {
	t, base, err := newTables(pool, model.Replica, opts)
	if err != nil {
		return nil, err
	}
	t.docs = pgx.Identifier{base + "_tables"}.Sanitize()
	r := &Replica{t: t, schema: base, immediate: opts.ImmediateUnique, blind: opts.Blind, ddlReset: opts.DDLReset}
	t.docsSchema = fmt.Sprintf(`
CREATE SCHEMA IF NOT EXISTS %s;
CREATE TABLE IF NOT EXISTS %s (
	name text PRIMARY KEY,
	def jsonb NOT NULL,
	inferred boolean NOT NULL DEFAULT false
);`, pgx.Identifier{base}.Sanitize(), t.docs)
	if err := t.create(ctx, t.docsSchema+t.posSchema()); err != nil {
		return nil, err
	}
	return r, nil
}

// relation is one replica table: the definition it was made from and how
// a change's key maps to its columns.
type relation struct {
	def      model.Table
	inferred bool   // made from changes, not from a source's definition
	ident    string // quoted schema.table
}

// wholeRow tells a table keyed by lockstep_key: no primary key at the
// source, or no definition.
func (r *relation) wholeRow() bool { return len(r.def.Key) == 0 }

// keyColumns are the replica's key columns.
func (r *relation) keyColumns() []model.Column {
	if r.wholeRow() {
		return []model.Column{{Name: keyColumn, Type: "text"}}
	}
	out := make([]model.Column, len(r.def.Key))
	for i, k := range r.def.Key {
		out[i], _ = r.def.Column(k)
	}
	return out
}

// dataColumns are the columns a change's Row fills: the non-key ones (all
// of them in a whole-row table).
func (r *relation) dataColumns() []model.Column {
	var out []model.Column
	for _, c := range r.def.Columns {
		if !slices.Contains(r.def.Key, c.Name) {
			out = append(out, c)
		}
	}
	return out
}

// keyValues splits a change's key into the key columns' values: the
// primary key's values joined with "," (pgsource's naming), or the whole
// key for lockstep_key.
func (r *relation) keyValues(pk string) ([]string, error) {
	if r.wholeRow() || len(r.def.Key) == 1 {
		return []string{pk}, nil
	}
	vals := strings.SplitN(pk, ",", len(r.def.Key))
	if len(vals) != len(r.def.Key) {
		return nil, fmt.Errorf("key %q of %s does not split into its %d key columns", pk, r.def.Name, len(r.def.Key))
	}
	return vals, nil
}

func typeOf(c model.Column) string {
	if c.Type == "" {
		return "text"
	}
	return c.Type
}

// cast is a parameter written as text and cast to the column's type.
func cast(n int, c model.Column) string {
	return "$" + strconv.Itoa(n) + "::text::" + typeOf(c)
}

// createSQL is the statement that creates r's table.
func (r *relation) createSQL(immediate bool) string {
	var defs []string
	for _, c := range r.def.Columns {
		defs = append(defs, pgx.Identifier{c.Name}.Sanitize()+" "+typeOf(c))
	}
	if r.wholeRow() {
		defs = append(defs, keyColumn+" text")
	}
	defs = append(defs, lsnColumn+" bigint NOT NULL")
	var key []string
	for _, c := range r.keyColumns() {
		key = append(key, pgx.Identifier{c.Name}.Sanitize())
	}
	defs = append(defs, "PRIMARY KEY ("+strings.Join(key, ", ")+")")
	when := " DEFERRABLE INITIALLY DEFERRED"
	if immediate {
		when = "" // Broken: checked at every row (unique-row-by-row).
	}
	for _, u := range r.def.Unique {
		cols := make([]string, len(u))
		for i, c := range u {
			cols[i] = pgx.Identifier{c}.Sanitize()
		}
		defs = append(defs, "UNIQUE ("+strings.Join(cols, ", ")+")"+when)
	}
	return "CREATE TABLE " + r.ident + " (" + strings.Join(defs, ", ") + ")"
}

func (r *Replica) relation(def model.Table, inferred bool) *relation {
	return &relation{def: def, inferred: inferred, ident: pgx.Identifier{r.schema, def.Name}.Sanitize()}
}

// define creates a table from def and records def.
func (r *Replica) define(ctx context.Context, tx pgx.Tx, def model.Table, inferred bool) (*relation, error) {
	if !inferred { // an inferred one may have no columns yet: a row of NULLs
		if err := def.Check(); err != nil {
			return nil, err
		}
	}
	for _, c := range def.Columns {
		if c.Name == lsnColumn || c.Name == keyColumn {
			return nil, fmt.Errorf("table %s: column %s is the replica's own", def.Name, c.Name)
		}
	}
	rel := r.relation(def, inferred)
	if _, err := tx.Exec(ctx, rel.createSQL(r.immediate)); err != nil {
		return nil, fmt.Errorf("create table %s: %w", def.Name, err)
	}
	if err := r.record(ctx, tx, rel); err != nil {
		return nil, err
	}
	return rel, nil
}

// record saves rel's definition.
func (r *Replica) record(ctx context.Context, tx pgx.Tx, rel *relation) error {
	js, err := json.Marshal(rel.def)
	if err != nil {
		return fmt.Errorf("table %s: %w", rel.def.Name, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+r.t.docs+` (name, def, inferred) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET def = excluded.def, inferred = excluded.inferred`, rel.def.Name, string(js), rel.inferred); err != nil {
		return fmt.Errorf("record table %s: %w", rel.def.Name, err)
	}
	return nil
}

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// relations reads the definitions of the replica's tables.
func (r *Replica) relations(ctx context.Context, q querier) (map[string]*relation, error) {
	rows, err := q.Query(ctx, `SELECT def::text, inferred FROM `+r.t.docs+` ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read the table definitions: %w", err)
	}
	defer rows.Close()
	out := map[string]*relation{}
	for rows.Next() {
		var js string
		var inferred bool
		if err := rows.Scan(&js, &inferred); err != nil {
			return nil, err
		}
		var def model.Table
		if err := json.Unmarshal([]byte(js), &def); err != nil {
			return nil, fmt.Errorf("a table definition %s: %w", js, err)
		}
		out[def.Name] = r.relation(def, inferred)
	}
	return out, rows.Err()
}

// announce creates the tables a streamed transaction defines (Txn.Schema)
// that the replica has none of: tables created after the snapshot. A
// snapshot's definitions are taken by the reset.
func (r *Replica) announce(ctx context.Context, tx pgx.Tx, rels map[string]*relation, t model.Txn) error {
	if t.Snapshot {
		return nil
	}
	for _, def := range t.Schema {
		if _, ok := rels[def.Name]; ok {
			continue
		}
		rel, err := r.define(ctx, tx, def, false)
		if err != nil {
			return err
		}
		rels[def.Name] = rel
	}
	return nil
}

// fit makes sure rels has a table for c that has every column c's row
// names: it creates one from the change (text columns, lockstep_key) or
// adds the missing columns, with the type schema (the transaction's
// definitions) gives them, else as text.
func (r *Replica) fit(ctx context.Context, tx pgx.Tx, rels map[string]*relation, c model.Change, schema []model.Table) (*relation, error) {
	rel, ok := rels[c.Table]
	if !ok {
		if c.Op == model.OpDelete {
			return nil, nil // a table never seen: there is nothing to delete
		}
		def := model.Table{Name: c.Table}
		for _, col := range c.Row.Columns() {
			def.Columns = append(def.Columns, model.Column{Name: col, Type: "text"})
		}
		var err error
		if rel, err = r.define(ctx, tx, def, true); err != nil {
			return nil, err
		}
		rels[c.Table] = rel
		return rel, nil
	}
	var missing []string
	for _, col := range c.Row.Columns() {
		if _, has := rel.def.Column(col); !has {
			missing = append(missing, col)
		}
	}
	if len(missing) == 0 {
		return rel, nil
	}
	def := rel.def.Clone()
	for _, col := range missing {
		if col == lsnColumn || col == keyColumn {
			return nil, fmt.Errorf("table %s: column %s is the replica's own", def.Name, col)
		}
		added := model.Column{Name: col, Type: "text"}
		if i := slices.IndexFunc(schema, func(t model.Table) bool { return t.Name == c.Table }); i >= 0 && !rel.inferred {
			if typed, ok := schema[i].Column(col); ok {
				added = typed
			}
		}
		if _, err := tx.Exec(ctx, `ALTER TABLE `+rel.ident+` ADD COLUMN `+pgx.Identifier{col}.Sanitize()+` `+typeOf(added)); err != nil {
			return nil, fmt.Errorf("table %s: add column %s: %w", def.Name, col, err)
		}
		def.Columns = append(def.Columns, added)
	}
	rel = r.relation(def, rel.inferred)
	if err := r.record(ctx, tx, rel); err != nil {
		return nil, err
	}
	rels[c.Table] = rel
	return rel, nil
}

// queueChange queues the statement that applies c at lsn to rel's table,
// with the version guard unless guarded is false.
func queueChange(b *pgx.Batch, rel *relation, c model.Change, lsn model.LSN, guarded bool) error {
	l, err := lsnArg(lsn)
	if err != nil {
		return err
	}
	keyCols := rel.keyColumns()
	keyVals, err := rel.keyValues(c.PK)
	if err != nil {
		return err
	}
	args := make([]any, 0, len(rel.def.Columns)+3)
	var where []string
	for i, kc := range keyCols {
		args = append(args, keyVals[i])
		where = append(where, pgx.Identifier{kc.Name}.Sanitize()+" = "+cast(len(args), kc))
	}
	if c.Op == model.OpDelete {
		args = append(args, !guarded, l)
		b.Queue(`DELETE FROM `+rel.ident+` WHERE `+strings.Join(where, " AND ")+
			` AND ($`+strconv.Itoa(len(args)-1)+` OR `+lsnColumn+` < $`+strconv.Itoa(len(args))+`)`, args...)
		return nil
	}
	var names, vals, sets, conflict []string
	for i, kc := range keyCols {
		q := pgx.Identifier{kc.Name}.Sanitize()
		names, vals, conflict = append(names, q), append(vals, cast(i+1, kc)), append(conflict, q)
	}
	for _, dc := range rel.dataColumns() {
		if v, ok := c.Row.Lookup(dc.Name); ok {
			args = append(args, v)
		} else {
			args = append(args, nil) // NULL: a row image names every non-NULL column
		}
		q := pgx.Identifier{dc.Name}.Sanitize()
		names, vals, sets = append(names, q), append(vals, cast(len(args), dc)), append(sets, q+" = excluded."+q)
	}
	args = append(args, l, !guarded)
	names, vals = append(names, lsnColumn), append(vals, "$"+strconv.Itoa(len(args)-1)+"::bigint")
	sets = append(sets, lsnColumn+" = excluded."+lsnColumn)
	b.Queue(`INSERT INTO `+rel.ident+` AS d (`+strings.Join(names, ", ")+`) VALUES (`+strings.Join(vals, ", ")+`)
ON CONFLICT (`+strings.Join(conflict, ", ")+`) DO UPDATE SET `+strings.Join(sets, ", ")+`
WHERE $`+strconv.Itoa(len(args))+` OR d.`+lsnColumn+` < excluded.`+lsnColumn, args...)
	return nil
}

// selectSQL reads rel's rows: key columns, data columns, lockstep_lsn, in
// text form.
func (rel *relation) selectSQL() string {
	var cols []string
	for _, c := range rel.keyColumns() {
		cols = append(cols, pgx.Identifier{c.Name}.Sanitize())
	}
	for _, c := range rel.dataColumns() {
		cols = append(cols, pgx.Identifier{c.Name}.Sanitize())
	}
	return `SELECT ` + strings.Join(cols, ", ") + `, ` + lsnColumn + `::text FROM ` + rel.ident
}

// scan turns a row of selectSQL into the change's key, row and version.
func (rel *relation) scan(vals [][]byte) (string, model.Row, model.LSN, error) {
	nk := len(rel.keyColumns())
	data := rel.dataColumns()
	if len(vals) != nk+len(data)+1 {
		return "", nil, 0, fmt.Errorf("table %s: %d columns read, want %d", rel.def.Name, len(vals), nk+len(data)+1)
	}
	keys := make([]string, nk)
	for i := range keys {
		keys[i] = string(vals[i])
	}
	row := model.Row{}
	for i, c := range data {
		if v := vals[nk+i]; v != nil {
			row.Set(c.Name, string(v))
		}
	}
	lsn, err := strconv.ParseInt(string(vals[len(vals)-1]), 10, 64)
	if err != nil {
		return "", nil, 0, fmt.Errorf("table %s: version %q: %w", rel.def.Name, vals[len(vals)-1], err)
	}
	return strings.Join(keys, ","), row, model.LSN(lsn), nil
}

// whereKey is the condition that picks the row of a key, its parameters
// numbered from 1.
func (rel *relation) whereKey(pk string) (string, []any, error) {
	vals, err := rel.keyValues(pk)
	if err != nil {
		return "", nil, err
	}
	var where []string
	args := make([]any, len(vals))
	for i, kc := range rel.keyColumns() {
		args[i] = vals[i]
		where = append(where, pgx.Identifier{kc.Name}.Sanitize()+" = "+cast(i+1, kc))
	}
	return " WHERE " + strings.Join(where, " AND "), args, nil
}

// readRow reads one row through q.
func (rel *relation) readRow(ctx context.Context, q querier, pk string) (model.Row, model.LSN, bool, error) {
	where, args, err := rel.whereKey(pk)
	if err != nil {
		return nil, 0, false, err
	}
	rows, err := q.Query(ctx, rel.selectSQL()+where, append([]any{textResults}, args...)...)
	if err != nil {
		return nil, 0, false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, 0, false, rows.Err()
	}
	_, row, lsn, err := rel.scan(rows.RawValues())
	if err != nil {
		return nil, 0, false, err
	}
	return row, lsn, true, rows.Err()
}

// textResults asks for every result column in text form, as pgoutput
// sends values.
var textResults = pgx.QueryResultFormats{pgx.TextFormatCode}

// reset empties the replica for a rebuild and gives it the tables of
// schema, without a torn state for any reader (see Replica): a table whose
// definition stays keeps its table and loses its rows (DELETE); one whose
// definition changed or went, or that is gone already, is dropped under
// the definitions' table's ACCESS EXCLUSIVE lock, taken before any DROP;
// so is a table no definition lists; then the tables schema has and the
// replica lacks are created.
func (r *Replica) reset(ctx context.Context, tx pgx.Tx, schema []model.Table) (map[string]*relation, error) {
	if r.ddlReset {
		return r.resetByDDL(ctx, tx, schema)
	}
	// The schema may have been dropped under the store.
	if _, err := tx.Exec(ctx, r.t.docsSchema); err != nil {
		return nil, fmt.Errorf("create the schema: %w", err)
	}
	old, err := r.relations(ctx, tx)
	if err != nil {
		return nil, err
	}
	gone, err := r.missingTables(ctx, tx)
	if err != nil {
		return nil, err
	}
	want := model.SchemaOf(schema)
	rels := map[string]*relation{}
	var drop []*relation
	for _, name := range sortedNames(old) {
		rel := old[name]
		if def, ok := want[name]; ok && !rel.inferred && !slices.Contains(gone, name) && sameTable(rel.def, def) {
			rels[name] = rel
			continue
		}
		drop = append(drop, rel)
	}
	orphans, err := r.unlistedTables(ctx, tx)
	if err != nil {
		return nil, err
	}
	for _, name := range orphans {
		drop = append(drop, r.relation(model.Table{Name: name}, true))
	}
	if len(drop) > 0 {
		if _, err := tx.Exec(ctx, `LOCK TABLE `+r.t.docs+` IN ACCESS EXCLUSIVE MODE`); err != nil {
			return nil, fmt.Errorf("lock the table definitions against readers: %w", err)
		}
		for _, rel := range drop {
			if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+rel.ident); err != nil {
				return nil, fmt.Errorf("drop table %s: %w", rel.def.Name, err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM `+r.t.docs+` WHERE name = $1`, rel.def.Name); err != nil {
				return nil, fmt.Errorf("forget table %s: %w", rel.def.Name, err)
			}
		}
	}
	for _, name := range sortedNames(rels) {
		if _, err := tx.Exec(ctx, `DELETE FROM `+rels[name].ident); err != nil {
			return nil, fmt.Errorf("empty table %s: %w", name, err)
		}
	}
	for _, def := range schema {
		if _, ok := rels[def.Name]; ok {
			continue
		}
		rel, err := r.define(ctx, tx, def, false)
		if err != nil {
			return nil, err
		}
		rels[def.Name] = rel
	}
	return rels, nil
}

// resetByDDL is the reset-by-ddl bug's reset: it drops the schema and
// creates every table of schema again, with no lock readers take.
func (r *Replica) resetByDDL(ctx context.Context, tx pgx.Tx, schema []model.Table) (map[string]*relation, error) {
	if _, err := tx.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{r.schema}.Sanitize()+` CASCADE`); err != nil {
		return nil, fmt.Errorf("drop the tables: %w", err)
	}
	if _, err := tx.Exec(ctx, r.t.docsSchema); err != nil {
		return nil, fmt.Errorf("recreate the schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM `+r.t.docs); err != nil {
		return nil, fmt.Errorf("forget the table definitions: %w", err)
	}
	rels := map[string]*relation{}
	for _, def := range schema {
		rel, err := r.define(ctx, tx, def, false)
		if err != nil {
			return nil, err
		}
		rels[def.Name] = rel
	}
	return rels, nil
}

// sameTable tells whether two definitions make the same table.
func sameTable(a, b model.Table) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ja, jb)
}

// unlistedTables lists the tables of the replica's schema that no
// definition names (the definitions' table was dropped under the store).
func (r *Replica) unlistedTables(ctx context.Context, q querier) ([]string, error) {
	return tableNames(ctx, q, "look for unlisted tables", `SELECT tablename::text FROM pg_tables WHERE schemaname = $1
AND tablename NOT IN (SELECT name FROM `+r.t.docs+`) ORDER BY 1`, r.schema)
}

// missingTables lists the tables the definitions name that do not exist
// (dropped under the store).
func (r *Replica) missingTables(ctx context.Context, q querier) ([]string, error) {
	return tableNames(ctx, q, "look for the tables", `SELECT name FROM `+r.t.docs+` WHERE to_regclass(format('%I.%I', $1::text, name)) IS NULL ORDER BY name`, r.schema)
}

// tableNames runs a query of one text column, what saying what for.
func tableNames(ctx context.Context, q querier, what, sql string, args ...any) ([]string, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return names, nil
}

// apply writes txns in tx: unchanged columns resolved from the rows held,
// then every change with the guard unless blind.
func (r *Replica) apply(ctx context.Context, tx pgx.Tx, rels map[string]*relation, txns []model.Txn, guarded bool) (*pgx.Batch, error) {
	txns, err := store.ResolveUnchanged(txns, func(keys []model.Key) (map[model.Key]model.Row, error) {
		out := map[model.Key]model.Row{}
		for _, k := range keys {
			rel, ok := rels[k.Table]
			if !ok {
				continue
			}
			row, _, found, err := rel.readRow(ctx, tx, k.PK)
			if err != nil {
				return nil, err
			}
			if found {
				out[k] = row
			}
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	batch := &pgx.Batch{}
	for _, t := range txns {
		if err := r.announce(ctx, tx, rels, t); err != nil {
			return nil, err
		}
		for _, c := range t.Changes {
			if c.OldPK != "" && c.OldPK != c.PK {
				old := model.Change{Table: c.Table, PK: c.OldPK, Op: model.OpDelete}
				if rel := rels[c.Table]; rel != nil {
					if err := queueChange(batch, rel, old, t.CommitLSN, guarded); err != nil {
						return nil, err
					}
				}
			}
			rel, err := r.fit(ctx, tx, rels, c, t.Schema)
			if err != nil {
				return nil, err
			}
			if rel == nil {
				continue
			}
			if err := queueChange(batch, rel, c, t.CommitLSN, guarded); err != nil {
				return nil, err
			}
		}
	}
	return batch, nil
}

// Kind implements pipeline.Store.
func (r *Replica) Kind() model.StoreKind { return model.Replica }

// Position implements pipeline.Store.
func (r *Replica) Position(ctx context.Context) (model.Position, bool, error) {
	pos, ok, err := r.position(ctx, nil, "")
	if err != nil {
		return pos, ok, fmt.Errorf("pgstore: replica: read position: %w", err)
	}
	return pos, ok, nil
}

// position is the saved position, read through tx when set; none when a
// table the definitions list is gone (dropped under the store, its rows
// with it), so the applier rebuilds the replica rather than carry on.
func (r *Replica) position(ctx context.Context, tx pgx.Tx, lock string) (model.Position, bool, error) {
	pos, has, err := r.t.position(ctx, tx, lock)
	if err != nil || !has {
		return pos, has, err
	}
	var q querier = r.t.pool
	if tx != nil {
		q = tx
	}
	missing, err := r.missingTables(ctx, q)
	if err != nil {
		return model.Position{}, false, err
	}
	if len(missing) > 0 {
		return model.Position{}, false, nil
	}
	return pos, true, nil
}

// Apply implements pipeline.Store: in one transaction it locks the position
// row (SELECT ... FOR UPDATE), refuses the batch when Base is set and is not
// the saved position, on Reset drops the tables and creates them from the
// definitions of the snapshot that starts the batch, applies every change
// with the version guard (unless Blind) and saves the new position. The
// deferred unique constraints are checked at commit: a batch that breaks
// one fails whole (SQLSTATE 23505).
func (r *Replica) Apply(ctx context.Context, b pipeline.Batch) error {
	err := pgx.BeginFunc(ctx, r.t.pool, func(tx pgx.Tx) error {
		at, has, err := r.position(ctx, tx, "FOR UPDATE")
		if err != nil {
			return err
		}
		if b.Refuses(at, has) {
			return batchMismatch(at, has, b)
		}
		var rels map[string]*relation
		if b.Reset {
			var schema []model.Table
			if len(b.Txns) > 0 {
				schema = b.Txns[0].Schema
			}
			rels, err = r.reset(ctx, tx, schema)
		} else {
			rels, err = r.relations(ctx, tx)
		}
		if err != nil {
			return err
		}
		batch, err := r.apply(ctx, tx, rels, b.Txns, !r.blind)
		if err != nil {
			return err
		}
		if err := r.t.queueSetPos(batch, b.Position); err != nil {
			return err
		}
		return send(ctx, tx, batch)
	})
	if err != nil {
		return fmt.Errorf("pgstore: replica: apply up to %s: %w", b.Position, err)
	}
	return nil
}

// Write implements pipeline.DirectStore: the transaction's changes as one
// replica transaction of blind writes.
func (r *Replica) Write(ctx context.Context, t model.Txn) error {
	err := pgx.BeginFunc(ctx, r.t.pool, func(tx pgx.Tx) error {
		rels, err := r.relations(ctx, tx)
		if err != nil {
			return err
		}
		batch, err := r.apply(ctx, tx, rels, []model.Txn{t}, false)
		if err != nil {
			return err
		}
		return send(ctx, tx, batch)
	})
	if err != nil {
		return fmt.Errorf("pgstore: replica: write txn %d: %w", t.XID, err)
	}
	return nil
}

// CreateTables creates the tables of defs the replica does not have, as
// an application's migration would for naive dual writes (the pipeline's
// replica takes them from the snapshot instead).
func (r *Replica) CreateTables(ctx context.Context, defs []model.Table) error {
	err := pgx.BeginFunc(ctx, r.t.pool, func(tx pgx.Tx) error {
		rels, err := r.relations(ctx, tx)
		if err != nil {
			return err
		}
		for _, def := range defs {
			if _, ok := rels[def.Name]; ok {
				continue
			}
			if _, err := r.define(ctx, tx, def, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgstore: replica: create tables: %w", err)
	}
	return nil
}

// Tables returns the definitions the replica's tables were made from, by
// name; inferred ones (made from changes) are marked with no key.
func (r *Replica) Tables(ctx context.Context) ([]model.Table, error) {
	rels, err := r.relations(ctx, r.t.pool)
	if err != nil {
		return nil, fmt.Errorf("pgstore: replica: %w", err)
	}
	out := make([]model.Table, 0, len(rels))
	for _, name := range sortedNames(rels) {
		out = append(out, rels[name].def)
	}
	return out, nil
}

func sortedNames(rels map[string]*relation) []string {
	names := make([]string, 0, len(rels))
	for n := range rels {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Read returns one document: the row's model.Row encoding and version.
func (r *Replica) Read(ctx context.Context, k model.Key) (model.Doc, bool, error) {
	var js string
	err := r.t.pool.QueryRow(ctx, `SELECT def::text FROM `+r.t.docs+` WHERE name = $1`, k.Table).Scan(&js)
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Doc{}, false, nil
	}
	if err != nil {
		return model.Doc{}, false, fmt.Errorf("pgstore: replica: read %s: %w", k, err)
	}
	var def model.Table
	if err := json.Unmarshal([]byte(js), &def); err != nil {
		return model.Doc{}, false, fmt.Errorf("pgstore: replica: read %s: definition: %w", k, err)
	}
	row, lsn, found, err := r.relation(def, false).readRow(ctx, r.t.pool, k.PK)
	if err != nil {
		return model.Doc{}, false, fmt.Errorf("pgstore: replica: read %s: %w", k, err)
	}
	if !found {
		return model.Doc{}, false, nil
	}
	return model.Doc{Value: row.Encode(), LSN: lsn}, true, nil
}

// ReadAll returns every row of every table as documents, and the
// position, from one snapshot of the database: BeginRead, then Finish.
func (r *Replica) ReadAll(ctx context.Context) (model.Snapshot, error) {
	w, err := r.BeginRead(ctx)
	if err != nil {
		return model.Snapshot{}, err
	}
	return w.Finish(ctx)
}

// WholeRead is a whole read of the replica under way: a repeatable-read,
// read-only transaction that has taken its snapshot (the position and the
// table definitions) and not yet read the rows.
type WholeRead struct {
	r    *Replica
	tx   pgx.Tx
	snap model.Snapshot
	rels map[string]*relation
}

// BeginRead starts a whole read: it locks the definitions' table ACCESS
// SHARE before the first query takes the transaction's snapshot, so that
// no reset that drops tables commits between the snapshot and the rows
// (see Replica), then reads the position and the definitions. Finish ends
// it.
func (r *Replica) BeginRead(ctx context.Context) (*WholeRead, error) {
	tx, err := r.t.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("pgstore: replica: read all: %w", err)
	}
	w := &WholeRead{r: r, tx: tx, snap: model.Snapshot{Store: r.t.name, Docs: model.Docs{}}}
	err = func() error {
		if _, err := tx.Exec(ctx, `LOCK TABLE `+r.t.docs+` IN ACCESS SHARE MODE`); err != nil {
			return fmt.Errorf("lock the table definitions: %w", err)
		}
		var err error
		if w.snap.Position, w.snap.HasPosition, err = r.position(ctx, tx, ""); err != nil {
			return err
		}
		w.rels, err = r.relations(ctx, tx)
		return err
	}()
	if err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("pgstore: replica: read all: %w", err)
	}
	return w, nil
}

// Finish reads every row of every table and ends the read.
func (w *WholeRead) Finish(ctx context.Context) (model.Snapshot, error) {
	defer func() { _ = w.tx.Rollback(ctx) }() // read-only: nothing to commit
	for _, name := range sortedNames(w.rels) {
		if err := w.readTable(ctx, name); err != nil {
			return model.Snapshot{}, fmt.Errorf("pgstore: replica: read all: %w", err)
		}
	}
	return w.snap, nil
}

func (w *WholeRead) readTable(ctx context.Context, name string) error {
	rel := w.rels[name]
	rows, err := w.tx.Query(ctx, rel.selectSQL(), textResults)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		pk, row, lsn, err := rel.scan(rows.RawValues())
		if err != nil {
			return err
		}
		w.snap.Docs[model.Key{Table: name, PK: pk}] = model.Doc{Value: row.Encode(), LSN: lsn}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

// Clear empties every table and drops the position; the tables stay.
// DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe, and a reader whose
// snapshot came before it would see the tables empty beside the old
// position.
func (r *Replica) Clear(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, r.t.pool, func(tx pgx.Tx) error {
		rels, err := r.relations(ctx, tx)
		if err != nil {
			return err
		}
		for _, name := range sortedNames(rels) {
			if _, err := tx.Exec(ctx, `DELETE FROM `+rels[name].ident); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE `+r.t.pos+` SET has_pos = false, off = 0, lsn = 0 WHERE id = 1`)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: replica: clear: %w", err)
	}
	return nil
}
