package model

import (
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// Rows shaped like the profiles workload's: small columns, and one with an
// avatar past the TOAST threshold.
var (
	benchSmall  = R("name", "user u012", "bio", "quiet river stone", "rev", "1234", "avatar", "none")
	benchAvatar = R("name", "user u012", "bio", "quiet river stone", "rev", "1234", "avatar", strings.Repeat("abcdefghijklmnopqrstuvwxyz0123456789+/", 90))
	benchKey    = Key{Table: "users", PK: "u012"}
	sinkString  string
	sinkHash    uint64
)

func BenchmarkProjection(b *testing.B) {
	for _, row := range []struct {
		name string
		r    Row
	}{{"small", benchSmall}, {"avatar", benchAvatar}} {
		b.Run("Encode/"+row.name, func(b *testing.B) {
			for b.Loop() {
				sinkString = row.r.Encode()
			}
		})
		b.Run("SearchTerms/"+row.name, func(b *testing.B) {
			for b.Loop() {
				sinkString = SearchTerms(row.r)
			}
		})
		b.Run("RowHash/"+row.name, func(b *testing.B) {
			for b.Loop() {
				sinkHash = RowHash(benchKey, row.r)
			}
		})
	}
}

// TestLower: lower agrees with strings.ToLower on ASCII with and without
// capitals at every position, on non-ASCII text and on every single byte.
func TestLower(t *testing.T) {
	cases := []string{"", "a", "Z", "abcdefgh", "abcdefgH", "Habcdefg", "abcdefghijklmnoP", "@[`{", "ÄÖÜ straße", "ascii then É"}
	for b := 0; b < 256; b++ {
		cases = append(cases, string([]byte{byte(b)}), strings.Repeat("x", 8)+string([]byte{byte(b)})+"yyyyyyy")
	}
	for _, c := range cases {
		if got, want := lower(c), strings.ToLower(c); got != want {
			t.Errorf("lower(%q) = %q, want %q", c, got, want)
		}
	}
}

// TestEncodedRowHash: hashing a document's value as is agrees with decoding
// it first, on canonical encodings and on anything else made of the
// encoding's separators.
func TestEncodedRowHash(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		k := Key{Table: "t", PK: rapid.StringMatching(`[a-c]{0,3}`).Draw(t, "pk")}
		var v string
		if rapid.Bool().Draw(t, "canonical") {
			v = RowFromMap(rapid.MapOf(rapid.StringMatching(`[a-c=]{0,3}`), rapid.StringMatching(`[a-c=]{0,3}`)).Draw(t, "row")).Encode()
		} else {
			v = rapid.StringMatching(`[ab=;]{0,12}`).Draw(t, "value")
		}
		if got, want := EncodedRowHash(k, v), RowHash(k, DecodeRow(v)); got != want {
			t.Fatalf("EncodedRowHash(%q) = %x, want %x", v, got, want)
		}
	})
}
