// Package store holds what lockstep's real store adapters (pgstore for the
// replica and the search index, redisstore for the cache) share: the pure
// rules for applying a transaction's changes to a store's documents, exactly
// as the simulated stores in sim/services apply them.
//
// The rules, per change at commit LSN lsn:
//
//   - guarded (the pipeline's applier): skip the change when the store holds
//     this key at lsn or newer, as a live document or, in the search index, a
//     tombstone; unguarded (naive dual writes, the Blind bug variant): apply
//     it whatever the store holds;
//   - columns an update did not send (Change.Unchanged: unchanged TOAST)
//     keep the values the store holds for the row, the old key's on a key
//     change (model.MergeUnchanged);
//   - an update that moved the row's primary key first deletes the old key;
//   - a delete removes the document; the search index keeps a tombstone with
//     the delete's LSN so a redelivered older write cannot resurrect it;
//   - a write stores model.ProjectChange of the change on top of the live
//     document it replaces, so values and revision counts are the ones the
//     checker computes.
//
// Overlay runs these rules over the slots an adapter loaded for the keys a
// batch touches and reports the slots that changed, for the adapter to write.
// The pure part is tested here; the adapters only move slots in and out.
package store

import (
	"fmt"
	"slices"

	"lockstep/model"
)

// Slot is what a store holds under one key: a live document, a tombstone
// (search index only; Doc.LSN is the delete's LSN) or nothing.
type Slot struct {
	Doc  model.Doc
	Live bool
	Tomb bool
	// Source is the row a search document was built from, encoded (a
	// search engine's stored source): a partial update merges unchanged
	// columns into it. Empty for the replica and the cache, whose
	// documents are their rows.
	Source string
}

// Row is the row the slot holds, for merging unchanged columns.
func (s Slot) Row(kind model.StoreKind) model.Row {
	if !s.Live {
		return nil
	}
	if kind == model.Search {
		return model.DecodeRow(s.Source)
	}
	return model.DecodeRow(s.Doc.Value)
}

// Keeps reports whether a tombstone is kept for deleted documents in a store
// of this kind: only the search index keeps them.
func Keeps(kind model.StoreKind) bool { return kind == model.Search }

// Keys returns every key the transactions' changes write or delete or read
// unchanged columns from (the old key of a primary-key change, From),
// sorted and without repeats.
func Keys(txns []model.Txn) []model.Key {
	seen := map[model.Key]struct{}{}
	for _, t := range txns {
		for _, c := range t.Changes {
			if c.OldPK != "" && c.OldPK != c.PK {
				seen[model.Key{Table: c.Table, PK: c.OldPK}] = struct{}{}
			}
			if c.From != "" {
				seen[model.Key{Table: c.Table, PK: c.From}] = struct{}{}
			}
			seen[c.Key()] = struct{}{}
		}
	}
	return model.SortedKeys(seen)
}

// Overlay applies changes on top of the slots loaded from a store. Slots of
// keys that were not loaded count as empty. Not safe for concurrent use.
type Overlay struct {
	kind    model.StoreKind
	guarded bool
	base    map[model.Key]Slot
	cur     map[model.Key]Slot
}

// NewOverlay starts an overlay for a store of the given kind over the loaded
// slots (which it does not modify). guarded turns on the version guard.
func NewOverlay(kind model.StoreKind, guarded bool, loaded map[model.Key]Slot) *Overlay {
	return &Overlay{kind: kind, guarded: guarded, base: loaded, cur: map[model.Key]Slot{}}
}

// Get returns the key's current slot.
func (o *Overlay) Get(k model.Key) Slot {
	if s, ok := o.cur[k]; ok {
		return s
	}
	return o.base[k]
}

// ApplyTxn applies every change of t at its commit LSN, in order.
func (o *Overlay) ApplyTxn(t model.Txn) {
	t = model.ResolveFrom(t, func(k model.Key) model.Row { return o.Get(k).Row(o.kind) })
	for _, c := range t.Changes {
		o.Apply(c, t.CommitLSN)
	}
}

// Apply applies one change at lsn, as the simulated store's write does.
func (o *Overlay) Apply(c model.Change, lsn model.LSN) {
	if len(c.Unchanged) > 0 {
		c = model.MergeUnchanged(c, o.Get(c.UnchangedFrom()).Row(o.kind))
	}
	if c.OldPK != "" && c.OldPK != c.PK {
		o.Apply(model.Change{Table: c.Table, PK: c.OldPK, Op: model.OpDelete}, lsn)
	}
	k := c.Key()
	prev := o.Get(k)
	if o.guarded && (prev.Live || prev.Tomb) && prev.Doc.LSN >= lsn {
		return
	}
	if c.Op == model.OpDelete {
		if Keeps(o.kind) {
			o.cur[k] = Slot{Doc: model.Doc{LSN: lsn}, Tomb: true}
		} else {
			o.cur[k] = Slot{}
		}
		return
	}
	slot := Slot{Doc: model.ProjectChange(o.kind, c, lsn, prev.Doc, prev.Live), Live: true}
	if o.kind == model.Search {
		slot.Source = c.Row.Encode()
	}
	o.cur[k] = slot
}

// Write is a slot to store under a key.
type Write struct {
	Key  model.Key
	Slot Slot
}

// Changed returns, in key order, the slots that differ from the loaded ones.
func (o *Overlay) Changed() []Write {
	out := make([]Write, 0, len(o.cur))
	for _, k := range model.SortedKeys(o.cur) {
		if s := o.cur[k]; s != o.base[k] {
			out = append(out, Write{Key: k, Slot: s})
		}
	}
	return out
}

// Docs returns the live documents of the loaded slots with the overlay's
// changes on top.
func (o *Overlay) Docs() model.Docs {
	docs := model.Docs{}
	for k, s := range o.base {
		if _, over := o.cur[k]; !over && s.Live {
			docs[k] = s.Doc
		}
	}
	for k, s := range o.cur {
		if s.Live {
			docs[k] = s.Doc
		}
	}
	return docs
}

// Chunks splits the changes of txns into requests of at most n changes each,
// keeping their order and each change's commit LSN: the bulk requests of a
// search index.
func Chunks(txns []model.Txn, n int) [][]Change {
	var out [][]Change
	var cur []Change
	for _, t := range txns {
		for _, c := range t.Changes {
			cur = append(cur, Change{Change: c, LSN: t.CommitLSN})
			if len(cur) == n {
				out = append(out, cur)
				cur = nil
			}
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// Change is one change with the commit LSN of its transaction.
type Change struct {
	model.Change
	LSN model.LSN
}

// Revs describes how a store of this kind counts revisions when c replaces
// a live document, derived from model.ProjectChange so that no adapter keeps
// its own copy of the rule: either the new count is absolute (fresh.Revs,
// whatever the store held), or it is the stored count plus step.
func Revs(kind model.StoreKind, c model.Change, lsn model.LSN) (fresh model.Doc, relative bool, step int) {
	fresh = model.ProjectChange(kind, c, lsn, model.Doc{}, false)
	on := func(prev int) int { return model.ProjectChange(kind, c, lsn, model.Doc{Revs: prev}, true).Revs }
	a, b := on(0), on(1)
	if a == b {
		return fresh, false, 0
	}
	return fresh, true, a
}

// hasUnchanged tells whether any change of txns has unchanged columns: most
// batches have none, and then nothing needs indexing.
func hasUnchanged(txns []model.Txn) bool {
	for _, t := range txns {
		for _, c := range t.Changes {
			if len(c.Unchanged) > 0 {
				return true
			}
		}
	}
	return false
}

// ResolveUnchanged fills the unchanged columns (model.Change.Unchanged) of
// the transactions' changes, transaction by transaction, as a store that
// applied them in order would: a change with From from that key's row as it
// stood before its transaction, any other from its own key's row (the old
// key's for a raw key change) as it stands when the change is applied.
// Rows the batch itself wrote earlier come from the batch; the rest from
// the store, which load returns for the keys asked (a key the store does
// not hold is left out). It is for adapters that apply changes with
// statements rather than through an Overlay (pgstore, the simulated search
// index). Transactions with no unchanged columns are returned as they are.
func ResolveUnchanged(txns []model.Txn, load func(keys []model.Key) (map[model.Key]model.Row, error)) ([]model.Txn, error) {
	if !hasUnchanged(txns) {
		return txns, nil
	}
	// Which rows must come from the store: those no earlier change in the
	// batch wrote or deleted (for From: no earlier transaction).
	written := map[model.Key]bool{}
	asked := map[model.Key]bool{}
	var need []model.Key
	ask := func(k model.Key) {
		if !written[k] && !asked[k] {
			asked[k] = true
			need = append(need, k)
		}
	}
	any := false
	// own: the stored rows of the keys that changes with From move rows
	// to. A store holds such a key only when this batch is applied again
	// after a partial application (a search index's bulk requests, an
	// outcome unknown; a delete of that key before the change would be in
	// this batch, and it is then not asked for): the earlier try moved the
	// row, so the old key's stored row is gone or is a later one, and the
	// new key's row, resolved then, is the one later changes of the batch
	// build on.
	var ownKeys []model.Key
	for _, t := range txns {
		for _, c := range t.Changes {
			if len(c.Unchanged) > 0 && c.From != "" {
				any = true
				ask(c.UnchangedFrom())
				if !written[c.Key()] {
					ownKeys = append(ownKeys, c.Key())
				}
			}
		}
		for _, c := range t.Changes {
			if len(c.Unchanged) > 0 && c.From == "" {
				any = true
				ask(c.UnchangedFrom())
			}
			if c.OldPK != "" {
				written[model.Key{Table: c.Table, PK: c.OldPK}] = true
			}
			written[c.Key()] = true
		}
	}
	if !any {
		return txns, nil
	}
	rows := map[model.Key]model.Row{}
	own := map[model.Key]model.Row{}
	if len(need) > 0 || len(ownKeys) > 0 {
		keys := slices.Clone(need)
		for _, k := range ownKeys {
			if !asked[k] {
				asked[k] = true
				keys = append(keys, k)
			}
		}
		loaded, err := load(keys)
		if err != nil {
			return nil, fmt.Errorf("read the stored rows of %d keys for their unchanged columns: %w", len(keys), err)
		}
		for _, k := range need {
			if r, ok := loaded[k]; ok {
				rows[k] = r
			}
		}
		for _, k := range ownKeys {
			if r, ok := loaded[k]; ok {
				own[k] = r
			}
		}
	}
	out := make([]model.Txn, len(txns))
	for i, t := range txns {
		from := t // the rows as they stood before t, for its From changes
		t = model.ResolveFromChange(from, func(c model.Change) model.Row {
			if r, ok := own[c.Key()]; ok {
				return r // applied before: the new key's row, resolved then
			}
			return rows[model.Key{Table: c.Table, PK: c.From}]
		})
		out[i] = t
		out[i].Changes = make([]model.Change, len(t.Changes))
		for j, c := range t.Changes {
			if len(c.Unchanged) > 0 {
				c = model.MergeUnchanged(c, rows[c.UnchangedFrom()])
			}
			if c.OldPK != "" && c.OldPK != c.PK {
				delete(rows, model.Key{Table: c.Table, PK: c.OldPK})
			}
			if c.Op == model.OpDelete {
				delete(rows, c.Key())
			} else {
				rows[c.Key()] = c.Row
			}
			out[i].Changes[j] = c
		}
	}
	return out, nil
}
