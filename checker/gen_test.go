package checker

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"pgregory.net/rapid"

	"lockstep/model"
)

// This file generates correct histories for the property tests and the
// benchmark: random committed transactions, and stores that show exactly
// the truth's projection, with monotone reads of committed versions.

// oracle is the tests' own view of the truth, built with model.State only
// (not with the checker's index), so the properties do not check the
// checker against itself.
type oracle struct {
	versions map[model.Key][]model.Entry // committed versions per key, in commit order
	deleted  map[model.Key]bool          // had versions, absent at the end
	prefixes []*model.State              // prefixes[i]: state after Committed[:i]
	final    *model.State
}

func newOracle(committed []model.Txn) *oracle {
	o := &oracle{versions: map[model.Key][]model.Entry{}, deleted: map[model.Key]bool{}}
	s := model.NewState()
	o.prefixes = append(o.prefixes, s.Clone())
	for _, txn := range committed {
		s.Apply(txn)
		for _, c := range txn.Changes {
			k := c.Key()
			if e, ok := s.Get(k); ok {
				vs := o.versions[k]
				if len(vs) == 0 || vs[len(vs)-1].LSN != e.LSN {
					o.versions[k] = append(vs, e)
				}
			}
		}
		o.prefixes = append(o.prefixes, s.Clone())
	}
	o.final = s
	for k := range o.versions {
		if _, live := s.Get(k); !live {
			o.deleted[k] = true
		}
	}
	return o
}

// isVersion is the oracle's answer to "is d a committed version of k".
func (o *oracle) isVersion(kind model.StoreKind, k model.Key, d model.Doc) bool {
	for _, e := range o.versions[k] {
		if p := model.ProjectEntry(kind, e); p.LSN == d.LSN && p.Value == d.Value {
			return true
		}
	}
	return false
}

var (
	genTables = []string{"a", "b"}
	genPKs    = []string{"1", "2", "3", "4"}
)

// genCommitted draws a committed history: upserts, deletes and primary key
// changes over a few keys, values from a small alphabet so that versions
// and whole states repeat.
func genCommitted(t *rapid.T) []model.Txn {
	n := rapid.IntRange(1, 20).Draw(t, "txns")
	var txns []model.Txn
	lsn := model.LSN(0)
	for i := 0; i < n; i++ {
		lsn += model.LSN(rapid.IntRange(1, 0x40).Draw(t, "gap"))
		txn := model.Txn{XID: uint64(100 + i), CommitLSN: lsn, Snapshot: i == 0 && rapid.Bool().Draw(t, "snapshot")}
		for j, m := 0, rapid.IntRange(1, 3).Draw(t, "changes"); j < m; j++ {
			c := model.Change{
				Table: rapid.SampledFrom(genTables).Draw(t, "table"),
				PK:    rapid.SampledFrom(genPKs).Draw(t, "pk"),
			}
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0, 1, 2:
				c.Op = model.OpInsert
			case 3, 4, 5, 6:
				c.Op = model.OpUpdate
			case 7, 8:
				c.Op = model.OpDelete
			case 9:
				c.Op = model.OpUpdate
				c.OldPK = rapid.SampledFrom(genPKs).Draw(t, "oldpk")
			}
			if c.Op != model.OpDelete {
				c.Row = model.R("v", rapid.StringMatching(`[ab]{1,2}( [ab])?`).Draw(t, "v"))
			}
			txn.Changes = append(txn.Changes, c)
		}
		txns = append(txns, txn)
	}
	return txns
}

// correctHistory builds a history in which three stores (one of each kind,
// each claiming everything) behave exactly right: final = truth projection,
// replica snapshots at prefixes with their positions, reads of committed
// versions that never go back, convergence on time.
func correctHistory(t *rapid.T) (*model.History, *oracle) {
	committed := genCommitted(t)
	o := newOracle(committed)
	all := model.Claims{}
	for _, p := range model.AllProperties {
		all[p] = true
	}
	h := &model.History{
		Scenario:  "rapid",
		System:    "pipeline",
		Committed: committed,
		Aborted: []model.Txn{{XID: 1, CommitLSN: committed[0].CommitLSN + 1, Changes: []model.Change{
			{Table: "a", PK: "1", Op: model.OpUpdate, Row: model.R("v", "aborted")},
		}}},
		Stores: []model.StoreSpec{
			{Name: "cache", Kind: model.Cache, Claims: all},
			{Name: "replica", Kind: model.Replica, Claims: all},
			{Name: "search", Kind: model.Search, Claims: all},
		},
		QuietAt:     10 * time.Second,
		Deadline:    20 * time.Second,
		ConvergedAt: map[string]time.Duration{},
		Faults:      []model.FaultWindow{{Start: time.Second, End: 3 * time.Second, What: "crash sink"}},
	}
	finalPos := model.Position{Offset: int64(len(committed)), LSN: o.final.Position()}
	for _, s := range h.Stores {
		snap := model.Snapshot{Store: s.Name, At: 15 * time.Second, Docs: o.final.Project(s.Kind)}
		if s.Kind != model.Cache {
			snap.HasPosition, snap.Position = true, finalPos
			h.ConvergedAt[s.Name] = time.Duration(rapid.Int64Range(int64(10*time.Second), int64(20*time.Second)).Draw(t, "converged"))
		}
		h.Final = append(h.Final, snap)
	}
	for i, m := 0, rapid.IntRange(0, 3).Draw(t, "snapshots"); i < m; i++ {
		p := rapid.IntRange(0, len(committed)).Draw(t, "prefix")
		snap := model.Snapshot{Store: "replica", At: time.Duration(i) * time.Second, Docs: o.prefixes[p].Project(model.Replica)}
		if rapid.Bool().Draw(t, "positioned") {
			snap.HasPosition, snap.Position = true, model.Position{Offset: int64(p), LSN: o.prefixes[p].Position()}
		}
		h.Snapshots = append(h.Snapshots, snap)
	}
	keys := model.SortedKeys(o.versions)
	for _, s := range h.Stores {
		for _, k := range keys {
			vs := o.versions[k]
			at := time.Duration(0)
			idx := 0
			for r, m := 0, rapid.IntRange(0, 4).Draw(t, "reads"); r < m; r++ {
				idx = rapid.IntRange(idx, len(vs)-1).Draw(t, "version")
				at += time.Duration(rapid.IntRange(1, 20).Draw(t, "gap")) * time.Millisecond
				read := model.Read{Store: s.Name, Key: k, Call: at, Client: r % 3}
				read.Return = at + time.Duration(rapid.IntRange(0, 30).Draw(t, "latency"))*time.Millisecond
				if rapid.IntRange(0, 5).Draw(t, "miss") > 0 {
					read.Found, read.Doc = true, model.ProjectEntry(s.Kind, vs[idx])
				}
				h.Reads = append(h.Reads, read)
			}
		}
	}
	sort.SliceStable(h.Reads, func(i, j int) bool { return h.Reads[i].Return < h.Reads[j].Return })
	return h, o
}

// cloneHistory copies everything a mutation may touch.
func cloneHistory(h *model.History) *model.History {
	c := *h
	c.Stores = append([]model.StoreSpec(nil), h.Stores...)
	c.Reads = append([]model.Read(nil), h.Reads...)
	c.Snapshots = append([]model.Snapshot(nil), h.Snapshots...)
	c.Final = make([]model.Snapshot, len(h.Final))
	for i, f := range h.Final {
		f.Docs = cloneDocs(f.Docs)
		c.Final[i] = f
	}
	c.ConvergedAt = map[string]time.Duration{}
	for k, v := range h.ConvergedAt {
		c.ConvergedAt[k] = v
	}
	return &c
}

func cloneDocs(d model.Docs) model.Docs {
	c := make(model.Docs, len(d))
	for k, v := range d {
		c[k] = v
	}
	return c
}

// benchHistory is the size the brief asks Check to handle well under 50ms:
// ~1,000 committed transactions, 10 stores, 200 keys, a few thousand reads,
// and replica snapshots during the run.
func benchHistory(seed uint64) *model.History {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	const (
		txns  = 1000
		keys  = 200
		reads = 3000
	)
	key := func(i int) model.Key { return model.Key{Table: "accounts", PK: fmt.Sprint(i)} }
	var committed []model.Txn
	lsn := model.LSN(0x1000)
	for i := 0; i < txns; i++ {
		lsn += model.LSN(1 + rng.IntN(0x80))
		txn := model.Txn{XID: uint64(i + 1), CommitLSN: lsn}
		for j, n := 0, 1+rng.IntN(3); j < n; j++ {
			k := key(rng.IntN(keys))
			c := model.Change{Table: k.Table, PK: k.PK, Op: model.OpUpdate,
				Row: model.R("bal", fmt.Sprint(rng.IntN(1000)), "owner", fmt.Sprintf("owner %d", rng.IntN(50)))}
			if rng.IntN(20) == 0 {
				c.Op, c.Row = model.OpDelete, nil
			}
			txn.Changes = append(txn.Changes, c)
		}
		committed = append(committed, txn)
	}
	o := newOracle(committed)
	all := model.Claims{}
	for _, p := range model.AllProperties {
		all[p] = true
	}
	h := &model.History{Scenario: "bench", System: "pipeline", Seed: seed, Committed: committed,
		QuietAt: 100 * time.Second, Deadline: 120 * time.Second, ConvergedAt: map[string]time.Duration{}}
	kinds := []model.StoreKind{model.Replica, model.Replica, model.Replica, model.Replica,
		model.Cache, model.Cache, model.Cache, model.Search, model.Search, model.Search}
	finalPos := model.Position{Offset: txns, LSN: o.final.Position()}
	for i, kind := range kinds {
		name := fmt.Sprintf("%s-%d", kind, i)
		h.Stores = append(h.Stores, model.StoreSpec{Name: name, Kind: kind, Claims: all})
		f := model.Snapshot{Store: name, At: 110 * time.Second, Docs: o.final.Project(kind), HasPosition: true, Position: finalPos}
		h.Final = append(h.Final, f)
		h.ConvergedAt[name] = 105 * time.Second
	}
	for i := 0; i < 10; i++ {
		p := (i + 1) * txns / 11
		h.Snapshots = append(h.Snapshots, model.Snapshot{Store: h.Stores[i%4].Name, At: time.Duration(p) * 100 * time.Millisecond,
			HasPosition: true, Position: model.Position{Offset: int64(p), LSN: o.prefixes[p].Position()},
			Docs: o.prefixes[p].Project(model.Replica)})
	}
	// Reads: each store's key versions in order, at increasing times
	// with overlapping intervals.
	keysWithVersions := model.SortedKeys(o.versions)
	next := map[[2]int]int{}
	for i := 0; i < reads; i++ {
		s := rng.IntN(len(kinds))
		ki := rng.IntN(len(keysWithVersions))
		k := keysWithVersions[ki]
		vs := o.versions[k]
		v := next[[2]int{s, ki}]
		v = min(len(vs)-1, v+rng.IntN(2))
		next[[2]int{s, ki}] = v
		call := time.Duration(i) * 30 * time.Millisecond
		h.Reads = append(h.Reads, model.Read{Store: h.Stores[s].Name, Key: k, Call: call,
			Return: call + time.Duration(1+rng.IntN(60))*time.Millisecond, Found: true,
			Doc: model.ProjectEntry(kinds[s], vs[v]), Client: i % 8})
	}
	return h
}
