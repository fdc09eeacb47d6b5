package pgsource

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"lockstep/model"
)

// This file is the pure part of the adapter: the pgoutput (protocol version
// 1) message decoder. It does no I/O. The format follows PostgreSQL's
// documentation chapter "Logical Replication Message Formats". All integers
// are big-endian; strings are NUL-terminated. The CopyData messages around
// it (XLogData, keepalives, status updates) are pglogrepl's; README.md says
// why the messages themselves are not.

// ErrMalformed is wrapped by every decoding error: the bytes are not a
// well-formed message.
var ErrMalformed = errors.New("malformed replication message")

// pgEpochMicros is 2000-01-01 00:00:00 UTC in Unix microseconds: PostgreSQL
// timestamps on the wire count microseconds from there.
const pgEpochMicros = 946_684_800_000_000

func pgTime(us int64) time.Time { return time.UnixMicro(pgEpochMicros + us).UTC() }

// Message is one decoded pgoutput message: *Begin, *Commit, *Origin,
// *Relation, *Type, *Insert, *Update, *Delete, *Truncate or *LogicalMessage.
type Message interface{ pgoutput() }

// Begin opens a transaction.
type Begin struct {
	FinalLSN   model.LSN // the LSN of the transaction's commit record
	CommitTime time.Time
	XID        uint32
}

// Commit closes the transaction opened by the last Begin.
type Commit struct {
	Flags      uint8
	CommitLSN  model.LSN // where the commit record starts (= Begin.FinalLSN)
	EndLSN     model.LSN // just after the commit record: the transaction's end
	CommitTime time.Time
}

// Origin names the replication origin a transaction came from.
type Origin struct {
	CommitLSN model.LSN
	Name      string
}

// Relation describes a table before the first change to it in a session
// (and again after its definition changed).
type Relation struct {
	ID        uint32
	Namespace string // "" for pg_catalog
	Name      string
	// ReplicaIdentity is pg_class.relreplident: 'd' default (primary key),
	// 'n' nothing, 'f' full (every column), 'i' index.
	ReplicaIdentity byte
	Columns         []Column
}

// Column is one published column of a Relation.
type Column struct {
	// Key is the flag pgoutput sets on replica identity columns. Under
	// REPLICA IDENTITY FULL it is set on every column.
	Key     bool
	Name    string
	TypeOID uint32
	TypeMod int32
}

// Type describes a non-built-in data type used by a following Relation.
type Type struct {
	ID        uint32
	Namespace string
	Name      string
}

// Insert is a new row.
type Insert struct {
	RelationID uint32
	New        Tuple
}

// Update is a changed row. OldKind is 0 when no old tuple was sent, 'K' when
// Old holds only the replica identity (key) columns, 'O' when it holds the
// whole old row (REPLICA IDENTITY FULL).
type Update struct {
	RelationID uint32
	OldKind    byte
	Old        Tuple
	New        Tuple
}

// Delete is a removed row; OldKind is 'K' or 'O' as for Update.
type Delete struct {
	RelationID uint32
	OldKind    byte
	Old        Tuple
}

// Truncate empties tables. Options: 1 CASCADE, 2 RESTART IDENTITY.
type Truncate struct {
	Options     uint8
	RelationIDs []uint32
}

// LogicalMessage is a pg_logical_emit_message payload (sent only when the
// "messages" option is on; lockstep skips them).
type LogicalMessage struct {
	Transactional bool
	LSN           model.LSN
	Prefix        string
	Content       []byte
}

func (*Begin) pgoutput()          {}
func (*Commit) pgoutput()         {}
func (*Origin) pgoutput()         {}
func (*Relation) pgoutput()       {}
func (*Type) pgoutput()           {}
func (*Insert) pgoutput()         {}
func (*Update) pgoutput()         {}
func (*Delete) pgoutput()         {}
func (*Truncate) pgoutput()       {}
func (*LogicalMessage) pgoutput() {}

// Tuple is a row as pgoutput sends it: one Value per column of the
// relation, in the relation's column order.
type Tuple []Value

// Value kinds in a Tuple.
const (
	ValueNull      = 'n' // SQL NULL
	ValueUnchanged = 'u' // unchanged TOASTed value: the data is NOT sent
	ValueText      = 't' // Data is the value's text form
	ValueBinary    = 'b' // Data is the value's binary form (binary mode only)
)

// Value is one column of a Tuple.
type Value struct {
	Kind byte
	Data []byte
}

// Decode parses one pgoutput message (the data of an XLogData). It copies
// what it keeps, so data may be reused afterwards. Malformed input gives an
// error wrapping ErrMalformed, never a panic.
func Decode(data []byte) (Message, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("pgoutput: empty message: %w", ErrMalformed)
	}
	// One copy, so every slice we hand out stays valid.
	r := &reader{b: append([]byte(nil), data[1:]...)}
	tag := data[0]
	var m Message
	switch tag {
	case 'B':
		m = &Begin{FinalLSN: r.lsn(), CommitTime: pgTime(r.i64()), XID: r.u32()}
	case 'C':
		m = &Commit{Flags: r.u8(), CommitLSN: r.lsn(), EndLSN: r.lsn(), CommitTime: pgTime(r.i64())}
	case 'O':
		m = &Origin{CommitLSN: r.lsn(), Name: r.str()}
	case 'R':
		m = r.relation()
	case 'Y':
		m = &Type{ID: r.u32(), Namespace: r.str(), Name: r.str()}
	case 'I':
		ins := &Insert{RelationID: r.u32()}
		if k := r.u8(); k != 'N' && r.err == nil {
			r.fail(fmt.Sprintf("insert: want 'N' before the new tuple, got %q", k))
		}
		ins.New = r.tuple()
		m = ins
	case 'U':
		up := &Update{RelationID: r.u32()}
		k := r.u8()
		if k == 'K' || k == 'O' {
			up.OldKind, up.Old = k, r.tuple()
			k = r.u8()
		}
		if k != 'N' && r.err == nil {
			r.fail(fmt.Sprintf("update: want 'K', 'O' or 'N', got %q", k))
		}
		up.New = r.tuple()
		m = up
	case 'D':
		del := &Delete{RelationID: r.u32()}
		del.OldKind = r.u8()
		if del.OldKind != 'K' && del.OldKind != 'O' && r.err == nil {
			r.fail(fmt.Sprintf("delete: want 'K' or 'O', got %q", del.OldKind))
		}
		del.Old = r.tuple()
		m = del
	case 'T':
		n := r.count32(4, "relations")
		tr := &Truncate{Options: r.u8()}
		for range n {
			tr.RelationIDs = append(tr.RelationIDs, r.u32())
		}
		m = tr
	case 'M':
		lm := &LogicalMessage{Transactional: r.u8()&1 == 1, LSN: r.lsn(), Prefix: r.str()}
		lm.Content = r.bytes(r.count32(1, "content bytes"))
		m = lm
	default:
		return nil, fmt.Errorf("pgoutput: unknown message type %q (protocol version 1 only): %w", tag, ErrMalformed)
	}
	if r.err == nil && r.off != len(r.b) {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.b)-r.off))
	}
	if r.err != nil {
		return nil, fmt.Errorf("pgoutput: %q message: %w", tag, r.err)
	}
	return m, nil
}

func (r *reader) relation() *Relation {
	rel := &Relation{ID: r.u32(), Namespace: r.str(), Name: r.str(), ReplicaIdentity: r.u8()}
	n := r.count16(10, "columns") // flags, name NUL, type oid, typmod
	if n > 0 {
		rel.Columns = make([]Column, 0, n)
	}
	for range n {
		c := Column{Key: r.u8()&1 == 1, Name: r.str(), TypeOID: r.u32()}
		c.TypeMod = int32(r.u32())
		rel.Columns = append(rel.Columns, c)
	}
	return rel
}

func (r *reader) tuple() Tuple {
	n := r.count16(1, "tuple columns")
	if r.err != nil {
		return nil
	}
	t := make(Tuple, 0, n)
	for range n {
		v := Value{Kind: r.u8()}
		switch v.Kind {
		case ValueNull, ValueUnchanged:
		case ValueText, ValueBinary:
			v.Data = r.bytes(r.count32(1, "value bytes"))
		default:
			if r.err == nil {
				r.fail(fmt.Sprintf("unknown tuple value kind %q", v.Kind))
			}
		}
		if r.err != nil {
			return nil
		}
		t = append(t, v)
	}
	return t
}

// reader reads big-endian fields with a sticky error: after the first
// failure every read returns zero, so decoders read straight through and
// check once.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s at byte %d: %w", what, r.off+1, ErrMalformed)
	}
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail(fmt.Sprintf("truncated reading %s (need %d bytes, have %d)", what, n, len(r.b)-r.off))
		return nil
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

func (r *reader) u8() byte {
	if p := r.take(1, "Int8"); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if p := r.take(2, "Int16"); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if p := r.take(4, "Int32"); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *reader) i64() int64 {
	if p := r.take(8, "Int64"); p != nil {
		return int64(binary.BigEndian.Uint64(p))
	}
	return 0
}

func (r *reader) lsn() model.LSN { return model.LSN(r.i64()) }

func (r *reader) bytes(n int) []byte { return r.take(n, "bytes") }

func (r *reader) str() string {
	if r.err != nil {
		return ""
	}
	for i := r.off; i < len(r.b); i++ {
		if r.b[i] == 0 {
			s := string(r.b[r.off:i])
			r.off = i + 1
			return s
		}
	}
	r.fail("unterminated string")
	return ""
}

// count16 reads an Int16 count of items that take at least min bytes each,
// refusing negative counts and counts the remaining bytes cannot hold (so a
// corrupt count never makes a huge allocation).
func (r *reader) count16(min int, what string) int {
	n := int(int16(r.u16()))
	return r.checkCount(n, min, what)
}

func (r *reader) count32(min int, what string) int {
	n := int(int32(r.u32()))
	return r.checkCount(n, min, what)
}

func (r *reader) checkCount(n, min int, what string) int {
	if r.err != nil {
		return 0
	}
	if n < 0 || n*min > len(r.b)-r.off {
		r.fail(fmt.Sprintf("impossible count of %s: %d", what, n))
		return 0
	}
	return n
}
