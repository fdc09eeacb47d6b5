package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"iter"
	"slices"
	"strings"
)

// Row is a row's column values, sorted by column name, each name once.
//
// A sorted slice rather than a map: rows have a handful of columns, and the
// simulator builds, copies, compares and encodes millions of them a
// campaign. A slice is one allocation to copy and none to iterate in order,
// where a map hashed every name and had to be sorted for every encoding.
//
// Rows are treated as immutable once built: share them freely, never write
// to one that has left your hands (Clone it first). Build one with R, or
// with Set on a Row of your own.
type Row []Col

// Col is one column of a row: its name and value.
type Col struct{ Name, Value string }

// R builds a row from column name and value pairs: R("id", "1", "v", "a").
// A name given twice keeps its last value, as a map literal would refuse.
func R(namesAndValues ...string) Row {
	if len(namesAndValues)%2 != 0 {
		panic("model.R: an odd number of names and values")
	}
	r := make(Row, 0, len(namesAndValues)/2)
	for i := 0; i < len(namesAndValues); i += 2 {
		r.Set(namesAndValues[i], namesAndValues[i+1])
	}
	return r
}

// RowFromMap is the row of a map of column values (a driver's or a
// decoder's); nil for nil.
func RowFromMap(m map[string]string) Row {
	if m == nil {
		return nil
	}
	r := make(Row, 0, len(m))
	for name, value := range m {
		r = append(r, Col{name, value})
	}
	slices.SortFunc(r, func(a, b Col) int { return strings.Compare(a.Name, b.Name) })
	return r
}

// find is where name is in r, or where it would go, and whether it is there.
// Linear for the usual handful of columns, binary past that.
func (r Row) find(name string) (int, bool) {
	if len(r) <= 8 {
		for i, c := range r {
			if c.Name >= name {
				return i, c.Name == name
			}
		}
		return len(r), false
	}
	return slices.BinarySearchFunc(r, name, func(c Col, name string) int { return strings.Compare(c.Name, name) })
}

// Get is the column's value, "" when the row has no such column.
func (r Row) Get(name string) string {
	if i, ok := r.find(name); ok {
		return r[i].Value
	}
	return ""
}

// Lookup is the column's value and whether the row has it.
func (r Row) Lookup(name string) (string, bool) {
	if i, ok := r.find(name); ok {
		return r[i].Value, true
	}
	return "", false
}

// Set sets a column's value in place. Only the row's builder may call it.
func (r *Row) Set(name, value string) {
	i, ok := r.find(name)
	if ok {
		(*r)[i].Value = value
		return
	}
	if *r == nil {
		*r = make(Row, 0, 4)
	}
	*r = slices.Insert(*r, i, Col{name, value})
}

// Delete removes a column in place. Only the row's builder may call it.
func (r *Row) Delete(name string) {
	if i, ok := r.find(name); ok {
		*r = slices.Delete(*r, i, i+1)
	}
}

// All yields the row's columns in column-name order.
func (r Row) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, c := range r {
			if !yield(c.Name, c.Value) {
				return
			}
		}
	}
}

// Columns returns the column names in sorted order.
func (r Row) Columns() []string {
	names := make([]string, len(r))
	for i, c := range r {
		names[i] = c.Name
	}
	return names
}

// Clone is a copy of the row that shares nothing with it (nil for nil).
func (r Row) Clone() Row { return slices.Clone(r) }

// Equal reports whether both rows hold the same columns and values.
func (r Row) Equal(o Row) bool { return slices.Equal(r, o) }

// String prints the row as fmt prints a map, "map[name:value ...]", so
// that messages and traces read as they did when Row was one.
func (r Row) String() string {
	var b strings.Builder
	b.WriteString("map[")
	for i, c := range r {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%v:%v", c.Name, c.Value)
	}
	b.WriteByte(']')
	return b.String()
}

// MarshalJSON writes the row as a JSON object in column order, the bytes
// encoding/json wrote for it as a map (the log's records keep their form).
func (r Row) MarshalJSON() ([]byte, error) {
	if r == nil {
		return []byte("null"), nil
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, c := range r {
		if i > 0 {
			b.WriteByte(',')
		}
		name, err := json.Marshal(c.Name)
		if err != nil {
			return nil, err
		}
		value, err := json.Marshal(c.Value)
		if err != nil {
			return nil, err
		}
		b.Write(name)
		b.WriteByte(':')
		b.Write(value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads a JSON object of column values (or null).
func (r *Row) UnmarshalJSON(data []byte) error {
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("model: a row: %w", err)
	}
	*r = RowFromMap(m)
	return nil
}
