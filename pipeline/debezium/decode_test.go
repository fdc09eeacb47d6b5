package debezium

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"lockstep/model"
)

// capture.jsonl is what Debezium 3.6.1.Final's PostgreSQL connector (pgoutput,
// JSON converter without schemas, provide.transaction.metadata=true) wrote
// to Kafka for the transactions in wantCapture, read back topic by topic as
// a consumer of all its topics received them. Only the long TOASTed bodies
// are shortened ("abcdefghij...10000"), so the file stays small. The
// statements, on tables
//
//	accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL, note text)
//	docs (id text PRIMARY KEY, rev int NOT NULL, body text)  -- body STORAGE EXTERNAL from xid 749
//	pairs (a int, b text, v text, PRIMARY KEY (a, b))
//
// were:
//
//	BEGIN; INSERT INTO accounts VALUES (1,'ann',100,NULL),(2,'bob',50,'vip'); INSERT INTO docs VALUES ('d1',1,repeat('abcdefghij',1000)); COMMIT;
//	UPDATE accounts SET balance = balance - 30 WHERE id = 1;
//	BEGIN; UPDATE accounts SET balance = balance + 30 WHERE id = 2; UPDATE docs SET rev = 2 WHERE id = 'd1'; COMMIT;
//	UPDATE accounts SET id = 3 WHERE id = 1;
//	UPDATE docs SET id = 'd2', rev = 3 WHERE id = 'd1';
//	DELETE FROM accounts WHERE id = 2;
//	BEGIN; INSERT INTO pairs VALUES (1,'x','one'),(2,'y','two'); UPDATE pairs SET v = NULL WHERE a = 1; DELETE FROM pairs WHERE a = 2; COMMIT;
//	BEGIN; INSERT INTO accounts VALUES (9,'tmp',0,NULL); ROLLBACK;
//	BEGIN; COMMIT;
//	INSERT INTO docs VALUES ('t1', 1, repeat('0123456789', 500));
//	UPDATE docs SET rev = 2 WHERE id = 't1';
//	UPDATE docs SET id = 't2', rev = 3 WHERE id = 't1';
//	BEGIN; UPDATE docs SET rev = 4 WHERE id = 't2'; UPDATE docs SET body = 'short' WHERE id = 't2'; COMMIT;
//
// The commit LSNs are the ends of the commit records, checked with
// pg_waldump for xids 749 and 750.
var wantCapture = []model.Txn{
	{XID: 729, CommitLSN: 22250720, Changes: []model.Change{
		ins("accounts", "1", model.R("owner", "ann", "balance", "100")),
		ins("accounts", "2", model.R("owner", "bob", "balance", "50", "note", "vip")),
		ins("docs", "d1", model.R("rev", "1", "body", "abcdefghij...10000")),
	}},
	{XID: 730, CommitLSN: 22250856, Changes: []model.Change{
		upd("accounts", "1", model.R("owner", "ann", "balance", "70")),
	}},
	{XID: 731, CommitLSN: 22251208, Changes: []model.Change{
		upd("accounts", "2", model.R("owner", "bob", "balance", "80", "note", "vip")),
		upd("docs", "d1", model.R("rev", "2", "body", "abcdefghij...10000")), // compressed in line, so sent
	}},
	{XID: 732, CommitLSN: 22251416, Changes: []model.Change{
		moved(upd("accounts", "3", model.R("owner", "ann", "balance", "70")), "1"),
	}},
	{XID: 733, CommitLSN: 22251752, Changes: []model.Change{
		moved(upd("docs", "d2", model.R("rev", "3", "body", "abcdefghij...10000")), "d1"),
	}},
	{XID: 734, CommitLSN: 22251864, Changes: []model.Change{
		del("accounts", "2"),
	}},
	{XID: 735, CommitLSN: 22252424, Changes: []model.Change{
		ins("pairs", "1,x", model.R("v", "one")),
		ins("pairs", "2,y", model.R("v", "two")),
		upd("pairs", "1,x", model.Row{}),
		del("pairs", "2,y"),
	}},
	{XID: 749, CommitLSN: 22536808, Changes: []model.Change{
		ins("docs", "t1", model.R("rev", "1", "body", "0123456789...5000")),
	}},
	{XID: 750, CommitLSN: 22537008, Changes: []model.Change{
		kept(upd("docs", "t1", model.R("rev", "2")), "body"),
	}},
	{XID: 751, CommitLSN: 22537280, Changes: []model.Change{
		kept(moved(upd("docs", "t2", model.R("rev", "3")), "t1"), "body"),
	}},
	{XID: 752, CommitLSN: 22537784, Changes: []model.Change{
		kept(upd("docs", "t2", model.R("rev", "4")), "body"),
		upd("docs", "t2", model.R("rev", "4", "body", "short")),
	}},
}

// ins, upd and del are the changes of the three kinds.
func ins(table, pk string, row model.Row) model.Change { return change(model.OpInsert, table, pk, row) }
func upd(table, pk string, row model.Row) model.Change { return change(model.OpUpdate, table, pk, row) }
func del(table, pk string) model.Change                { return change(model.OpDelete, table, pk, nil) }

func change(op model.Op, table, pk string, row model.Row) model.Change {
	return model.Change{Table: table, PK: pk, Op: op, Row: row}
}

func moved(c model.Change, oldPK string) model.Change { c.OldPK = oldPK; return c }

func kept(c model.Change, cols ...string) model.Change { c.Unchanged = cols; return c }

// tb is what the helpers need of a *testing.T or a *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// captured is one line of capture.jsonl.
type captured struct {
	Topic   string            `json:"topic"`
	Offset  int64             `json:"offset"`
	Key     json.RawMessage   `json:"key"`
	Value   json.RawMessage   `json:"value"`
	Headers map[string]string `json:"headers"`
}

func loadCapture(t testing.TB) []Record {
	t.Helper()
	f, err := os.Open("testdata/capture.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c captured
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		r := Record{Topic: c.Topic, Offset: c.Offset, Key: c.Key}
		if string(c.Value) != "null" {
			r.Value = c.Value
		}
		for k, v := range c.Headers {
			r.Headers = append(r.Headers, Header{Key: k, Value: []byte(v)})
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

func decodeAll(t tb, recs []Record) ([]model.Txn, *Decoder) {
	t.Helper()
	d := &Decoder{TransactionTopic: "dbz.transaction"}
	var got []model.Txn
	for _, r := range recs {
		txns, err := d.Add(r)
		if err != nil {
			t.Fatalf("Add(%s): %v", r, err)
		}
		got = append(got, txns...)
	}
	return got, d
}

func sameTxns(t tb, got, want []model.Txn) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d transactions, want %d:\n%v", len(got), len(want), got)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("transaction %d:\n got %v (%+v)\nwant %v (%+v)", i, got[i], got[i].Changes, want[i], want[i].Changes)
		}
	}
}

// TestCapture: the connector's real output becomes the transactions that
// were committed, in commit order, with deletes, tombstones, key changes,
// composite keys, NULLs and unchanged TOASTed values as pgsource makes them.
func TestCapture(t *testing.T) {
	got, d := decodeAll(t, loadCapture(t))
	sameTxns(t, got, wantCapture)
	if d.Waiting() != 0 || len(d.pending) != 0 {
		t.Fatalf("left over: %d ENDs waiting, %d transactions' events pending", d.Waiting(), len(d.pending))
	}
	// The transactions rebuild the tables as they ended.
	s := model.NewState()
	for _, txn := range got {
		s.Apply(txn)
	}
	want := map[model.Key]model.Row{
		{Table: "accounts", PK: "3"}: model.R("owner", "ann", "balance", "70"),
		{Table: "docs", PK: "d2"}:    model.R("rev", "3", "body", "abcdefghij...10000"),
		{Table: "docs", PK: "t2"}:    model.R("rev", "4", "body", "short"),
		{Table: "pairs", PK: "1,x"}:  {},
	}
	for k, row := range want {
		if got, ok := s.Get(k); !ok || !reflect.DeepEqual(got.Row, row) {
			t.Errorf("%s = %v (found %v), want %v", k, got.Row, ok, row)
		}
	}
	if n := s.Len(); n != len(want) {
		t.Errorf("state has %d rows, want %d", n, len(want))
	}
}

// TestAnyInterleaving: the topics' records interleaved in any way, each
// topic in its order, give the same transactions: the commit order comes
// from the transaction topic, not from arrival.
func TestAnyInterleaving(t *testing.T) {
	recs := loadCapture(t)
	var topics []string
	byTopic := map[string][]Record{}
	for _, r := range recs {
		if byTopic[r.Topic] == nil {
			topics = append(topics, r.Topic)
		}
		byTopic[r.Topic] = append(byTopic[r.Topic], r)
	}
	rapid.Check(t, func(rt *rapid.T) {
		next := map[string]int{}
		var mixed []Record
		for len(mixed) < len(recs) {
			var open []string
			for _, tp := range topics {
				if next[tp] < len(byTopic[tp]) {
					open = append(open, tp)
				}
			}
			tp := rapid.SampledFrom(open).Draw(rt, "topic")
			mixed = append(mixed, byTopic[tp][next[tp]])
			next[tp]++
		}
		got, _ := decodeAll(rt, mixed)
		sameTxns(rt, got, wantCapture)
	})
}

// TestRestartReplay: after a connector restart Debezium sends a transaction
// again, BEGIN to END, with its events interleaved with the first copy's on
// other topics; each copy is handed out once, so the duplicate reaches the
// sinks as it reaches any consumer.
func TestRestartReplay(t *testing.T) {
	recs := loadCapture(t)
	var txn735 []Record
	for _, r := range recs {
		if strings.Contains(string(r.Value), `"735:`) || strings.Contains(string(r.Key), `"735:`) {
			txn735 = append(txn735, r)
		}
	}
	if len(txn735) != 6 { // BEGIN, 4 changes, END (the tombstone carries no id)
		t.Fatalf("found %d records of txId 735, want 6", len(txn735))
	}
	// Both copies' change events first, then both ENDs.
	var replay []Record
	for _, r := range txn735 {
		if r.Topic != "dbz.transaction" {
			replay = append(replay, r, r)
		}
	}
	for _, r := range txn735 {
		if r.Topic == "dbz.transaction" {
			replay = append(replay, r, r)
		}
	}
	got, d := decodeAll(t, replay)
	sameTxns(t, got, []model.Txn{wantCapture[6], wantCapture[6]})
	if len(d.pending) != 0 {
		t.Fatalf("%d transactions' events left pending", len(d.pending))
	}
}

// TestRestartAfterACutCopy: a crash can cut a copy short after its END
// was written, since Connect writes the topics in parallel: the first copy
// lacks one change event, and the restart sends the whole transaction
// again. Both ENDs hand it out, and the transactions after it are not held
// back waiting for the first copy's missing event.
func TestRestartAfterACutCopy(t *testing.T) {
	is735 := func(r Record) bool {
		return strings.Contains(string(r.Value), `"735:`) || strings.Contains(string(r.Key), `"735:`)
	}
	// Each record of xid 735 twice in its topic (the crash came right
	// after it, so the restart sends it first), but the second change
	// event once: the first copy lost it.
	var replay []Record
	changes := 0
	for _, r := range loadCapture(t) {
		replay = append(replay, r)
		if !is735(r) {
			continue
		}
		if r.Topic != "dbz.transaction" {
			if changes++; changes == 2 {
				continue
			}
		}
		replay = append(replay, r)
	}
	if changes != 4 {
		t.Fatalf("found %d change events of txId 735, want 4", changes)
	}
	got, d := decodeAll(t, replay)
	want := append(append(append([]model.Txn(nil), wantCapture[:7]...), wantCapture[6]), wantCapture[7:]...)
	sameTxns(t, got, want)
	if d.Waiting() != 0 || len(d.pending) != 0 {
		t.Fatalf("left over: %d ENDs waiting, %d transactions' events pending", d.Waiting(), len(d.pending))
	}
}

// TestWaitsForItsEvents: a transaction whose END arrived is held until its
// last change event does, and the transactions committed after it wait
// behind it.
func TestWaitsForItsEvents(t *testing.T) {
	recs := loadCapture(t)
	var last Record // accounts' insert of id 1, total_order 1 of xid 729
	var rest []Record
	for _, r := range recs {
		if r.Topic == "dbz.public.accounts" && r.Offset == 0 {
			last = r
			continue
		}
		rest = append(rest, r)
	}
	got, d := decodeAll(t, rest)
	if len(got) != 0 || d.Waiting() != len(wantCapture) {
		t.Fatalf("without xid 729's first event: %d transactions out, %d waiting; want 0 and %d", len(got), d.Waiting(), len(wantCapture))
	}
	txns, err := d.Add(last)
	if err != nil {
		t.Fatal(err)
	}
	sameTxns(t, txns, wantCapture)
}

// TestSchemasEnabled: records the JSON converter wrote with
// schemas.enable=true decode like the ones without.
func TestSchemasEnabled(t *testing.T) {
	wrap := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		return []byte(`{"schema":{"type":"struct","fields":[],"optional":false},"payload":` + string(b) + `}`)
	}
	recs := loadCapture(t)
	for i := range recs {
		recs[i].Key, recs[i].Value = wrap(recs[i].Key), wrap(recs[i].Value)
	}
	got, _ := decodeAll(t, recs)
	sameTxns(t, got, wantCapture)
}

// Hand-written records in the connector's format, for what it must refuse.
const (
	begin7  = `{"status":"BEGIN","id":"7:100","event_count":null,"data_collections":null}`
	end7    = `{"status":"END","id":"7:200","event_count":1,"data_collections":[{"data_collection":"public.t","event_count":1}]}`
	insert7 = `{"before":null,"after":{"id":1,"v":"a"},"op":"c","source":{"schema":"public","table":"t","txId":7,"lsn":150},"transaction":{"id":"7:150","total_order":1,"data_collection_order":1}}`
)

func feed(recs ...Record) ([]model.Txn, error) {
	d := &Decoder{TransactionTopic: "x.transaction"}
	var out []model.Txn
	for _, r := range recs {
		txns, err := d.Add(r)
		out = append(out, txns...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func txRec(v string) Record {
	return Record{Topic: "x.transaction", Key: []byte(`{"id":"7"}`), Value: []byte(v)}
}
func tRec(key, v string, h ...Header) Record {
	return Record{Topic: "x.public.t", Key: []byte(key), Value: []byte(v), Headers: h}
}

// TestHandWritten: a minimal well-formed transaction decodes, a table
// outside public keeps its schema, and everything malformed or unsupported
// is an error that says so, never a transaction.
func TestHandWritten(t *testing.T) {
	got, err := feed(txRec(begin7), tRec(`{"id":1}`, insert7), txRec(end7))
	if err != nil {
		t.Fatal(err)
	}
	sameTxns(t, got, []model.Txn{{XID: 7, CommitLSN: 200, Changes: []model.Change{ins("t", "1", model.R("v", "a"))}}})

	other := strings.Replace(insert7, `"schema":"public"`, `"schema":"app"`, 1)
	got, err = feed(tRec(`{"id":1}`, other), txRec(strings.Replace(end7, "public.t", "app.t", 1)))
	if err != nil {
		t.Fatal(err)
	}
	sameTxns(t, got, []model.Txn{{XID: 7, CommitLSN: 200, Changes: []model.Change{ins("app.t", "1", model.R("v", "a"))}}})

	// A table without a primary key: a null record key, rows named by
	// all their columns in the table's order (pipeline.RowKey), NULLs
	// empty; a delete under REPLICA IDENTITY FULL by its whole old row.
	keyless := strings.Replace(insert7, `"after":{"id":1,"v":"a"}`, `"after":{"seq":3,"who":"a b","v":null}`, 1)
	gone := strings.Replace(strings.Replace(keyless, `"before":null`, `"before":{"seq":3,"who":"a b","v":null}`, 1), `"after":{"seq":3,"who":"a b","v":null},"op":"c"`, `"after":null,"op":"d"`, 1)
	got, err = feed(tRec("", keyless), txRec(end7))
	if err != nil {
		t.Fatal(err)
	}
	sameTxns(t, got, []model.Txn{{XID: 7, CommitLSN: 200, Changes: []model.Change{ins("t", `(3,"a b",)`, model.R("seq", "3", "who", "a b"))}}})
	got, err = feed(tRec("null", gone), txRec(end7))
	if err != nil {
		t.Fatal(err)
	}
	sameTxns(t, got, []model.Txn{{XID: 7, CommitLSN: 200, Changes: []model.Change{del("t", `(3,"a b",)`)}}})

	for _, c := range []struct {
		name string
		recs []Record
		want error
	}{
		{"keyless delete without FULL identity", []Record{tRec("", strings.Replace(gone, `"before":{"seq":3,"who":"a b","v":null}`, `"before":null`, 1))}, ErrUnsupported},
		{"snapshot read", []Record{tRec(`{"id":1}`, strings.Replace(insert7, `"op":"c"`, `"op":"r"`, 1))}, ErrUnsupported},
		{"truncate", []Record{tRec(`{"id":1}`, strings.Replace(insert7, `"op":"c"`, `"op":"t"`, 1))}, ErrUnsupported},
		{"no transaction metadata", []Record{tRec(`{"id":1}`, strings.Replace(insert7, `"transaction":{"id":"7:150","total_order":1,"data_collection_order":1}`, `"transaction":null`, 1))}, ErrMalformed},
		{"id without lsn", []Record{txRec(strings.Replace(end7, `"7:200"`, `"7"`, 1))}, ErrMalformed},
		{"unknown status", []Record{txRec(strings.Replace(end7, `"END"`, `"ABORT"`, 1))}, ErrMalformed},
		{"END without count", []Record{txRec(strings.Replace(end7, `"event_count":1,`, `"event_count":null,`, 1))}, ErrMalformed},
		{"tables' counts disagree", []Record{txRec(strings.Replace(end7, `"event_count":1}`, `"event_count":2}`, 1))}, ErrMalformed},
		{"event of another table", []Record{txRec(strings.Replace(end7, "public.t", "public.u", 1)), tRec(`{"id":1}`, insert7)}, ErrMalformed},
		{"gap in total_order", []Record{tRec(`{"id":1}`, strings.Replace(insert7, `"total_order":1`, `"total_order":2`, 1)), txRec(end7)}, ErrMalformed},
		{"null key column", []Record{tRec(`{"id":null}`, insert7)}, ErrMalformed},
		{"keyless table", []Record{tRec(`{}`, insert7)}, ErrUnsupported},
		{"structured value", []Record{tRec(`{"id":1}`, strings.Replace(insert7, `"v":"a"`, `"v":{"x":1}`, 1))}, ErrUnsupported},
		{"key change without its delete", []Record{tRec(`{"id":1}`, insert7, Header{Key: headerOldKey, Value: []byte(`{"id":0}`)}), txRec(end7)}, ErrMalformed},
		{"key change without its create", []Record{tRec(`{"id":1}`, strings.Replace(strings.Replace(insert7, `"op":"c"`, `"op":"d"`, 1), `"after":{"id":1,"v":"a"}`, `"after":null`, 1), Header{Key: headerNewKey, Value: []byte(`{"id":2}`)}), txRec(end7)}, ErrMalformed},
		{"not JSON", []Record{tRec(`{"id":1}`, `{"before":`)}, ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := feed(c.recs...)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if len(got) != 0 {
				t.Fatalf("handed out %v", got)
			}
		})
	}
}
