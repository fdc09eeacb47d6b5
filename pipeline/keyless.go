package pipeline

import (
	"fmt"
	"strings"

	"lockstep/model"
)

// Tables without a primary key. lockstep names every row by a key: the
// primary key's values, or, for a table without one under REPLICA IDENTITY
// FULL, the whole row (RowKey). A keyless table without FULL identity has
// no name for its rows at all: a source refuses it (*NoKeyError, which is
// ErrUnsupported), and the capture stops rather than retry.

// KeylessTable declares a table without a primary key: an append-only log
// of events or audit rows, as applications keep them. Applications write
// it with Tx.InsertRow and Tx.DeleteRow; it has no updates.
type KeylessTable struct {
	Name string
	// Columns in the table's order, which is the order of a whole-row
	// key's values.
	Columns []string
	// Full is REPLICA IDENTITY FULL: every column forms the key. Without
	// it (PostgreSQL's default identity, which is the primary key, here
	// none) the rows have no name lockstep can use, and the source
	// refuses to delete from the table once a publication holds it.
	Full bool
	_    struct{}
}

// RowKey is the key of a row of a table without a primary key under
// REPLICA IDENTITY FULL: every column, in the table's order, written as
// PostgreSQL writes a row value (record_out): in parentheses, separated by
// commas, NULL as nothing, a value that is empty or holds a quote,
// backslash, parenthesis, comma or white space in double quotes with
// quotes and backslashes doubled. So (1,"a b",) is 1, 'a b' and NULL, and
// distinct rows have distinct keys. null[i] marks vals[i] as NULL.
func RowKey(vals []string, null []bool) string {
	var b strings.Builder
	n := 2 + len(vals)
	for _, v := range vals {
		n += len(v) + 2 // and its quotes, if it needs them
	}
	b.Grow(n) // one allocation, not one per doubling (runs for every keyless row)
	b.WriteByte('(')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		if null[i] {
			continue
		}
		quote := v == "" || strings.ContainsAny(v, "\"\\(), \t\n\r\v\f")
		if !quote {
			b.WriteString(v)
			continue
		}
		b.WriteByte('"')
		for j := 0; j < len(v); j++ {
			if v[j] == '"' || v[j] == '\\' {
				b.WriteByte(v[j])
			}
			b.WriteByte(v[j])
		}
		b.WriteByte('"')
	}
	b.WriteByte(')')
	return b.String()
}

// Key is the whole-row key of row in t (a column row does not name is
// NULL).
func (t KeylessTable) Key(row model.Row) string {
	vals := make([]string, len(t.Columns))
	null := make([]bool, len(t.Columns))
	for i, c := range t.Columns {
		vals[i], null[i] = row.Get(c), !has(row, c)
	}
	return RowKey(vals, null)
}

func has(r model.Row, c string) bool { _, ok := r.Lookup(c); return ok }

// NoKeyError is a table lockstep cannot name the rows of: it has neither a
// primary key nor REPLICA IDENTITY FULL. It wraps ErrUnsupported: reading
// the same WAL again gives the same error, so retrying cannot help.
type NoKeyError struct {
	Tables []string // lockstep's names, sorted
	// XID is the transaction of the change that ran into it while
	// streaming; 0 when a check or a snapshot found the tables.
	XID uint64
}

func (e *NoKeyError) Error() string {
	list := strings.Join(e.Tables, ", ")
	flag := "--exclude-tables " + strings.Join(e.Tables, ",")
	if e.XID != 0 {
		return fmt.Sprintf("a change to %s in xid %d cannot be captured: the table has neither a primary key nor REPLICA IDENTITY FULL, so its rows have no name; "+
			"skip its changes with %s (a key added now does not help changes already written); to capture the table, "+
			"add a primary key or set REPLICA IDENTITY FULL, then drop the replication slot so that the capture starts over from a new snapshot",
			list, e.XID, flag)
	}
	subject, their, them := "table "+list+" has", "its", "it"
	if len(e.Tables) > 1 {
		subject, their, them = "tables "+list+" have", "their", "them"
	}
	return fmt.Sprintf("%s neither a primary key nor REPLICA IDENTITY FULL, so lockstep cannot name %s rows: "+
		"add a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL (all columns then form the key), or leave %s out with %s",
		subject, their, them, flag)
}

func (e *NoKeyError) Unwrap() error { return ErrUnsupported }
