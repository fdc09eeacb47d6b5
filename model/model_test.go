package model

import (
	"testing"

	"github.com/cespare/xxhash/v2"
	"pgregory.net/rapid"
)

func genRow(t *rapid.T) Row {
	return RowFromMap(rapid.MapOf(rapid.StringMatching(`[a-z]{1,4}`), rapid.StringMatching(`[a-zA-Z ]{0,12}`)).Draw(t, "row"))
}

func TestEncodeRoundTripAndHash(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRow(t)
		enc := r.Encode()
		if got := DecodeRow(enc).Encode(); got != enc {
			t.Fatalf("decode(encode) = %q, want %q", got, enc)
		}
		k := Key{Table: "t", PK: "k"}
		if RowHash(k, r) != xxhash.Sum64String("t\x00k\x00"+enc) {
			t.Fatal("RowHash differs from the hash of the canonical encoding")
		}
	})
}

func TestLSNPrintParse(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		l := LSN(rapid.Uint64().Draw(t, "lsn"))
		got, err := ParseLSN(l.String())
		if err != nil || got != l {
			t.Fatalf("ParseLSN(%q) = %v, %v", l.String(), got, err)
		}
	})
	if _, err := ParseLSN("16B3748"); err == nil {
		t.Fatal("an LSN without a slash parsed")
	}
	if l, _ := ParseLSN("0/16B3748"); l != 0x16B3748 {
		t.Fatalf("0/16B3748 parsed as %d", uint64(l))
	}
}

// The state hash depends on the rows only: applying the same changes in any
// grouping, or undoing and redoing them, gives the same hash.
func TestStateHashIsOrderFree(t *testing.T) {
	a, b := NewState(), NewState()
	a.Apply(Txn{CommitLSN: 1, Changes: []Change{
		{Table: "t", PK: "1", Op: OpInsert, Row: R("v", "x")},
		{Table: "t", PK: "2", Op: OpInsert, Row: R("v", "y")},
	}})
	b.Apply(Txn{CommitLSN: 1, Changes: []Change{{Table: "t", PK: "2", Op: OpInsert, Row: R("v", "y")}}})
	b.Apply(Txn{CommitLSN: 2, Changes: []Change{{Table: "t", PK: "1", Op: OpInsert, Row: R("v", "old")}}})
	b.Apply(Txn{CommitLSN: 3, Changes: []Change{{Table: "t", PK: "1", Op: OpUpdate, Row: R("v", "x")}}})
	if a.Hash() != b.Hash() {
		t.Fatal("same rows, different hashes")
	}
	if a.Hash() != DocsHash(a.Project(Replica)) {
		t.Fatal("DocsHash of the replica projection differs from the state hash")
	}
	b.Apply(Txn{CommitLSN: 4, Changes: []Change{{Table: "t", PK: "2", Op: OpDelete}}})
	if a.Hash() == b.Hash() {
		t.Fatal("a delete did not change the hash")
	}
}

func TestProjectionsAndRevs(t *testing.T) {
	s := NewState()
	k := Key{Table: "users", PK: "u1"}
	s.Apply(Txn{CommitLSN: 10, Changes: []Change{{Table: "users", PK: "u1", Op: OpInsert, Row: R("name", "Ann Lee", "bio", "likes  Tango tango")}}})
	s.Apply(Txn{CommitLSN: 20, Changes: []Change{{Table: "users", PK: "u1", Op: OpUpdate, Row: R("name", "Ann Lee", "bio", "golf")}}})
	d := s.Project(Search)[k]
	if d.Value != "ann golf lee" || d.Revs != 2 || d.LSN != 20 {
		t.Fatalf("search doc %+v, want terms 'ann golf lee', revs 2, lsn 20", d)
	}
	if got := SearchTerms(R("a", "likes  Tango tango")); got != "likes tango" {
		t.Fatalf("SearchTerms = %q", got)
	}
	if r := s.Project(Replica)[k]; r.Value != "bio=golf;name=Ann Lee" || r.Revs != 0 {
		t.Fatalf("replica doc %+v", r)
	}
	// A snapshot change carries the row's revision count.
	snap := ProjectChange(Search, Change{Table: "users", PK: "u1", Op: OpInsert, Row: R("bio", "golf"), Revs: 2}, 30, Doc{}, false)
	if snap.Revs != 2 {
		t.Fatalf("snapshot doc revs %d, want 2", snap.Revs)
	}
}
