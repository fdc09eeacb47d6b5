package pgsource

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"lockstep/model"
)

// keylessSchema has a table of each kind: a primary key (ok), none but
// REPLICA IDENTITY FULL (full), none at all (bare), and none but a replica
// identity index (idx, which lockstep does not use as a key).
const keylessSchema = `CREATE TABLE ok (id int PRIMARY KEY, v text);
	CREATE TABLE full_rows (a int, b text);
	ALTER TABLE full_rows REPLICA IDENTITY FULL;
	CREATE TABLE bare (a int, b text);
	CREATE TABLE idx (a int NOT NULL, b text);
	CREATE UNIQUE INDEX idx_a ON idx (a);
	ALTER TABLE idx REPLICA IDENTITY USING INDEX idx_a;
	CREATE TEMP TABLE scratch (a int)`

// testCheckTables: before anything is created, CheckTables names every
// table that would be captured without a way to name its rows, and what to
// do; the filter leaves tables out. (The old code found the first such
// table only when the snapshot read it, and the capture retried for ever.)
func testCheckTables(t *testing.T, dsn string) {
	e := newEnv(t, dsn, nil)
	e.sql(keylessSchema)
	check := func(cfg Config) ([]string, error) {
		t.Helper()
		var logs bytes.Buffer
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		names, err := e.stream(cfg).CheckTables(e.ctx)
		if logs.Len() > 0 {
			t.Logf("logged: %s", logs.String())
		}
		return names, err
	}

	_, err := check(Config{})
	var nk *NoKeyError
	if !errors.As(err, &nk) || !errors.Is(err, ErrUnsupported) || !reflect.DeepEqual(nk.Tables, []string{"bare", "idx"}) {
		t.Fatalf("no publication yet: err = %v, want a NoKeyError naming bare and idx", err)
	}
	for _, want := range []string{"tables bare, idx have neither a primary key nor REPLICA IDENTITY FULL", "--exclude-tables bare,idx"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %q", err, want)
		}
	}
	var n int
	if err := e.pool.QueryRow(e.ctx, "SELECT count(*) FROM pg_publication").Scan(&n); err != nil || n != 0 {
		t.Errorf("CheckTables created a publication (%d, %v)", n, err)
	}

	if got, err := check(Config{ExcludeTables: []string{"public.bare", "idx", "gone"}}); err != nil || !reflect.DeepEqual(got, []string{"full_rows", "ok"}) {
		t.Errorf("excluding bare and idx: %v, %v; want full_rows and ok (the temporary table is never published)", got, err)
	}
	if got, err := check(Config{Tables: []string{"ok"}}); err != nil || !reflect.DeepEqual(got, []string{"ok"}) {
		t.Errorf("only ok: %v, %v", got, err)
	}
	if _, err := check(Config{Tables: []string{"ok", "okk"}}); !errors.Is(err, ErrNoTable) || !strings.Contains(err.Error(), "okk") {
		t.Errorf("a table to capture that does not exist: err = %v, want ErrNoTable naming okk", err)
	}

	// An existing publication is what counts.
	e.sql("CREATE PUBLICATION partial FOR TABLE ok, bare")
	if _, err := check(Config{Publication: "partial"}); !errors.As(err, &nk) || !reflect.DeepEqual(nk.Tables, []string{"bare"}) ||
		!strings.Contains(err.Error(), "table bare has neither") {
		t.Errorf("publication of ok and bare: err = %v, want bare only", err)
	}
	if _, err := check(Config{Publication: "partial", Tables: []string{"idx"}}); !errors.Is(err, ErrNoTable) {
		t.Errorf("a table to capture outside the publication: err = %v, want ErrNoTable", err)
	}

	// The snapshot refuses the same way (a table created after the check).
	s := e.stream(Config{ExcludeTables: []string{"idx"}})
	if _, err := s.Snapshot(e.ctx); !errors.As(err, &nk) || !reflect.DeepEqual(nk.Tables, []string{"bare"}) {
		t.Errorf("snapshot with bare published: err = %v, want a NoKeyError naming bare", err)
	}
}

// testWholeRowKey: a table without a primary key under REPLICA IDENTITY
// FULL is named by all its columns, exactly as PostgreSQL writes the row
// value, in the snapshot and in the stream; an update moves the row to a
// new key.
func testWholeRowKey(t *testing.T, dsn string) {
	e := newEnv(t, dsn, nil)
	e.sql(`CREATE TABLE tags (n int, label text, note text);
		ALTER TABLE tags REPLICA IDENTITY FULL;
		INSERT INTO tags VALUES (1, 'a,b', NULL), (2, '', 'say "hi"'), (3, 'back\slash', '(x) y')`)
	pgKeys := func(where string) []string {
		t.Helper()
		rows, err := e.pool.Query(e.ctx, "SELECT tags::text FROM tags "+where+" ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var keys []string
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		return keys
	}
	for _, tc := range rowKeyCases {
		params := make([]string, len(tc.vals))
		for i := range tc.vals {
			params[i] = fmt.Sprintf("$%d::text", i+1)
		}
		var got string
		if err := e.pool.QueryRow(e.ctx, "SELECT ROW("+strings.Join(params, ", ")+")::text", tc.vals...).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("PostgreSQL writes %q as %s, the test case says %s", tc.vals, got, tc.want)
		}
	}

	s := e.stream(Config{})
	snap := e.start(s)
	var snapKeys []string
	for _, c := range snap.Changes {
		snapKeys = append(snapKeys, c.PK)
	}
	if want := pgKeys(""); !reflect.DeepEqual(snapKeys, want) {
		t.Errorf("snapshot keys %q, PostgreSQL's row values %q", snapKeys, want)
	}
	if c := snap.Changes[0]; c.PK != `(1,"a,b",)` || !reflect.DeepEqual(c.Row, model.R("n", "1", "label", "a,b")) {
		t.Errorf("snapshot row %v, want key (1,\"a,b\",) and every non-NULL column", c)
	}

	e.sql("INSERT INTO tags VALUES (4, 'new', NULL)")
	e.sql("UPDATE tags SET note = 'n' WHERE n = 4")
	e.sql("DELETE FROM tags WHERE n = 4")
	got := e.collect(s, 3)
	want := [][]model.Change{
		{{Table: "tags", PK: "(4,new,)", Op: model.OpInsert, Row: model.R("n", "4", "label", "new")}},
		{{Table: "tags", PK: "(4,new,n)", Op: model.OpUpdate, Row: model.R("n", "4", "label", "new", "note", "n"), OldPK: "(4,new,)"}},
		{{Table: "tags", PK: "(4,new,n)", Op: model.OpDelete}},
	}
	for i := range want {
		if !reflect.DeepEqual(got[i].Changes, want[i]) {
			t.Errorf("txn %d: %v\nwant %v", i, got[i].Changes, want[i])
		}
	}
}

// testKeylessAtRuntime: a keyless table created after the capture started
// stops the stream with a NoKeyError that names it and says what to do. A
// key added afterwards does not help the change already written (the old
// code's error, and so the capture's retries, came back for good, for
// every table); leaving the table out gets past it, with a warning.
func testKeylessAtRuntime(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"acct": {"v"}})
	s := e.stream(Config{})
	e.start(s)
	e.sql("CREATE TABLE events (at int, what text)")
	e.sql("INSERT INTO events VALUES (1, 'boot')")
	after := e.exec(put("acct", "k", model.R("v", "1")))
	// PostgreSQL itself refuses to update or delete such a table once a
	// publication FOR ALL TABLES holds it.
	if _, err := e.pool.Exec(e.ctx, "UPDATE events SET what = 'x'"); !isCode(err, "55000") {
		t.Errorf("update of a keyless published table: err = %v, want PostgreSQL's 55000 (no replica identity)", err)
	}

	var nk *NoKeyError
	txns, err := e.next(s)
	if !errors.As(err, &nk) || nk.XID == 0 || !reflect.DeepEqual(nk.Tables, []string{"events"}) ||
		!strings.Contains(err.Error(), "--exclude-tables events") {
		t.Fatalf("change to a keyless table: %v, %v; want a NoKeyError naming events and its xid", txns, err)
	}
	s.Close(e.ctx)

	e.sql("ALTER TABLE events ADD PRIMARY KEY (at)")
	e.sql("INSERT INTO events VALUES (2, 'up')")
	again := e.stream(Config{Slot: s.cfg.Slot})
	if _, err := again.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.next(again); !errors.As(err, &nk) {
		t.Fatalf("after a key was added: err = %v, want the same NoKeyError (the change was written without one)", err)
	}
	again.Close(e.ctx)

	var logs bytes.Buffer
	skip := e.stream(Config{Slot: s.cfg.Slot, ExcludeTables: []string{"events"}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, err := skip.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	got := e.collect(skip, 1)
	sameChanges(t, "the other table's change", got[0], after)
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "table=events") {
		t.Errorf("want one warning naming events for its two skipped changes, logged:\n%s", logs.String())
	}
}
