package pgsource

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"lockstep/model"
)

// allMessages is one of every message kind, for round trips and as fuzz
// seeds.
func allMessages() []Message {
	return []Message{
		begin(0x16B3740, 731),
		commit(0x16B3740, 0x16B3770),
		&Origin{CommitLSN: 0x1234, Name: "node_a"},
		accounts('d'),
		&Relation{ID: 7, Namespace: "app", Name: "items", ReplicaIdentity: 'f', Columns: []Column{
			{Key: true, Name: "a", TypeOID: 23, TypeMod: -1},
			{Key: true, Name: "b", TypeOID: 1043, TypeMod: 68},
		}},
		&Relation{ID: 8, Namespace: "public", Name: "empty", ReplicaIdentity: 'n'},
		&Type{ID: 16500, Namespace: "public", Name: "mood"},
		&Insert{RelationID: 16400, New: tup("a", "10", nil)},
		&Update{RelationID: 16400, New: tup("a", "11", unchanged)},
		&Update{RelationID: 16400, OldKind: 'K', Old: tup("a", nil, nil), New: tup("b", "11", "x")},
		&Update{RelationID: 16400, OldKind: 'O', Old: tup("a", "10", "big"), New: tup("a", "12", unchanged)},
		&Delete{RelationID: 16400, OldKind: 'K', Old: tup("a", nil, nil)},
		&Delete{RelationID: 16400, OldKind: 'O', Old: tup("a", "12", "big")},
		&Insert{RelationID: 16400, New: tup("c", []byte{0, 1, 2}, "")},
		&Truncate{Options: 3, RelationIDs: []uint32{16400, 7}},
		&LogicalMessage{Transactional: true, LSN: 0x99, Prefix: "lockstep", Content: []byte("hello")},
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	for _, m := range allMessages() {
		b := encode(m)
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%T): %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("Decode(encode(%#v)) = %#v", m, got)
		}
	}
}

// TestDecodeBytes pins the wire layout with bytes written out by hand from
// the protocol documentation, not with the test encoder.
func TestDecodeBytes(t *testing.T) {
	for _, tc := range []struct {
		hex  string
		want Message
	}{{
		// 'B', final LSN 0/16B3740, commit time 1 s after 2000-01-01, xid 731
		hex:  "42" + "00000000016b3740" + "00000000000f4240" + "000002db",
		want: &Begin{FinalLSN: 0x16B3740, CommitTime: time.Date(2000, 1, 1, 0, 0, 1, 0, time.UTC), XID: 731},
	}, {
		// 'C', flags 0, commit LSN, end LSN, time 0
		hex:  "43" + "00" + "00000000016b3740" + "00000000016b3770" + "0000000000000000",
		want: &Commit{CommitLSN: 0x16B3740, EndLSN: 0x16B3770, CommitTime: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
	}, {
		// 'R', id 16400, "public", "t", identity 'd', 2 columns: key "id" int4, "v" text
		hex: "52" + "00004010" + hex.EncodeToString([]byte("public\x00t\x00")) + "64" + "0002" +
			"01" + hex.EncodeToString([]byte("id\x00")) + "00000017" + "ffffffff" +
			"00" + hex.EncodeToString([]byte("v\x00")) + "00000019" + "ffffffff",
		want: &Relation{ID: 16400, Namespace: "public", Name: "t", ReplicaIdentity: 'd', Columns: []Column{
			{Key: true, Name: "id", TypeOID: 23, TypeMod: -1}, {Name: "v", TypeOID: 25, TypeMod: -1}}},
	}, {
		// 'U', rel 16400, 'O' (n, u), 'N' (t "1", t "xy")
		hex:  "55" + "00004010" + "4f" + "0002" + "6e" + "75" + "4e" + "0002" + "74" + "00000001" + "31" + "74" + "00000002" + "7879",
		want: &Update{RelationID: 16400, OldKind: 'O', Old: tup(nil, unchanged), New: tup("1", "xy")},
	}, {
		// 'D', rel 16400, 'K' (t "1", n)
		hex:  "44" + "00004010" + "4b" + "0002" + "74" + "00000001" + "31" + "6e",
		want: &Delete{RelationID: 16400, OldKind: 'K', Old: tup("1", nil)},
	}, {
		// 'T', 1 relation, options 1 (CASCADE), rel 16400
		hex:  "54" + "00000001" + "01" + "00004010",
		want: &Truncate{Options: 1, RelationIDs: []uint32{16400}},
	}} {
		b, err := hex.DecodeString(tc.hex)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", tc.hex, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Decode(%s) = %#v, want %#v", tc.hex, got, tc.want)
		}
		if again := encode(got); !bytes.Equal(again, b) {
			t.Errorf("encode(Decode(%s)) = %x", tc.hex, again)
		}
	}
}

func TestDecodeCopiesItsInput(t *testing.T) {
	b := encode(&Insert{RelationID: 1, New: tup("abc")})
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'X'
	}
	if got := string(m.(*Insert).New[0].Data); got != "abc" {
		t.Fatalf("value changed with the input buffer: %q", got)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	// Every proper prefix of every message is truncated.
	for _, m := range allMessages() {
		b := encode(m)
		for n := 0; n < len(b); n++ {
			if _, err := Decode(b[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%T cut to %d of %d bytes): err = %v, want ErrMalformed", m, n, len(b), err)
			}
		}
		if _, err := Decode(append(b, 0)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "trailing") {
			t.Fatalf("Decode(%T with a trailing byte): err = %v, want trailing bytes", m, err)
		}
	}
	for name, b := range map[string][]byte{
		"unknown type":           []byte("Zxyz"),
		"stream start (proto 2)": enc{'S'}.u32(1).u8(1),
		"insert without N":       encTuple(enc{'I'}.u32(1).u8('X'), tup("a")),
		"update bad marker":      encTuple(enc{'U'}.u32(1).u8('Q'), tup("a")),
		"delete bad marker":      encTuple(enc{'D'}.u32(1).u8('N'), tup("a")),
		"unknown value kind":     enc{'I'}.u32(1).u8('N').u16(1).u8('z'),
		"negative column count":  enc{'I'}.u32(1).u8('N').u16(0xFFFF),
		"huge column count":      enc{'I'}.u32(1).u8('N').u16(0x7FFF).u8('n'),
		"negative value length":  enc{'I'}.u32(1).u8('N').u16(1).u8('t').u32(0xFFFFFFFF),
		"value length too long":  append(enc{'I'}.u32(1).u8('N').u16(1).u8('t').u32(10), "abc"...),
		"huge relation count":    enc{'T'}.u32(0x7FFFFFFF).u8(0),
		"unterminated string":    append(enc{'O'}.u64(1), "abc"...),
		"huge relation columns":  enc{'R'}.u32(1).str("public").str("t").u8('d').u16(5000),
		"negative message bytes": enc{'M'}.u8(0).u64(1).str("p").u32(0x80000000),
	} {
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode(%x): err = %v, want ErrMalformed", name, b, err)
		}
	}
}

// feed adds msgs to a and returns the transactions they complete, failing
// on an error.
func feed(t *testing.T, a *Assembler, msgs ...Message) []model.Txn {
	t.Helper()
	var out []model.Txn
	for _, m := range msgs {
		txn, done, err := a.Feed(encode(m))
		if err != nil {
			t.Fatalf("Feed(%T): %v", m, err)
		}
		if done {
			out = append(out, txn)
		}
	}
	return out
}

// feedErr adds msgs and returns the first error.
func feedErr(a *Assembler, msgs ...Message) error {
	for _, m := range msgs {
		if _, _, err := a.Feed(encode(m)); err != nil {
			return err
		}
	}
	return nil
}

func TestAssemblerTransactions(t *testing.T) {
	var a Assembler
	got := feed(t, &a,
		begin(0x100, 10),
		accounts('d'),
		&Insert{RelationID: 16400, New: tup("a", "10", "hi")},
		&Insert{RelationID: 16400, New: tup("b", "5", nil)},
		&Update{RelationID: 16400, New: tup("a", "11", "hi")},
		&Delete{RelationID: 16400, OldKind: 'K', Old: tup("b", nil, nil)},
		&Type{ID: 1, Namespace: "public", Name: "mood"},
		&Origin{CommitLSN: 5, Name: "x"},
		&LogicalMessage{Prefix: "p"},
		commit(0x100, 0x130),
		begin(0x200, 11),
		commit(0x200, 0x228),
		begin(0x300, 12),
		&Update{RelationID: 16400, OldKind: 'K', Old: tup("a", nil, nil), New: tup("z", "11", "hi")},
		commit(0x300, 0x330),
	)
	want := []model.Txn{
		{XID: 10, CommitLSN: 0x130, Changes: []model.Change{
			{Table: "accounts", PK: "a", Op: model.OpInsert, Row: model.R("bal", "10", "note", "hi")},
			{Table: "accounts", PK: "b", Op: model.OpInsert, Row: model.R("bal", "5")},
			{Table: "accounts", PK: "a", Op: model.OpUpdate, Row: model.R("bal", "11", "note", "hi")},
			{Table: "accounts", PK: "b", Op: model.OpDelete},
		}},
		{XID: 11, CommitLSN: 0x228},
		{XID: 12, CommitLSN: 0x330, Changes: []model.Change{
			{Table: "accounts", PK: "z", Op: model.OpUpdate, Row: model.R("bal", "11", "note", "hi"), OldPK: "a"},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}
	if a.InTransaction() {
		t.Error("still in a transaction after the last commit")
	}
}

func TestAssemblerKeys(t *testing.T) {
	items := &Relation{ID: 7, Namespace: "app", Name: "items", ReplicaIdentity: 'd', Columns: []Column{
		{Key: true, Name: "a"}, {Name: "v"}, {Key: true, Name: "b"},
	}}
	var a Assembler
	got := feed(t, &a, begin(1, 1), items, &Insert{RelationID: 7, New: tup("1", "x", "two")}, commit(1, 2))
	want := model.Change{Table: "app.items", PK: "1,two", Op: model.OpInsert, Row: model.R("v", "x")}
	if !reflect.DeepEqual(got[0].Changes, []model.Change{want}) {
		t.Errorf("composite key in schema app: got %v, want %v", got[0].Changes, want)
	}

	// REPLICA IDENTITY FULL flags every column: the key comes from
	// PrimaryKey, the old row fills in unchanged TOAST values and names a
	// changed key.
	var asked []string
	a = Assembler{PrimaryKey: func(rel *Relation) ([]string, error) {
		asked = append(asked, rel.Name)
		return []string{"id"}, nil
	}}
	got = feed(t, &a, begin(1, 1), accounts('f'),
		&Update{RelationID: 16400, OldKind: 'O', Old: tup("a", "1", "big"), New: tup("b", "2", unchanged)},
		&Delete{RelationID: 16400, OldKind: 'O', Old: tup("b", "2", "big")},
		commit(1, 2))
	wantC := []model.Change{
		{Table: "accounts", PK: "b", Op: model.OpUpdate, Row: model.R("bal", "2", "note", "big"), OldPK: "a"},
		{Table: "accounts", PK: "b", Op: model.OpDelete},
	}
	if !reflect.DeepEqual(got[0].Changes, wantC) || !reflect.DeepEqual(asked, []string{"accounts"}) {
		t.Errorf("full identity: got %v (asked %v), want %v", got[0].Changes, asked, wantC)
	}

	// Full identity without a lookup, or a table without a primary key, is
	// an error on its first change.
	for name, tc := range map[string]struct {
		a   Assembler
		rel *Relation
	}{
		"full identity, no lookup":    {Assembler{}, accounts('f')},
		"no key flags":                {Assembler{}, &Relation{ID: 16400, Name: "accounts", ReplicaIdentity: 'd', Columns: []Column{{Name: "id"}, {Name: "bal"}, {Name: "note"}}}},
		"no primary key, USING INDEX": {Assembler{PrimaryKey: func(*Relation) ([]string, error) { return nil, nil }}, accounts('i')},
		"no primary key, NOTHING":     {Assembler{PrimaryKey: func(*Relation) ([]string, error) { return nil, nil }}, accounts('n')},
		"key not published":           {Assembler{PrimaryKey: func(*Relation) ([]string, error) { return []string{"gone"}, nil }}, accounts('i')},
	} {
		if err := feedErr(&tc.a, begin(1, 1), tc.rel); err != nil {
			t.Errorf("%s: the relation itself failed: %v", name, err)
			continue
		}
		err := feedErr(&tc.a, &Insert{RelationID: 16400, New: tup("a", "1", "x")})
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: err = %v, want ErrUnsupported", name, err)
		}
	}
	lookupErr := errors.New("connection refused")
	a = Assembler{PrimaryKey: func(*Relation) ([]string, error) { return nil, lookupErr }}
	if err := feedErr(&a, accounts('f')); !errors.Is(err, lookupErr) {
		t.Errorf("failed lookup: err = %v", err)
	}
}

// TestAssemblerWholeRowKey: a table without a primary key under REPLICA
// IDENTITY FULL is named by all its columns, written as PostgreSQL writes a
// row value; every change to another column changes the key.
func TestAssemblerWholeRowKey(t *testing.T) {
	a := Assembler{PrimaryKey: func(*Relation) ([]string, error) { return nil, nil }}
	got := feed(t, &a, begin(1, 1), accounts('f'),
		&Insert{RelationID: 16400, New: tup("a", "1", nil)},
		&Update{RelationID: 16400, OldKind: 'O', Old: tup("a", "1", nil), New: tup("a", "2", "x, y")},
		&Update{RelationID: 16400, OldKind: 'O', Old: tup("a", "2", "x, y"), New: tup("a", "2", "x, y")},
		&Update{RelationID: 16400, OldKind: 'O', Old: tup("a", "2", "BIG"), New: tup("a", "3", unchanged)},
		&Delete{RelationID: 16400, OldKind: 'O', Old: tup("a", "3", "BIG")},
		commit(1, 2))
	want := []model.Change{
		{Table: "accounts", PK: "(a,1,)", Op: model.OpInsert, Row: model.R("id", "a", "bal", "1")},
		{Table: "accounts", PK: `(a,2,"x, y")`, Op: model.OpUpdate, Row: model.R("id", "a", "bal", "2", "note", "x, y"), OldPK: "(a,1,)"},
		{Table: "accounts", PK: `(a,2,"x, y")`, Op: model.OpUpdate, Row: model.R("id", "a", "bal", "2", "note", "x, y")},
		{Table: "accounts", PK: "(a,3,BIG)", Op: model.OpUpdate, Row: model.R("id", "a", "bal", "3", "note", "BIG"), OldPK: "(a,2,BIG)"},
		{Table: "accounts", PK: "(a,3,BIG)", Op: model.OpDelete},
	}
	if !reflect.DeepEqual(got[0].Changes, want) {
		t.Errorf("got\n%v\nwant\n%v", got[0].Changes, want)
	}
}

// rowKeyCases are row values as PostgreSQL 15 prints them (ROW(...)::text;
// testWholeRowKey asks the server).
var rowKeyCases = []struct {
	vals []any // string or nil
	want string
}{
	{[]any{"1", "abc"}, "(1,abc)"},
	{[]any{"1", nil, "x"}, "(1,,x)"},
	{[]any{nil}, "()"},
	{[]any{""}, `("")`},
	{[]any{"a,b", "c"}, `("a,b",c)`},
	{[]any{"a", "b,c"}, `(a,"b,c")`},
	{[]any{`say "hi"`, `back\slash`}, `("say ""hi""","back\\slash")`},
	{[]any{"(x)", "tab\there", "new\nline"}, "(\"(x)\",\"tab\there\",\"new\nline\")"},
	{[]any{"é", "NULL"}, "(é,NULL)"},
}

func TestRowKey(t *testing.T) {
	for _, tc := range rowKeyCases {
		vals := make([]string, len(tc.vals))
		null := make([]bool, len(tc.vals))
		for i, v := range tc.vals {
			if v == nil {
				null[i] = true
			} else {
				vals[i] = v.(string)
			}
		}
		if got := rowKey(vals, null); got != tc.want {
			t.Errorf("rowKey(%q) = %s, want %s", tc.vals, got, tc.want)
		}
	}
}

// TestAssemblerSkip: a skipped table's changes and truncates are left out
// and reported to Skipped, whatever its key; a table without a key that is
// not skipped is a NoKeyError naming it and the transaction.
func TestAssemblerSkip(t *testing.T) {
	keyless := &Relation{ID: 9, Name: "events", ReplicaIdentity: 'd', Columns: []Column{{Name: "at"}, {Name: "what"}}}
	var skipped []string
	a := Assembler{
		Skip:    func(table string) bool { return table == "events" },
		Skipped: func(table string) { skipped = append(skipped, table) },
	}
	got := feed(t, &a, begin(1, 7), accounts('d'), keyless,
		&Insert{RelationID: 9, New: tup("1", "boot")},
		&Insert{RelationID: 16400, New: tup("a", "1", "x")},
		&Truncate{RelationIDs: []uint32{9}},
		commit(1, 2))
	want := []model.Change{{Table: "accounts", PK: "a", Op: model.OpInsert, Row: model.R("bal", "1", "note", "x")}}
	if !reflect.DeepEqual(got[0].Changes, want) || !reflect.DeepEqual(skipped, []string{"events", "events"}) {
		t.Errorf("got %v (skipped %v), want %v", got[0].Changes, skipped, want)
	}
	err := feedErr(&a, begin(3, 8), &Truncate{RelationIDs: []uint32{9, 16400}})
	if err == nil || !strings.Contains(err.Error(), "TRUNCATE of accounts in") {
		t.Errorf("truncate of a skipped and a captured table: err = %v, want one naming accounts only", err)
	}

	a = Assembler{}
	err = feedErr(&a, begin(1, 7), keyless, &Insert{RelationID: 9, New: tup("1", "boot")})
	var nk *NoKeyError
	if !errors.As(err, &nk) || !errors.Is(err, ErrUnsupported) || nk.XID != 7 || !reflect.DeepEqual(nk.Tables, []string{"events"}) ||
		!strings.Contains(err.Error(), "--exclude-tables events") {
		t.Errorf("change to a keyless table: err = %v, want a NoKeyError for events in xid 7", err)
	}
}

// TestAssemblerUnchangedToast: an unchanged TOASTed value is filled in from
// a whole old row; without one the column is named in Unchanged and left out
// of Row, never written as a placeholder and never an error (the old rule,
// an error, came back on every retry of the same WAL: the capture wedged).
func TestAssemblerUnchangedToast(t *testing.T) {
	cases := []struct {
		name          string
		ident         byte
		msg           Message
		want          model.Row
		wantUnchanged []string
		wantErr       string
	}{
		{"whole old row", 'f', &Update{RelationID: 16400, OldKind: 'O', Old: tup("a", "1", "BIG"), New: tup("a", "2", unchanged)},
			model.R("bal", "2", "note", "BIG"), nil, ""},
		{"old row NULL", 'f', &Update{RelationID: 16400, OldKind: 'O', Old: tup("a", "1", nil), New: tup("a", "2", unchanged)},
			model.R("bal", "2"), nil, ""},
		{"no old row", 'd', &Update{RelationID: 16400, New: tup("a", "2", unchanged)},
			model.R("bal", "2"), []string{"note"}, ""},
		{"two columns, sorted", 'd', &Update{RelationID: 16400, New: tup("a", unchanged, unchanged)},
			model.Row{}, []string{"bal", "note"}, ""},
		{"key-only old row", 'd', &Update{RelationID: 16400, OldKind: 'K', Old: tup("z", nil, nil), New: tup("a", "2", unchanged)},
			model.R("bal", "2"), []string{"note"}, ""},
		{"old row unchanged too", 'f', &Update{RelationID: 16400, OldKind: 'O', Old: tup("a", "1", unchanged), New: tup("a", "2", unchanged)},
			model.R("bal", "2"), []string{"note"}, ""},
		{"key from the old key", 'd', &Update{RelationID: 16400, OldKind: 'K', Old: tup("a", nil, nil), New: tup(unchanged, "2", "x")},
			model.R("bal", "2", "note", "x"), nil, ""},
		{"key not sent", 'd', &Update{RelationID: 16400, New: tup(unchanged, "2", "x")},
			nil, nil, `key column "id" is an unchanged TOASTed value`},
		{"in an insert", 'd', &Insert{RelationID: 16400, New: tup("a", "2", unchanged)},
			nil, nil, "only an update"},
		{"binary value", 'd', &Insert{RelationID: 16400, New: tup("a", []byte{1}, "x")},
			nil, nil, "binary"},
		{"NULL key", 'd', &Insert{RelationID: 16400, New: tup(nil, "1", "x")},
			nil, nil, "NULL"},
		{"short tuple", 'd', &Insert{RelationID: 16400, New: tup("a", "1")},
			nil, nil, "2 columns, relation 3"},
	}
	for _, tc := range cases {
		a := Assembler{PrimaryKey: func(*Relation) ([]string, error) { return []string{"id"}, nil }}
		feed(t, &a, begin(1, 1), accounts(tc.ident))
		_, _, err := a.Feed(encode(tc.msg))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want one saying %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		txn, _, err := a.Add(commit(1, 2))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		c := txn.Changes[0]
		if c.PK != "a" || !reflect.DeepEqual(c.Row, tc.want) || !reflect.DeepEqual(c.Unchanged, tc.wantUnchanged) {
			t.Errorf("%s: pk %q row %v unchanged %q, want pk a row %v unchanged %q", tc.name, c.PK, c.Row, c.Unchanged, tc.want, tc.wantUnchanged)
		}
		for _, v := range c.Row.All() {
			if v == "" {
				t.Errorf("%s: a placeholder was written as data: %v", tc.name, c.Row)
			}
		}
	}
}

func TestAssemblerRejects(t *testing.T) {
	for name, msgs := range map[string][]Message{
		"truncate":            {begin(1, 1), accounts('d'), &Truncate{RelationIDs: []uint32{16400}}},
		"change outside txn":  {accounts('d'), &Insert{RelationID: 16400, New: tup("a", "1", "x")}},
		"begin inside txn":    {begin(1, 1), begin(2, 2)},
		"commit without txn":  {commit(1, 2)},
		"unknown relation":    {begin(1, 1), &Insert{RelationID: 99, New: tup("a")}},
		"commit LSN mismatch": {begin(1, 1), commit(5, 9)},
		"commit ends early":   {begin(5, 1), commit(5, 5)},
	} {
		var a Assembler
		err := feedErr(&a, msgs...)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if name == "truncate" && (!errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "TRUNCATE of accounts")) {
			t.Errorf("truncate: err = %v, want ErrUnsupported naming the table", err)
		}
	}
	// Reset forgets relations and the open transaction.
	var a Assembler
	feed(t, &a, begin(1, 1), accounts('d'))
	a.Reset()
	if a.InTransaction() {
		t.Error("in a transaction after Reset")
	}
	if err := feedErr(&a, begin(2, 2), &Insert{RelationID: 16400, New: tup("a", "1", "x")}); err == nil {
		t.Error("relation remembered across Reset")
	}
}

// With TypeName, the first transaction that changes a table after a
// Relation message about it carries the table's definition (for a replica
// to create a table the snapshot did not have), and only that one: the
// next Relation message (a column added, a new session) carries it again.
func TestAssemblerCarriesTableDefinitions(t *testing.T) {
	names := map[uint32]string{23: "integer", 25: "text"}
	a := Assembler{TypeName: func(oid uint32, typmod int32) (string, error) { return names[oid], nil }}
	items := &Relation{ID: 9, Name: "items", ReplicaIdentity: 'd', Columns: []Column{{Key: true, Name: "id", TypeOID: 23, TypeMod: -1}, {Name: "v", TypeOID: 25, TypeMod: -1}}}
	wider := &Relation{ID: 9, Name: "items", ReplicaIdentity: 'd', Columns: append(slices.Clone(items.Columns), Column{Name: "n", TypeOID: 23, TypeMod: -1})}
	got := feed(t, &a,
		items,
		begin(0x100, 1), &Insert{RelationID: 9, New: tup("1", "x")}, &Insert{RelationID: 9, New: tup("2", "y")}, commit(0x100, 0x110),
		begin(0x200, 2), &Insert{RelationID: 9, New: tup("3", "z")}, commit(0x200, 0x210),
		wider,
		begin(0x300, 3), &Insert{RelationID: 9, New: tup("4", "w", "5")}, commit(0x300, 0x310),
	)
	def := model.Table{Name: "items", Key: []string{"id"}, Columns: []model.Column{{Name: "id", Type: "integer"}, {Name: "v", Type: "text"}}}
	widerDef := def.Clone()
	widerDef.Columns = append(widerDef.Columns, model.Column{Name: "n", Type: "integer"})
	if len(got) != 3 || !reflect.DeepEqual(got[0].Schema, []model.Table{def}) || got[1].Schema != nil || !reflect.DeepEqual(got[2].Schema, []model.Table{widerDef}) {
		t.Errorf("schemas carried: %v, %v, %v; want %v, none, %v", got[0].Schema, got[1].Schema, got[2].Schema, def, widerDef)
	}
}
