package pgsource

import (
	"context"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"lockstep/model"
)

// The hand-written decoder against github.com/jackc/pglogrepl on the same
// bytes: what each makes of well-formed and malformed messages, and how
// fast. The README ("pgoutput decoder") says why Decode stays; these are
// its numbers:
//
//	go test ./pipeline/pgsource -run Pglogrepl -bench . -benchmem

// TestPglogreplAgrees: on well-formed messages pglogrepl's Parse, converted
// to this package's types, gives what Decode gives: NULLs, unchanged TOAST
// values ('u'), key-only and whole old tuples, binary values. It loses
// nothing the Assembler needs.
func TestPglogreplAgrees(t *testing.T) {
	var msgs [][]byte
	for _, m := range allMessages() {
		msgs = append(msgs, encode(m))
	}
	frames, _ := benchFrames()
	for _, f := range frames {
		if f[0] == 'w' {
			msgs = append(msgs, f[25:])
		}
	}
	for _, b := range msgs {
		want, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		m, err := pglogrepl.Parse(b)
		if err != nil {
			t.Fatalf("pglogrepl.Parse(%T): %v", want, err)
		}
		if got := fromPglogrepl(m); !reflect.DeepEqual(got, want) {
			t.Errorf("pglogrepl: %#v\nDecode:    %#v", got, want)
		}
	}
}

// pglogreplMalformed are malformed messages, each a few bytes, and what
// pglogrepl's Parse (the version in go.mod) does with them. Decode refuses
// every one with ErrMalformed.
var pglogreplMalformed = []struct {
	name, does string
	b          []byte
}{
	{"empty", "panics", nil},
	{"tuple cut short", "panics", enc{'I'}.u32(1).u8('N').u16(3).u8('t').u32(1).u8('a')},
	{"value longer than the message", "panics", append(enc{'I'}.u32(1).u8('N').u16(1).u8('t').u32(10), "abc"...)},
	{"more columns than the message holds", "panics", enc{'R'}.u32(1).str("public").str("t").u8('d').u16(5000)},
	{"message content longer than the message", "panics", append(enc{'M'}.u8(1).u64(0).str("p").u32(100), "ab"...)},
	{"more relations than the message holds", "panics", enc{'T'}.u32(1 << 20).u8(0).u32(5)},
	{"unknown value kind", "accepts", enc{'I'}.u32(1).u8('N').u16(2).u8('z').u8('n')},
	{"update: 'Q' where 'N' belongs", "accepts", encTuple(encTuple(enc{'U'}.u32(1).u8('O'), tup(nil)).u8('Q'), tup(nil))},
	{"trailing bytes", "accepts", append(encTuple(enc{'I'}.u32(1).u8('N'), tup(nil)), 9, 9, 9)},
}

// TestPglogreplMalformed pins the reason Decode is not pglogrepl's Parse:
// on malformed input Parse panics (index or slice out of range) or accepts
// it, where the stream must stop with an error. (Not run here: a 10-byte
// Truncate whose count says 0xFFFFFFFF makes Parse ask for 16 GiB, a fatal
// out-of-memory error that recover cannot catch.) When this test fails,
// pglogrepl changed: measure again and update the README.
func TestPglogreplMalformed(t *testing.T) {
	for _, tc := range pglogreplMalformed {
		if _, err := Decode(tc.b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode err = %v, want ErrMalformed", tc.name, err)
		}
		does := func() (does string) {
			defer func() {
				if recover() != nil {
					does = "panics"
				}
			}()
			if _, err := pglogrepl.Parse(tc.b); err != nil {
				return "refuses"
			}
			return "accepts"
		}()
		if does != tc.does {
			t.Errorf("%s: pglogrepl.Parse %s it, not %s as the README says: measure again", tc.name, does, tc.does)
		}
	}
}

// benchFrames is a capture session as the stream receives it: CopyData
// payloads, XLogData ('w') around one pgoutput message each, and a primary
// keepalive ('k') every 50 of them. The transactions are the profiles and
// bank workloads' shapes: inserts with a 4 kB avatar, updates that leave
// the avatar unchanged ('u'), a rename (key-only old tuple 'K'), deletes,
// ledger rows with a NULL, two changes to a row in one transaction.
func benchFrames() (frames [][]byte, msgs int) {
	profiles := &Relation{ID: 16401, Namespace: "public", Name: "profiles", ReplicaIdentity: 'd', Columns: []Column{
		{Key: true, Name: "id", TypeOID: 25, TypeMod: -1},
		{Name: "name", TypeOID: 25, TypeMod: -1},
		{Name: "email", TypeOID: 25, TypeMod: -1},
		{Name: "avatar", TypeOID: 25, TypeMod: -1},
		{Name: "visits", TypeOID: 20, TypeMod: -1},
	}}
	ledger := &Relation{ID: 16402, Namespace: "public", Name: "ledger", ReplicaIdentity: 'd', Columns: []Column{
		{Key: true, Name: "id", TypeOID: 20, TypeMod: -1},
		{Name: "account", TypeOID: 25, TypeMod: -1},
		{Name: "amount", TypeOID: 20, TypeMod: -1},
		{Name: "memo", TypeOID: 25, TypeMod: -1},
	}}
	avatar := strings.Repeat("iVBORw0KGgoAAAANSUhEUgAA", 4096/24)
	lsn := model.LSN(0x1000000)
	var out []Message
	out = append(out, profiles, ledger)
	for i := range 200 {
		id := "user" + strconv.Itoa(i%50)
		xid := uint32(1000 + i)
		out = append(out, begin(lsn, xid))
		switch i % 4 {
		case 0: // a new profile
			out = append(out, &Insert{RelationID: profiles.ID, New: tup(id+"n"+strconv.Itoa(i), "Ada Lovelace", "ada@example.com", avatar, "0")})
		case 1: // update then update, the avatar left alone
			out = append(out,
				&Update{RelationID: profiles.ID, New: tup(id, "Ada King", "ada@example.com", unchanged, "1")},
				&Update{RelationID: profiles.ID, New: tup(id, "Ada King", "ada@example.org", unchanged, "2")})
		case 2: // a transfer: two ledger rows and a touched profile
			out = append(out,
				&Insert{RelationID: ledger.ID, New: tup(strconv.Itoa(2*i), "acct-17", "-250", nil)},
				&Insert{RelationID: ledger.ID, New: tup(strconv.Itoa(2*i+1), "acct-42", "250", "transfer")},
				&Update{RelationID: profiles.ID, New: tup(id, "Ada King", "ada@example.org", unchanged, strconv.Itoa(i))})
		case 3: // a rename, then a delete
			out = append(out,
				&Update{RelationID: profiles.ID, OldKind: 'K', Old: tup(id, nil, nil, nil, nil), New: tup(id+"r", "Ada", "a@example.com", unchanged, "3")},
				&Delete{RelationID: profiles.ID, OldKind: 'K', Old: tup(id+"r", nil, nil, nil, nil)})
		}
		out = append(out, commit(lsn, lsn+0x30))
		lsn += 0x100
	}
	for i, m := range out {
		if i > 0 && i%50 == 0 {
			frames = append(frames, enc{'k'}.u64(uint64(lsn)).u64(0).u8(0))
		}
		frames = append(frames, append(enc{'w'}.u64(uint64(lsn)).u64(uint64(lsn)).u64(0), encode(m)...))
	}
	return frames, len(out)
}

func frameBytes(frames [][]byte) int64 {
	var n int64
	for _, f := range frames {
		n += int64(len(f))
	}
	return n
}

// BenchmarkDecode parses every frame of benchFrames: the CopyData wrapper
// (pglogrepl's in every arm, as in the stream), then the pgoutput message.
func BenchmarkDecode(b *testing.B) {
	frames, msgs := benchFrames()
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*msgs), "ns/msg")
	}
	b.Run("handwritten", func(b *testing.B) {
		b.SetBytes(frameBytes(frames))
		b.ReportAllocs()
		for b.Loop() {
			for _, f := range frames {
				if f[0] == 'k' {
					if _, err := pglogrepl.ParsePrimaryKeepaliveMessage(f[1:]); err != nil {
						b.Fatal(err)
					}
					continue
				}
				x, err := pglogrepl.ParseXLogData(f[1:])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Decode(x.WALData); err != nil {
					b.Fatal(err)
				}
			}
		}
		report(b)
	})
	b.Run("pglogrepl", func(b *testing.B) {
		b.SetBytes(frameBytes(frames))
		b.ReportAllocs()
		for b.Loop() {
			for _, f := range frames {
				if f[0] == 'k' {
					if _, err := pglogrepl.ParsePrimaryKeepaliveMessage(f[1:]); err != nil {
						b.Fatal(err)
					}
					continue
				}
				x, err := pglogrepl.ParseXLogData(f[1:])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := pglogrepl.Parse(x.WALData); err != nil {
					b.Fatal(err)
				}
			}
		}
		report(b)
	})
	// What a thin adapter would cost: pglogrepl's messages converted to
	// this package's, which the Assembler takes.
	b.Run("pglogrepl+adapter", func(b *testing.B) {
		b.SetBytes(frameBytes(frames))
		b.ReportAllocs()
		for b.Loop() {
			for _, f := range frames {
				if f[0] == 'k' {
					if _, err := pglogrepl.ParsePrimaryKeepaliveMessage(f[1:]); err != nil {
						b.Fatal(err)
					}
					continue
				}
				x, err := pglogrepl.ParseXLogData(f[1:])
				if err != nil {
					b.Fatal(err)
				}
				m, err := pglogrepl.Parse(x.WALData)
				if err != nil {
					b.Fatal(err)
				}
				if fromPglogrepl(m) == nil {
					b.Fatal("unconverted message")
				}
			}
		}
		report(b)
	})
}

// BenchmarkAssemble is the stream's hot path: frames to whole model.Txns.
func BenchmarkAssemble(b *testing.B) {
	frames, msgs := benchFrames()
	run := func(b *testing.B, add func(a *Assembler, data []byte) (bool, error)) {
		b.SetBytes(frameBytes(frames))
		b.ReportAllocs()
		txns := 0
		for b.Loop() {
			var a Assembler
			for _, f := range frames {
				if f[0] != 'w' {
					continue
				}
				done, err := add(&a, f[25:])
				if err != nil {
					b.Fatal(err)
				}
				if done {
					txns++
				}
			}
		}
		if txns != 200*b.N {
			b.Fatalf("%d transactions in %d rounds", txns, b.N)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*msgs), "ns/msg")
	}
	b.Run("handwritten", func(b *testing.B) {
		run(b, func(a *Assembler, data []byte) (bool, error) {
			_, done, err := a.Feed(data)
			return done, err
		})
	})
	b.Run("pglogrepl+adapter", func(b *testing.B) {
		run(b, func(a *Assembler, data []byte) (bool, error) {
			m, err := pglogrepl.Parse(data)
			if err != nil {
				return false, err
			}
			_, done, err := a.Add(fromPglogrepl(m))
			return done, err
		})
	})
}

// BenchmarkStandbyStatus is Stream.sendStatus over a connection that
// discards what it is sent.
func BenchmarkStandbyStatus(b *testing.B) {
	conn, server := pipeConn(b)
	go io.Copy(io.Discard, server)
	s := &Stream{repl: conn, confirmed: 0x16B3770}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.sendStatus(context.Background(), time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// fromPglogrepl converts pglogrepl's protocol version 1 messages to this
// package's.
func fromPglogrepl(m pglogrepl.Message) Message {
	tuple := func(t *pglogrepl.TupleData) Tuple {
		if t == nil {
			return nil
		}
		out := make(Tuple, len(t.Columns))
		for i, c := range t.Columns {
			out[i] = Value{Kind: c.DataType, Data: c.Data}
		}
		return out
	}
	switch m := m.(type) {
	case *pglogrepl.BeginMessage:
		return &Begin{FinalLSN: model.LSN(m.FinalLSN), CommitTime: m.CommitTime.UTC(), XID: m.Xid}
	case *pglogrepl.CommitMessage:
		return &Commit{Flags: m.Flags, CommitLSN: model.LSN(m.CommitLSN), EndLSN: model.LSN(m.TransactionEndLSN), CommitTime: m.CommitTime.UTC()}
	case *pglogrepl.OriginMessage:
		return &Origin{CommitLSN: model.LSN(m.CommitLSN), Name: m.Name}
	case *pglogrepl.RelationMessage:
		rel := &Relation{ID: m.RelationID, Namespace: m.Namespace, Name: m.RelationName, ReplicaIdentity: m.ReplicaIdentity}
		for _, c := range m.Columns {
			rel.Columns = append(rel.Columns, Column{Key: c.Flags&1 == 1, Name: c.Name, TypeOID: c.DataType, TypeMod: c.TypeModifier})
		}
		return rel
	case *pglogrepl.TypeMessage:
		return &Type{ID: m.DataType, Namespace: m.Namespace, Name: m.Name}
	case *pglogrepl.InsertMessage:
		return &Insert{RelationID: m.RelationID, New: tuple(m.Tuple)}
	case *pglogrepl.UpdateMessage:
		return &Update{RelationID: m.RelationID, OldKind: m.OldTupleType, Old: tuple(m.OldTuple), New: tuple(m.NewTuple)}
	case *pglogrepl.DeleteMessage:
		return &Delete{RelationID: m.RelationID, OldKind: m.OldTupleType, Old: tuple(m.OldTuple)}
	case *pglogrepl.TruncateMessage:
		return &Truncate{Options: m.Option, RelationIDs: m.RelationIDs}
	case *pglogrepl.LogicalDecodingMessage:
		return &LogicalMessage{Transactional: m.Transactional, LSN: model.LSN(m.LSN), Prefix: m.Prefix, Content: m.Content}
	}
	return nil
}
