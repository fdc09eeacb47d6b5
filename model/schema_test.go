package model

import (
	"reflect"
	"strings"
	"testing"
)

func TestTableCheck(t *testing.T) {
	ok := Table{Name: "u", Columns: []Column{{Name: "pk"}, {Name: "email", Type: "text"}}, Key: []string{"pk"}, Unique: [][]string{{"email"}}}
	if err := ok.Check(); err != nil {
		t.Fatalf("a good definition: %v", err)
	}
	for what, bad := range map[string]Table{
		"without a name":       {Columns: ok.Columns},
		"no columns":           {Name: "u"},
		"a column twice":       {Name: "u", Columns: []Column{{Name: "a"}, {Name: "a"}}},
		"a key not a column":   {Name: "u", Columns: ok.Columns, Key: []string{"id"}},
		"unique not a column":  {Name: "u", Columns: ok.Columns, Unique: [][]string{{"mail"}}},
		"unique of no columns": {Name: "u", Columns: ok.Columns, Unique: [][]string{{}}},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("%s: Check passed", what)
		}
	}
}

// A unique value is every column's, NULL (absent) in any makes it none,
// and the key stands in for a key column, which a Row does not hold.
func TestUniqueValue(t *testing.T) {
	tb := Table{Name: "u", Columns: []Column{{Name: "pk"}, {Name: "a"}, {Name: "b"}}, Key: []string{"pk"},
		Unique: [][]string{{"a"}, {"a", "b"}, {"pk", "b"}}}
	row := R("a", "x", "b", "y")
	for i, want := range []string{"x", "x\x00y", "k1\x00y"} {
		if got, ok := tb.UniqueValue(i, "k1", row); !ok || got != want {
			t.Errorf("constraint %d: %q %v, want %q", i, got, ok, want)
		}
	}
	if _, ok := tb.UniqueValue(1, "k1", R("a", "x")); ok {
		t.Error("a NULL b gave the pair a value")
	}
}

func TestTableCloneIsDeep(t *testing.T) {
	tb := Table{Name: "u", Columns: []Column{{Name: "a"}}, Key: []string{"a"}, Unique: [][]string{{"a"}}}
	c := tb.Clone()
	c.Columns[0].Name, c.Key[0], c.Unique[0][0] = "z", "z", "z"
	if tb.Columns[0].Name != "a" || tb.Key[0] != "a" || tb.Unique[0][0] != "a" {
		t.Fatalf("the clone shares memory: %+v", tb)
	}
	txn := Txn{Schema: []Table{tb}}
	cl := txn.Clone()
	cl.Schema[0].Unique[0][0] = "z"
	if !reflect.DeepEqual(txn.Schema[0], tb) {
		t.Fatal("Txn.Clone shares its schema")
	}
}

func TestUniqueViolationError(t *testing.T) {
	e := &UniqueViolationError{Table: "users", Columns: []string{"email"}, Value: "x@example.com", Keys: [2]string{"u1", "u2"}, Deferred: true}
	if s := e.Error(); !strings.Contains(s, "users (email)=(x@example.com)") || !strings.Contains(s, "u1 and u2") || !strings.Contains(s, "at commit") {
		t.Fatalf("error text %q", s)
	}
}
