package model

import (
	"slices"

	"github.com/cespare/xxhash/v2"

	"sort"
	"strings"
)

// Entry is one live row of a State with the commit LSN that last wrote it and
// how many changes have written it since it was (re)inserted.
type Entry struct {
	Row    Row
	LSN    LSN
	Writes int

	// hash is RowHash of the entry's key and row, when hashed: a hashing
	// State fills it in as it writes the row, to take it out again
	// without hashing the row twice.
	hash   uint64
	hashed bool
}

// Hash is RowHash(k, e.Row), the entry's term in a state hash (k must be
// the entry's key).
func (e Entry) Hash(k Key) uint64 {
	if e.hashed {
		return e.hash
	}
	return RowHash(k, e.Row)
}

// State is the content of the source tables after applying transactions in
// commit order: the ground truth every store is judged against.
type State struct {
	rows map[Key]Entry
	pos  LSN
	hash uint64 // XOR of RowHash over live rows: order-free, updated per change
	// hashing is set by the first Hash call: a state nobody asks for its
	// hash (the simulated source's tables, a fold) never hashes a row.
	hashing bool
}

// NewState returns an empty state at LSN 0.
func NewState() *State { return &State{rows: map[Key]Entry{}} }

// Apply applies a transaction's net changes (Net) and moves the state's
// position to its commit LSN. Inserts and updates are upserts (what a sink
// does), deletes of absent rows are no-ops, unchanged columns keep the
// stored row's values. A row's write count grows by one per transaction
// that writes it, however many statements did.
func (s *State) Apply(t Txn) {
	n := ResolveFrom(Net(t), func(k Key) Row { return s.rows[k].Row })
	for _, c := range n.Changes {
		s.applyChange(c, t.CommitLSN)
	}
	if t.CommitLSN > s.pos {
		s.pos = t.CommitLSN
	}
}

func (s *State) applyChange(c Change, lsn LSN) {
	if len(c.Unchanged) > 0 {
		c = MergeUnchanged(c, s.rows[c.UnchangedFrom()].Row)
	}
	if c.OldPK != "" && c.OldPK != c.PK {
		s.remove(Key{Table: c.Table, PK: c.OldPK})
	}
	k := c.Key()
	if c.Op == OpDelete {
		s.remove(k)
		return
	}
	old, had := s.rows[k]
	if had {
		s.unhash(k, old)
	}
	writes := 1
	switch {
	case c.Revs > 0: // a snapshot row knows its own count
		writes = c.Revs
	case had && c.Op != OpInsert:
		writes = old.Writes + 1
	}
	e := Entry{Row: c.Row, LSN: lsn, Writes: writes}
	if s.hashing {
		e.hash, e.hashed = RowHash(k, c.Row), true
		s.hash ^= e.hash
	}
	s.rows[k] = e
}

func (s *State) remove(k Key) {
	if old, had := s.rows[k]; had {
		s.unhash(k, old)
		delete(s.rows, k)
	}
}

// Position is the commit LSN of the last applied transaction.
func (s *State) Position() LSN { return s.pos }

// Len is the number of live rows.
func (s *State) Len() int { return len(s.rows) }

// Get returns a row's entry.
func (s *State) Get(k Key) (Entry, bool) {
	e, ok := s.rows[k]
	return e, ok
}

// Keys returns the live keys in order.
func (s *State) Keys() []Key { return SortedKeys(s.rows) }

// Hash identifies the state's rows (not their LSNs): two states with the same
// rows have the same hash whatever order they were built in.
func (s *State) Hash() uint64 {
	if !s.hashing {
		s.hashing = true
		s.hash = 0
		for k, e := range s.rows {
			e.hash, e.hashed = RowHash(k, e.Row), true
			s.rows[k] = e
			s.hash ^= e.hash
		}
	}
	return s.hash
}

func (s *State) unhash(k Key, e Entry) {
	if s.hashing {
		s.hash ^= e.Hash(k)
	}
}

// Clone returns an independent copy.
func (s *State) Clone() *State {
	c := &State{rows: make(map[Key]Entry, len(s.rows)), pos: s.pos, hash: s.hash, hashing: s.hashing}
	for k, e := range s.rows {
		c.rows[k] = e
	}
	return c
}

// Project builds what a store of the given kind must hold for this state.
func (s *State) Project(kind StoreKind) Docs {
	docs := make(Docs, len(s.rows))
	for k, e := range s.rows {
		docs[k] = ProjectEntry(kind, e)
	}
	return docs
}

// SortedKeys returns a map's keys in order; use it wherever iteration order
// could leak into behaviour or output.
func SortedKeys[V any](m map[Key]V) []Key {
	keys := make([]Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Less(keys[j]) })
	return keys
}

// RowHash is a 64-bit xxHash of a key and a row's canonical encoding
// (table, NUL, primary key, NUL, Encode()), computed without building the
// encoding. xxHash rather than a byte-at-a-time hash: rows carry values of
// several kilobytes (past the TOAST threshold) and every state change and
// checker step hashes them.
func RowHash(k Key, r Row) uint64 {
	d := keyDigest(k)
	for i, c := range r {
		if i > 0 {
			d.WriteString(";")
		}
		d.WriteString(c.Name)
		d.WriteString("=")
		d.WriteString(c.Value)
	}
	return d.Sum64()
}

// StoreKind is the kind of a downstream store, which fixes its projection of
// the source state and the guarantees it can offer.
type StoreKind uint8

const (
	// Replica is a transactional copy of every table (a replica database).
	Replica StoreKind = iota + 1
	// Cache is a key -> value copy that loses everything on restart.
	Cache
	// Search is a document per row with its terms and a revision counter
	// that each applied change increments: a non-idempotent effect.
	Search
)

func (k StoreKind) String() string {
	switch k {
	case Replica:
		return "replica"
	case Cache:
		return "cache"
	case Search:
		return "search"
	}
	return "store?"
}

// ParseStoreKind is the inverse of String.
func ParseStoreKind(s string) (StoreKind, bool) {
	for _, k := range []StoreKind{Replica, Cache, Search} {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// Doc is what a store holds for one source row: its projected value, the
// commit LSN that wrote it (its version) and, for the search index, how many
// transactions wrote it.
type Doc struct {
	Value string
	LSN   LSN
	Revs  int
}

// Docs is a whole store's content.
type Docs map[Key]Doc

// ProjectEntry is the document a store of this kind holds for a live row.
func ProjectEntry(kind StoreKind, e Entry) Doc {
	switch kind {
	case Search:
		return Doc{Value: SearchTerms(e.Row), LSN: e.LSN, Revs: e.Writes}
	default:
		return Doc{Value: e.Row.Encode(), LSN: e.LSN}
	}
}

// ProjectChange is the document a store of this kind holds after applying a
// non-delete change at lsn on top of prev (the zero Doc when absent). Sinks
// and the ground truth share it, so "the same state" has one definition.
func ProjectChange(kind StoreKind, c Change, lsn LSN, prev Doc, hadPrev bool) Doc {
	return ProjectEntry(kind, Entry{Row: c.Row, LSN: lsn, Writes: ChangeRevs(c, prev.Revs, hadPrev)})
}

// ChangeRevs is the revision count of the document a non-delete change
// leaves on top of one with prevRevs (hadPrev false: none), as
// ProjectChange counts it.
func ChangeRevs(c Change, prevRevs int, hadPrev bool) int {
	switch {
	case c.Revs > 0:
		return c.Revs
	case hadPrev && c.Op != OpInsert:
		return prevRevs + 1
	}
	return 1
}

// SearchTerms is the search index's document text: the sorted, distinct,
// lower-cased words of every column value.
func SearchTerms(r Row) string {
	var buf [32]string
	terms := buf[:0]
	var seen map[string]struct{} // for long texts, which repeat their words
	for _, v := range r.All() {
		if isToken(v) {
			// One long token (an encoded image, a spec): no byte-by-byte scan.
			terms = append(terms, lower(v))
			continue
		}
		if len(v) > 256 && seen == nil {
			seen = make(map[string]struct{}, 64)
			for _, t := range terms {
				seen[t] = struct{}{}
			}
		}
		terms = appendWords(terms, lower(v), seen)
	}
	slices.Sort(terms)
	terms = slices.Compact(terms)
	return strings.Join(terms, " ")
}

// lower is strings.ToLower, with a check eight bytes at a time for the
// common case it leaves alone (ASCII without capitals): values of several
// kilobytes pass through here on every search write.
func lower(s string) string {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		// Bit 7 of a byte: set when it is not ASCII; or, adding 0x80-'A',
		// when it is at least 'A' and, adding 0x80-'Z'-1, not above 'Z'.
		// ASCII bytes cannot carry into their neighbours here.
		if w&high != 0 || (w+(0x80-'A')*ones)&^(w+(0x80-'Z'-1)*ones)&high != 0 {
			return strings.ToLower(s)
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// isToken tells a long value without any word separator.
func isToken(s string) bool {
	return len(s) > 64 && strings.IndexByte(s, ' ') < 0 && strings.IndexByte(s, '\t') < 0 && strings.IndexByte(s, '\n') < 0
}

// appendWords appends the words of s to dst, skipping those in seen (and
// adding the rest) when seen is not nil.
func appendWords(dst []string, s string, seen map[string]struct{}) []string {
	add := func(w string) {
		if seen != nil {
			if _, dup := seen[w]; dup {
				return
			}
			seen[w] = struct{}{}
		}
		dst = append(dst, w)
	}
	start := -1
	for i := 0; i < len(s); i++ {
		space := s[i] == ' ' || s[i] == '\t' || s[i] == '\n'
		switch {
		case !space && start < 0:
			start = i
		case space && start >= 0:
			add(s[start:i])
			start = -1
		}
	}
	if start >= 0 {
		add(s[start:])
	}
	return dst
}

// DocsHash is the order-free hash of a replica's rows, comparable with
// State.Hash: a replica snapshot whose hash equals the source state's hash
// after some commit holds exactly that state.
func DocsHash(d Docs) uint64 {
	var h uint64
	for k, doc := range d {
		h ^= EncodedRowHash(k, doc.Value)
	}
	return h
}

// EncodedRowHash is RowHash(k, DecodeRow(v)) without decoding when v is
// already canonical (what Encode gives: "col=val" parts, columns strictly
// increasing), which a replica's documents are: then it hashes v as is.
func EncodedRowHash(k Key, v string) uint64 {
	if !canonical(v) {
		return RowHash(k, DecodeRow(v))
	}
	d := keyDigest(k)
	d.WriteString(v)
	return d.Sum64()
}

// keyDigest is a row hash's start: table, NUL, primary key, NUL.
func keyDigest(k Key) (d xxhash.Digest) {
	d.Reset()
	d.WriteString(k.Table)
	d.WriteString("\x00")
	d.WriteString(k.PK)
	d.WriteString("\x00")
	return d
}

// canonical reports whether Encode(DecodeRow(v)) == v.
func canonical(v string) bool {
	prev, first := "", true
	for len(v) > 0 {
		part := v
		if i := strings.IndexByte(v, ';'); i >= 0 {
			part, v = v[:i], v[i+1:]
			if v == "" {
				return false // a trailing ';' is an empty part
			}
		} else {
			v = ""
		}
		col, _, ok := strings.Cut(part, "=")
		if !ok || (!first && col <= prev) {
			return false
		}
		prev, first = col, false
	}
	return true
}
