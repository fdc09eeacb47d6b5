package checker

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"pgregory.net/rapid"

	"lockstep/model"
)

// A store whose final docs are exactly the truth's projection and whose
// reads are monotone committed versions yields no anomaly at all.
func TestPropertyCorrectStoresPass(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h, _ := correctHistory(t)
		rep := Check(h, Options{LinearizabilityTimeout: -1})
		if len(rep.Anomalies) != 0 || rep.Verdict != Pass || len(rep.Problems) != 0 {
			t.Fatalf("correct history judged wrong:\n%s", rep)
		}
		for _, l := range rep.Linearizability {
			if l.Result != porcupine.Ok {
				t.Fatalf("%s: %s", l.Store, l.Result)
			}
		}
	})
}

// mutation breaks a correct history in one way and says which classes the
// checker must report, exactly.
type mutation struct {
	name  string
	apply func(t *rapid.T, h *model.History, o *oracle) (want []Class, ok bool)
}

func finalOf(h *model.History, store string) *model.Snapshot {
	for i := range h.Final {
		if h.Final[i].Store == store {
			return &h.Final[i]
		}
	}
	return nil
}

func kindOf(h *model.History, store string) model.StoreKind {
	s, _ := h.Store(store)
	return s.Kind
}

func drawLiveKey(t *rapid.T, o *oracle) (model.Key, bool) {
	keys := o.final.Keys()
	if len(keys) == 0 {
		return model.Key{}, false
	}
	return rapid.SampledFrom(keys).Draw(t, "key"), true
}

var mutations = []mutation{
	{"drop a key", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		store := rapid.SampledFrom([]string{"cache", "search"}).Draw(t, "store")
		k, ok := drawLiveKey(t, o)
		if !ok {
			return nil, false
		}
		delete(finalOf(h, store).Docs, k)
		return []Class{Lost}, true
	}},
	{"lower its LSN to an older committed version", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		store := rapid.SampledFrom([]string{"cache", "search"}).Draw(t, "store")
		k, ok := drawLiveKey(t, o)
		if !ok || len(o.versions[k]) < 2 {
			return nil, false
		}
		vs := o.versions[k]
		older := vs[rapid.IntRange(0, len(vs)-2).Draw(t, "older")]
		finalOf(h, store).Docs[k] = model.ProjectEntry(kindOf(h, store), older)
		return []Class{Lost}, true
	}},
	{"bump revs", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		k, ok := drawLiveKey(t, o)
		if !ok {
			return nil, false
		}
		d := finalOf(h, "search").Docs
		doc := d[k]
		doc.Revs += rapid.IntRange(1, 3).Draw(t, "extra")
		d[k] = doc
		return []Class{Duplicate}, true
	}},
	{"lower revs", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		k, ok := drawLiveKey(t, o)
		if !ok {
			return nil, false
		}
		d := finalOf(h, "search").Docs
		doc := d[k]
		doc.Revs--
		d[k] = doc
		return []Class{Lost}, true
	}},
	{"keep a deleted key", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		store := rapid.SampledFrom([]string{"cache", "search"}).Draw(t, "store")
		deleted := model.SortedKeys(o.deleted)
		if len(deleted) == 0 {
			return nil, false
		}
		k := rapid.SampledFrom(deleted).Draw(t, "key")
		vs := o.versions[k]
		finalOf(h, store).Docs[k] = model.ProjectEntry(kindOf(h, store), vs[rapid.IntRange(0, len(vs)-1).Draw(t, "version")])
		return []Class{Lost}, true
	}},
	{"same LSN, value never committed", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		store := rapid.SampledFrom([]string{"cache", "search"}).Draw(t, "store")
		k, ok := drawLiveKey(t, o)
		if !ok {
			return nil, false
		}
		d := finalOf(h, store).Docs
		doc := d[k]
		doc.Value = "zzz"
		d[k] = doc
		return []Class{Phantom, Divergent}, true
	}},
	{"replica drops a key", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		// The replica's final position says it holds everything, so a
		// missing row also tears it.
		k, ok := drawLiveKey(t, o)
		if !ok {
			return nil, false
		}
		delete(finalOf(h, "replica").Docs, k)
		return []Class{Lost, Torn}, true
	}},
	{"replica snapshot misses half a transaction", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		// Apply only the first change of a transaction that changes two
		// rows, on top of the state before it.
		var cands []int
		for i, txn := range h.Committed {
			if before, after := o.prefixes[i], o.prefixes[i+1]; len(txn.Changes) > 1 && distinctKeys(txn) && before.Hash() != after.Hash() {
				cands = append(cands, i)
			}
		}
		if len(cands) == 0 {
			return nil, false
		}
		i := rapid.SampledFrom(cands).Draw(t, "txn")
		half := o.prefixes[i].Clone()
		half.Apply(model.Txn{CommitLSN: h.Committed[i].CommitLSN, Changes: h.Committed[i].Changes[:1]})
		for _, p := range o.prefixes {
			if p.Hash() == half.Hash() {
				return nil, false // half a transaction happens to equal a committed state
			}
		}
		h.Snapshots = append(h.Snapshots, model.Snapshot{Store: "replica", At: 5 * time.Second, Docs: half.Project(model.Replica)})
		return []Class{Torn}, true
	}},
	{"converge late", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		store := rapid.SampledFrom([]string{"replica", "search"}).Draw(t, "store")
		if rapid.Bool().Draw(t, "never") {
			// Not by the deadline: its final snapshot, which shows it
			// there, came after.
			delete(h.ConvergedAt, store)
			finalOf(h, store).At = h.Deadline + time.Second
		} else {
			h.ConvergedAt[store] = h.Deadline + time.Millisecond
		}
		return []Class{NotConverged}, true
	}},
	{"a sink stops at an earlier commit", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		// The store holds exactly the source state at its position, which
		// is behind the source: everything it misses is late, not lost.
		store := rapid.SampledFrom([]string{"replica", "search"}).Draw(t, "store")
		p := rapid.IntRange(0, len(h.Committed)-1).Draw(t, "prefix")
		f := finalOf(h, store)
		f.Docs = o.prefixes[p].Project(kindOf(h, store))
		f.Position = model.Position{Offset: int64(p), LSN: o.prefixes[p].Position()}
		delete(h.ConvergedAt, store)
		return []Class{NotConverged}, true
	}},
	{"a sink stops early and misses a change it passed", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		// As above, but the search index also lacks a key it holds at its
		// position and that no later delete explains.
		if len(h.Committed) < 2 {
			return nil, false
		}
		p := rapid.IntRange(1, len(h.Committed)-1).Draw(t, "prefix")
		var keys []model.Key
		for _, k := range o.prefixes[p].Keys() {
			kept := true
			for _, q := range o.prefixes[p:] {
				_, live := q.Get(k)
				kept = kept && live
			}
			if kept {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			return nil, false
		}
		f := finalOf(h, "search")
		f.Docs = o.prefixes[p].Project(model.Search)
		f.Position = model.Position{Offset: int64(p), LSN: o.prefixes[p].Position()}
		delete(f.Docs, rapid.SampledFrom(keys).Draw(t, "key"))
		delete(h.ConvergedAt, "search")
		return []Class{Lost, NotConverged}, true
	}},
	{"a read goes back", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		// After every other read, read an older version than one already
		// returned.
		var cands []int
		for i, r := range h.Reads {
			if r.Found && r.Doc.LSN > o.versions[r.Key][0].LSN {
				cands = append(cands, i)
			}
		}
		if len(cands) == 0 {
			return nil, false
		}
		r := h.Reads[rapid.SampledFrom(cands).Draw(t, "read")]
		var older []model.Entry
		for _, e := range o.versions[r.Key] {
			if e.LSN < r.Doc.LSN {
				older = append(older, e)
			}
		}
		e := rapid.SampledFrom(older).Draw(t, "older")
		at := lastReturn(h) + time.Millisecond
		h.Reads = append(h.Reads, model.Read{Store: r.Store, Key: r.Key, Call: at, Return: at + time.Millisecond,
			Found: true, Doc: model.ProjectEntry(kindOf(h, r.Store), e)})
		return []Class{Backwards, Nonlinearizable}, true
	}},
	{"a read of a value never committed", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		k, ok := drawLiveKey(t, o)
		if !ok {
			return nil, false
		}
		store := rapid.SampledFrom([]string{"cache", "replica", "search"}).Draw(t, "store")
		doc := finalOf(h, store).Docs[k]
		doc.Value = "zzz"
		at := lastReturn(h) + time.Millisecond
		h.Reads = append(h.Reads, model.Read{Store: store, Key: k, Call: at, Return: at, Found: true, Doc: doc})
		return []Class{Phantom, Nonlinearizable}, true
	}},
	{"log loses records", func(t *rapid.T, h *model.History, o *oracle) ([]Class, bool) {
		h.LogLosses = rapid.IntRange(1, 5).Draw(t, "losses")
		return []Class{LogDataLoss}, true
	}},
}

// distinctKeys reports whether every change of txn touches its own keys,
// so that applying a prefix of its changes leaves committed versions only.
func distinctKeys(txn model.Txn) bool {
	seen := map[model.Key]bool{}
	for _, c := range txn.Changes {
		ks := []model.Key{c.Key()}
		if c.OldPK != "" {
			ks = append(ks, model.Key{Table: c.Table, PK: c.OldPK})
		}
		for _, k := range ks {
			if seen[k] {
				return false
			}
			seen[k] = true
		}
	}
	return true
}

func lastReturn(h *model.History) time.Duration {
	var last time.Duration
	for _, r := range h.Reads {
		last = max(last, r.Return)
	}
	return last
}

// Breaking a correct history in one way always yields exactly the expected
// classes, each a violation (every store claims everything).
func TestPropertyOneMutationOneClass(t *testing.T) {
	for _, m := range mutations {
		t.Run(strings.ReplaceAll(m.name, " ", "_"), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				h, o := correctHistory(t)
				h = cloneHistory(h)
				want, ok := m.apply(t, h, o)
				if !ok {
					t.Skip("mutation does not apply to this history")
				}
				rep := Check(h, Options{LinearizabilityTimeout: -1})
				got := map[Class]bool{}
				for _, a := range rep.Anomalies {
					got[a.Class] = true
					if !a.Violation || a.Property != a.Class.Property() {
						t.Fatalf("%s: not a violation of %s: %+v", a, a.Class.Property(), a)
					}
				}
				if fmt.Sprint(sortedClasses(got)) != fmt.Sprint(sortClasses(want)) {
					t.Fatalf("%s: got classes %v, want %v\n%s", m.name, sortedClasses(got), sortClasses(want), rep)
				}
				if rep.Verdict != Fail || rep.OK() {
					t.Fatalf("verdict %s", rep.Verdict)
				}
			})
		})
	}
}

func sortedClasses(m map[Class]bool) []Class {
	var cs []Class
	for c := range m {
		cs = append(cs, c)
	}
	return sortClasses(cs)
}

func sortClasses(cs []Class) []Class {
	cs = append([]Class(nil), cs...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].rank() < cs[j].rank() })
	return cs
}

// For arbitrary reads (not necessarily monotone, some of values never
// committed), porcupine says Illegal for a store exactly when the
// backwards scan found a pair or some read was not a committed version:
// the two checks cross-check each other.
func TestPropertyPorcupineAgreesWithScan(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h, o := correctHistory(t)
		h = cloneHistory(h)
		h.Reads = nil
		keys := model.SortedKeys(o.versions)
		if len(keys) == 0 {
			t.Skip("no key ever had a version")
		}
		for i, n := 0, rapid.IntRange(0, 40).Draw(t, "reads"); i < n; i++ {
			s := rapid.SampledFrom(h.Stores).Draw(t, "store")
			k := rapid.SampledFrom(keys).Draw(t, "key")
			e := rapid.SampledFrom(o.versions[k]).Draw(t, "version")
			call := time.Duration(rapid.IntRange(0, 100).Draw(t, "call")) * time.Millisecond
			r := model.Read{Store: s.Name, Key: k, Call: call, Found: true, Doc: model.ProjectEntry(s.Kind, e),
				Return: call + time.Duration(rapid.IntRange(0, 30).Draw(t, "latency"))*time.Millisecond}
			if rapid.IntRange(0, 15).Draw(t, "bogus") == 0 {
				r.Doc.Value += "!"
			}
			h.Reads = append(h.Reads, r)
		}
		rep := Check(h, Options{LinearizabilityTimeout: -1})
		for _, l := range rep.Linearizability {
			scan := false
			for _, a := range rep.Anomalies {
				scan = scan || (a.Store == l.Store && a.Class == Backwards)
			}
			for _, r := range h.Reads {
				scan = scan || (r.Store == l.Store && !o.isVersion(kindOf(h, r.Store), r.Key, r.Doc))
			}
			if (l.Result == porcupine.Illegal) != scan {
				t.Fatalf("%s: porcupine %s, scan found a problem: %v\n%s", l.Store, l.Result, scan, rep)
			}
			nonlin := 0
			for _, a := range rep.Anomalies {
				if a.Store == l.Store && a.Class == Nonlinearizable {
					nonlin++
				}
			}
			if nonlin != map[bool]int{true: 1, false: 0}[scan] {
				t.Fatalf("%s: %d nonlinearizable anomalies, want one iff illegal", l.Store, nonlin)
			}
		}
	})
}

// The checker's truth index agrees with model's: the projection of the
// final state for every kind, every prefix hash, every committed version.
func TestPropertyTruthIndexMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		committed := genCommitted(t)
		h := &model.History{Committed: committed}
		o := newOracle(committed)
		tr := newTruth(h)
		for _, kind := range []model.StoreKind{model.Replica, model.Cache, model.Search} {
			want := h.Truth().Project(kind)
			got := model.Docs{}
			for k := range tr.keys {
				if d, ok := tr.current(kind, k); ok {
					got[k] = d
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s: truth index %v, model %v", kind, got, want)
			}
			for k, vs := range o.versions {
				for _, e := range vs {
					if !tr.isVersion(kind, k, model.ProjectEntry(kind, e)) {
						t.Fatalf("%s %s lsn=%s: committed version not indexed", kind, k, e.LSN)
					}
				}
			}
		}
		for i, p := range o.prefixes {
			if tr.hashes[i] != p.Hash() {
				t.Fatalf("prefix %d: hash %x, model %x", i, tr.hashes[i], p.Hash())
			}
			if got := tr.prefixAt(p.Position()); i > 0 && got != i {
				t.Fatalf("prefixAt(%s) = %d, want %d", p.Position(), got, i)
			}
		}
	})
}
