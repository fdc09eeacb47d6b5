package pgsource

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/jackc/pglogrepl"
)

// frames joins messages the way FuzzDecode splits its input: each message
// after a two-byte big-endian length.
func frames(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	return b
}

// FuzzDecode feeds arbitrary bytes to every parser the stream uses: as one
// pgoutput message, as the CopyData messages around it (pglogrepl's
// XLogData and keepalive parsers), and split into a message sequence for an
// Assembler. Nothing may panic; a message that decodes must decode the same
// after encoding it again; every error must say the input was malformed or
// unsupported.
func FuzzDecode(f *testing.F) {
	var seq [][]byte
	for _, m := range allMessages() {
		b := encode(m)
		f.Add(b)
		seq = append(seq, b)
	}
	f.Add(frames(seq...))
	f.Add(frames(
		encode(begin(0x100, 10)), encode(accounts('f')),
		encode(&Insert{RelationID: 16400, New: tup("a", "1", "x")}),
		encode(&Update{RelationID: 16400, OldKind: 'O', Old: tup("a", "1", "x"), New: tup("b", "2", unchanged)}),
		encode(&Delete{RelationID: 16400, OldKind: 'O', Old: tup("b", "2", "x")}),
		encode(commit(0x100, 0x130)),
	))
	f.Add([]byte(append(enc{'w'}.u64(1).u64(2).u64(3), encode(begin(1, 1))...)))
	f.Add([]byte(enc{'k'}.u64(1).u64(2).u8(1)))

	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		switch {
		case err != nil && !errors.Is(err, ErrMalformed):
			t.Fatalf("Decode error does not wrap ErrMalformed: %v", err)
		case err == nil && m == nil:
			t.Fatal("Decode returned neither a message nor an error")
		case err == nil:
			again, err := Decode(encode(m))
			if err != nil {
				t.Fatalf("re-encoded %#v does not decode: %v", m, err)
			}
			if !reflect.DeepEqual(again, m) {
				t.Fatalf("re-encoding changed the message: %#v became %#v", m, again)
			}
		}
		if len(data) > 0 {
			if x, err := pglogrepl.ParseXLogData(data[1:]); err == nil {
				_, _ = Decode(x.WALData)
			}
			_, _ = pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		}

		a := Assembler{PrimaryKey: func(rel *Relation) ([]string, error) {
			if len(rel.Columns) == 0 {
				return nil, nil
			}
			return []string{rel.Columns[0].Name}, nil
		}}
		for rest := data; len(rest) >= 2; {
			n := int(binary.BigEndian.Uint16(rest))
			rest = rest[2:]
			if n > len(rest) {
				n = len(rest)
			}
			msg := rest[:n]
			rest = rest[n:]
			txn, done, err := a.Feed(msg)
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("Assembler error is neither ErrMalformed nor ErrUnsupported: %v", err)
				}
				a.Reset()
				continue
			}
			if done {
				for _, c := range txn.Changes {
					if c.Op != 1 && c.Op != 2 && c.Op != 3 {
						t.Fatalf("change with op %v", c.Op)
					}
				}
			}
		}
	})
}
