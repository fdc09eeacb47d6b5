// Package pgstore keeps two of lockstep's downstream stores in PostgreSQL,
// with the semantics of the simulated ones in sim/services:
//
//   - Replica is a transactional copy of the source's tables (replica.go):
//     their columns, types, primary keys and unique constraints, created
//     from the definitions a snapshot carries, the applied position in a
//     one-row table, and a batch (reset, base check, data, position)
//     applied in one transaction, so a reader only ever sees the store
//     between two batches.
//   - Search is a full-text search index (a tsvector column with a GIN index
//     over model.SearchTerms) that behaves like a search engine: it takes a
//     batch as bulk requests of at most BulkDocs documents, each applied on
//     its own with no atomicity across them, guards every document with its
//     version (tombstones included) and writes the position last.
//
// Both implement pipeline.Store for the sink appliers and
// pipeline.DirectStore for naive dual writes, and offer Read, ReadAll and
// Clear for observers and the checker. What a store holds for a change is
// model.ProjectChange's document, so values and revision counts are the ones
// the simulator and the checker compute; the version guard follows
// lockstep/pipeline/store.
//
// Table names start with Options.Prefix, so a replica and a search index
// can share one database or live in two. LSNs are stored as bigint: an LSN
// above 1<<63-1 is refused with an error.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/store"
)

// BulkDocs is the default most documents the search index takes in one
// request, as in the simulated one; Options.BulkDocs raises it for
// throughput (the apply command uses 500).
const BulkDocs = 16

// Options configure a store.
type Options struct {
	// Prefix starts the name of every table and function the store
	// creates (default "lockstep_"): lower-case letters, digits and
	// underscores, starting with a letter or an underscore.
	Prefix string
	// Name is the store's name in snapshots (default its kind).
	Name string
	// Blind turns off the per-document version guard in Apply, so changes
	// the store already holds are applied again: the non-idempotent-apply
	// bug variant.
	Blind bool
	// BulkDocs is the most documents the search index takes in one bulk
	// request (default BulkDocs).
	BulkDocs int
	// ImmediateUnique creates the replica's unique constraints NOT
	// DEFERRABLE, checked at every row written, as the source has them:
	// the unique-row-by-row bug variant (a transaction that swapped two
	// values is refused half-way). Default: DEFERRABLE INITIALLY DEFERRED.
	ImmediateUnique bool
	// DDLReset has the replica's rebuild drop its schema and create its
	// tables again (DROP SCHEMA ... CASCADE) with no lock its readers
	// take: the reset-by-ddl bug variant (a reader whose snapshot came
	// before the rebuild finds the new tables empty beside the old
	// position). Default: rows deleted where definitions stay, tables
	// dropped only under the definitions' table's lock (Replica).
	DDLReset bool
	_        struct{}
}

var prefixRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,39}$`)

// tables is what the replica and the search index share: their two tables
// and how a change becomes SQL.
type tables struct {
	kind  model.StoreKind
	name  string
	blind bool
	pool  *pgxpool.Pool
	docs  string // quoted table names
	pos   string
	// docsSchema creates the documents' table (and its index) when
	// missing: at start, and before a rebuild fills a table that was
	// dropped under a running store.
	docsSchema string
}

func newTables(pool *pgxpool.Pool, kind model.StoreKind, opts Options) (*tables, string, error) {
	prefix := opts.Prefix
	if prefix == "" {
		prefix = "lockstep_"
	}
	if !prefixRE.MatchString(prefix) {
		return nil, "", fmt.Errorf("pgstore: table prefix %q: want lower-case letters, digits and underscores", prefix)
	}
	name := opts.Name
	if name == "" {
		name = kind.String()
	}
	base := prefix + kind.String()
	return &tables{
		kind:  kind,
		name:  name,
		blind: opts.Blind,
		pool:  pool,
		docs:  pgx.Identifier{base + "_docs"}.Sanitize(),
		pos:   pgx.Identifier{base + "_position"}.Sanitize(),
	}, base, nil
}

// create runs the schema statements under an advisory lock, so two stores
// created at once over one database do not race on the catalog.
func (s *tables) create(ctx context.Context, schema string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7406263)`); err != nil {
			return err
		}
		var docsMissing bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NULL`, s.docs).Scan(&docsMissing); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, schema); err != nil {
			return err
		}
		if docsMissing {
			// A new, empty documents table holds nothing a saved
			// position could vouch for (someone dropped it): the store
			// has lost its data, and the applier must rebuild it rather
			// than carry on from the position as if caught up.
			_, err := tx.Exec(ctx, `UPDATE `+s.pos+` SET has_pos = false, off = 0, lsn = 0 WHERE id = 1`)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgstore: %s: create tables: %w", s.kind, err)
	}
	return nil
}

func (s *tables) posSchema() string {
	return fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
	has_pos boolean NOT NULL DEFAULT false,
	off bigint NOT NULL DEFAULT 0,
	lsn bigint NOT NULL DEFAULT 0
);
ALTER TABLE %[1]s ADD COLUMN IF NOT EXISTS revs_from bigint NOT NULL DEFAULT 0;
ALTER TABLE %[1]s ADD COLUMN IF NOT EXISTS resets bigint NOT NULL DEFAULT 0;
INSERT INTO %[1]s (id) VALUES (1) ON CONFLICT DO NOTHING;
`, s.pos)
}

// Kind is the store's kind.
func (s *tables) Kind() model.StoreKind { return s.kind }

func lsnArg(l model.LSN) (int64, error) {
	if l > math.MaxInt64 {
		return 0, fmt.Errorf("LSN %s does not fit a bigint", l)
	}
	return int64(l), nil
}

// position reads the saved position through q (a pool or a transaction).
func (s *tables) position(ctx context.Context, q pgx.Tx, lock string) (model.Position, bool, error) {
	var has bool
	var off, lsn int64
	var row pgx.Row
	// No documents table, no position: the data is gone with it.
	query := `SELECT has_pos AND to_regclass($1) IS NOT NULL, off, lsn FROM ` + s.pos + ` WHERE id = 1 ` + lock
	if q != nil {
		row = q.QueryRow(ctx, query, s.docs)
	} else {
		row = s.pool.QueryRow(ctx, query, s.docs)
	}
	err := row.Scan(&has, &off, &lsn)
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Position{}, false, nil
	}
	if err != nil {
		return model.Position{}, false, err
	}
	if !has {
		return model.Position{}, false, nil
	}
	return model.Position{Offset: off, LSN: model.LSN(lsn)}, true, nil
}

// Position implements pipeline.Store.
func (s *tables) Position(ctx context.Context) (model.Position, bool, error) {
	pos, ok, err := s.position(ctx, nil, "")
	if err != nil {
		return pos, ok, fmt.Errorf("pgstore: %s: read position: %w", s.kind, err)
	}
	return pos, ok, nil
}

func (s *tables) queueSetPos(b *pgx.Batch, p model.Position) error {
	lsn, err := lsnArg(p.LSN)
	if err != nil {
		return err
	}
	b.Queue(`UPDATE `+s.pos+` SET has_pos = true, off = $1, lsn = $2 WHERE id = 1`, p.Offset, lsn)
	return nil
}

// queueChange queues the statements that apply one change at lsn: each one
// is atomic on its own document and carries the version guard unless
// guarded is false.
func (s *tables) queueChange(b *pgx.Batch, c model.Change, lsn model.LSN, guarded bool) error {
	if c.OldPK != "" && c.OldPK != c.PK {
		if err := s.queueChange(b, model.Change{Table: c.Table, PK: c.OldPK, Op: model.OpDelete}, lsn, guarded); err != nil {
			return err
		}
	}
	l, err := lsnArg(lsn)
	if err != nil {
		return err
	}
	search := store.Keeps(s.kind)
	if c.Op == model.OpDelete {
		if search { // a tombstone with the delete's version
			b.Queue(`INSERT INTO `+s.docs+` AS d (tbl, pk, value, lsn, revs, deleted) VALUES ($1, $2, '', $3, 0, true)
ON CONFLICT (tbl, pk) DO UPDATE SET value = '', lsn = excluded.lsn, revs = 0, deleted = true
WHERE $4 OR d.lsn < excluded.lsn`, c.Table, c.PK, l, !guarded)
		} else {
			b.Queue(`DELETE FROM `+s.docs+` WHERE tbl = $1 AND pk = $2 AND ($3 OR lsn < $4)`, c.Table, c.PK, !guarded, l)
		}
		return nil
	}
	// The document is model.ProjectChange's; its revision count either
	// replaces the stored one or adds to it, as store.Revs derives.
	fresh, relative, step := store.Revs(s.kind, c, lsn)
	live := "true"
	if search {
		live = "NOT d.deleted" // a tombstone counts as no previous document
	}
	args := []any{c.Table, c.PK, fresh.Value, l, fresh.Revs, relative, step, !guarded}
	cols, vals, set := "", "", ""
	if search {
		// The row itself too (a search engine's stored source), for
		// merging the unchanged columns of later updates.
		cols, vals, set = ", deleted, source", ", false, $9", ", deleted = false, source = excluded.source"
		args = append(args, c.Row.Encode())
	}
	b.Queue(`INSERT INTO `+s.docs+` AS d (tbl, pk, value, lsn, revs`+cols+`) VALUES ($1, $2, $3, $4, $5`+vals+`)
ON CONFLICT (tbl, pk) DO UPDATE SET value = excluded.value, lsn = excluded.lsn,
	revs = CASE WHEN $6 AND `+live+` THEN d.revs + $7 ELSE excluded.revs END`+set+`
WHERE $8 OR d.lsn < excluded.lsn`, args...)
	return nil
}

// send runs a batch on q (the pool or a transaction), reading every result.
func send(ctx context.Context, q interface {
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}, b *pgx.Batch) error {
	// Close reads every result in order, running the callbacks of the
	// queries that have one, and returns the first error.
	return q.SendBatch(ctx, b).Close()
}

// Read returns one live document.
func (s *tables) Read(ctx context.Context, k model.Key) (model.Doc, bool, error) {
	q := `SELECT value, lsn, revs FROM ` + s.docs + ` WHERE tbl = $1 AND pk = $2`
	if store.Keeps(s.kind) {
		q += ` AND NOT deleted`
	}
	var d model.Doc
	var lsn int64
	err := s.pool.QueryRow(ctx, q, k.Table, k.PK).Scan(&d.Value, &lsn, &d.Revs)
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Doc{}, false, nil
	}
	if err != nil {
		return model.Doc{}, false, fmt.Errorf("pgstore: %s: read %s: %w", s.kind, k, err)
	}
	d.LSN = model.LSN(lsn)
	return d, true, nil
}

// ReadAll returns every live document and the position from one snapshot
// of the database (a repeatable-read, read-only transaction).
func (s *tables) ReadAll(ctx context.Context) (model.Snapshot, error) {
	snap := model.Snapshot{Store: s.name, Docs: model.Docs{}}
	q := `SELECT tbl, pk, value, lsn, revs FROM ` + s.docs
	if store.Keeps(s.kind) {
		q += ` WHERE NOT deleted`
	}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if snap.Position, snap.HasPosition, err = s.position(ctx, tx, ""); err != nil {
			return err
		}
		if s.kind == model.Search {
			var from int64
			if err := tx.QueryRow(ctx, `SELECT revs_from FROM `+s.pos+` WHERE id = 1`).Scan(&from); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			snap.RevsFrom = model.LSN(from)
		}
		rows, err := tx.Query(ctx, q)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k model.Key
			var d model.Doc
			var lsn int64
			if err := rows.Scan(&k.Table, &k.PK, &d.Value, &lsn, &d.Revs); err != nil {
				return err
			}
			d.LSN = model.LSN(lsn)
			snap.Docs[k] = d
		}
		return rows.Err()
	})
	if err != nil {
		return model.Snapshot{}, fmt.Errorf("pgstore: %s: read all: %w", s.kind, err)
	}
	return snap, nil
}

// Clear drops every document, tombstone and the position.
func (s *tables) Clear(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `TRUNCATE `+s.docs); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE `+s.pos+` SET has_pos = false, off = 0, lsn = 0 WHERE id = 1`)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: %s: clear: %w", s.kind, err)
	}
	return nil
}

// batchMismatch is the error for a batch the store at (has) refuses.
func batchMismatch(at model.Position, has bool, b pipeline.Batch) error {
	if b.Base == nil {
		return fmt.Errorf("store at %s, the batch wants a store without position: %w", at, pipeline.ErrPositionMismatch)
	}
	return mismatch(at, has, *b.Base)
}

func mismatch(at model.Position, has bool, base model.Position) error {
	if !has {
		return fmt.Errorf("store has no position, batch base %s: %w", base, pipeline.ErrPositionMismatch)
	}
	return fmt.Errorf("store at %s, batch base %s: %w", at, base, pipeline.ErrPositionMismatch)
}

// Search is a full-text search index (model.Search) in PostgreSQL. Safe for
// concurrent use.
type Search struct {
	t         *tables
	checkBase string // the base-check function's quoted name
	bulkMax   int
	// afterBulk, set by tests, runs after every request that succeeded;
	// an error from it ends the call there, as a crash would.
	afterBulk func() error
}

func (s *Search) bulkDocs() int {
	if s.bulkMax > 0 {
		return s.bulkMax
	}
	return BulkDocs
}

var (
	_ pipeline.Store       = (*Search)(nil)
	_ pipeline.DirectStore = (*Search)(nil)
)

// errCodeMismatch is the SQLSTATE the base check raises.
const errCodeMismatch = "LS001"

// NewSearch creates the index's tables when missing: Prefix+"search_docs"
// (tbl, pk, value = model.SearchTerms, tsv generated from value with the
// 'simple' text search configuration and a GIN index, lsn, revs, deleted for
// tombstones), Prefix+"search_position" (one row) and the function
// Prefix+"search_check_base" with which every bulk request checks the
// batch's base.
func NewSearch(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Search, error) {
	t, base, err := newTables(pool, model.Search, opts)
	if err != nil {
		return nil, err
	}
	check := pgx.Identifier{base + "_check_base"}.Sanitize()
	t.docsSchema = fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	tbl text NOT NULL,
	pk text NOT NULL,
	value text NOT NULL,
	tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', value)) STORED,
	lsn bigint NOT NULL,
	revs integer NOT NULL DEFAULT 0,
	deleted boolean NOT NULL DEFAULT false,
	source text NOT NULL DEFAULT '',
	PRIMARY KEY (tbl, pk)
);
ALTER TABLE %[1]s ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS %[2]s ON %[1]s USING gin (tsv);`, t.docs, pgx.Identifier{base + "_docs_tsv"}.Sanitize())
	schema := t.docsSchema + t.posSchema() + fmt.Sprintf(`
CREATE OR REPLACE FUNCTION %[1]s(want_off bigint, want_lsn bigint, want_resets bigint, fresh boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	-- A request of a reset batch after its reset: no newer reset since.
	IF want_resets IS NOT NULL THEN
		PERFORM 1 FROM %[2]s WHERE id = 1 AND resets = want_resets FOR UPDATE;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'search was reset again after this batch''s reset %%', want_resets USING ERRCODE = '%[3]s';
		END IF;
	END IF;
	IF fresh THEN -- the index must hold no position
		PERFORM 1 FROM %[2]s WHERE id = 1 AND has_pos FOR UPDATE;
		IF FOUND THEN
			RAISE EXCEPTION 'search has a position, the batch wants none' USING ERRCODE = '%[3]s';
		END IF;
	END IF;
	IF want_off IS NULL THEN
		RETURN;
	END IF;
	PERFORM 1 FROM %[2]s WHERE id = 1 AND has_pos AND off = want_off AND lsn = want_lsn FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'search position is not the batch base %% / %%', want_off, want_lsn USING ERRCODE = '%[3]s';
	END IF;
END $$;`, check, t.pos, errCodeMismatch)
	if err := t.create(ctx, schema); err != nil {
		return nil, err
	}
	return &Search{t: t, checkBase: check, bulkMax: opts.BulkDocs}, nil
}

// Kind implements pipeline.Store.
func (s *Search) Kind() model.StoreKind { return model.Search }

// Position implements pipeline.Store.
func (s *Search) Position(ctx context.Context) (model.Position, bool, error) {
	return s.t.Position(ctx)
}

// bulk sends one request: the base check when the batch has a base or is
// fresh, or follows its reset (resets, the reset's number, when not nil),
// then the statements fill queues. A request is one round trip and one
// implicit transaction, so a failed check skips its writes; only the
// checks tie two requests together.
func (s *Search) bulk(ctx context.Context, b pipeline.Batch, resets *int64, fill func(*pgx.Batch) error) error {
	batch := &pgx.Batch{}
	base := b.Base
	switch {
	case base != nil:
		lsn, err := lsnArg(base.LSN)
		if err != nil {
			return err
		}
		batch.Queue(`SELECT `+s.checkBase+`($1, $2, $3::bigint, $4)`, base.Offset, lsn, resets, b.Fresh)
	case b.Fresh || resets != nil:
		batch.Queue(`SELECT `+s.checkBase+`(NULL, NULL, $1::bigint, $2)`, resets, b.Fresh)
	}
	if err := fill(batch); err != nil {
		return err
	}
	err := send(ctx, s.t.pool, batch)
	if err == nil && s.afterBulk != nil {
		return s.afterBulk()
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == errCodeMismatch {
		at, has, perr := s.t.position(ctx, nil, "")
		if perr != nil {
			return fmt.Errorf("%s: %w", pgErr.Message, pipeline.ErrPositionMismatch)
		}
		return batchMismatch(at, has, b)
	}
	return err
}

// Apply implements pipeline.Store as a search engine does: a Reset request
// first, then the changes in bulk requests of at most BulkDocs documents,
// each checking the base and applied on its own (with the per-document
// version guard unless Blind), the new position written by the last one. A
// failure part way leaves the earlier requests applied and the position
// where it was; applying the batch again completes it, since the guard skips
// what the index already holds.
func (s *Search) Apply(ctx context.Context, b pipeline.Batch) error {
	wrap := func(err error) error {
		return fmt.Errorf("pgstore: search: apply up to %s: %w", b.Position, err)
	}
	var resets *int64 // this batch's reset, once done
	if b.Reset {
		// As at opening: a documents table that was dropped takes the
		// position with it, so that a fresh rebuild may go ahead.
		if err := s.t.create(ctx, s.t.docsSchema); err != nil {
			return wrap(fmt.Errorf("recreate the documents table: %w", err))
		}
		// A snapshot cannot say how often a row was written before it:
		// from here on the index counts revisions from its LSN.
		var from model.LSN
		if len(b.Txns) > 0 && b.Txns[0].Snapshot {
			from = b.Txns[0].CommitLSN
		}
		revsFrom, err := lsnArg(from)
		if err != nil {
			return wrap(err)
		}
		// Every later request of the batch checks that no other reset
		// came since this one: two rebuilds of an empty index both pass
		// the Fresh check until one saves a position, and the later's
		// reset removes documents the earlier wrote.
		var n int64
		if err := s.bulk(ctx, b, nil, func(batch *pgx.Batch) error {
			batch.Queue(`DELETE FROM ` + s.t.docs)
			batch.Queue(`UPDATE `+s.t.pos+` SET revs_from = $1, resets = resets + 1 WHERE id = 1 RETURNING resets`, revsFrom).
				QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
			return nil
		}); err != nil {
			return wrap(err)
		}
		resets = &n
	}
	txns, err := s.t.resolve(ctx, nil, b.Txns, b.Reset)
	if err != nil {
		return wrap(err)
	}
	chunks := store.Chunks(txns, s.bulkDocs())
	if len(chunks) == 0 {
		chunks = [][]store.Change{nil} // the position alone
	}
	for i, chunk := range chunks {
		last := i == len(chunks)-1
		if err := s.bulk(ctx, b, resets, func(batch *pgx.Batch) error {
			for _, c := range chunk {
				if err := s.t.queueChange(batch, c.Change, c.LSN, !s.t.blind); err != nil {
					return err
				}
			}
			if last {
				return s.t.queueSetPos(batch, b.Position)
			}
			return nil
		}); err != nil {
			return wrap(err)
		}
	}
	return nil
}

// Write implements pipeline.DirectStore: the transaction's changes as blind
// bulk requests of at most BulkDocs documents. Blind means no version check:
// every update counts one more revision, even a repeated one.
func (s *Search) Write(ctx context.Context, t model.Txn) error {
	txns, err := s.t.resolve(ctx, nil, []model.Txn{t}, false)
	if err != nil {
		return fmt.Errorf("pgstore: search: write txn %d: %w", t.XID, err)
	}
	for _, chunk := range store.Chunks(txns, s.bulkDocs()) {
		if err := s.bulk(ctx, pipeline.Batch{}, nil, func(batch *pgx.Batch) error {
			for _, c := range chunk {
				if err := s.t.queueChange(batch, c.Change, c.LSN, false); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("pgstore: search: write txn %d: %w", t.XID, err)
		}
	}
	return nil
}

// Read returns one live document (tombstones are not documents).
func (s *Search) Read(ctx context.Context, k model.Key) (model.Doc, bool, error) {
	return s.t.Read(ctx, k)
}

// ReadAll returns every live document and the position, read at one
// instant.
func (s *Search) ReadAll(ctx context.Context) (model.Snapshot, error) { return s.t.ReadAll(ctx) }

// Clear drops every document, tombstone and the position.
func (s *Search) Clear(ctx context.Context) error { return s.t.Clear(ctx) }

// Query returns, in key order, the live documents matching every word of
// terms (PostgreSQL's plainto_tsquery with the 'simple' configuration), as
// the search index's users would find them.
func (s *Search) Query(ctx context.Context, terms string) ([]model.Key, error) {
	rows, err := s.t.pool.Query(ctx, `SELECT tbl, pk FROM `+s.t.docs+`
WHERE NOT deleted AND tsv @@ plainto_tsquery('simple', $1) ORDER BY tbl, pk`, terms)
	if err != nil {
		return nil, fmt.Errorf("pgstore: search: query %q: %w", terms, err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Key, error) {
		var k model.Key
		err := r.Scan(&k.Table, &k.PK)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: search: query %q: %w", terms, err)
	}
	return keys, nil
}

// resolve fills the unchanged columns of txns from the rows the store holds
// (store.ResolveUnchanged), read through tx when set (the replica's apply
// transaction), else the pool. After a reset the store holds nothing.
func (s *tables) resolve(ctx context.Context, tx pgx.Tx, txns []model.Txn, reset bool) ([]model.Txn, error) {
	return store.ResolveUnchanged(txns, func(keys []model.Key) (map[model.Key]model.Row, error) {
		if reset {
			return nil, nil
		}
		tbls, pks := make([]string, len(keys)), make([]string, len(keys))
		for i, k := range keys {
			tbls[i], pks[i] = k.Table, k.PK
		}
		col, live := "value", ""
		if store.Keeps(s.kind) {
			col, live = "source", " AND NOT d.deleted"
		}
		q := `SELECT d.tbl, d.pk, d.` + col + ` FROM ` + s.docs + ` d JOIN unnest($1::text[], $2::text[]) AS k(tbl, pk) ON d.tbl = k.tbl AND d.pk = k.pk` + live
		var rows pgx.Rows
		var err error
		if tx != nil {
			rows, err = tx.Query(ctx, q, tbls, pks)
		} else {
			rows, err = s.pool.Query(ctx, q, tbls, pks)
		}
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		out := map[model.Key]model.Row{}
		for rows.Next() {
			var k model.Key
			var v string
			if err := rows.Scan(&k.Table, &k.PK, &v); err != nil {
				return nil, err
			}
			out[k] = model.DecodeRow(v)
		}
		return out, rows.Err()
	})
}
