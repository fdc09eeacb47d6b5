package logcodec

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"lockstep/model"
)

func TestRecordBytes(t *testing.T) {
	// A batch header of 61 bytes, then the record: its length, 4 one-byte
	// fields, the value's length and the value. (The kafkalog tests check
	// these against franz-go's own encoding of a record batch.)
	for _, c := range []struct{ value, want int }{
		{0, 61 + 1 + 6},
		{57, 61 + 1 + 63},             // a body of 63 bytes: the length still takes 1
		{58, 61 + 2 + 64},             // 64: a zig-zag varint of 2 bytes
		{63, 61 + 2 + 4 + 1 + 63 + 1}, // the value's own length still takes 1
		{64, 61 + 2 + 4 + 2 + 64 + 1}, // and now 2
		{1_000_000, 61 + 3 + 4 + 3 + 1_000_000 + 1},
	} {
		if got := RecordBytes(c.value); got != c.want {
			t.Errorf("RecordBytes(%d) = %d, want %d", c.value, got, c.want)
		}
	}
}

// genSchema draws table definitions (none, or one to three) of strings
// drawn from s; lists are nil or not empty, as a source writes them.
func genSchema(t *rapid.T, s *rapid.Generator[string]) []model.Table {
	n := rapid.IntRange(0, 3).Draw(t, "tables")
	if n == 0 {
		return nil
	}
	out := make([]model.Table, n)
	for i := range out {
		tb := model.Table{Name: s.Draw(t, "table")}
		for range rapid.IntRange(1, 4).Draw(t, "columns") {
			tb.Columns = append(tb.Columns, model.Column{Name: s.Draw(t, "column"), Type: rapid.SampledFrom([]string{"", "text", "integer", "character varying(20)"}).Draw(t, "type")})
		}
		if rapid.Bool().Draw(t, "keyed") {
			tb.Key = rapid.SliceOfN(s, 1, 2).Draw(t, "key")
		}
		for range rapid.IntRange(0, 2).Draw(t, "unique") {
			tb.Unique = append(tb.Unique, rapid.SliceOfN(s, 1, 3).Draw(t, "uniqueCols"))
		}
		out[i] = tb
	}
	return out
}

// genChange draws a change with strings JSON must escape.
func genChange(t *rapid.T) model.Change {
	s := rapid.StringOf(rapid.SampledFrom([]rune{'a', 'Z', '"', '\\', '<', '&', '\n', 0, 0x7f, 'é', '\u2028', '😀'}))
	c := model.Change{
		Table: s.Draw(t, "table"),
		PK:    s.Draw(t, "pk"),
		Op:    model.Op(rapid.IntRange(1, 3).Draw(t, "op")),
		OldPK: s.Draw(t, "oldpk"),
		Revs:  rapid.IntRange(math.MinInt, math.MaxInt).Draw(t, "revs"),
	}
	if rapid.Bool().Draw(t, "hasRow") {
		c.Row = model.RowFromMap(rapid.MapOf(s, s).Draw(t, "row"))
	}
	if rapid.Bool().Draw(t, "hasUnchanged") {
		c.Unchanged = rapid.SliceOfN(s, 1, 4).Draw(t, "unchanged")
	}
	return c
}

// The bound holds for any transaction, and a part's size is at most its
// envelope plus its changes and their commas, whatever its chunk numbers.
func TestSizesBoundTheEncoding(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tx := model.Txn{
			XID:       rapid.Uint64().Draw(t, "xid"),
			CommitLSN: model.LSN(rapid.Uint64().Draw(t, "lsn")),
			Snapshot:  rapid.Bool().Draw(t, "snapshot"),
			Chunk:     rapid.IntRange(0, math.MaxInt).Draw(t, "chunk"),
			Chunks:    rapid.IntRange(0, math.MaxInt).Draw(t, "chunks"),
		}
		if n := rapid.IntRange(-1, 6).Draw(t, "changes"); n >= 0 {
			tx.Changes = make([]model.Change, n)
		}
		tx.Schema = genSchema(t, rapid.StringOf(rapid.SampledFrom([]rune{'a', '"', '\\', 0, 'é', '😀'})))
		parts := EnvelopeBytes(tx)
		for i := range tx.Changes {
			tx.Changes[i] = genChange(t)
			n, err := ChangeBytes(tx.Changes[i])
			if err != nil {
				t.Fatal(err)
			}
			parts += n
			if i > 0 {
				parts++
			}
		}
		b, err := EncodeTxn(tx)
		if err != nil {
			t.Fatal(err)
		}
		exact, err := TxnBytes(tx)
		if err != nil || exact != RecordBytes(len(b)) {
			t.Fatalf("TxnBytes = %d, %v; want RecordBytes(%d)", exact, err, len(b))
		}
		if bound := TxnBytesBound(tx); bound < exact {
			t.Fatalf("TxnBytesBound = %d under the exact %d for %s", bound, exact, b)
		}
		if tx.Changes != nil && parts < len(b) {
			t.Fatalf("envelope + changes = %d under the encoding's %d bytes: %s", parts, len(b), b)
		}
	})
}

// The bounds know every field of the encoding: a field added to the wire
// form must be counted in envelopeBound or changeBound too.
func TestBoundsKnowEveryField(t *testing.T) {
	fields := func(v any) string {
		var out []string
		ty := reflect.TypeOf(v)
		for i := range ty.NumField() {
			out = append(out, ty.Field(i).Tag.Get("json"))
		}
		return strings.Join(out, " ")
	}
	if got, want := fields(wireTxn{}), "v xid lsn snapshot,omitempty chunk,omitempty chunks,omitempty prev,omitempty changes schema,omitempty"; got != want {
		t.Errorf("wireTxn's fields are %q, were %q: update envelopeBound, then this test", got, want)
	}
	if got, want := fields(wireChange{}), "table pk op row old_pk,omitempty revs,omitempty unchanged,omitempty"; got != want {
		t.Errorf("wireChange's fields are %q, were %q: update changeBound, then this test", got, want)
	}
}

func TestChangeBytesRefusesWhatEncodeRefuses(t *testing.T) {
	if _, err := ChangeBytes(model.Change{Op: 9}); err == nil {
		t.Fatal("ChangeBytes of an unknown op succeeded")
	}
	if _, err := ChangeBytes(model.Change{Op: model.OpInsert, PK: "\xff"}); err == nil {
		t.Fatal("ChangeBytes of invalid UTF-8 succeeded")
	}
}
