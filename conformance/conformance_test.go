package conformance

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"pgregory.net/rapid"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/pgsource"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/store/pgstore"
	"lockstep/pipeline/store/storetest"
	"lockstep/sim"
	"lockstep/sim/services"
)

// checks is how many random programs each property runs unless
// -rapid.checks or RAPID_CHECKS says otherwise: enough to meet every shape
// of the small alphabet below, few enough to stay well under a minute.
const checks = 40

// TestAgainstPostgres runs the simulated services and their real
// counterparts side by side on one throwaway PostgreSQL 15 cluster, a
// database of its own for each subtest.
func TestAgainstPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: needs a PostgreSQL server (-short)")
	}
	rapidDefaults()
	dsn := pgtest.Start(t)
	t.Run("Source", func(t *testing.T) {
		t.Parallel()
		testSource(t, pgtest.NewDatabase(t, dsn))
	})
	t.Run("Stores", func(t *testing.T) {
		t.Parallel()
		testStores(t, pgtest.NewDatabase(t, dsn))
	})
	t.Run("KeylessRefused", func(t *testing.T) {
		t.Parallel()
		testKeylessRefused(t, pgtest.NewDatabase(t, dsn))
	})
	t.Run("ReplicaUnique", func(t *testing.T) {
		t.Parallel()
		testReplicaUnique(t, pgtest.NewDatabase(t, dsn))
	})
	t.Run("ReplicaReadDuringReset", func(t *testing.T) {
		t.Parallel()
		testReplicaReadDuringReset(t, pgtest.NewDatabase(t, dsn))
	})
}

// rapidDefaults sets this package's check count, and no fail files (rapid
// would write them into the source tree; the seed it prints replays a
// failure), unless the command line or the environment chose. It runs
// before any check reads them.
func rapidDefaults() {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, value := range map[string]string{"rapid.checks": strconv.Itoa(checks), "rapid.nofailfile": "true"} {
		env := strings.ToUpper(strings.ReplaceAll(name, ".", "_"))
		if !set[name] && os.Getenv(env) == "" {
			if err := flag.Set(name, value); err != nil {
				panic(err) // the flag is rapid's: it exists
			}
		}
	}
}

// The program alphabet: two tables of a text key and two text columns, a
// third (uniqTable) whose one column is unique, a handful of keys, values
// either small or big.
var (
	tables = []string{"t1", "t2", uniqTable.Name}
	keys   = []string{"a", "b", "c", "d"}
)

// uniqTable has a unique column v, written with three small values only,
// so that programs often write a value another row holds (the statement
// fails and its transaction rolls back), swap values through a third,
// and free a value then take it under another key.
var uniqTable = model.Table{Name: "t3", Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "v", Type: "text"}},
	Key: []string{"pk"}, Unique: [][]string{{"v"}}}

// evTable is a table without a primary key under REPLICA IDENTITY FULL,
// named by whole rows. Its rows come from a small alphabet, so programs
// insert identical rows and delete rows that exist; its values need quoting
// in a row value (space, quote, parenthesis, comma, empty) and a NULL note
// is common.
var (
	evTable  = pipeline.KeylessTable{Name: "ev", Columns: []string{"seq", "what", "note"}, Full: true}
	evWhats  = []string{"a b", `x"y`, "(p)", "", "plain,comma"}
	evSeqs   = []string{"1", "2"}
	evIsNote = []bool{false, true}
)

// markerTable holds the one row a world writes after a program: the stream
// is read up to that transaction, so nothing is waited for by time.
const markerTable = "marker"

// Values are small (under 100 bytes) or big: 3000 to 6000 bytes, past the
// simulator's ToastThreshold and past the 2 kB at which PostgreSQL moves a
// row's widest values out of line, never in between.
const bigMin, bigMax = 3000, 6000

func smallValue(id int) string { return "s" + strconv.Itoa(id) }

// bigValue is the big value named id, n bytes long. It names itself, so a
// report can print it short.
func bigValue(id, n int) string {
	head := fmt.Sprintf("<big%d/%d>", id, n)
	return strings.Repeat(head, n/len(head)+1)[:n]
}

// show prints a value for reports: big values by their name.
func show(v string) string {
	if len(v) < 100 {
		return strconv.Quote(v)
	}
	var id, n int
	if _, err := fmt.Sscanf(v, "<big%d/%d>", &id, &n); err == nil && v == bigValue(id, n) {
		return fmt.Sprintf("big%d/%d", id, n)
	}
	return fmt.Sprintf("(%d bytes %q...)", len(v), v[:20])
}

func showRow(r model.Row) string {
	parts := make([]string, 0, len(r))
	for _, c := range r.Columns() {
		parts = append(parts, c+"="+show(r.Get(c)))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// A program is transactions of statements, run one after the other by one
// client.
type program []txnProg

type txnProg struct {
	Stmts []stmt
	Abort bool // the function returns an error after its statements
}

type opKind int

const (
	opPut opKind = iota
	opDelete
	opRekey
	opGet
	opInsertRow // evTable
	opDeleteRow // evTable
)

type stmt struct {
	Op        opKind
	Table, PK string
	NewPK     string    // Rekey
	Row       model.Row // Put: the columns it sets
}

func (s stmt) String() string {
	switch s.Op {
	case opPut:
		return fmt.Sprintf("Put(%s, %s, %s)", s.Table, s.PK, showRow(s.Row))
	case opDelete:
		return fmt.Sprintf("Delete(%s, %s)", s.Table, s.PK)
	case opRekey:
		return fmt.Sprintf("Rekey(%s, %s, %s)", s.Table, s.PK, s.NewPK)
	case opInsertRow:
		return fmt.Sprintf("InsertRow(%s, %s)", s.Table, showRow(s.Row))
	case opDeleteRow:
		return fmt.Sprintf("DeleteRow(%s, %s)", s.Table, showRow(s.Row))
	}
	return fmt.Sprintf("Get(%s, %s)", s.Table, s.PK)
}

// GoString keeps rapid's log of what it drew short: big values by name.
func (s stmt) GoString() string { return s.String() }

func (tp txnProg) GoString() string { return strings.TrimSpace(program{tp}.String()) }

func (p program) GoString() string { return "\n" + p.String() }

func (p program) String() string {
	var b strings.Builder
	for i, tp := range p {
		parts := make([]string, len(tp.Stmts))
		for j, s := range tp.Stmts {
			parts[j] = s.String()
		}
		fmt.Fprintf(&b, "  T%d: %s", i, strings.Join(parts, "; "))
		if tp.Abort {
			b.WriteString("; return error")
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// errAbort is what a program's rolled-back transaction returns.
var errAbort = errors.New("the program rolls this transaction back")

// fn is the transaction as application code; reads go to gets.
func (tp txnProg) fn(gets *[]string) pipeline.TxnFunc {
	return func(tx pipeline.Tx) error {
		*gets = (*gets)[:0]
		for _, s := range tp.Stmts {
			switch s.Op {
			case opPut:
				tx.Put(s.Table, s.PK, s.Row)
			case opDelete:
				tx.Delete(s.Table, s.PK)
			case opRekey:
				tx.Rekey(s.Table, s.PK, s.NewPK)
			case opInsertRow:
				tx.InsertRow(s.Table, s.Row)
			case opDeleteRow:
				tx.DeleteRow(s.Table, s.Row)
			case opGet:
				row, ok := tx.Get(s.Table, s.PK)
				*gets = append(*gets, showGet(model.Key{Table: s.Table, PK: s.PK}, row, ok))
			}
		}
		if tp.Abort {
			return errAbort
		}
		return nil
	}
}

func showGet(k model.Key, row model.Row, ok bool) string {
	if !ok {
		return k.String() + " absent"
	}
	return k.String() + " " + showRow(row)
}

// Generators. Big values are drawn often and puts that leave a column out
// are common, so that updates leaving a big value unchanged come up in
// every shape.

func drawValue(t *rapid.T, label string) string {
	if rapid.Bool().Draw(t, label+" big") {
		return bigValue(rapid.IntRange(1, 9).Draw(t, label+" id"), rapid.IntRange(bigMin, bigMax).Draw(t, label+" size"))
	}
	return smallValue(rapid.IntRange(1, 9).Draw(t, label+" id"))
}

// drawEvent is a row of evTable from its small alphabet.
func drawEvent(t *rapid.T) model.Row {
	r := model.R("seq", rapid.SampledFrom(evSeqs).Draw(t, "ev seq"), "what", rapid.SampledFrom(evWhats).Draw(t, "ev what"))
	if rapid.SampledFrom(evIsNote).Draw(t, "ev note") {
		r.Set("note", "n")
	}
	return r
}

func drawStmt(t *rapid.T) stmt {
	if r := rapid.IntRange(0, 9).Draw(t, "keyless"); r < 2 {
		s := stmt{Op: opInsertRow, Table: evTable.Name, Row: drawEvent(t)}
		if r == 1 {
			s.Op = opDeleteRow
		}
		return s
	}
	s := stmt{Table: rapid.SampledFrom(tables).Draw(t, "table"), PK: rapid.SampledFrom(keys).Draw(t, "pk")}
	switch r := rapid.IntRange(0, 19).Draw(t, "op"); {
	case r < 9:
		s.Op = opPut
		var cols []string
		switch c := rapid.IntRange(0, 9).Draw(t, "columns"); {
		case c < 4:
			cols = []string{"blob", "v"}
		case c < 6:
			cols = []string{"v"}
		case c < 9:
			cols = []string{"blob"}
		}
		s.Row = model.Row{}
		if s.Table == uniqTable.Name {
			// No blob there, and small values only: a unique index
			// takes no value of several kilobytes.
			cols = cols[:0]
			if rapid.IntRange(0, 4).Draw(t, "v set") > 0 {
				s.Row.Set("v", smallValue(rapid.IntRange(1, 3).Draw(t, "unique v")))
			}
		}
		for _, c := range cols {
			s.Row.Set(c, drawValue(t, c))
		}
	case r < 12:
		s.Op = opDelete
	case r < 16:
		s.Op = opRekey
		s.NewPK = rapid.SampledFrom(keys).Draw(t, "new pk")
	default:
		s.Op = opGet
	}
	return s
}

func drawProgram(t *rapid.T) program {
	return rapid.SliceOfN(rapid.Custom(func(t *rapid.T) txnProg {
		return txnProg{
			Stmts: rapid.SliceOfN(rapid.Custom(drawStmt), 1, 5).Draw(t, "statements"),
			Abort: rapid.IntRange(0, 5).Draw(t, "abort") == 0,
		}
	}), 1, 6).Draw(t, "program")
}

// observation is what one world did with a program.
type observation struct {
	// Text is everything compared between worlds: each transaction's
	// outcome and reads, the stream per committed transaction, the final
	// tables. No LSN or XID appears in it.
	Text string
	// Replay is empty when the stream, replayed change by change and by
	// model.State (net transactions), gives the final tables; else how
	// not (see replay).
	Replay string
	// Txns is the stream with LSNs, the marker transaction left out.
	Txns []model.Txn
}

// aborted reports whether err is a transaction rolled back by the program
// or by a unique violation (a Rekey onto an existing key), in either world.
func aborted(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, errAbort) || errors.Is(err, services.ErrAborted) ||
		(errors.As(err, &pgErr) && pgErr.Code == "23505")
}

// observe runs prog on a source from an empty snapshot and reads the stream
// up to a marker transaction written after it. It is the same code in both
// worlds: in the simulator it runs as a task.
func observe(ctx context.Context, src pipeline.Source, stream pipeline.ChangeStream, prog program) (observation, error) {
	var obs observation
	snap, err := pipeline.ReadSnapshot(ctx, stream)
	if err != nil {
		return obs, fmt.Errorf("snapshot: %w", err)
	}
	if len(snap.Changes) > 0 {
		return obs, fmt.Errorf("snapshot of the emptied tables holds %v", snap)
	}
	if _, err := stream.Start(ctx); err != nil {
		return obs, fmt.Errorf("start: %w", err)
	}
	var b strings.Builder
	byXID := map[uint64]int{}
	for i, tp := range prog {
		var gets []string
		txn, err := src.Exec(ctx, tp.fn(&gets))
		switch {
		case err == nil:
			fmt.Fprintf(&b, "T%d committed", i)
			if len(gets) > 0 {
				fmt.Fprintf(&b, "; read %s", strings.Join(gets, ", "))
			}
			b.WriteByte('\n')
			if len(txn.Changes) > 0 {
				byXID[txn.XID] = i
			}
		case aborted(err):
			fmt.Fprintf(&b, "T%d rolled back\n", i)
		default:
			return obs, fmt.Errorf("T%d: %w", i, err)
		}
	}
	if _, err := src.Exec(ctx, func(tx pipeline.Tx) error {
		tx.Put(markerTable, "end", model.R("v", "end"))
		return nil
	}); err != nil {
		return obs, fmt.Errorf("marker: %w", err)
	}
	for done := false; !done; {
		txns, err := stream.Next(ctx)
		if err != nil {
			return obs, fmt.Errorf("next, after %d transactions: %w", len(obs.Txns), err)
		}
		for j, t := range txns {
			if isMarker(t) {
				if len(t.Changes) != 1 || j != len(txns)-1 {
					return obs, fmt.Errorf("the marker transaction is %v, followed by %d more", t, len(txns)-1-j)
				}
				done = true
				break
			}
			obs.Txns = append(obs.Txns, t)
		}
	}
	b.WriteString("stream:\n")
	for _, t := range obs.Txns {
		if i, ok := byXID[t.XID]; ok {
			fmt.Fprintf(&b, "  transaction of T%d\n", i)
		} else {
			b.WriteString("  transaction of no committed program transaction\n")
		}
		for _, c := range t.Changes {
			fmt.Fprintf(&b, "    %s\n", showChange(c))
		}
	}
	final, err := readTables(ctx, src)
	if err != nil {
		return obs, err
	}
	b.WriteString("tables:\n")
	for _, k := range model.SortedKeys(final) {
		fmt.Fprintf(&b, "  %s %s\n", k, showRow(final[k]))
	}
	obs.Text = b.String()
	obs.Replay = replay(obs.Txns, final)
	return obs, nil
}

func isMarker(t model.Txn) bool {
	for _, c := range t.Changes {
		if c.Table == markerTable {
			return true
		}
	}
	return false
}

func showChange(c model.Change) string {
	s := c.Op.String() + " " + c.Key().String()
	if c.OldPK != "" {
		s += " from " + c.OldPK
	}
	if c.Op != model.OpDelete || c.Row != nil {
		s += " " + showRow(c.Row)
	}
	if len(c.Unchanged) > 0 {
		s += " unchanged " + strings.Join(c.Unchanged, ",")
	}
	return s
}

// readTables reads every row of the alphabet through a read-only
// transaction, which commits nothing and so streams nothing.
func readTables(ctx context.Context, src pipeline.Source) (map[model.Key]model.Row, error) {
	rows := map[model.Key]model.Row{}
	_, err := src.Exec(ctx, func(tx pipeline.Tx) error {
		for _, table := range tables {
			for _, pk := range keys {
				if r, ok := tx.Get(table, pk); ok {
					rows[model.Key{Table: table, PK: pk}] = r
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the tables: %w", err)
	}
	return rows, nil
}

// replay says how the tables differ from the stream replayed two ways:
// change by change, as the stream reads (applyRaw), and as the pipeline
// replays it, by net transactions (model.State). "" when neither differs.
func replay(txns []model.Txn, final map[model.Key]model.Row) string {
	// The keyed tables only: the worlds' keyless table is compared by its
	// stream, since a Tx has no read of it.
	var keyed []model.Txn
	for _, t := range txns {
		k := t
		k.Changes = nil
		for _, c := range t.Changes {
			if c.Table != evTable.Name {
				k.Changes = append(k.Changes, c)
			}
		}
		keyed = append(keyed, k)
	}
	txns = keyed
	var out []string
	if d := diffRows(applyRaw(txns), final); d != "" {
		out = append(out, "the stream applied change by change, against the tables:\n"+d)
	}
	if d := diffRows(applyState(txns), final); d != "" {
		out = append(out, "the stream applied by model.State (net transactions), against the tables:\n"+d)
	}
	return strings.Join(out, "")
}

// applyRaw applies txns change by change, as their statements did: an
// unchanged column keeps the value of the row the change read (the old
// key's on a key change), a key change deletes the old key.
func applyRaw(txns []model.Txn) map[model.Key]model.Row {
	rows := map[model.Key]model.Row{}
	for _, t := range txns {
		for _, c := range t.Changes {
			src := c.Key()
			if c.OldPK != "" {
				src.PK = c.OldPK
			}
			c = model.MergeUnchanged(c, rows[src])
			delete(rows, src)
			if c.Op != model.OpDelete {
				rows[c.Key()] = c.Row
			}
		}
	}
	return rows
}

// applyState is the tables model.State builds from txns, which is how the
// simulated source keeps its tables and the checker its ground truth.
func applyState(txns []model.Txn) map[model.Key]model.Row {
	st := model.NewState()
	for _, t := range txns {
		st.Apply(t)
	}
	rows := map[model.Key]model.Row{}
	for _, k := range st.Keys() {
		e, _ := st.Get(k)
		rows[k] = e.Row
	}
	return rows
}

// diffRows lists how got differs from want, or is "".
func diffRows(got, want map[model.Key]model.Row) string {
	all := maps.Clone(got)
	maps.Copy(all, want)
	var b strings.Builder
	for _, k := range model.SortedKeys(all) {
		g, gok := got[k]
		w, wok := want[k]
		if gok != wok || g.Encode() != w.Encode() {
			fmt.Fprintf(&b, "  %s: %s, the tables %s\n", k, showMaybe(g, gok), showMaybe(w, wok))
		}
	}
	return b.String()
}

func showMaybe(r model.Row, ok bool) string {
	if !ok {
		return "no row"
	}
	return showRow(r)
}

// netDiffers reports whether some prefix of txns, applied by model.State
// (net transactions), ends with other tables than applied change by change:
// what the moved-row shapes once showed (see movedRowShapes).
func netDiffers(txns []model.Txn) bool {
	for i := 1; i <= len(txns); i++ {
		if diffRows(applyState(txns[:i]), applyRaw(txns[:i])) != "" {
			return true
		}
	}
	return false
}

// runSim runs prog on a fresh simulated source, through the same clients
// the pipeline uses, in a fault-free world.
func runSim(prog program) (observation, error) {
	w := sim.New(sim.Config{Seed: 1})
	defer w.Stop()
	db := w.AddNode("db", services.BootSourceDB(&services.Recorder{}))
	if err := db.State().(*services.SourceDB).CreateTable(evTable); err != nil {
		return observation{}, err
	}
	if err := db.State().(*services.SourceDB).Define(uniqTable); err != nil {
		return observation{}, err
	}
	app := w.AddNode("app", nil)
	var obs observation
	var err error
	done := false
	app.Go("program", func(ctx context.Context) {
		obs, err = observe(ctx, &services.SourceClient{From: app, DB: db}, &services.StreamClient{From: app, DB: db}, prog)
		done = true
	})
	const limit = time.Hour // of virtual time; a program takes well under a second
	for !done && w.Now() < limit {
		if rerr := w.Run(w.Now() + time.Second); rerr != nil {
			return obs, fmt.Errorf("simulator: %w", rerr)
		}
	}
	if !done {
		return obs, fmt.Errorf("simulator: the program did not finish in %v of virtual time", limit)
	}
	return obs, err
}

// pgWorld is the real source: tables made as the simulator models them
// (default replica identity, big values out of line and uncompressed), a
// publication of them and one stream whose slot each program recreates.
type pgWorld struct {
	pool   *pgxpool.Pool
	src    *pgsource.Source
	stream *pgsource.Stream
}

// pgSchema makes the tables with their own SQL, not pgsource.CreateTables:
// the simulator models the default replica identity (the key), under which
// an unchanged out-of-line value is not sent, and STORAGE EXTERNAL keeps
// PostgreSQL from compressing a big value back inline.
const pgSchema = `
CREATE TABLE t1 (pk text PRIMARY KEY, v text, blob text);
CREATE TABLE t2 (pk text PRIMARY KEY, v text, blob text);
ALTER TABLE t1 ALTER COLUMN v SET STORAGE EXTERNAL, ALTER COLUMN blob SET STORAGE EXTERNAL;
ALTER TABLE t2 ALTER COLUMN v SET STORAGE EXTERNAL, ALTER COLUMN blob SET STORAGE EXTERNAL;
CREATE TABLE t3 (pk text PRIMARY KEY, v text UNIQUE);
CREATE TABLE marker (pk text PRIMARY KEY, v text);
CREATE TABLE ev (seq text, what text, note text);
ALTER TABLE ev REPLICA IDENTITY FULL;
CREATE PUBLICATION conformance FOR TABLE t1, t2, t3, marker, ev;
`

func newPGWorld(t *testing.T, dsn string) *pgWorld {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, pgSchema); err != nil {
		t.Fatalf("create the tables: %v", err)
	}
	var identities string
	if err := pool.QueryRow(ctx, `SELECT string_agg(relname || ':' || relreplident::text, ' ' ORDER BY relname) FROM pg_class
		WHERE relname IN ('t1', 't2') AND relkind = 'r'`).Scan(&identities); err != nil || identities != "t1:d t2:d" {
		t.Fatalf("replica identities %q (%v), want the default (d) on t1 and t2", identities, err)
	}
	stream, err := pgsource.NewStream(pgsource.Config{DSN: dsn, Slot: "conformance", Publication: "conformance"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close(context.Background()) })
	return &pgWorld{pool: pool, src: &pgsource.Source{Pool: pool}, stream: stream}
}

// run empties the tables, then observes prog; the snapshot recreates the
// slot after the TRUNCATE, so the stream never sees it.
func (p *pgWorld) run(prog program) (observation, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := p.pool.Exec(ctx, "TRUNCATE t1, t2, t3, marker, ev"); err != nil {
		return observation{}, fmt.Errorf("empty the tables: %w", err)
	}
	return observe(ctx, p.src, p.stream, prog)
}

// failer is what *testing.T and *rapid.T share.
type failer interface {
	Helper()
	Fatalf(format string, args ...any)
}

// compare runs prog in both worlds and fails when they differ.
func compare(t failer, pg *pgWorld, prog program) {
	t.Helper()
	got, want := runBoth(t, pg, prog)
	judge(t, prog, got, want)
}

// runBoth runs prog in the simulator (got) and on PostgreSQL (want).
func runBoth(t failer, pg *pgWorld, prog program) (got, want observation) {
	t.Helper()
	want, err := pg.run(prog)
	if err != nil {
		t.Fatalf("PostgreSQL: %v\nprogram:\n%s", err, prog)
	}
	got, err = runSim(prog)
	if err != nil {
		t.Fatalf("simulator: %v\nprogram:\n%s", err, prog)
	}
	return got, want
}

// judge fails t when the worlds' observations differ, or when a world's
// stream replayed is not its tables.
func judge(t failer, prog program, got, want observation) {
	t.Helper()
	if got.Text != want.Text {
		t.Fatalf("the simulated source and PostgreSQL disagree, first at line %d\nprogram:\n%s--- simulator\n%s--- PostgreSQL 15\n%s",
			firstDiff(got.Text, want.Text), prog, got.Text, want.Text)
	}
	if want.Replay != "" {
		t.Fatalf("PostgreSQL's stream replayed is not its tables: %s\nprogram:\n%s%s", want.Replay, prog, want.Text)
	}
	if got.Replay != "" {
		t.Fatalf("the simulator's stream replayed is not its tables: %s\nprogram:\n%s%s", got.Replay, prog, got.Text)
	}
}

// firstDiff is the 1-based number of the first line where a and b differ.
func firstDiff(a, b string) int {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

func testSource(t *testing.T, dsn string) {
	pg := newPGWorld(t, dsn)
	// The shapes of an update that leaves a big value out, by name, then
	// random programs.
	for _, tc := range shapes() {
		t.Run(tc.name, func(t *testing.T) { compare(t, pg, tc.prog) })
	}
	for _, tc := range movedRowShapes() {
		t.Run(tc.name, func(t *testing.T) { compare(t, pg, tc.prog) })
	}
	for _, tc := range uniqueShapes() {
		t.Run(tc.name, func(t *testing.T) { compare(t, pg, tc.prog) })
	}
	t.Run("Random", func(t *testing.T) {
		rapid.Check(t, func(t *rapid.T) {
			prog := drawProgram(t)
			got, want := runBoth(t, pg, prog)
			judge(t, prog, got, want)
			if netDiffers(want.Txns) {
				t.Fatalf("PostgreSQL's stream applied as net transactions (model.State) differs from applying it change by change\nprogram:\n%s", prog)
			}
		})
	})
}

// movedRowShapes move a row off a key while leaving a big value unchanged,
// then write the old key or the new key again. They found a bug in
// model.Net, which the simulated source's tables, the checker's ground
// truth and the appliers all use: it let the moved row's change (which
// kept OldPK) read and delete the old key, so a re-insert of the old key
// listed before it lost the moved row's value, and a later change of the
// new key left the old key alive. Net now gives the old key a change of its
// own and names the source row in From, which stores read before the
// transaction (model.ResolveFrom).
func movedRowShapes() []shape {
	big1 := bigValue(1, 3000)
	put := func(pk string, row model.Row) stmt { return stmt{Op: opPut, Table: "t1", PK: pk, Row: row} }
	insert := txnProg{Stmts: []stmt{put("a", model.R("v", "s1", "blob", big1))}}
	rekey := stmt{Op: opRekey, Table: "t1", PK: "a", NewPK: "b"}
	return []shape{
		{"RekeyThenReuseOldKey", program{insert, {Stmts: []stmt{rekey, put("a", model.R("v", "s2"))}}}},
		{"RekeyThenDeleteNewKey", program{insert, {Stmts: []stmt{rekey, {Op: opDelete, Table: "t1", PK: "b"}}}}},
		{"RekeyThenSetEveryColumn", program{insert, {Stmts: []stmt{rekey, put("b", model.R("v", "s2", "blob", "s3"))}}}},
	}
}

type shape struct {
	name string
	prog program
}

// shapes are hand-written programs for each way an update can leave a big
// (out of line) value unchanged, and the transaction boundaries around
// them.
func shapes() []shape {
	big1, big2, big3 := bigValue(1, 3000), bigValue(2, 4500), bigValue(3, 6000)
	put := func(pk string, row model.Row) stmt { return stmt{Op: opPut, Table: "t1", PK: pk, Row: row} }
	del := func(pk string) stmt { return stmt{Op: opDelete, Table: "t1", PK: pk} }
	rekey := func(pk, to string) stmt { return stmt{Op: opRekey, Table: "t1", PK: pk, NewPK: to} }
	get := func(pk string) stmt { return stmt{Op: opGet, Table: "t1", PK: pk} }
	txn := func(ss ...stmt) txnProg { return txnProg{Stmts: ss} }
	insert := txn(put("a", model.R("v", "s1", "blob", big1)))
	return []shape{
		{"UpdateInLaterTxn", program{insert, txn(put("a", model.R("v", "s2")))}},
		{"UpdateAfterInsertInOneTxn", program{txn(put("a", model.R("v", "s1", "blob", big1)), put("a", model.R("v", "s2")))}},
		{"TwoUpdates", program{insert, txn(put("a", model.R("v", "s2")), put("a", model.R("v", "s3")))}},
		{"UpdateNamingNoColumn", program{txn(put("a", model.R("v", big2, "blob", big1))), txn(put("a", model.Row{}))}},
		{"BigColumnSetAgainToTheSameValue", program{insert, txn(put("a", model.R("blob", big1)))}},
		{"BigColumnSetSmallColumnLeft", program{txn(put("a", model.R("v", big2, "blob", "s1"))), txn(put("a", model.R("blob", big3)))}},
		{"SmallColumnLeftOut", program{txn(put("a", model.R("v", "s1", "blob", "s2"))), txn(put("a", model.R("v", "s3")))}},
		{"Rekey", program{insert, txn(rekey("a", "b"))}},
		{"RekeyAfterInsertInOneTxn", program{txn(put("a", model.R("v", "s1", "blob", big1)), rekey("a", "b"))}},
		{"RekeyAfterUpdate", program{insert, txn(put("a", model.R("v", "s2")), rekey("a", "b"))}},
		{"UpdateAfterRekey", program{insert, txn(rekey("a", "b"), put("b", model.R("v", "s2")))}},
		{"RekeyTwice", program{insert, txn(rekey("a", "b"), rekey("b", "c")), txn(rekey("c", "a"))}},
		{"RekeyOntoExistingKeyRollsBack", program{insert, txn(put("b", model.R("v", "s2"))), txn(put("a", model.R("v", "s3")), rekey("a", "b")), txn(get("a"), get("b"))}},
		{"RekeyOntoDeletedKey", program{insert, txn(put("b", model.R("v", "s2", "blob", big2))), txn(del("b"), rekey("a", "b"), put("b", model.R("v", "s3")))}},
		{"DeleteReinsertUpdate", program{insert, txn(del("a"), put("a", model.R("v", "s2", "blob", big2)), put("a", model.R("v", "s3")))}},
		{"DeleteReinsertWithoutBigUpdate", program{insert, txn(del("a"), put("a", model.R("v", "s2")), put("a", model.R("v", "s3")))}},
		{"InsertPartialThenAddBig", program{txn(put("a", model.R("v", "s1"))), txn(put("a", model.R("blob", big1)), put("a", model.R("v", "s2")))}},
		{"RolledBackLeavesNothing", program{insert, {Stmts: []stmt{put("a", model.R("v", "s9")), rekey("a", "c")}, Abort: true}, txn(get("a"), get("c"))}},
		{"ReadsOwnWrites", program{txn(put("a", model.R("v", "s1", "blob", big1)), get("a"), put("a", model.R("v", "s2")), get("a"), rekey("a", "b"), get("a"), get("b"))}},
		{"OnlyReadsAndMisses", program{txn(get("a"), del("a"), rekey("a", "b")), insert}},
		// The keyless table under FULL identity: whole-row keys that need
		// quoting and hold NULLs, identical rows inserted apart and in one
		// transaction and deleted by one statement, a delete of a row that
		// is not there, a delete and re-insert.
		{"KeylessInsertsAndDeletes", program{
			txn(evIns(model.R("seq", "1", "what", `x"y`)), evIns(model.R("seq", "1", "what", `x"y`))),
			txn(evIns(model.R("seq", "2", "what", "a b", "note", "n")), evIns(model.R("seq", "1", "what", `x"y`))),
			txn(evDel(model.R("seq", "1", "what", `x"y`)), evDel(model.R("seq", "9", "what", ""))),
			txn(evDel(model.R("seq", "2", "what", "a b", "note", "n")), evIns(model.R("seq", "2", "what", "a b", "note", "n"))),
			txn(evIns(model.R("seq", "", "what", "(p)")), evIns(model.Row{}))}},
	}
}

// uniqueShapes write uniqTable's unique column the ways applications do
// and the ways PostgreSQL refuses: a duplicate, a swap without a third
// value (refused at its first statement), a swap through one, a value
// freed by a delete or a rename and taken under another key in the same
// transaction, a value taken back after a rolled-back attempt.
func uniqueShapes() []shape {
	put := func(pk, v string) stmt { return stmt{Op: opPut, Table: uniqTable.Name, PK: pk, Row: model.R("v", v)} }
	del := func(pk string) stmt { return stmt{Op: opDelete, Table: uniqTable.Name, PK: pk} }
	rekey := func(pk, to string) stmt { return stmt{Op: opRekey, Table: uniqTable.Name, PK: pk, NewPK: to} }
	get := func(pk string) stmt { return stmt{Op: opGet, Table: uniqTable.Name, PK: pk} }
	txn := func(ss ...stmt) txnProg { return txnProg{Stmts: ss} }
	two := txn(put("a", "s1"), put("b", "s2"))
	return []shape{
		{"UniqueDuplicateRollsBack", program{two, txn(put("c", "s3"), put("c", "s1")), txn(get("c"))}},
		{"UniqueSwapWithoutThirdValue", program{two, txn(put("a", "s2"), put("b", "s1")), txn(get("a"), get("b"))}},
		{"UniqueSwapThroughThirdValue", program{two, txn(put("a", "s3"), put("b", "s1"), put("a", "s2"))}},
		{"UniqueDeleteThenTakeElsewhere", program{two, txn(del("a"), put("c", "s1"))}},
		{"UniqueRenameThenTakeOldKey", program{two, txn(rekey("a", "c"), put("a", "s3"), put("d", "s1"))}},
		{"UniqueNullsDoNotConflict", program{txn(stmt{Op: opPut, Table: uniqTable.Name, PK: "a", Row: model.Row{}}, stmt{Op: opPut, Table: uniqTable.Name, PK: "b", Row: model.Row{}})}},
		{"UniqueMoveToTouchedRowThenDeleteHolder", program{two, txn(put("b", "s2"), del("a"), put("b", "s1"))}},
	}
}

func evIns(row model.Row) stmt { return stmt{Op: opInsertRow, Table: evTable.Name, Row: row} }
func evDel(row model.Row) stmt { return stmt{Op: opDeleteRow, Table: evTable.Name, Row: row} }

// testStores runs the same net transactions through the simulated store
// rules (storetest.Ref, which is store.Overlay) and the PostgreSQL adapters:
// guarded batches, as the appliers send them, and blind writes, as dual
// writers do.
func testStores(t *testing.T, dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	type pair struct {
		name   string
		kind   model.StoreKind
		blind  bool // written by Write, not Apply
		s      storetest.Store
		ref    *storetest.Ref
		offset int64
		pos    *model.Position
	}
	var pairs []*pair
	for _, kind := range []model.StoreKind{model.Replica, model.Search} {
		for _, blind := range []bool{false, true} {
			p := &pair{name: kind.String() + " apply", kind: kind, blind: blind}
			prefix := "apply_"
			if blind {
				p.name, prefix = kind.String()+" write", "write_"
			}
			var err error
			if kind == model.Replica {
				p.s, err = pgstore.NewReplica(ctx, pool, pgstore.Options{Prefix: prefix})
			} else {
				p.s, err = pgstore.NewSearch(ctx, pool, pgstore.Options{Prefix: prefix})
			}
			if err != nil {
				t.Fatal(err)
			}
			pairs = append(pairs, p)
		}
	}
	t.Run("UnchangedFilledFromTheSameBatch", func(t *testing.T) {
		if d := unchangedFromTheSameBatch(t, pool); d != "" {
			t.Error(d)
		}
	})
	t.Run("Random", func(t *testing.T) {
		rapid.Check(t, func(t *rapid.T) {
			prog := drawProgram(t)
			obs, err := runSim(prog)
			if err != nil {
				t.Fatalf("simulator: %v\nprogram:\n%s", err, prog)
			}
			net := make([]model.Txn, len(obs.Txns))
			truth := model.NewState()
			for i, txn := range obs.Txns {
				net[i] = model.Net(txn)
				truth.Apply(txn)
			}
			// Batches as an applier cuts them: the cuts are drawn.
			var batches [][]model.Txn
			for rest := net; len(rest) > 0; {
				n := rapid.IntRange(1, len(rest)).Draw(t, "batch")
				batches = append(batches, rest[:n])
				rest = rest[n:]
			}
			redeliver := rapid.Bool().Draw(t, "redeliver")
			for _, p := range pairs {
				if err := p.s.Clear(ctx); err != nil {
					t.Fatalf("%s: clear: %v", p.name, err)
				}
				p.ref, p.offset, p.pos = storetest.NewRef(p.kind, false), 0, nil
			}
			for bi, batch := range batches {
				for _, p := range pairs {
					step := fmt.Sprintf("batch %d of %d", bi+1, len(batches))
					if p.blind {
						for _, txn := range batch {
							p.ref.Write(txn)
							if err := p.s.Write(ctx, txn); err != nil {
								t.Fatalf("%s: %s: Write: %v", p.name, step, err)
							}
						}
						sameDocs(t, p.name, step, p.s, p.ref.Docs(), prog, net)
						continue
					}
					p.offset += int64(len(batch))
					b := pipeline.Batch{Txns: batch, Position: model.Position{Offset: p.offset, LSN: batch[len(batch)-1].CommitLSN}, Base: p.pos}
					applyBoth(t, p.name, step, p.s, p.ref, b, prog, net)
					p.pos = &b.Position
					if redeliver { // the same batch again, from where it left the store
						b.Base = &b.Position
						applyBoth(t, p.name, step+" redelivered", p.s, p.ref, b, prog, net)
					}
				}
			}
			for _, p := range pairs {
				if d := diffDocs(p.ref.Docs(), truth.Project(p.kind)); d != "" {
					t.Fatalf("%s: the simulated store rules and the ground truth (model.State) differ:\n%s\nprogram:\n%snet transactions:\n%s", p.name, d, prog, showTxns(net))
				}
			}
		})
	})
}

// unchangedFromTheSameBatch applies one batch, a row's insert with a big
// value and then an update that leaves it unchanged, to a PostgreSQL
// replica and search index and to the simulated store rules, and says how
// they differ ("" when they do not). Every unchanged column of the batch
// comes from its own earlier change, so no key is read from the store:
// store.ResolveUnchanged once returned such a batch unfilled (fixed in
// 4fddb8c), and the update wrote the row without its big value.
func unchangedFromTheSameBatch(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	big := bigValue(1, 3000)
	batch := pipeline.Batch{Position: model.Position{Offset: 2, LSN: 20}, Txns: []model.Txn{
		{XID: 1, CommitLSN: 10, Changes: []model.Change{{Table: "t1", PK: "a", Op: model.OpInsert, Row: model.R("v", "s1", "blob", big)}}},
		{XID: 2, CommitLSN: 20, Changes: []model.Change{{Table: "t1", PK: "a", Op: model.OpUpdate, Row: model.R("v", "s2"), Unchanged: []string{"blob"}}}},
	}}
	var out []string
	for _, kind := range []model.StoreKind{model.Replica, model.Search} {
		var s storetest.Store
		var err error
		if kind == model.Replica {
			s, err = pgstore.NewReplica(ctx, pool, pgstore.Options{Prefix: "probe_"})
		} else {
			s, err = pgstore.NewSearch(ctx, pool, pgstore.Options{Prefix: "probe_"})
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Clear(ctx); err != nil {
			t.Fatal(err)
		}
		ref := storetest.NewRef(kind, false)
		if err := ref.Apply(batch); err != nil {
			t.Fatal(err)
		}
		if err := s.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
		snap, err := s.ReadAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := diffDocs(snap.Docs, ref.Docs()); d != "" {
			out = append(out, fmt.Sprintf("%s, batch [insert t1/a {blob=big1/3000 v=\"s1\"} at 10, update t1/a {v=\"s2\"} unchanged blob at 20] (got: PostgreSQL, want: simulated):\n%s", kind, d))
		}
	}
	return strings.Join(out, "")
}

func applyBoth(t *rapid.T, name, step string, s storetest.Store, ref *storetest.Ref, b pipeline.Batch, prog program, net []model.Txn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ref.Apply(b); err != nil {
		t.Fatalf("%s: %s: the reference refused the batch: %v", name, step, err)
	}
	if err := s.Apply(ctx, b); err != nil {
		t.Fatalf("%s: %s: Apply: %v", name, step, err)
	}
	sameDocs(t, name, step, s, ref.Docs(), prog, net)
}

// sameDocs fails t when the store's documents are not want.
func sameDocs(t *rapid.T, name, step string, s storetest.Store, want model.Docs, prog program, net []model.Txn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap, err := s.ReadAll(ctx)
	if err != nil {
		t.Fatalf("%s: %s: ReadAll: %v", name, step, err)
	}
	if d := diffDocs(snap.Docs, want); d != "" {
		t.Fatalf("%s: after %s the PostgreSQL store and the simulated store rules differ (got: PostgreSQL, want: simulated):\n%s\nprogram:\n%snet transactions:\n%s", name, step, d, prog, showTxns(net))
	}
}

func diffDocs(got, want model.Docs) string {
	if maps.Equal(got, want) {
		return ""
	}
	all := maps.Clone(got)
	maps.Copy(all, want)
	var b strings.Builder
	for _, k := range model.SortedKeys(all) {
		g, gok := got[k]
		w, wok := want[k]
		if gok != wok || g != w {
			fmt.Fprintf(&b, "  %s: got %s, want %s\n", k, showDoc(g, gok), showDoc(w, wok))
		}
	}
	return b.String()
}

func showDoc(d model.Doc, ok bool) string {
	if !ok {
		return "none"
	}
	v := d.Value
	if strings.Contains(v, "=") {
		v = showRow(model.DecodeRow(v))
	} else if len(v) > 60 {
		v = fmt.Sprintf("%q... (%d bytes)", v[:40], len(v))
	}
	return fmt.Sprintf("%s lsn=%s revs=%d", v, d.LSN, d.Revs)
}

func showTxns(txns []model.Txn) string {
	var b strings.Builder
	for _, t := range txns {
		fmt.Fprintf(&b, "  at %s\n", t.CommitLSN)
		for _, c := range t.Changes {
			fmt.Fprintf(&b, "    %s\n", showChange(c))
		}
	}
	return b.String()
}
