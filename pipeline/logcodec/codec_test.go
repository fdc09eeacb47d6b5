package logcodec

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"lockstep/model"
)

func TestCodecRoundTrip(t *testing.T) {
	cases := []model.Txn{
		{},
		{XID: 1, CommitLSN: 10, Changes: []model.Change{}},
		{XID: math.MaxUint64, CommitLSN: math.MaxUint64, Changes: []model.Change{
			{Table: "users", PK: "u1", Op: model.OpInsert, Row: model.R("name", "Ann \"Lee\"", "bio", "ünïcode\n;=")},
			{Table: "users", PK: "u2", Op: model.OpUpdate, Row: model.Row{}, OldPK: "u1", Unchanged: []string{"bio", "photo"}},
			{Table: "users", PK: "u3", Op: model.OpDelete},
		}},
		{XID: 3, CommitLSN: 30, Snapshot: true, Changes: []model.Change{
			{Table: "t", PK: "a", Op: model.OpInsert, Row: model.R("v", ""), Revs: 7},
		}},
	}
	for _, want := range cases {
		b, err := EncodeTxn(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeTxn(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip of %s:\n got %#v\nwant %#v", b, got, want)
		}
	}
	// nil and empty stay apart.
	b, _ := EncodeTxn(cases[2])
	if !strings.Contains(string(b), `"row":{}`) || !strings.Contains(string(b), `"row":null`) {
		t.Fatalf("empty and nil rows are not told apart: %s", b)
	}
}

func TestCodecRoundTripGenerated(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		want := model.Txn{
			XID:       rapid.Uint64().Draw(t, "xid"),
			CommitLSN: model.LSN(rapid.Uint64().Draw(t, "lsn")),
			Snapshot:  rapid.Bool().Draw(t, "snapshot"),
			PrevLSN:   model.LSN(rapid.Uint64().Draw(t, "prev")),
		}
		if n := rapid.IntRange(-1, 5).Draw(t, "changes"); n >= 0 {
			want.Changes = make([]model.Change, n)
		}
		for i := range want.Changes {
			c := model.Change{
				Table: rapid.String().Draw(t, "table"),
				PK:    rapid.String().Draw(t, "pk"),
				Op:    model.Op(rapid.IntRange(1, 3).Draw(t, "op")),
				OldPK: rapid.String().Draw(t, "oldpk"),
				Revs:  rapid.IntRange(0, 1000).Draw(t, "revs"),
			}
			if rapid.Bool().Draw(t, "hasRow") {
				c.Row = model.RowFromMap(rapid.MapOf(rapid.StringMatching(`[a-z]{1,4}`), rapid.String()).Draw(t, "row"))
			}
			if rapid.Bool().Draw(t, "hasUnchanged") {
				c.Unchanged = rapid.SliceOfN(rapid.StringMatching(`[a-z]{1,4}`), 1, 3).Draw(t, "unchanged")
			}
			want.Changes[i] = c
		}
		want.Schema = genSchema(t, rapid.String())
		b, err := EncodeTxn(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeTxn(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip of %s:\n got %#v\nwant %#v", b, got, want)
		}
	})
}

func TestCodecRefuses(t *testing.T) {
	for _, bad := range []string{
		`{"v":2,"xid":1,"lsn":1,"changes":null}`,
		`{"xid":1}`,
		`{"v":1,"changes":[{"table":"t","pk":"k","op":"upsert","row":null}]}`,
		`not json`,
	} {
		if _, err := DecodeTxn([]byte(bad)); err == nil {
			t.Fatalf("DecodeTxn(%s) succeeded", bad)
		}
	}
	if _, err := EncodeTxn(model.Txn{Changes: []model.Change{{Op: 9}}}); err == nil {
		t.Fatal("EncodeTxn of an unknown op succeeded")
	}
	if _, err := EncodeTxn(model.Txn{Changes: []model.Change{{Op: model.OpInsert, Row: model.R("v", "\xff")}}}); err == nil {
		t.Fatal("EncodeTxn of invalid UTF-8 succeeded")
	}
	if _, err := EncodeTxn(model.Txn{Changes: []model.Change{{Op: model.OpUpdate, Row: model.Row{}, Unchanged: []string{"\xff"}}}}); err == nil {
		t.Fatal("EncodeTxn of an invalid UTF-8 unchanged column succeeded")
	}
}
