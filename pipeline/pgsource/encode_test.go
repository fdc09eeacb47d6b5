package pgsource

import (
	"encoding/binary"
	"time"

	"lockstep/model"
)

// A pgoutput encoder for tests: builds the bytes a walsender would send, so
// the decoder and the assembler can be driven without a server.

type enc []byte

func (e enc) u8(v byte) enc    { return append(e, v) }
func (e enc) u16(v int) enc    { return binary.BigEndian.AppendUint16(e, uint16(v)) }
func (e enc) u32(v uint32) enc { return binary.BigEndian.AppendUint32(e, v) }
func (e enc) u64(v uint64) enc { return binary.BigEndian.AppendUint64(e, v) }
func (e enc) str(s string) enc { return append(append(e, s...), 0) }
func (e enc) ts(t time.Time) enc {
	return e.u64(uint64(t.UnixMicro() - pgEpochMicros))
}

// encode is the inverse of Decode (Column.Key and LogicalMessage flags
// become 0 or 1).
func encode(m Message) []byte {
	switch m := m.(type) {
	case *Begin:
		return enc{'B'}.u64(uint64(m.FinalLSN)).ts(m.CommitTime).u32(m.XID)
	case *Commit:
		return enc{'C'}.u8(m.Flags).u64(uint64(m.CommitLSN)).u64(uint64(m.EndLSN)).ts(m.CommitTime)
	case *Origin:
		return enc{'O'}.u64(uint64(m.CommitLSN)).str(m.Name)
	case *Relation:
		e := enc{'R'}.u32(m.ID).str(m.Namespace).str(m.Name).u8(m.ReplicaIdentity).u16(len(m.Columns))
		for _, c := range m.Columns {
			flag := byte(0)
			if c.Key {
				flag = 1
			}
			e = e.u8(flag).str(c.Name).u32(c.TypeOID).u32(uint32(c.TypeMod))
		}
		return e
	case *Type:
		return enc{'Y'}.u32(m.ID).str(m.Namespace).str(m.Name)
	case *Insert:
		return encTuple(enc{'I'}.u32(m.RelationID).u8('N'), m.New)
	case *Update:
		e := enc{'U'}.u32(m.RelationID)
		if m.OldKind != 0 {
			e = encTuple(e.u8(m.OldKind), m.Old)
		}
		return encTuple(e.u8('N'), m.New)
	case *Delete:
		return encTuple(enc{'D'}.u32(m.RelationID).u8(m.OldKind), m.Old)
	case *Truncate:
		e := enc{'T'}.u32(uint32(len(m.RelationIDs))).u8(m.Options)
		for _, id := range m.RelationIDs {
			e = e.u32(id)
		}
		return e
	case *LogicalMessage:
		flag := byte(0)
		if m.Transactional {
			flag = 1
		}
		return append(enc{'M'}.u8(flag).u64(uint64(m.LSN)).str(m.Prefix).u32(uint32(len(m.Content))), m.Content...)
	}
	panic("encode: unknown message")
}

func encTuple(e enc, t Tuple) enc {
	e = e.u16(len(t))
	for _, v := range t {
		e = e.u8(v.Kind)
		if v.Kind == ValueText || v.Kind == ValueBinary {
			e = append(e.u32(uint32(len(v.Data))), v.Data...)
		}
	}
	return e
}

// unchanged stands for an unchanged TOAST value in tup.
type unchangedT struct{}

var unchanged unchangedT

// tup builds a Tuple: a string is a text value, nil NULL, unchanged the
// TOAST placeholder, []byte a binary value.
func tup(vals ...any) Tuple {
	t := make(Tuple, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case nil:
			t[i] = Value{Kind: ValueNull}
		case unchangedT:
			t[i] = Value{Kind: ValueUnchanged}
		case string:
			t[i] = Value{Kind: ValueText, Data: []byte(v)}
		case []byte:
			t[i] = Value{Kind: ValueBinary, Data: v}
		default:
			panic("tup: bad value")
		}
	}
	return t
}

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 123456000, time.UTC)

func begin(final model.LSN, xid uint32) *Begin {
	return &Begin{FinalLSN: final, CommitTime: t0, XID: xid}
}

func commit(at, end model.LSN) *Commit {
	return &Commit{CommitLSN: at, EndLSN: end, CommitTime: t0}
}

// accounts is relation 16400 "public.accounts" (id key, bal, note) with
// the given replica identity; key flags as pgoutput sets them.
func accounts(ident byte) *Relation {
	all := ident == 'f'
	return &Relation{ID: 16400, Namespace: "public", Name: "accounts", ReplicaIdentity: ident, Columns: []Column{
		{Key: true, Name: "id", TypeOID: 25, TypeMod: -1},
		{Key: all, Name: "bal", TypeOID: 25, TypeMod: -1},
		{Key: all, Name: "note", TypeOID: 25, TypeMod: -1},
	}}
}
