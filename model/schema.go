package model

import (
	"fmt"
	"slices"
	"strings"
)

// Table is a source table's definition, as a replica needs it to make its
// own copy: the columns with their types, the primary key and the unique
// constraints. A source reads it from its catalog; a snapshot carries the
// definitions of the tables it captured (Txn.Schema), so a replica is
// created from the source's schema and not from a guess.
type Table struct {
	Name string // lockstep's name: "t" in public, "schema.t" elsewhere
	// Columns in the table's order.
	Columns []Column
	// Key is the primary key's columns, in key order. Empty: the table has
	// none and, under REPLICA IDENTITY FULL, its rows are named by all their
	// columns (a whole-row key).
	Key []string
	// Unique is the table's unique constraints besides the primary key,
	// each its columns. Two rows may not hold equal values in all of a
	// constraint's columns; a row with a NULL in any of them conflicts with
	// none (PostgreSQL's NULLS DISTINCT).
	Unique [][]string
	_      struct{}
}

// Column is one column of a Table.
type Column struct {
	Name string
	// Type as PostgreSQL's format_type writes it ("text", "integer",
	// "character varying(20)"); empty is text.
	Type string
}

// Column returns the named column and whether the table has it.
func (t Table) Column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// Clone is a deep copy.
func (t Table) Clone() Table {
	c := t
	c.Columns = slices.Clone(t.Columns)
	c.Key = slices.Clone(t.Key)
	if t.Unique != nil {
		c.Unique = make([][]string, len(t.Unique))
		for i, u := range t.Unique {
			c.Unique[i] = slices.Clone(u)
		}
	}
	return c
}

// Check reports what is wrong with a definition: no name or columns, a
// column named twice, a key or unique column the table does not have, an
// empty constraint.
func (t Table) Check() error {
	if t.Name == "" {
		return fmt.Errorf("table without a name")
	}
	if len(t.Columns) == 0 {
		return fmt.Errorf("table %s: no columns", t.Name)
	}
	seen := map[string]bool{}
	for _, c := range t.Columns {
		if c.Name == "" || seen[c.Name] {
			return fmt.Errorf("table %s: column %q empty or named twice", t.Name, c.Name)
		}
		seen[c.Name] = true
	}
	for _, k := range t.Key {
		if !seen[k] {
			return fmt.Errorf("table %s: key column %q is not a column", t.Name, k)
		}
	}
	for _, u := range t.Unique {
		if len(u) == 0 {
			return fmt.Errorf("table %s: a unique constraint without columns", t.Name)
		}
		for _, c := range u {
			if !seen[c] {
				return fmt.Errorf("table %s: unique column %q is not a column", t.Name, c)
			}
		}
	}
	return nil
}

// UniqueValue is what row holds in the columns of unique constraint i of t,
// as one comparable string, and false when any of them is NULL (absent
// from the row, or a key column): such a row conflicts with no other.
// Key columns are not in a Row; a constraint that includes one is checked
// with the row's key (pk, the key columns' values as a Change holds them).
func (t Table) UniqueValue(i int, pk string, row Row) (string, bool) {
	cols := t.Unique[i]
	if len(cols) == 1 {
		// Most constraints have one column: its value as it is, unjoined.
		return t.columnValue(cols[0], pk, row)
	}
	var b strings.Builder
	for j, c := range cols {
		v, ok := t.columnValue(c, pk, row)
		if !ok {
			return "", false
		}
		if j > 0 {
			b.WriteByte(0)
		}
		b.WriteString(v)
	}
	return b.String(), true
}

// columnValue is column c's value in row under key pk, for UniqueValue.
func (t Table) columnValue(c, pk string, row Row) (string, bool) {
	v, ok := row.Lookup(c)
	if !ok && slices.Contains(t.Key, c) {
		v, ok = pk, true // the key as a whole: a unique constraint over it holds anyway
	}
	return v, ok
}

// UniqueViolationError is a write that would leave two rows of a table
// with equal values under one of its unique constraints: what PostgreSQL
// refuses with SQLSTATE 23505.
type UniqueViolationError struct {
	Table    string
	Columns  []string // the constraint's
	Value    string   // the values, comma-separated
	Keys     [2]string
	Deferred bool // found at commit rather than at the write
	_        struct{}
}

func (e *UniqueViolationError) Error() string {
	when := "at the write"
	if e.Deferred {
		when = "at commit"
	}
	return fmt.Sprintf("duplicate key value violates unique constraint on %s (%s)=(%s): rows %s and %s (checked %s)",
		e.Table, strings.Join(e.Columns, ", "), e.Value, e.Keys[0], e.Keys[1], when)
}

// SchemaOf returns the definitions by name.
func SchemaOf(tables []Table) map[string]Table {
	m := make(map[string]Table, len(tables))
	for _, t := range tables {
		m[t.Name] = t
	}
	return m
}

// AddTables is have with the tables of add whose names it lacks: a table
// keeps the first definition it had (a snapshot's, which knows its unique
// constraints, over a stream's, which does not).
func AddTables(have, add []Table) []Table {
	for _, t := range add {
		if !slices.ContainsFunc(have, func(h Table) bool { return h.Name == t.Name }) {
			have = append(have, t)
		}
	}
	return have
}
