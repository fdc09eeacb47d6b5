package checker

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"lockstep/model"
)

// Defaults for the zero Options.
const (
	DefaultLinearizabilityTimeout = 2 * time.Second
	DefaultWitnesses              = 10
)

// Options tunes Check. The zero value is ready to use.
type Options struct {
	// LinearizabilityTimeout bounds porcupine's search over each store's
	// reads. Zero means DefaultLinearizabilityTimeout (2s); negative means
	// no limit. A search cut short is reported as Unknown: not a pass, not
	// a violation. It is the one thing that can make Check
	// non-deterministic.
	LinearizabilityTimeout time.Duration
	// Witnesses is how many anomalies Report.Render prints in full. Zero
	// means DefaultWitnesses (10); negative means all.
	Witnesses int
	_         struct{}
}

func (o Options) withDefaults() Options {
	switch {
	case o.LinearizabilityTimeout == 0:
		o.LinearizabilityTimeout = DefaultLinearizabilityTimeout
	case o.LinearizabilityTimeout < 0:
		o.LinearizabilityTimeout = 0 // porcupine: no limit
	}
	if o.Witnesses == 0 {
		o.Witnesses = DefaultWitnesses
	}
	return o
}

// checkOperations is porcupine's entry point; tests replace it to force
// an Unknown.
var checkOperations = porcupine.CheckOperationsTimeout

// Check judges a recorded history. It never talks to a service and never
// mutates h. Apart from a linearizability search that times out, the same
// history always gives the same report.
func Check(h *model.History, opts Options) *Report {
	c := &run{
		h:      h,
		opts:   opts.withDefaults(),
		t:      newTruth(h),
		stores: map[string]model.StoreSpec{},
		final:  map[string]*model.Snapshot{},
		dedup:  map[obsKey]*Anomaly{},
		late:   map[string]lateKeys{},

		docsHashes: map[uintptr]uint64{},
	}
	c.declare()
	for _, name := range c.names {
		c.checkFinal(name)
	}
	c.checkObservations()
	c.checkBackwards()
	c.checkPositions()
	c.checkTorn()
	c.checkConvergence()
	c.checkLinearizability()
	c.checkLog()
	return c.report()
}

// run is one Check in progress.
type run struct {
	h    *model.History
	opts Options
	t    *truth

	stores map[string]model.StoreSpec // declared stores with a known kind
	names  []string                   // their names, sorted
	final  map[string]*model.Snapshot

	anomalies []*Anomaly
	dedup     map[obsKey]*Anomaly // phantom and duplicate: one per distinct doc
	groups    []readGroup         // found reads by store and key, see readGroups
	late      map[string]lateKeys // per store, see checkFinal
	lin       []Linearizability
	// docsHashes is truth.docsHash by document map (docsID): snapshots
	// of a store where nothing changed share theirs.
	docsHashes map[uintptr]uint64
	unknown    []string
	problems   []string
}

func (c *run) problem(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// declare validates the history's shape and indexes stores and finals.
func (c *run) declare() {
	for _, s := range c.h.Stores {
		switch {
		case s.Kind != model.Replica && s.Kind != model.Cache && s.Kind != model.Search:
			c.problem("store %q has unknown kind %d: not judged", s.Name, s.Kind)
			continue
		case s.Name == LogStore:
			c.problem("store name %q is reserved for the log", s.Name)
		}
		if _, dup := c.stores[s.Name]; dup {
			c.problem("store %q declared twice: the first declaration is used", s.Name)
			continue
		}
		c.stores[s.Name] = s
		c.names = append(c.names, s.Name)
	}
	sort.Strings(c.names)
	if !c.t.sorted {
		c.problem("committed transactions' LSNs do not strictly increase: positions are ambiguous")
	}
	undeclared := map[[2]string]bool{}
	note := func(store, what string) {
		if _, ok := c.stores[store]; !ok && !undeclared[[2]string{store, what}] {
			undeclared[[2]string{store, what}] = true
			c.problem("%s of undeclared store %q: not judged", what, store)
		}
	}
	for i := range c.h.Final {
		f := &c.h.Final[i]
		note(f.Store, "final snapshot")
		if _, dup := c.final[f.Store]; dup {
			c.problem("store %q has more than one final snapshot: the last is used", f.Store)
		}
		c.final[f.Store] = f
	}
	for _, name := range c.names {
		if c.final[name] == nil {
			c.problem("store %q has no final snapshot: loss and convergence not judged", name)
		}
	}
	for _, s := range c.h.Snapshots {
		note(s.Store, "snapshot")
	}
	for i, r := range c.h.Reads {
		note(r.Store, "read")
		if r.Return < r.Call {
			c.problem("read #%d of %s %s returns (%s) before its call (%s)", i, r.Store, r.Key, r.Return, r.Call)
		}
	}
	for _, store := range sortedNames(c.h.ConvergedAt) {
		note(store, "convergence time")
	}
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// add records an anomaly, filling its property, violation flag and fault.
func (c *run) add(class Class, store string, key model.Key, w Witness) *Anomaly {
	w.Timed = true
	w.Fault = c.h.FaultAt(w.At)
	a := &Anomaly{
		Class:     class,
		Property:  class.Property(),
		Store:     store,
		Key:       key,
		Violation: c.stores[store].Claims[class.Property()],
		Witness:   w,
	}
	c.anomalies = append(c.anomalies, a)
	return a
}

// checkFinal compares a store's final snapshot with the truth key by key:
// lost (missing, older, delete lost) and divergent (same version, other
// content). Phantoms and duplicates in finals are found with the other
// observations.
//
// A store that keeps a position may simply not have caught up: a change
// after its final position that it does not reflect yet is late, not lost,
// and is counted in the store's not-converged anomaly (checkConvergence).
// A change is lost when the store passed it without reflecting it: the
// store's position is at or after it, or the document it holds is a later
// version (revs counting fewer changes than that version made).
func (c *run) checkFinal(name string) {
	f := c.final[name]
	if f == nil {
		return
	}
	kind := c.stores[name].Kind
	w := func(detail string, got, want *model.Doc) Witness {
		wit := Witness{Source: FromFinal, At: f.At, Got: got, Want: want, Detail: detail}
		if f.HasPosition {
			p := f.Position
			wit.Position = &p
		}
		return wit
	}
	// Positions say which changes a store has passed only when commit LSNs
	// are unambiguous.
	positioned, pos := f.HasPosition && c.t.sorted, f.Position.LSN
	// notYet: a document current from lsn until k's next change is what a
	// store at pos shows that has not reached that change yet.
	notYet := func(k model.Key, lsn model.LSN) bool {
		next, ok := c.t.nextChange(k, lsn)
		return positioned && ok && next > pos
	}
	for _, k := range c.t.liveKeys {
		want, _ := c.t.current(kind, k)
		if kind == model.Search {
			want = c.t.revsFrom(k, want, f.RevsFrom)
		}
		got, ok := f.Docs[k]
		switch {
		case !ok:
			detail := fmt.Sprintf("missing, want lsn=%s", want.LSN)
			if positioned {
				// Absent at some LSN at or after pos: the store may reflect
				// that and not have reached the next write.
				if _, liveAtPos := c.t.version(kind, k, pos); !liveAtPos || c.t.deletedAfter(k, pos) {
					c.noteLate(name, k, detail)
					continue
				}
			}
			if ab, ok := c.t.abortedDelete(k); ok {
				detail += fmt.Sprintf(" (deleted by aborted txn xid=%d)", ab.xid)
			}
			c.add(Lost, name, k, w(detail, nil, docPtr(want)))
		case got.LSN < want.LSN:
			detail := fmt.Sprintf("has lsn=%s want lsn=%s", got.LSN, want.LSN)
			if notYet(k, got.LSN) {
				c.noteLate(name, k, detail)
				c.revsLost(name, kind, k, got, f.RevsFrom, w)
			} else {
				c.add(Lost, name, k, w(detail, docPtr(got), docPtr(want)))
			}
		case got.LSN > want.LSN && got.Value != want.Value:
			// Labelled after the newest version but with another value: a
			// phantom, reported as such by checkObservations.
		case got.Value != want.Value:
			detail := fmt.Sprintf("has %s, want %s", docString(kind, got), docString(kind, want))
			c.add(Divergent, name, k, w(detail, docPtr(got), docPtr(want)))
		case kind == model.Search && got.Revs < want.Revs:
			// The value is current but fewer changes reached the store
			// than committed: one was lost and later superseded.
			detail := fmt.Sprintf("lsn=%s has revs=%d want revs=%d: %d committed change(s) never applied", got.LSN, got.Revs, want.Revs, want.Revs-got.Revs)
			c.add(Lost, name, k, w(detail, docPtr(got), docPtr(want)))
		}
	}
	var extra []model.Key
	for k := range f.Docs {
		if _, live := c.t.final.Get(k); !live {
			extra = append(extra, k)
		}
	}
	sortKeys(extra)
	for _, k := range extra {
		got := f.Docs[k]
		if _, ok := c.t.valueCommitted(kind, k, got.Value); !ok {
			continue // never committed: a phantom, not a lost delete
		}
		detail := fmt.Sprintf("has lsn=%s, deleted", got.LSN)
		if del, ok := c.t.lastDelete(k); ok {
			detail = fmt.Sprintf("has lsn=%s, deleted at lsn=%s", got.LSN, del)
		}
		if notYet(k, got.LSN) {
			c.noteLate(name, k, detail)
			c.revsLost(name, kind, k, got, f.RevsFrom, w)
			continue
		}
		c.add(Lost, name, k, w(detail, docPtr(got), nil))
	}
}

// revsLost reports as lost a search document of a store that has not
// caught up on it yet, but that is a committed version counting fewer revs
// than that version made since from, where the store counts from: it
// passed a change without applying it.
func (c *run) revsLost(name string, kind model.StoreKind, k model.Key, got model.Doc, from model.LSN, w func(string, *model.Doc, *model.Doc) Witness) {
	if kind != model.Search {
		return
	}
	v, ok := c.t.version(kind, k, got.LSN)
	v = c.t.revsFrom(k, v, from)
	if !ok || v.Value != got.Value || got.Revs >= v.Revs {
		return
	}
	detail := fmt.Sprintf("lsn=%s has revs=%d want revs=%d: %d committed change(s) never applied", got.LSN, got.Revs, v.Revs, v.Revs-got.Revs)
	c.add(Lost, name, k, w(detail, docPtr(got), docPtr(v)))
}

// lateKeys counts the keys a store had not caught up on at its final
// snapshot (changes after its position), for its not-converged witness.
type lateKeys struct {
	n      int
	first  model.Key // the smallest
	detail string    // first's
}

func (c *run) noteLate(name string, k model.Key, detail string) {
	l := c.late[name]
	if l.n == 0 || k.Less(l.first) {
		l.first, l.detail = k, detail
	}
	l.n++
	c.late[name] = l
}

// docPtr returns a pointer to a copy of d, for witnesses (taking &d of a
// loop variable or parameter would move it to the heap on every call).
func docPtr(d model.Doc) *model.Doc { return &d }

func sortKeys(ks []model.Key) {
	sort.Slice(ks, func(i, j int) bool { return ks[i].Less(ks[j]) })
}

func docString(kind model.StoreKind, d model.Doc) string {
	if kind == model.Search {
		return fmt.Sprintf("lsn=%s %q revs=%d", d.LSN, Abbrev(d.Value), d.Revs)
	}
	return fmt.Sprintf("lsn=%s %q", d.LSN, Abbrev(d.Value))
}

// obsKey identifies a distinct phantom or duplicate document in a store.
type obsKey struct {
	class Class
	store string
	key   model.Key
	doc   model.Doc
}

// obsOrder orders observations of the same thing, to keep the earliest:
// by time, then source (read, snapshot, final), then index.
type obsOrder struct {
	at    time.Duration
	src   int
	index int
}

func (o obsOrder) less(p obsOrder) bool {
	if o.at != p.at {
		return o.at < p.at
	}
	if o.src != p.src {
		return o.src < p.src
	}
	return o.index < p.index
}

// checkObservations looks at every document any store showed (found reads,
// snapshots, finals) for phantoms and duplicates.
func (c *run) checkObservations() {
	order := map[*Anomaly]obsOrder{}
	// observe judges one document; snap is the snapshot it came from, nil
	// for a read (witnesses are only built for anomalies).
	// v is c.t.asOf(k, d.LSN), which the caller may need too.
	observe := func(store string, kind model.StoreKind, k model.Key, d model.Doc, v *version, snap *model.Snapshot, src Source, ord obsOrder) (flagged bool) {
		var want model.Doc
		isVersion := v != nil
		if isVersion {
			want = v.project(kind)
		}
		if kind == model.Search && isVersion && snap != nil && d.Revs > 1 {
			// (One revision never exceeds what any snapshot leaves.)
			// Counted from the snapshot the index last loaded. A read
			// does not say which that was: it is held to every revision
			// since the row was inserted, the most any snapshot leaves.
			want = c.t.revsFrom(k, want, snap.RevsFrom)
		}
		var class Class
		switch {
		case !isVersion || want.Value != d.Value:
			class = Phantom
		case kind == model.Search && d.Revs > want.Revs:
			class = Duplicate
		default:
			return false
		}
		key := obsKey{class: class, store: store, key: k, doc: d}
		if class == Phantom {
			key.doc.Revs = 0 // one phantom per (key, LSN, value)
		}
		a := c.dedup[key]
		if a != nil {
			a.Witness.Seen++
			if !ord.less(order[a]) {
				return true
			}
		}
		w := Witness{Source: src, At: ord.at}
		if snap != nil {
			w = snapWitness(snap, src)
		}
		w.Got = docPtr(d)
		if isVersion {
			w.Want = docPtr(want)
		}
		if class == Phantom {
			w.Detail = c.phantomDetail(kind, k, d, w.Want)
		} else {
			w.Detail = fmt.Sprintf("lsn=%s has revs=%d want revs=%d: %d change(s) applied twice", d.LSN, d.Revs, want.Revs, d.Revs-want.Revs)
		}
		if a != nil {
			w.Timed, w.Fault, w.Seen = true, c.h.FaultAt(w.At), a.Witness.Seen
			a.Witness = w
		} else {
			w.Seen = 1
			a = c.add(class, store, k, w)
			c.dedup[key] = a
		}
		order[a] = ord
		return true
	}
	for i := range c.h.Reads {
		r := &c.h.Reads[i]
		if spec, ok := c.stores[r.Store]; ok && r.Found {
			observe(r.Store, spec.Kind, r.Key, r.Doc, c.t.asOf(r.Key, r.Doc.LSN), nil, FromRead, obsOrder{r.Return, 0, i})
		}
	}
	// A store hands out the same documents again while none changed: a
	// snapshot whose documents showed nothing shows nothing again, so
	// only the first of them is looked through.
	type shown struct {
		store    string
		docs     uintptr
		revsFrom model.LSN
	}
	clean := map[shown]bool{}
	for i := range c.h.Snapshots {
		s := &c.h.Snapshots[i]
		spec, ok := c.stores[s.Store]
		sh := shown{s.Store, docsID(s.Docs), s.RevsFrom}
		if !ok || clean[sh] {
			continue
		}
		flagged := false
		var hash uint64 // a replica's, for checkTorn: one lookup per document serves both
		for k, d := range s.Docs {
			v := c.t.asOf(k, d.LSN)
			if observe(s.Store, spec.Kind, k, d, v, s, FromSnapshot, obsOrder{s.At, 1, i}) {
				flagged = true
			}
			if spec.Kind == model.Replica {
				hash ^= c.t.rowHashOf(k, d, v)
			}
		}
		if !flagged {
			clean[sh] = true
		}
		if spec.Kind == model.Replica {
			c.docsHashes[sh.docs] = hash
		}
	}
	for _, name := range c.names {
		if f := c.final[name]; f != nil {
			kind := c.stores[name].Kind
			for k, d := range f.Docs {
				observe(name, kind, k, d, c.t.asOf(k, d.LSN), f, FromFinal, obsOrder{f.At, 2, 0})
			}
		}
	}
}

// docsID identifies a document map. Every snapshot of a history is alive
// while it is checked, so two that share an ID share their map.
func docsID(d model.Docs) uintptr { return uintptr(reflect.ValueOf(d).UnsafePointer()) }

func snapWitness(s *model.Snapshot, src Source) Witness {
	w := Witness{Source: src, At: s.At}
	if s.HasPosition {
		p := s.Position
		w.Position = &p
	}
	return w
}

// phantomDetail explains where a phantom document could have come from.
func (c *run) phantomDetail(kind model.StoreKind, k model.Key, d model.Doc, atLSN *model.Doc) string {
	var b strings.Builder
	fmt.Fprintf(&b, "shows %s", docString(kind, d))
	switch {
	case atLSN != nil && atLSN.LSN == d.LSN:
		fmt.Fprintf(&b, ", but lsn=%s wrote %q", d.LSN, Abbrev(atLSN.Value))
	case atLSN != nil:
		fmt.Fprintf(&b, ", but as of lsn=%s the committed value was %q (written at lsn=%s)", d.LSN, Abbrev(atLSN.Value), atLSN.LSN)
	default:
		b.WriteString(", a version never committed")
	}
	if ab, ok := c.t.abortedValue(kind, k, d.Value); ok {
		fmt.Fprintf(&b, "; value written by aborted txn xid=%d", ab.xid)
	} else if lsn, ok := c.t.valueCommitted(kind, k, d.Value); ok {
		fmt.Fprintf(&b, "; value committed at lsn=%s", lsn)
	}
	return b.String()
}

// checkBackwards finds, per store and key, each found read whose version is
// older than that of a found read that returned before it was called.
func (c *run) checkBackwards() {
	groups := c.readGroups()
	byReturn := make([]int, 0, 16)
	for _, g := range groups {
		reads := g.reads
		byReturn = byReturn[:0]
		for i := range reads {
			byReturn = append(byReturn, i)
		}
		sort.SliceStable(byReturn, func(i, j int) bool {
			return c.h.Reads[reads[byReturn[i]]].Return < c.h.Reads[reads[byReturn[j]]].Return
		})
		best, j := -1, 0 // best: the highest version among reads returned so far
		for _, ri := range reads {
			r2 := &c.h.Reads[ri]
			for ; j < len(byReturn) && c.h.Reads[reads[byReturn[j]]].Return < r2.Call; j++ {
				cand := reads[byReturn[j]]
				if best < 0 || c.h.Reads[cand].Doc.LSN > c.h.Reads[best].Doc.LSN {
					best = cand
				}
			}
			if best < 0 || r2.Doc.LSN >= c.h.Reads[best].Doc.LSN {
				continue
			}
			r1 := &c.h.Reads[best]
			got, want := r2.Doc, r1.Doc
			detail := fmt.Sprintf("read lsn=%s in [%s,%s] after a read of lsn=%s returned at %s",
				r2.Doc.LSN, r2.Call, r2.Return, r1.Doc.LSN, r1.Return)
			c.add(Backwards, g.store, g.key, Witness{Source: FromRead, At: r2.Return, Got: &got, Want: &want, Detail: detail})
		}
	}
}

// checkPositions finds each write of a store's saved position that goes
// back (an older LSN, or an earlier log offset) from the position the store
// held, unless the store had lost its position in between (it restarted
// empty, and a rebuild starts it again). One applier moves its store's
// position only forward; a write that goes back is a second writer, or a
// zombie, writing a batch older than what the store holds: for as long as
// it stands the store says it is somewhere it is not, and a delete it had
// applied may be undone.
func (c *run) checkPositions() {
	held := map[string]*model.PositionWrite{}
	for i := range c.h.Positions {
		w := &c.h.Positions[i]
		if _, ok := c.stores[w.Store]; !ok {
			continue
		}
		prev := held[w.Store]
		switch {
		case w.Lost:
			delete(held, w.Store)
			continue
		case prev != nil && (w.Position.LSN < prev.Position.LSN || w.Position.Offset < prev.Position.Offset):
			pos := w.Position
			c.add(Backwards, w.Store, model.Key{}, Witness{Source: FromPositions, At: w.At, Position: &pos,
				Detail: fmt.Sprintf("the store's saved position went back to %s from %s, written at %s: a writer wrote over a newer batch", w.Position, prev.Position, prev.At)})
		}
		held[w.Store] = w
	}
}

type readGroup struct {
	store string
	key   model.Key
	reads []int // indexes into History.Reads, by call time
}

// readGroups returns the found reads of declared stores grouped by store and
// key, groups sorted by store and key, reads by call, return and index.
func (c *run) readGroups() []readGroup {
	if c.groups == nil {
		c.groups = c.groupReads()
	}
	return c.groups
}

func (c *run) groupReads() []readGroup {
	idx := make([]int, 0, len(c.h.Reads))
	for i := range c.h.Reads {
		r := &c.h.Reads[i]
		if _, ok := c.stores[r.Store]; ok && r.Found && r.Return >= r.Call {
			idx = append(idx, i)
		}
	}
	reads := c.h.Reads
	slices.SortFunc(idx, func(i, j int) int {
		a, b := &reads[i], &reads[j]
		if c := strings.Compare(a.Store, b.Store); c != 0 {
			return c
		}
		if c := strings.Compare(a.Key.Table, b.Key.Table); c != 0 {
			return c
		}
		if c := strings.Compare(a.Key.PK, b.Key.PK); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Call, b.Call); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Return, b.Return); c != 0 {
			return c
		}
		return cmp.Compare(i, j)
	})
	groups := []readGroup{}
	for n, i := range idx {
		r := &reads[i]
		if n == 0 || r.Store != reads[idx[n-1]].Store || r.Key != reads[idx[n-1]].Key {
			groups = append(groups, readGroup{store: r.Store, key: r.Key, reads: idx[n:n]})
		}
		g := &groups[len(groups)-1]
		g.reads = g.reads[:len(g.reads)+1]
	}
	return groups
}

// checkTorn judges every replica snapshot, during the run and final,
// against the prefix states of the truth.
func (c *run) checkTorn() {
	for i := range c.h.Snapshots {
		c.tornSnapshot(&c.h.Snapshots[i], FromSnapshot)
	}
	for _, name := range c.names {
		if f := c.final[name]; f != nil {
			c.tornSnapshot(f, FromFinal)
		}
	}
}

func (c *run) tornSnapshot(s *model.Snapshot, src Source) {
	spec, ok := c.stores[s.Store]
	if !ok || spec.Kind != model.Replica {
		return
	}
	id := docsID(s.Docs)
	hash, ok := c.docsHashes[id]
	if !ok {
		hash = c.t.docsHash(s.Docs)
		c.docsHashes[id] = hash
	}
	matched, anyMatch := c.t.hashAt[hash]
	var ref int // the prefix the witness compares with
	var detail string
	if s.HasPosition {
		ref = c.t.prefixAt(s.Position.LSN)
		if c.t.hashes[ref] == hash {
			return
		}
		if anyMatch {
			detail = fmt.Sprintf("at position lsn=%s holds the source state after lsn=%s", s.Position.LSN, c.t.prefixLSN(matched))
		} else {
			detail = fmt.Sprintf("at position lsn=%s matches no committed state", s.Position.LSN)
		}
	} else {
		if anyMatch {
			return
		}
		var maxLSN model.LSN
		for _, d := range s.Docs {
			maxLSN = max(maxLSN, d.LSN)
		}
		ref = c.t.prefixAt(maxLSN)
		detail = fmt.Sprintf("snapshot matches no committed state (newest doc lsn=%s)", maxLSN)
	}
	w := snapWitness(s, src)
	key, got, want, found := c.firstDifference(s.Docs, c.t.stateAfter(ref).Project(model.Replica))
	if found {
		detail += fmt.Sprintf("; vs the state at lsn=%s it first differs here: has %s, want %s",
			c.t.prefixLSN(ref), optDoc(got), optDoc(want))
		w.Got, w.Want = got, want
	}
	w.Detail = detail
	c.add(Torn, s.Store, key, w)
}

// firstDifference is the first key, in key order, whose row differs between
// two replica contents (LSNs are not compared: neither is the hash).
func (c *run) firstDifference(got, want model.Docs) (model.Key, *model.Doc, *model.Doc, bool) {
	keys := model.SortedKeys(got)
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	sortKeys(keys)
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		if gok != wok || c.t.rowHash(k, g) != c.t.rowHash(k, w) {
			var gp, wp *model.Doc
			if gok {
				gp = &g
			}
			if wok {
				wp = &w
			}
			return k, gp, wp, true
		}
	}
	return model.Key{}, nil, nil, false
}

func optDoc(d *model.Doc) string {
	if d == nil {
		return "nothing"
	}
	return docString(model.Replica, *d)
}

// checkConvergence judges every store whose final snapshot keeps a
// position: it must have reached the final source position by the
// deadline (History.ConvergedAt, or its final snapshot if taken by then),
// and its final snapshot must be at it. The keys it had not caught up on
// (see checkFinal) are counted in the witness, not as lost.
func (c *run) checkConvergence() {
	if c.h.Deadline == 0 {
		for _, name := range c.names {
			if f := c.final[name]; f != nil && f.HasPosition {
				c.problem("history has no deadline: convergence judged against time 0")
				break
			}
		}
	}
	src := c.t.final.Position()
	for _, name := range c.names {
		f := c.final[name]
		if f == nil || !f.HasPosition {
			continue
		}
		at, ok := c.h.ConvergedAt[name]
		behind := f.Position.LSN < src
		if !ok && !behind && f.At <= c.h.Deadline {
			// Not recorded, but the final snapshot, taken by the
			// deadline, shows the store there: it had converged.
			ok, at = true, f.At
		}
		if ok && at <= c.h.Deadline && !behind {
			continue
		}
		p := f.Position
		w := Witness{Source: FromRun, At: c.h.Deadline, Position: &p}
		switch {
		case ok && at > c.h.Deadline:
			w.At = at
			w.Detail = fmt.Sprintf("converged at %s, after the deadline %s", at, c.h.Deadline)
		case ok:
			w.At = f.At
			w.Detail = fmt.Sprintf("recorded converged at %s, but its final position lsn=%s at %s is behind source lsn=%s",
				at, f.Position.LSN, f.At, src)
		case !behind:
			w.At = f.At
			w.Detail = fmt.Sprintf("not seen at source lsn=%s by the deadline %s, only in its final snapshot at %s",
				src, c.h.Deadline, f.At)
		default:
			w.Detail = fmt.Sprintf("never reached source lsn=%s by the deadline %s (final position lsn=%s)",
				src, c.h.Deadline, f.Position.LSN)
		}
		if l := c.late[name]; l.n > 0 {
			w.Detail += fmt.Sprintf("; %d key(s) not caught up (late, not lost), first %s: %s", l.n, l.first, l.detail)
		}
		c.add(NotConverged, name, model.Key{}, w)
	}
}

func (c *run) checkLog() {
	if c.h.LogLosses <= 0 {
		return
	}
	claimed := false
	for _, name := range c.names {
		claimed = claimed || c.stores[name].Claims[model.NoLoss]
	}
	c.anomalies = append(c.anomalies, &Anomaly{
		Class:     LogDataLoss,
		Property:  LogDataLoss.Property(),
		Store:     LogStore,
		Violation: claimed,
		Witness: Witness{
			Source: FromRun,
			Detail: fmt.Sprintf("%d acknowledged log record(s) lost (unclean leader election)", c.h.LogLosses),
		},
	})
}

// report fills in the versions each store showed for the anomalies' keys,
// sorts, counts and returns.
func (c *run) report() *Report {
	c.fillVersions()
	r := &Report{
		Scenario:        c.h.Scenario,
		System:          c.h.System,
		Seed:            c.h.Seed,
		Committed:       len(c.h.Committed),
		Stores:          len(c.names),
		Reads:           len(c.h.Reads),
		Snapshots:       len(c.h.Snapshots),
		Anomalies:       make([]Anomaly, len(c.anomalies)),
		Counts:          map[Class]int{},
		Linearizability: c.lin,
		Unknown:         c.unknown,
		Problems:        c.problems,
		witnesses:       c.opts.Witnesses,
	}
	sort.Strings(r.Problems)
	for i, a := range c.anomalies {
		r.Anomalies[i] = *a
		r.Counts[a.Class]++
	}
	sort.SliceStable(r.Anomalies, func(i, j int) bool { return anomalyLess(&r.Anomalies[i], &r.Anomalies[j]) })
	switch {
	case !r.OK():
		r.Verdict = Fail
	case len(r.Problems) > 0:
		r.Verdict = Inconclusive
	default:
		r.Verdict = Pass
		for _, l := range r.Linearizability {
			if l.Claimed && l.Result == porcupine.Unknown {
				r.Verdict = Inconclusive
			}
		}
	}
	return r
}

func anomalyLess(a, b *Anomaly) bool {
	if a.Class != b.Class {
		return a.Class.rank() < b.Class.rank()
	}
	if a.Store != b.Store {
		return a.Store < b.Store
	}
	if a.Key != b.Key {
		return a.Key.Less(b.Key)
	}
	if a.Witness.At != b.Witness.At {
		return a.Witness.At < b.Witness.At
	}
	if a.Witness.Source != b.Witness.Source {
		return a.Witness.Source < b.Witness.Source
	}
	return a.Witness.Detail < b.Witness.Detail
}

// fillVersions sets Witness.Versions on every keyed anomaly: the LSNs its
// store showed for the key over the run, in time order.
func (c *run) fillVersions() {
	type sk struct {
		store string
		key   model.Key
	}
	type obs struct {
		at    time.Duration
		order int
		lsn   model.LSN
	}
	want := map[sk][]obs{}
	for _, a := range c.anomalies {
		if a.Key != (model.Key{}) && a.Store != LogStore {
			want[sk{a.Store, a.Key}] = nil
		}
	}
	if len(want) == 0 {
		return
	}
	seq := 0
	see := func(store string, k model.Key, at time.Duration, lsn model.LSN) {
		if l, ok := want[sk{store, k}]; ok {
			want[sk{store, k}] = append(l, obs{at, seq, lsn})
		}
		seq++
	}
	for _, r := range c.h.Reads {
		if r.Found {
			see(r.Store, r.Key, r.Return, r.Doc.LSN)
		}
	}
	byStore := map[string][]model.Key{}
	for k := range want {
		byStore[k.store] = append(byStore[k.store], k.key)
	}
	for _, ks := range byStore {
		sortKeys(ks)
	}
	seeSnap := func(s *model.Snapshot) {
		for _, k := range byStore[s.Store] {
			if d, ok := s.Docs[k]; ok {
				see(s.Store, k, s.At, d.LSN)
			}
		}
	}
	for i := range c.h.Snapshots {
		seeSnap(&c.h.Snapshots[i])
	}
	for _, name := range c.names {
		if f := c.final[name]; f != nil {
			seeSnap(f)
		}
	}
	lsns := map[sk][]model.LSN{}
	for k, l := range want {
		sort.Slice(l, func(i, j int) bool {
			if l[i].at != l[j].at {
				return l[i].at < l[j].at
			}
			return l[i].order < l[j].order
		})
		var v []model.LSN
		for _, o := range l {
			if len(v) == 0 || v[len(v)-1] != o.lsn {
				v = append(v, o.lsn)
			}
		}
		lsns[k] = v
	}
	for _, a := range c.anomalies {
		if v := lsns[sk{a.Store, a.Key}]; len(v) > 0 {
			a.Witness.Versions = v
		}
	}
}

// Abbrev shortens a document value for a witness: values of kilobytes
// (past the TOAST threshold) keep their start and end and say how much was
// left out, so a witness stays one readable line.
func Abbrev(v string) string {
	const head, tail = 48, 24
	if len(v) <= head+tail+16 {
		return v
	}
	return fmt.Sprintf("%s…(%d bytes)…%s", v[:head], len(v)-head-tail, v[len(v)-tail:])
}
