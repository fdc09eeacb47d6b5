package model

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// TestRowActsAsTheMapItReplaced runs random edits on a Row and on a map
// side by side: every read, the column order, the JSON and fmt's text must
// be what the map gives.
func TestRowActsAsTheMapItReplaced(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		names := rapid.SliceOfN(rapid.StringMatching(`[a-m]{1,2}`), 1, 20).Draw(t, "names")
		r := Row{}
		m := map[string]string{}
		for range rapid.IntRange(0, 40).Draw(t, "edits") {
			name := rapid.SampledFrom(names).Draw(t, "name")
			if rapid.IntRange(0, 3).Draw(t, "op") == 0 {
				r.Delete(name)
				delete(m, name)
			} else {
				v := rapid.StringMatching(`[a-z"<&]{0,3}`).Draw(t, "value")
				r.Set(name, v)
				m[name] = v
			}
		}
		if len(r) != len(m) {
			t.Fatalf("%d columns, the map has %d", len(r), len(m))
		}
		if !slices.IsSortedFunc(r, func(a, b Col) int { return strings.Compare(a.Name, b.Name) }) {
			t.Fatalf("columns out of order: %v", r.Columns())
		}
		for _, name := range names {
			v, ok := r.Lookup(name)
			w, wok := m[name]
			if v != w || ok != wok || r.Get(name) != w {
				t.Fatalf("%s: row (%q, %v), map (%q, %v)", name, v, ok, w, wok)
			}
		}
		if got, want := r.Clone(), RowFromMap(m); !got.Equal(want) || !R(pairs(m)...).Equal(want) {
			t.Fatalf("clone %v, from the map %v", got, want)
		}
		rj, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		mj, _ := json.Marshal(m)
		if string(rj) != string(mj) {
			t.Fatalf("JSON %s, the map's %s", rj, mj)
		}
		var back Row
		if err := json.Unmarshal(rj, &back); err != nil || !back.Equal(r) {
			t.Fatalf("JSON round trip: %v, %v", back, err)
		}
		if fmt.Sprint(r) != fmt.Sprint(m) {
			t.Fatalf("fmt %v, the map's %v", r, m)
		}
	})
}

func pairs(m map[string]string) []string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k, v)
	}
	return kv
}

func TestRLaterValueWins(t *testing.T) {
	r := R("v", "1", "id", "7", "v", "2")
	if got := r.Encode(); got != "id=7;v=2" {
		t.Fatalf("R = %q, want id=7;v=2", got)
	}
	var nilRow Row
	if b, _ := json.Marshal(nilRow); string(b) != "null" {
		t.Fatalf("a nil row's JSON is %s, want null", b)
	}
}

// TestTxnCloneRowsAreTheirOwn: a clone's rows share one block, yet a Set
// on one, new column or old, touches neither its neighbour nor the
// original.
func TestTxnCloneRowsAreTheirOwn(t *testing.T) {
	orig := Txn{Changes: []Change{
		{Table: "t", PK: "1", Op: OpInsert, Row: R("a", "1", "c", "3")},
		{Table: "t", PK: "2", Op: OpDelete},
		{Table: "t", PK: "3", Op: OpUpdate, Row: R("a", "x"), Unchanged: []string{"b"}},
	}}
	c := orig.Clone()
	c.Changes[0].Row.Set("b", "2")
	c.Changes[0].Row.Set("a", "changed")
	c.Changes[2].Row.Set("z", "z")
	c.Changes[2].Unchanged[0] = "q"
	if got := orig.Changes[0].Row.Encode(); got != "a=1;c=3" {
		t.Errorf("original's first row = %q", got)
	}
	if got := orig.Changes[2].Row.Encode(); got != "a=x" || orig.Changes[2].Unchanged[0] != "b" {
		t.Errorf("original's third change = %q %v", got, orig.Changes[2].Unchanged)
	}
	if got := c.Changes[2].Row.Encode(); got != "a=x;z=z" {
		t.Errorf("clone's third row = %q, its neighbour's Set wrote into it", got)
	}
	if c.Changes[1].Row != nil {
		t.Errorf("a delete's nil row became %v", c.Changes[1].Row)
	}
}
