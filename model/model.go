// Package model is lockstep's shared vocabulary: log positions, row changes,
// committed transactions, the table state they build, and the projections each
// kind of store keeps of that state. It is pure data and functions: no I/O, no
// clocks, no goroutines, so the simulator, the real adapters and the checker
// can all agree on what "the same state" means.
package model

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a position in the source database's write-ahead log. Commit LSNs
// are unique and strictly increasing in commit order; 0 means "before
// everything".
type LSN uint64

// String prints an LSN the way PostgreSQL does: high/low 32 bits in hex.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// ParseLSN reads the PostgreSQL "X/Y" form.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("malformed LSN %q: want X/Y in hex", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("malformed LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("malformed LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// Position is where a sink stands: the next log offset it will consume and the
// commit LSN of the last source transaction whose effects it holds. A store
// that keeps its position atomically with its data can resume exactly.
type Position struct {
	Offset int64 // next log offset to read
	LSN    LSN   // last applied commit LSN
}

func (p Position) String() string { return fmt.Sprintf("offset=%d lsn=%s", p.Offset, p.LSN) }

// Op is the kind of a row change.
type Op uint8

const (
	OpInsert Op = iota + 1
	OpUpdate
	OpDelete
)

func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Encode is the row's canonical text: "col=val;col=val" in column order. Two
// rows are equal exactly when their encodings are.
func (r Row) Encode() string {
	if len(r) == 0 {
		return ""
	}
	n := len(r) * 2
	for _, c := range r {
		n += len(c.Name) + len(c.Value)
	}
	var b strings.Builder
	b.Grow(n)
	for i, c := range r {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(c.Name)
		b.WriteByte('=')
		b.WriteString(c.Value)
	}
	return b.String()
}

// DecodeRow is the inverse of Encode.
func DecodeRow(s string) Row {
	if s == "" {
		return Row{}
	}
	r := make(Row, 0, strings.Count(s, ";")+1)
	for kv := range strings.SplitSeq(s, ";") {
		k, v, _ := strings.Cut(kv, "=")
		r.Set(k, v)
	}
	return r
}

// Key names one row: its table and its primary key.
type Key struct {
	Table string
	PK    string
}

func (k Key) String() string { return k.Table + "/" + k.PK }

// Less orders keys by table, then primary key.
func (k Key) Less(o Key) bool {
	if k.Table != o.Table {
		return k.Table < o.Table
	}
	return k.PK < o.PK
}

// Change is one row change inside a transaction.
type Change struct {
	Table string
	PK    string
	Op    Op
	Row   Row    // the new row; nil for deletes
	OldPK string // set when an update changed the primary key
	// Unchanged names the columns an update did not send because their
	// value did not change and is stored out of line (PostgreSQL's unchanged
	// TOAST marker): a store keeps the value it holds for them. Sorted; Row
	// lacks those columns.
	Unchanged []string
	// From, in a net transaction only (Net), is the key whose row as
	// stored before the transaction holds the Unchanged columns: the row's
	// key before the transaction moved it. Empty: the change's own key.
	// Unlike OldPK it deletes nothing; the old key has a change of its own.
	From string
	// Revs, in a snapshot's changes only, is how many changes the row has
	// had so far, so a store loaded from a snapshot counts the same
	// revisions as one that saw every change.
	Revs int
}

// Key is the row the change writes.
func (c Change) Key() Key { return Key{Table: c.Table, PK: c.PK} }

// UnchangedFrom is the row whose stored values fill c's unchanged columns:
// From's in a net transaction, the old key's on a raw key change, else the
// row c writes.
func (c Change) UnchangedFrom() Key {
	k := c.Key()
	switch {
	case c.From != "":
		k.PK = c.From
	case c.OldPK != "":
		k.PK = c.OldPK
	}
	return k
}

func (c Change) String() string {
	if c.Op == OpDelete {
		return fmt.Sprintf("%s %s", c.Op, c.Key())
	}
	return fmt.Sprintf("%s %s {%s}", c.Op, c.Key(), c.Row.Encode())
}

// Txn is a committed source transaction: the unit of atomicity and of order.
type Txn struct {
	XID       uint64
	CommitLSN LSN
	Changes   []Change
	// Snapshot marks the synthetic transaction that carries the initial
	// snapshot: every row that existed at CommitLSN, as inserts.
	Snapshot bool
	// Chunk and Chunks split a transaction too large for one log record
	// over several: this is part Chunk (from 0) of Chunks, all at the same
	// CommitLSN and XID, appended in order. A snapshot's chunk 0 resets a
	// store and the others continue it; an ordinary transaction's parts
	// are gathered by appliers and handed to a store as the one
	// transaction they are (Chunk and Chunks zero again), never one part
	// without the others. Zero Chunks means 1.
	Chunk, Chunks int
	// PrevLSN, on a captured transaction in the log, is the commit LSN of
	// the transaction (or snapshot) the capture appended before it: a
	// chain through the log, so that an applier which holds less than
	// PrevLSN knows records between are missing (a log that lost
	// acknowledged records) instead of applying past the hole. Zero: no
	// chain (snapshots, older records).
	PrevLSN LSN
	// Schema, in a snapshot (its chunk 0 when it is cut in parts), is the
	// definition of every table the snapshot captured, read in the same
	// snapshot as its rows: what a replica creates its tables from. In a
	// streamed transaction it is the definition of each table the stream
	// described anew before it (pgoutput's Relation message: a table's first
	// change in a session, or after its definition changed), without unique
	// constraints: what a replica creates a table from that the snapshot
	// did not have.
	Schema []Table
}

func (t Txn) String() string {
	parts := make([]string, len(t.Changes))
	for i, c := range t.Changes {
		parts[i] = c.String()
	}
	kind := "txn"
	if t.Snapshot {
		kind = "snapshot"
	}
	return fmt.Sprintf("%s xid=%d lsn=%s [%s]", kind, t.XID, t.CommitLSN, strings.Join(parts, ", "))
}

// Clone is a deep copy: its changes, rows and column lists are its own.
// Simulated services hand the system under test clones, so nothing it does
// to what it received can alter their state or the ground truth.
func (t Txn) Clone() Txn {
	c := t
	c.Changes = make([]Change, len(t.Changes))
	// Every row's columns in one block, each row capped at its own end so
	// that a Set on one copy reallocates instead of writing over the next:
	// one allocation a transaction instead of one a change.
	cols := 0
	for _, ch := range t.Changes {
		cols += len(ch.Row)
	}
	block := make([]Col, 0, cols)
	for i, ch := range t.Changes {
		if ch.Row != nil {
			start := len(block)
			block = append(block, ch.Row...)
			ch.Row = Row(block[start:len(block):len(block)])
		}
		if ch.Unchanged != nil {
			ch.Unchanged = append([]string(nil), ch.Unchanged...)
		}
		c.Changes[i] = ch
	}
	if t.Schema != nil {
		c.Schema = make([]Table, len(t.Schema))
		for i, tb := range t.Schema {
			c.Schema[i] = tb.Clone()
		}
	}
	return c
}
