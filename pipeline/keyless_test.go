package pipeline

import (
	"errors"
	"testing"

	"lockstep/model"
)

// A whole-row key follows the table's column order, not the row's (a map),
// and a column the row does not name is NULL: empty between commas, where
// an empty value is "". The formatting itself is checked against
// PostgreSQL's record_out in pgsource (rowKeyCases).
func TestKeylessTableKey(t *testing.T) {
	tbl := KeylessTable{Name: "events", Columns: []string{"id", "what", "note"}, Full: true}
	for _, tc := range []struct {
		row  model.Row
		want string
	}{
		{model.R("note", "n", "id", "e1", "what", "boot"), "(e1,boot,n)"},
		{model.R("id", "e2", "what", "a b"), `(e2,"a b",)`},
		{model.R("id", "e3", "what", "", "note", `x"y`), `(e3,"","x""y")`},
		{model.Row{}, "(,,)"},
	} {
		if got := tbl.Key(tc.row); got != tc.want {
			t.Errorf("Key(%v) = %s, want %s", tc.row, got, tc.want)
		}
	}
}

func TestNoKeyErrorIsUnsupported(t *testing.T) {
	var err error = &NoKeyError{Tables: []string{"events"}, XID: 7}
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("%v does not wrap ErrUnsupported", err)
	}
}
