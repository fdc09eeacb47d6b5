package checker

import (
	"sort"

	"lockstep/model"
)

// version is one committed version of a key: the key's entry in the source
// state right after the transaction at lsn committed. A transaction that
// writes a key twice leaves one version (its final effect); intermediate
// values inside a transaction were never committed.
type version struct {
	entry model.Entry
	// Projections, filled on first use by project. Replica and Cache share
	// one projection (the row's encoding); Search keeps terms and revs.
	row, search *model.Doc
	hash        uint64 // model.RowHash of the row, once hashed
	hashed      bool
}

// project is the document a store of this kind holds for the version,
// by model.ProjectEntry, the one shared definition.
func (v *version) project(kind model.StoreKind) model.Doc {
	p := &v.row
	if kind == model.Search {
		p = &v.search
	}
	if *p == nil {
		d := model.ProjectEntry(kind, v.entry)
		*p = &d
	}
	return **p
}

// rowHash is the version's term in a state hash.
func (v *version) rowHash(k model.Key) uint64 {
	if !v.hashed {
		v.hash, v.hashed = v.entry.Hash(k), true
	}
	return v.hash
}

// keyHistory is everything the truth says about one key.
type keyHistory struct {
	versions []*version // in commit order
	deletes  []model.LSN
	live     bool
}

type lsnKey struct {
	key model.Key
	lsn model.LSN
}

type abortedWrite struct {
	xid uint64
	lsn model.LSN
	op  model.Op
	row model.Row
}

// truth indexes the committed history once: every committed version per
// (key, LSN), the hash of every prefix state, and the aborted writes.
type truth struct {
	committed []model.Txn
	final     *model.State
	liveKeys  []model.Key // the final state's keys, in order
	keys      map[model.Key]*keyHistory
	// byLSN finds the version (key, LSN) when commit LSNs are not sorted;
	// sorted, a binary search of the key's versions finds it (exact).
	byLSN   map[lsnKey]*version
	lsns    []model.LSN // lsns[i] is the commit LSN of committed[i]
	hashes  []uint64    // hashes[i]: state hash after committed[:i]; hashes[0] is the empty state
	hashAt  map[uint64]int
	sorted  bool // commit LSNs strictly increase
	aborted map[model.Key][]abortedWrite
	// slab is where versions are allocated, a block at a time: a truth
	// holds one per key a transaction wrote.
	slab []version
}

// newVersion is a version of entry e, allocated from the slab.
func (t *truth) newVersion(e model.Entry) *version {
	if len(t.slab) == cap(t.slab) {
		t.slab = make([]version, 0, 256) // the old block stays, its versions pointed to
	}
	t.slab = append(t.slab, version{entry: e})
	return &t.slab[len(t.slab)-1]
}

func newTruth(h *model.History) *truth {
	t := &truth{
		committed: h.Committed,
		final:     model.NewState(),
		keys:      map[model.Key]*keyHistory{},
		lsns:      make([]model.LSN, len(h.Committed)),
		hashes:    make([]uint64, 1, len(h.Committed)+1),
		hashAt:    make(map[uint64]int, len(h.Committed)+1),
		sorted:    true,
		aborted:   map[model.Key][]abortedWrite{},
	}
	for i, txn := range h.Committed {
		if i > 0 && txn.CommitLSN <= t.lsns[i-1] {
			t.sorted = false
		}
		t.lsns[i] = txn.CommitLSN
	}
	if !t.sorted {
		changes := 0
		for _, txn := range h.Committed {
			changes += len(txn.Changes)
		}
		t.byLSN = make(map[lsnKey]*version, changes)
	}
	s := t.final
	t.hashes[0] = s.Hash()
	t.hashAt[s.Hash()] = 0
	var touched []model.Key
	for _, txn := range h.Committed {
		s.Apply(txn)
		touched = touched[:0]
		for _, c := range txn.Changes {
			if c.OldPK != "" && c.OldPK != c.PK {
				touched = appendKey(touched, model.Key{Table: c.Table, PK: c.OldPK})
			}
			touched = appendKey(touched, c.Key())
		}
		for _, k := range touched {
			kh := t.keys[k]
			if kh == nil {
				kh = &keyHistory{}
				t.keys[k] = kh
			}
			if e, ok := s.Get(k); ok {
				v := t.newVersion(e)
				kh.versions = append(kh.versions, v)
				if t.byLSN != nil {
					t.byLSN[lsnKey{k, e.LSN}] = v
				}
				kh.live = true
			} else if kh.live {
				kh.deletes = append(kh.deletes, txn.CommitLSN)
				kh.live = false
			}
		}
		t.hashes = append(t.hashes, s.Hash())
		if _, ok := t.hashAt[s.Hash()]; !ok {
			t.hashAt[s.Hash()] = len(t.hashes) - 1
		}
	}
	for _, txn := range h.Aborted {
		for _, c := range txn.Changes {
			k := c.Key()
			t.aborted[k] = append(t.aborted[k], abortedWrite{xid: txn.XID, lsn: txn.CommitLSN, op: c.Op, row: c.Row})
		}
	}
	t.liveKeys = t.final.Keys()
	return t
}

func appendKey(ks []model.Key, k model.Key) []model.Key {
	for _, x := range ks {
		if x == k {
			return ks
		}
	}
	return append(ks, k)
}

// version returns the committed version of k current as of lsn (the last
// one committed at or before lsn, unless a later delete at or before lsn
// removed it), projected for kind. A store may label a document with any
// position at which its value was current: a row loaded from a snapshot
// carries the snapshot's LSN, not the LSN that last wrote it.
func (t *truth) version(kind model.StoreKind, k model.Key, lsn model.LSN) (model.Doc, bool) {
	if v := t.asOf(k, lsn); v != nil {
		return v.project(kind), true
	}
	return model.Doc{}, false
}

// asOf is the committed version of k current as of lsn, nil if none
// (see version). With sorted commit LSNs a key's versions are in LSN
// order, so the last one at or before lsn is also the one written exactly
// at lsn when there is one (what byLSN finds otherwise), and a delete
// between it and lsn only matters when it was written before lsn.
func (t *truth) asOf(k model.Key, lsn model.LSN) *version {
	if !t.sorted {
		return t.byLSN[lsnKey{k, lsn}]
	}
	kh := t.keys[k]
	if kh == nil {
		return nil
	}
	i := sort.Search(len(kh.versions), func(i int) bool { return kh.versions[i].entry.LSN > lsn }) - 1
	if i < 0 {
		return nil
	}
	v := kh.versions[i]
	j := sort.Search(len(kh.deletes), func(j int) bool { return kh.deletes[j] > lsn }) - 1
	if j >= 0 && kh.deletes[j] > v.entry.LSN {
		return nil
	}
	return v
}

// revsFrom is d, a committed search document of k, as counted by an index
// that counts revisions from LSN from (model.Snapshot.RevsFrom): a row
// live at from counts one revision there and one more for each later
// transaction that wrote it, while d.Revs counts every one since the row
// was inserted. A row inserted after from counts the same either way.
func (t *truth) revsFrom(k model.Key, d model.Doc, from model.LSN) model.Doc {
	kh := t.keys[k]
	if from == 0 || kh == nil || !t.sorted {
		return d
	}
	at, live := t.version(model.Search, k, from)
	if !live {
		return d
	}
	after := func(l model.LSN) int {
		return sort.Search(len(kh.versions), func(i int) bool { return kh.versions[i].entry.LSN > l })
	}
	// The writes after from, if d is the same row as the one live at
	// from (nothing deleted and inserted it again since: that would
	// count from one again).
	if n := after(d.LSN) - after(from); n >= 0 && d.Revs == at.Revs+n {
		d.Revs -= at.Revs - 1
	}
	return d
}

// isVersion reports whether d is a committed version of k for kind: its LSN
// wrote k and its value is that version's projection. Revs are not judged.
func (t *truth) isVersion(kind model.StoreKind, k model.Key, d model.Doc) bool {
	v, ok := t.version(kind, k, d.LSN)
	return ok && v.Value == d.Value
}

// valueCommitted reports whether value was the projection of any committed
// version of k, and the LSN of the latest such version.
func (t *truth) valueCommitted(kind model.StoreKind, k model.Key, value string) (model.LSN, bool) {
	kh := t.keys[k]
	if kh == nil {
		return 0, false
	}
	for i := len(kh.versions) - 1; i >= 0; i-- {
		if d := kh.versions[i].project(kind); d.Value == value {
			return d.LSN, true
		}
	}
	return 0, false
}

// rowHash is a replica document's term in model.DocsHash: the hash of
// its decoded row. When d is a committed version it is that version's
// own row hash, exactly State.Hash's term, computed once for all the
// snapshots that show it (and immune to a row whose values contain the
// encoding's separators, which DecodeRow cannot restore).
func (t *truth) rowHash(k model.Key, d model.Doc) uint64 {
	return t.rowHashOf(k, d, t.asOf(k, d.LSN))
}

// rowHashOf is rowHash, given v = t.asOf(k, d.LSN).
func (t *truth) rowHashOf(k model.Key, d model.Doc, v *version) uint64 {
	if v != nil && v.entry.LSN == d.LSN && v.project(model.Replica).Value == d.Value {
		return v.rowHash(k)
	}
	return model.EncodedRowHash(k, d.Value)
}

// docsHash is model.DocsHash of a replica's content, comparable with
// State.Hash, by rowHash.
func (t *truth) docsHash(docs model.Docs) uint64 {
	var h uint64
	for k, d := range docs {
		h ^= t.rowHash(k, d)
	}
	return h
}

// current is the truth's document for k, projected for kind.
func (t *truth) current(kind model.StoreKind, k model.Key) (model.Doc, bool) {
	e, ok := t.final.Get(k)
	if !ok {
		return model.Doc{}, false
	}
	if d, ok := t.version(kind, k, e.LSN); ok {
		return d, true
	}
	return model.ProjectEntry(kind, e), true
}

// nextChange is the commit LSN of the first committed change to k (a write
// or a delete) after lsn, if any. It needs sorted commit LSNs.
func (t *truth) nextChange(k model.Key, lsn model.LSN) (model.LSN, bool) {
	kh := t.keys[k]
	if kh == nil {
		return 0, false
	}
	var next model.LSN
	found := false
	if i := sort.Search(len(kh.versions), func(i int) bool { return kh.versions[i].entry.LSN > lsn }); i < len(kh.versions) {
		next, found = kh.versions[i].entry.LSN, true
	}
	if j := sort.Search(len(kh.deletes), func(j int) bool { return kh.deletes[j] > lsn }); j < len(kh.deletes) && (!found || kh.deletes[j] < next) {
		next, found = kh.deletes[j], true
	}
	return next, found
}

// deletedAfter reports whether some committed transaction after lsn
// deleted k.
func (t *truth) deletedAfter(k model.Key, lsn model.LSN) bool {
	d, ok := t.lastDelete(k)
	return ok && d > lsn
}

// lastDelete is the commit LSN that last deleted k, if any.
func (t *truth) lastDelete(k model.Key) (model.LSN, bool) {
	kh := t.keys[k]
	if kh == nil || len(kh.deletes) == 0 {
		return 0, false
	}
	return kh.deletes[len(kh.deletes)-1], true
}

// abortedValue finds an aborted write of k whose projection for kind is
// value.
func (t *truth) abortedValue(kind model.StoreKind, k model.Key, value string) (abortedWrite, bool) {
	for _, w := range t.aborted[k] {
		if w.op == model.OpDelete {
			continue
		}
		if model.ProjectEntry(kind, model.Entry{Row: w.row}).Value == value {
			return w, true
		}
	}
	return abortedWrite{}, false
}

// abortedDelete finds an aborted transaction that deleted k.
func (t *truth) abortedDelete(k model.Key) (abortedWrite, bool) {
	for _, w := range t.aborted[k] {
		if w.op == model.OpDelete {
			return w, true
		}
	}
	return abortedWrite{}, false
}

// prefixAt is how many committed transactions a store at position lsn holds:
// those whose commit LSN is at most lsn.
func (t *truth) prefixAt(lsn model.LSN) int {
	if t.sorted {
		return sort.Search(len(t.lsns), func(i int) bool { return t.lsns[i] > lsn })
	}
	n := 0
	for _, l := range t.lsns {
		if l <= lsn {
			n++
		}
	}
	return n
}

// prefixLSN is the commit LSN of the last transaction in the first n, 0
// for the empty prefix.
func (t *truth) prefixLSN(n int) model.LSN {
	if n == 0 {
		return 0
	}
	return t.lsns[n-1]
}

// stateAfter replays the first n committed transactions. Only witnesses
// need it, so it is rebuilt on demand.
func (t *truth) stateAfter(n int) *model.State {
	s := model.NewState()
	for _, txn := range t.committed[:n] {
		s.Apply(txn)
	}
	return s
}
