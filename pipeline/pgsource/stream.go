package pgsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"lockstep/model"
	"lockstep/pipeline"
)

// Defaults for Config.
const (
	DefaultSlot           = "lockstep"
	DefaultPublication    = "lockstep"
	DefaultStatusInterval = 10 * time.Second
	DefaultIdleInterval   = time.Second
)

const (
	// linger is how long Next keeps reading after it has a whole
	// transaction, to hand back a batch rather than one at a time.
	linger = 5 * time.Millisecond
	// maxBatch caps the transactions one Next returns.
	maxBatch = 1000
	// slotBusyWait is how long Start retries while the slot is still held
	// by a walsender that is going away (the previous session's).
	slotBusyWait = 5 * time.Second
	// writeTimeout bounds a status update's write.
	writeTimeout = 10 * time.Second
)

// Config configures a Stream.
type Config struct {
	// DSN is the source database's connection string (URL or key=value).
	// The stream adds replication=database for its replication connection
	// and removes it for its SQL connection, so either form works.
	DSN string
	// Slot is the logical replication slot's name (default "lockstep").
	Slot string
	// Publication is the publication streamed (default "lockstep"); a
	// snapshot creates it FOR ALL TABLES when it is missing.
	Publication string
	// StatusInterval is the longest time between two standby status
	// updates while streaming (default 10s). Keepalives that ask for a
	// reply are answered at once whatever it is.
	StatusInterval time.Duration
	// IdleInterval is how long Next waits without a whole transaction
	// before it returns none (default 1s), so that a capture can confirm
	// what it stored while the source is quiet. A transaction still
	// arriving is kept, and Next goes on with it at the next call.
	IdleInterval time.Duration
	// Tables, when set, are the only tables captured; ExcludeTables are
	// tables not captured (give one or the other). Names are lockstep's:
	// "t" for public.t, "schema.t" elsewhere. The snapshot leaves the other
	// tables out and the stream skips their changes, logging a warning the
	// first time in a session for each table; their keys are never asked
	// for, so a table without one can be left out this way. The
	// publication still holds them.
	Tables, ExcludeTables []string
	// Logger receives debug logs and warnings (default: none).
	Logger *slog.Logger
}

// Stream is PostgreSQL logical decoding (pgoutput, protocol version 1) as a
// pipeline.ChangeStream. It is not safe for concurrent use: one goroutine
// calls Snapshot, Start, Next and Confirm in turn, as the capture loop does.
//
// Positions: a transaction's CommitLSN is the end of its commit record. The
// server skips, on restart, every transaction whose commit record starts
// before the slot's confirmed position, so confirming a transaction's
// CommitLSN means "this transaction and all before it" and a stream started
// there resumes with the next one. Status updates always report the
// position last confirmed, never the server's WAL end, so nothing that is
// not safely downstream is released.
type Stream struct {
	cfg    Config
	log    *slog.Logger
	filter filter
	warned map[string]bool     // tables whose skipped changes were logged this session
	types  map[[2]int64]string // type names by OID and modifier (typeName)

	repl    *pgconn.PgConn // the replication connection, streaming; nil when not started
	sql     *pgx.Conn      // primary-key lookups while streaming, opened lazily
	asm     Assembler
	nextCtx context.Context // the running Next's context, for primary-key lookups

	confirmed  model.LSN
	lastStatus time.Time
	broken     error // why the open stream cannot go on

	mu         sync.Mutex // orders deadline changes between Next and its context's cancellation
	keepalives int        // keepalives answered (for tests)
}

var _ pipeline.ChangeStream = (*Stream)(nil)

var simpleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// NewStream checks cfg and fills in its defaults. It connects to nothing.
func NewStream(cfg Config) (*Stream, error) {
	if cfg.Slot == "" {
		cfg.Slot = DefaultSlot
	}
	if cfg.Publication == "" {
		cfg.Publication = DefaultPublication
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if cfg.IdleInterval <= 0 {
		cfg.IdleInterval = DefaultIdleInterval
	}
	if !simpleName.MatchString(cfg.Slot) {
		return nil, fmt.Errorf("pgsource: slot name %q: want lower-case letters, digits and _ (at most 63)", cfg.Slot)
	}
	if !simpleName.MatchString(cfg.Publication) {
		return nil, fmt.Errorf("pgsource: publication name %q: want lower-case letters, digits and _ (at most 63)", cfg.Publication)
	}
	if _, err := pgconn.ParseConfig(cfg.DSN); err != nil {
		return nil, fmt.Errorf("pgsource: DSN: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := newFilter(cfg.Tables, cfg.ExcludeTables)
	if err != nil {
		return nil, fmt.Errorf("pgsource: tables: %w", err)
	}
	s := &Stream{cfg: cfg, log: log, filter: f}
	s.asm.PrimaryKey = s.lookupPrimaryKey
	s.asm.TypeName = s.typeName
	s.asm.Skip = func(table string) bool { return !f.captures(table) }
	s.asm.Skipped = s.skipped
	return s, nil
}

// Confirmed is the position last confirmed (or read from the slot by Start).
func (s *Stream) Confirmed() model.LSN { return s.confirmed }

func (s *Stream) replConfig() (*pgconn.Config, error) {
	c, err := pgconn.ParseConfig(s.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("pgsource: DSN: %w", err)
	}
	c.RuntimeParams["replication"] = "database"
	return c, nil
}

func (s *Stream) connectSQL(ctx context.Context) (*pgx.Conn, error) {
	c, err := pgx.ParseConfig(s.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("pgsource: DSN: %w", err)
	}
	delete(c.RuntimeParams, "replication")
	conn, err := pgx.ConnectConfig(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("pgsource: connect: %w", err)
	}
	return conn, nil
}

func (s *Stream) connectRepl(ctx context.Context) (*pgconn.PgConn, error) {
	c, err := s.replConfig()
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("pgsource: open replication connection: %w", err)
	}
	return conn, nil
}

// closeRepl ends the streaming session, if any.
func (s *Stream) closeRepl() {
	if s.repl == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.repl.Close(ctx) // best effort: the connection is being thrown away
	s.repl = nil
}

// Close ends the stream and its connections. The slot stays.
func (s *Stream) Close(ctx context.Context) error {
	s.closeRepl()
	s.broken = nil
	if s.sql != nil {
		err := s.sql.Close(ctx)
		s.sql = nil
		if err != nil {
			return fmt.Errorf("pgsource: close SQL connection: %w", err)
		}
	}
	return nil
}

// Snapshot drops the slot if it exists, creates it again with an exported
// snapshot and opens a REPEATABLE READ transaction on that snapshot, which
// the returned reader scans: the rows of every table of the publication
// that the filter captures, as inserts, in a transaction whose CommitLSN
// is the slot's consistent point (the stream delivers exactly the
// transactions that commit after it), with the tables' definitions as of
// the snapshot. Snapshot creates the publication FOR ALL TABLES when it is
// missing, and closes any open stream first. The snapshot's XID and its
// changes' Revs are 0: PostgreSQL does not count a row's past changes.
// The reader holds two connections until it is closed.
func (s *Stream) Snapshot(ctx context.Context) (_ pipeline.SnapshotReader, err error) {
	defer func() { err = refused(err) }()
	s.closeRepl()
	db, err := s.connectSQL(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgsource: snapshot: %w", err)
	}
	r := &snapshotReader{db: db}
	defer func() {
		if err != nil {
			r.Close(ctx)
		}
	}()
	if err := ensurePublication(ctx, db, s.cfg.Publication); err != nil {
		return nil, fmt.Errorf("pgsource: snapshot: %w", err)
	}
	// Fence off whoever still holds the slot (a zombie capture, or our own
	// previous walsender on its way out), so the drop can go ahead.
	if _, err := db.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
		WHERE slot_name = $1 AND active_pid IS NOT NULL`, s.cfg.Slot); err != nil {
		return nil, fmt.Errorf("pgsource: snapshot: stop the holder of slot %s: %w", s.cfg.Slot, err)
	}

	if r.repl, err = s.connectRepl(ctx); err != nil {
		return nil, fmt.Errorf("pgsource: snapshot: %w", err)
	}
	if _, err := r.repl.Exec(ctx, "DROP_REPLICATION_SLOT "+s.cfg.Slot+" WAIT").ReadAll(); err != nil && !isCode(err, "42704") {
		return nil, fmt.Errorf("pgsource: snapshot: drop slot %s: %w", s.cfg.Slot, err)
	}
	res, err := r.repl.Exec(ctx, "CREATE_REPLICATION_SLOT "+s.cfg.Slot+" LOGICAL pgoutput (SNAPSHOT 'export')").ReadAll()
	if err != nil {
		return nil, fmt.Errorf("pgsource: snapshot: create slot %s: %w", s.cfg.Slot, err)
	}
	point, name, err := slotCreated(res)
	if err != nil {
		return nil, fmt.Errorf("pgsource: snapshot: create slot %s: %w", s.cfg.Slot, err)
	}
	s.log.Debug("pgsource: slot created", "slot", s.cfg.Slot, "consistent_point", point, "snapshot", name)

	if err := r.open(ctx, name, s.cfg.Publication, s.filter); err != nil {
		// A slot without its snapshot must not be streamed from: drop it so
		// that Start says ErrNoSlot and the caller snapshots again.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, derr := r.repl.Exec(dctx, "DROP_REPLICATION_SLOT "+s.cfg.Slot).ReadAll(); derr != nil {
			err = errors.Join(err, fmt.Errorf("drop the slot again: %w", derr))
		}
		return nil, fmt.Errorf("pgsource: snapshot at %s: %w", point, err)
	}
	r.head = model.Txn{Snapshot: true, CommitLSN: point, Schema: r.schema}
	return r, nil
}

// slotCreated reads CREATE_REPLICATION_SLOT's answer: slot_name,
// consistent_point, snapshot_name, output_plugin.
func slotCreated(res []*pgconn.Result) (model.LSN, string, error) {
	if len(res) != 1 || len(res[0].Rows) != 1 {
		return 0, "", fmt.Errorf("unexpected answer: %d results", len(res))
	}
	var point, name string
	for i, f := range res[0].FieldDescriptions {
		if i >= len(res[0].Rows[0]) {
			break
		}
		switch f.Name {
		case "consistent_point":
			point = string(res[0].Rows[0][i])
		case "snapshot_name":
			name = string(res[0].Rows[0][i])
		}
	}
	lsn, err := model.ParseLSN(point)
	if err != nil {
		return 0, "", fmt.Errorf("consistent point: %w", err)
	}
	if !snapshotName.MatchString(name) {
		return 0, "", fmt.Errorf("unexpected snapshot name %q", name)
	}
	return lsn, name, nil
}

var snapshotName = regexp.MustCompile(`^[0-9A-Fa-f-]+$`)

// snapshotReader scans a snapshot in the REPEATABLE READ transaction that
// imported it (pipeline.SnapshotReader). The replication connection that
// exported the snapshot stays open beside it, idle, until Close.
type snapshotReader struct {
	db     *pgx.Conn
	repl   *pgconn.PgConn
	tx     pgx.Tx
	tables []table
	schema []model.Table
	head   model.Txn
}

// snapshotPage is how many rows one FETCH of a snapshot's scan reads.
const snapshotPage = 1000

// open begins the snapshot's transaction and finds every table of pub that
// f captures, with its definition (tableDef) as of the snapshot. A
// *NoKeyError names every one lockstep cannot name the rows of.
func (r *snapshotReader) open(ctx context.Context, name, pub string, f filter) error {
	tx, err := r.db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	r.tx = tx
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+name+"'", pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("set transaction snapshot %s: %w", name, err)
	}
	// A scan of a large table may start where another one is (synchronized
	// sequential scans); from the first block, two scans of a table in this
	// transaction hand out its rows in the same order, which the capture's
	// second read counts on to cut them as its first did (it checks).
	if _, err := tx.Exec(ctx, "SET LOCAL synchronize_seqscans = off"); err != nil {
		return fmt.Errorf("turn synchronized scans off: %w", err)
	}
	all, err := publishedTables(ctx, tx, pub)
	if err != nil {
		return err
	}
	for _, t := range all {
		if f.captures(TableName(t.schema, t.name)) {
			r.tables = append(r.tables, t)
		}
	}
	if bad := keyless(r.tables); len(bad) > 0 {
		return &NoKeyError{Tables: bad}
	}
	for _, t := range r.tables {
		def, err := tableDef(ctx, tx, t)
		if err != nil {
			return err
		}
		r.schema = append(r.schema, def)
	}
	return nil
}

func (r *snapshotReader) Head() model.Txn { return r.head }

// Scan implements pipeline.SnapshotReader: table by table, through a
// cursor, snapshotPage rows at a time, so neither this process nor the
// server holds more than a page of rows however large the table.
func (r *snapshotReader) Scan(ctx context.Context, fn func([]model.Change) error) error {
	if r.tx == nil {
		return errors.New("pgsource: scan a closed snapshot")
	}
	for _, t := range r.tables {
		if err := r.scanTable(ctx, t, fn); err != nil {
			return fmt.Errorf("pgsource: snapshot at %s: %w", r.head.CommitLSN, err)
		}
	}
	return nil
}

func (r *snapshotReader) scanTable(ctx context.Context, t table, fn func([]model.Change) error) error {
	name := TableName(t.schema, t.name)
	rd, err := newRowReader(t)
	if err != nil {
		return err
	}
	quoted := make([]string, len(t.columns))
	for i, c := range t.columns {
		quoted[i] = pgx.Identifier{c}.Sanitize()
	}
	if _, err := r.tx.Exec(ctx, "DECLARE lockstep_snapshot NO SCROLL CURSOR FOR SELECT "+strings.Join(quoted, ", ")+
		" FROM ONLY "+pgx.Identifier{t.schema, t.name}.Sanitize()); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	for {
		// Text results, as pgoutput sends values; not the simple protocol,
		// which pgx refuses unless the client encoding is UTF8 (a
		// SQL_ASCII database reports its own).
		rows, err := r.tx.Query(ctx, "FETCH "+strconv.Itoa(snapshotPage)+" FROM lockstep_snapshot", pgx.QueryResultFormats{pgx.TextFormatCode})
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		page := make([]model.Change, 0, snapshotPage)
		for rows.Next() {
			c, err := rd.change(rows.RawValues())
			if err != nil {
				rows.Close()
				return err
			}
			page = append(page, c)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if len(page) == 0 {
			break
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	if _, err := r.tx.Exec(ctx, "CLOSE lockstep_snapshot"); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

// Close ends the snapshot's transaction and both connections; it does not
// wait on ctx's end, so a capture stopping still lets them go.
func (r *snapshotReader) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var err error
	if r.tx != nil {
		err = r.tx.Rollback(ctx) // read only: nothing to keep
		r.tx = nil
	}
	if r.db != nil {
		err = errors.Join(err, r.db.Close(ctx))
		r.db = nil
	}
	if r.repl != nil {
		err = errors.Join(err, r.repl.Close(ctx))
		r.repl = nil
	}
	if err != nil {
		return fmt.Errorf("pgsource: close the snapshot: %w", err)
	}
	return nil
}

// tableDef is a captured table's definition, for a replica to copy: its
// published columns with their types as format_type writes them, its
// primary key (none for a table named by whole rows), and its unique
// constraints: the unique indexes other than the key's, UNIQUE constraints
// included, that are neither partial nor over expressions, treat NULLs as
// distinct, and cover published columns only (a replica could not hold the
// others), their key columns in index order.
func tableDef(ctx context.Context, tx pgx.Tx, t table) (model.Table, error) {
	name := TableName(t.schema, t.name)
	def := model.Table{Name: name}
	if !t.wholeRow {
		def.Key = slices.Clone(t.key)
	}
	rows, err := tx.Query(ctx, `SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
		ORDER BY attnum`, t.oid)
	if err != nil {
		return model.Table{}, fmt.Errorf("column types of %s: %w", name, err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Column, error) {
		var c model.Column
		err := r.Scan(&c.Name, &c.Type)
		return c, err
	})
	if err != nil {
		return model.Table{}, fmt.Errorf("column types of %s: %w", name, err)
	}
	for _, c := range cols {
		if slices.Contains(t.columns, c.Name) {
			def.Columns = append(def.Columns, c)
		}
	}
	rows, err = tx.Query(ctx, `SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i
		JOIN pg_class ic ON ic.oid = i.indexrelid
		CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND i.indisunique AND NOT i.indisprimary AND i.indpred IS NULL AND i.indexprs IS NULL
			AND NOT i.indnullsnotdistinct AND k.ord <= i.indnkeyatts
		GROUP BY ic.relname ORDER BY ic.relname`, t.oid)
	if err != nil {
		return model.Table{}, fmt.Errorf("unique constraints of %s: %w", name, err)
	}
	uniques, err := pgx.CollectRows(rows, pgx.RowTo[[]string])
	if err != nil {
		return model.Table{}, fmt.Errorf("unique constraints of %s: %w", name, err)
	}
	for _, u := range uniques {
		published := true
		for _, c := range u {
			published = published && slices.Contains(t.columns, c)
		}
		if published {
			def.Unique = append(def.Unique, u)
		}
	}
	return def, nil
}

type table struct {
	oid          uint32
	schema, name string
	columns      []string // published, non-generated columns, in column order
	// key is the columns that name a row, in column order: the primary
	// key's, or, under REPLICA IDENTITY FULL without one, every column
	// (wholeRow); none when the table has neither.
	key      []string
	wholeRow bool
}

// publishedTables is the tables of publication pub.
func publishedTables(ctx context.Context, tx pgx.Tx, pub string) ([]table, error) {
	tables, err := tablesFor(ctx, tx, `SELECT c.oid, pt.schemaname::text, pt.tablename::text, pt.attnames::text[], c.relreplident::text
		FROM pg_publication_tables pt
		JOIN pg_namespace n ON n.nspname = pt.schemaname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
		WHERE pt.pubname = $1 ORDER BY 2, 3`, pub)
	if err != nil {
		return nil, fmt.Errorf("list the tables of publication %s: %w", pub, err)
	}
	return tables, nil
}

// allTablesSQL lists the tables a publication FOR ALL TABLES would hold, as
// PostgreSQL 15 decides it (is_publishable_class): ordinary permanent
// tables that are not system objects.
const allTablesSQL = `SELECT c.oid, n.nspname::text, c.relname::text, NULL::text[], c.relreplident::text
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND c.oid >= 16384 ORDER BY 2, 3`

// tablesFor reads tables from q, whose rows are oid, schema, name,
// published columns (NULL: all) and replica identity, and finds each
// one's columns and key.
func tablesFor(ctx context.Context, tx pgx.Tx, q string, args ...any) ([]table, error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	var tables []table
	var published [][]string
	var ident []string
	for rows.Next() {
		var t table
		var attnames []string
		var id string
		if err := rows.Scan(&t.oid, &t.schema, &t.name, &attnames, &id); err != nil {
			rows.Close()
			return nil, err
		}
		tables = append(tables, t)
		published = append(published, attnames)
		ident = append(ident, id)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range tables {
		t := &tables[i]
		key, err := primaryKey(ctx, tx, t.oid)
		if err != nil {
			return nil, fmt.Errorf("primary key of %s: %w", TableName(t.schema, t.name), err)
		}
		cols, err := tx.Query(ctx, `SELECT attname::text FROM pg_attribute
			WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
			ORDER BY attnum`, t.oid)
		if err != nil {
			return nil, fmt.Errorf("columns of %s: %w", TableName(t.schema, t.name), err)
		}
		all, err := pgx.CollectRows(cols, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("columns of %s: %w", TableName(t.schema, t.name), err)
		}
		for _, c := range all {
			if published[i] == nil || slices.Contains(published[i], c) {
				t.columns = append(t.columns, c)
			}
		}
		t.key = key
		if len(key) == 0 && ident[i] == "f" {
			t.key, t.wholeRow = t.columns, true
		}
	}
	return tables, nil
}

// primaryKeySQL lists a table's primary-key columns in column order (the
// order pgoutput sends columns in, so PKs join the same way).
const primaryKeySQL = `SELECT a.attname::text FROM pg_index i
	JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
	WHERE i.indrelid = $1 AND i.indisprimary ORDER BY a.attnum`

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func primaryKey(ctx context.Context, q querier, oid uint32) ([]string, error) {
	rows, err := q.Query(ctx, primaryKeySQL, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// rowReader turns a table's snapshot rows, its published columns in text
// form, into inserts named by the table's key.
type rowReader struct {
	t     table
	name  string
	isKey []bool
}

func newRowReader(t table) (*rowReader, error) {
	name := TableName(t.schema, t.name)
	if len(t.key) == 0 {
		return nil, &NoKeyError{Tables: []string{name}}
	}
	for _, k := range t.key {
		if !slices.Contains(t.columns, k) {
			return nil, fmt.Errorf("primary key column %q of %s is not published: %w", k, name, ErrUnsupported)
		}
	}
	isKey := make([]bool, len(t.columns))
	for i, c := range t.columns {
		isKey[i] = slices.Contains(t.key, c)
	}
	return &rowReader{t: t, name: name, isKey: isKey}, nil
}

func (rd *rowReader) change(vals [][]byte) (model.Change, error) {
	if rd.t.wholeRow {
		return wholeRowChange(rd.name, rd.t.columns, vals), nil
	}
	var pk strings.Builder
	row := model.Row{}
	for i, v := range vals {
		switch {
		case rd.isKey[i] && v == nil:
			return model.Change{}, fmt.Errorf("read %s: key column %q is NULL", rd.name, rd.t.columns[i])
		case rd.isKey[i]:
			if pk.Len() > 0 {
				pk.WriteByte(',')
			}
			pk.Write(v)
		case v != nil:
			row.Set(rd.t.columns[i], string(v))
		}
	}
	return model.Change{Table: rd.name, PK: pk.String(), Op: model.OpInsert, Row: row}, nil
}

// wholeRowChange is a snapshot row of a table whose columns all form the
// key: the key is rowKey of them, the row every non-NULL one.
func wholeRowChange(table string, cols []string, vals [][]byte) model.Change {
	strs := make([]string, len(vals))
	null := make([]bool, len(vals))
	row := model.Row{}
	for i, v := range vals {
		strs[i], null[i] = string(v), v == nil
		if v != nil {
			row.Set(cols[i], strs[i])
		}
	}
	return model.Change{Table: table, PK: rowKey(strs, null), Op: model.OpInsert, Row: row}
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ensurePublication creates publication pub FOR ALL TABLES unless it exists.
func ensurePublication(ctx context.Context, db execer, pub string) error {
	var exists bool
	if err := db.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", pub).Scan(&exists); err != nil {
		return fmt.Errorf("look for publication %s: %w", pub, err)
	}
	if exists {
		return nil
	}
	_, err := db.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{pub}.Sanitize()+" FOR ALL TABLES")
	if err != nil && !isCode(err, "42710") { // duplicate_object: someone else just made it
		return fmt.Errorf("create publication %s: %w", pub, err)
	}
	return nil
}

// Start opens the stream at the slot's confirmed position and returns it.
// It closes any stream already open. pipeline.ErrNoSlot when the slot does
// not exist.
func (s *Stream) Start(ctx context.Context) (_ model.LSN, err error) {
	defer func() { err = refused(err) }()
	s.closeRepl()
	s.broken = nil
	busyUntil := time.Now().Add(slotBusyWait)
	for {
		conn, lsn, err := s.start(ctx)
		if err == nil {
			s.repl, s.confirmed, s.lastStatus = conn, lsn, time.Now()
			s.asm.Reset()
			s.warned = nil
			s.log.Debug("pgsource: streaming", "slot", s.cfg.Slot, "from", lsn)
			return lsn, nil
		}
		// 55006 object_in_use: the slot is still held, most often by the
		// walsender of our own previous session, which is exiting.
		if !isCode(err, "55006") || time.Now().After(busyUntil) {
			return 0, fmt.Errorf("pgsource: start slot %s: %w", s.cfg.Slot, err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("pgsource: start slot %s: %w (last: %w)", s.cfg.Slot, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Stream) start(ctx context.Context) (*pgconn.PgConn, model.LSN, error) {
	conn, err := s.connectRepl(ctx)
	if err != nil {
		return nil, 0, err
	}
	ok := false
	defer func() {
		if !ok {
			closeQuietly(conn)
		}
	}()
	res, err := conn.Exec(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '"+s.cfg.Slot+"'").ReadAll()
	if err != nil {
		return nil, 0, fmt.Errorf("read the slot's position: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) == 0 {
		return nil, 0, pipeline.ErrNoSlot
	}
	if res[0].Rows[0][0] == nil {
		return nil, 0, fmt.Errorf("slot %s has no confirmed position: is it a logical slot?", s.cfg.Slot)
	}
	lsn, err := model.ParseLSN(string(res[0].Rows[0][0]))
	if err != nil {
		return nil, 0, fmt.Errorf("read the slot's position: %w", err)
	}
	q := fmt.Sprintf("START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', publication_names '%s')", s.cfg.Slot, s.cfg.Publication)
	conn.Frontend().Send(&pgproto3.Query{String: q})
	if err := conn.Frontend().Flush(); err != nil {
		return nil, 0, fmt.Errorf("send START_REPLICATION: %w", err)
	}
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("START_REPLICATION: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyBothResponse:
			ok = true
			return conn, lsn, nil
		case *pgproto3.ErrorResponse:
			err := pgconn.ErrorResponseToPgError(msg)
			if err.Code == "42704" { // undefined_object: dropped since we looked
				return nil, 0, fmt.Errorf("%w: %w", pipeline.ErrNoSlot, err)
			}
			return nil, 0, fmt.Errorf("START_REPLICATION: %w", err)
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return nil, 0, fmt.Errorf("START_REPLICATION: unexpected %T", msg)
		}
	}
}

// Next returns the next committed transactions, in commit order: as many
// as arrive within a few milliseconds of the first (up to 1000), or none
// once IdleInterval has passed without one (a transaction half received
// then stays in hand for the next call). Transactions that touched no
// published table are left out. While it
// waits it answers every keepalive that asks for a reply and sends a status
// update at least every StatusInterval, always with the confirmed position.
// When ctx ends while whole transactions are in hand, they are returned;
// the stream stays usable after a ctx error.
func (s *Stream) Next(ctx context.Context) (_ []model.Txn, err error) {
	defer func() { err = refused(err) }()
	if s.broken != nil {
		return nil, fmt.Errorf("pgsource: stream from slot %s broke; Start it again: %w", s.cfg.Slot, s.broken)
	}
	if s.repl == nil {
		return nil, fmt.Errorf("pgsource: next: stream not started")
	}
	conn := s.repl
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		conn.Conn().SetReadDeadline(time.Now()) // wake the read below
	})
	defer stop()
	s.nextCtx = ctx
	defer func() { s.nextCtx = nil }()

	var out []model.Txn
	var lingerUntil time.Time
	idleUntil := time.Now().Add(s.cfg.IdleInterval)
	for {
		now := time.Now()
		if now.Sub(s.lastStatus) >= s.cfg.StatusInterval {
			if err := s.sendStatus(context.Background(), now); err != nil {
				return s.fail(out, err)
			}
		}
		deadline := s.lastStatus.Add(s.cfg.StatusInterval)
		if len(out) > 0 {
			if len(out) >= maxBatch || !now.Before(lingerUntil) {
				return out, nil
			}
			if lingerUntil.Before(deadline) {
				deadline = lingerUntil
			}
		} else {
			if !now.Before(idleUntil) {
				return nil, nil
			}
			if idleUntil.Before(deadline) {
				deadline = idleUntil
			}
		}
		msg, err := s.receive(ctx, conn, deadline)
		if err != nil {
			if ctx.Err() != nil {
				if len(out) > 0 {
					return out, nil
				}
				return nil, fmt.Errorf("pgsource: next: %w", ctx.Err())
			}
			if pgconn.Timeout(err) {
				continue
			}
			return s.fail(out, fmt.Errorf("receive: %w", err))
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				return s.fail(out, fmt.Errorf("empty CopyData: %w", ErrMalformed))
			}
			switch msg.Data[0] {
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return s.fail(out, fmt.Errorf("%w: %w", err, ErrMalformed))
				}
				txn, done, err := s.asm.Feed(x.WALData)
				if err != nil {
					return s.fail(out, err)
				}
				if done && len(txn.Changes) > 0 {
					out = append(out, txn)
					if len(out) == 1 {
						lingerUntil = time.Now().Add(linger)
					}
				}
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return s.fail(out, fmt.Errorf("%w: %w", err, ErrMalformed))
				}
				if k.ReplyRequested {
					s.keepalives++
					if err := s.sendStatus(context.Background(), time.Now()); err != nil {
						return s.fail(out, err)
					}
				}
			default:
				return s.fail(out, fmt.Errorf("unknown CopyData message %q: %w", msg.Data[0], ErrMalformed))
			}
		case *pgproto3.ErrorResponse:
			return s.fail(out, pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return s.fail(out, errors.New("the server ended the replication stream"))
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return s.fail(out, fmt.Errorf("unexpected %T in the replication stream", msg))
		}
	}
}

// receive reads one message, giving up at deadline (a timeout error) or
// when ctx ends.
func (s *Stream) receive(ctx context.Context, conn *pgconn.PgConn, deadline time.Time) (pgproto3.BackendMessage, error) {
	s.mu.Lock()
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	conn.Conn().SetReadDeadline(deadline)
	s.mu.Unlock()
	// With the background context pgconn leaves deadlines to us; a timeout
	// leaves the connection usable, mid-message or not.
	return conn.ReceiveMessage(context.Background())
}

// fail breaks the stream: the transactions already whole are still handed
// back, and the next call reports err.
func (s *Stream) fail(out []model.Txn, err error) ([]model.Txn, error) {
	s.broken = err
	s.closeRepl()
	s.log.Debug("pgsource: stream broke", "slot", s.cfg.Slot, "err", err)
	if len(out) > 0 {
		return out, nil
	}
	return nil, fmt.Errorf("pgsource: stream from slot %s: %w", s.cfg.Slot, err)
}

// sendStatus sends a standby status update with the confirmed position as
// written, flushed and applied: all three are set, so pglogrepl fills in
// nothing (it would copy the write position into a zero flush or apply).
// It gives up after writeTimeout, or when ctx ends.
func (s *Stream) sendStatus(ctx context.Context, now time.Time) error {
	at := pglogrepl.LSN(s.confirmed)
	conn := s.repl
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		conn.Conn().SetWriteDeadline(time.Now()) // wake the write below
	})
	defer stop()
	s.mu.Lock()
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("send status update at %s: %w", s.confirmed, err)
	}
	conn.Conn().SetWriteDeadline(now.Add(writeTimeout))
	s.mu.Unlock()
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: at, WALFlushPosition: at, WALApplyPosition: at, ClientTime: now})
	if err != nil {
		return fmt.Errorf("send status update at %s: %w", s.confirmed, err)
	}
	s.lastStatus = now
	return nil
}

// Confirm records that everything up to lsn is safely stored downstream and
// tells the server at once with a status update, giving up when ctx ends
// (the stream is then broken: the update may be half written). Positions
// only move forward: a smaller lsn is ignored. A stream that is not open
// records nothing (Start reads the slot's position afresh).
func (s *Stream) Confirm(ctx context.Context, lsn model.LSN) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pgsource: confirm %s: %w", lsn, err)
	}
	if s.broken != nil {
		return fmt.Errorf("pgsource: confirm %s: stream broke: %w", lsn, s.broken)
	}
	if s.repl == nil {
		return fmt.Errorf("pgsource: confirm %s: stream not started", lsn)
	}
	if lsn > s.confirmed {
		s.confirmed = lsn
	}
	if err := s.sendStatus(ctx, time.Now()); err != nil {
		s.broken = err
		s.closeRepl()
		return fmt.Errorf("pgsource: confirm %s: %w", lsn, err)
	}
	return nil
}

// skipped is the Assembler's Skipped: a warning the first time in a
// session a table's change is left out.
func (s *Stream) skipped(table string) {
	if s.warned[table] {
		return
	}
	if s.warned == nil {
		s.warned = map[string]bool{}
	}
	s.warned[table] = true
	s.log.Warn("pgsource: skipping the changes of a table left out of the capture", "table", table, "slot", s.cfg.Slot)
}

// lookupPrimaryKey is the Assembler's PrimaryKey: it asks the catalog over
// a second, ordinary connection.
func (s *Stream) lookupPrimaryKey(rel *Relation) ([]string, error) {
	ctx, err := s.catalog()
	if err != nil {
		return nil, err
	}
	key, err := primaryKey(ctx, s.sql, rel.ID)
	if err != nil {
		closeQuietly(s.sql)
		s.sql = nil
		return nil, err
	}
	return key, nil
}

// catalog opens the second, ordinary connection for the Assembler's
// lookups, unless it is open, and returns the context they run in: the
// running Next's.
func (s *Stream) catalog() (context.Context, error) {
	ctx := s.nextCtx
	if ctx == nil {
		ctx = context.Background()
	}
	if s.sql == nil || s.sql.IsClosed() {
		conn, err := s.connectSQL(ctx)
		if err != nil {
			return ctx, err
		}
		s.sql = conn
	}
	return ctx, nil
}

// typeName is the Assembler's TypeName: format_type over the second
// connection, remembered per type and modifier.
func (s *Stream) typeName(oid uint32, typmod int32) (string, error) {
	k := [2]int64{int64(oid), int64(typmod)}
	if name, ok := s.types[k]; ok {
		return name, nil
	}
	ctx, err := s.catalog()
	if err != nil {
		return "", err
	}
	var name string
	if err := s.sql.QueryRow(ctx, `SELECT format_type($1, $2)`, oid, typmod).Scan(&name); err != nil {
		closeQuietly(s.sql)
		s.sql = nil
		return "", err
	}
	if s.types == nil {
		s.types = map[[2]int64]string{}
	}
	s.types[k] = name
	return name, nil
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

type closer interface{ Close(context.Context) error }

// closeQuietly closes a connection that is being thrown away.
func closeQuietly(c closer) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
