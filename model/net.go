package model

import "slices"

// Net is a transaction's effect per row: at most one change per key, for
// every key the transaction touched, in the order it first touched them. A
// store that versions its documents by commit LSN can take each change of a
// net transaction on its own (guarded by that LSN, in any number of
// requests) and still end at the transaction's final state, because no key
// is written twice at one LSN. The raw changes cannot be taken that way:
// every change of a transaction shares its commit LSN, so a guard that
// skips "this LSN or older" keeps the first of two updates to a row and
// drops the second.
//
// The rules, per key, over the changes in order:
//   - an insert, or any write after a delete in the transaction, makes the
//     net change an insert (the row was (re)created: its revision count
//     starts again); a write over a row already written in the transaction
//     keeps that row's op; the last row image wins;
//   - a delete makes the net change a delete;
//   - a primary-key change (OldPK) deletes the old key and creates the new
//     one: the old key's net change is a delete (unless the transaction
//     writes it again), the new key's an insert, and no net change has an
//     OldPK;
//   - unchanged (TOAST) columns are filled from the row the transaction
//     itself wrote earlier, when it did; the ones it cannot fill stay in
//     Unchanged, with From naming the key whose row as stored before the
//     transaction holds them when that is not the change's own key (the
//     row was moved). ResolveFrom fills those before a store applies the
//     transaction, so the order of the net changes never matters.
//
// A transaction that touches every key once and changes no key is returned
// as it is. Snapshots are returned as they are.
func Net(t Txn) Txn {
	if t.Snapshot || !needsNet(t.Changes) {
		return t
	}
	// Rows are at most one per change plus one per key change: allocate
	// them once, so that pointers into the slice stay valid.
	n := netter{rows: make([]netRow, 0, 2*len(t.Changes))}
	if len(t.Changes) > smallTxn {
		n.at = make(map[Key]int, len(t.Changes))
	}
	for _, c := range t.Changes {
		n.apply(c)
	}
	out := t
	out.Changes = n.changes()
	return out
}

// needsNet reports whether some key is written twice or a key changes. It
// runs on every transaction (the source, every applier and the ground truth
// net each one), so it is linear: small transactions probe a table on the
// stack by a hash of the primary key, larger ones a map.
func needsNet(cs []Change) bool {
	if len(cs) > smallTxn {
		seen := make(map[Key]struct{}, len(cs))
		for _, c := range cs {
			if c.OldPK != "" && c.OldPK != c.PK {
				return true
			}
			if _, dup := seen[c.Key()]; dup {
				return true
			}
			seen[c.Key()] = struct{}{}
		}
		return false
	}
	// slots hold a change's index plus one (0: empty), by hash; at most
	// half full, so probes stay short. A hash collision only costs a
	// comparison of the keys: the answer never depends on the seed.
	var slots [2 * smallTxn]uint8
	const mask = uint64(len(slots) - 1)
	for i, c := range cs {
		if c.OldPK != "" && c.OldPK != c.PK {
			return true
		}
		for j := fnv1a(c.PK) & mask; ; j = (j + 1) & mask {
			s := slots[j]
			if s == 0 {
				slots[j] = uint8(i + 1)
				break
			}
			if d := &cs[s-1]; d.PK == c.PK && d.Table == c.Table {
				return true
			}
		}
	}
	return false
}

// The table's slots hold change indexes plus one in a uint8.
const _ uint8 = smallTxn + 1

// fnv1a is the 64-bit FNV-1a hash of s: a fixed hash, so the probe
// sequence is the same in every process (the answer never depends on it).
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// smallTxn is the most changes for which a linear scan beats a map (the
// bulk workloads' transactions are 20 to 60 changes).
const smallTxn = 64

// netRow is what the transaction has done to one key so far.
type netRow struct {
	key     Key
	written bool // the transaction wrote a row here (row holds it)
	deleted bool
	fresh   bool // (re)created in this transaction
	row     Row
	// unchanged are columns still to come from the stored row of key from
	// (the key itself when from is "").
	unchanged []string
	from      string
}

type netter struct {
	rows []netRow
	at   map[Key]int // for transactions of more than smallTxn changes
}

func (n *netter) get(k Key) *netRow {
	if n.at == nil {
		for i := range n.rows {
			if n.rows[i].key == k {
				return &n.rows[i]
			}
		}
	} else if i, ok := n.at[k]; ok {
		return &n.rows[i]
	}
	if n.at != nil {
		n.at[k] = len(n.rows)
	}
	n.rows = append(n.rows, netRow{key: k})
	return &n.rows[len(n.rows)-1]
}

func (n *netter) apply(c Change) {
	k := c.Key()
	switch {
	case c.OldPK != "" && c.OldPK != c.PK:
		old := n.get(Key{Table: c.Table, PK: c.OldPK})
		row, unchanged, from := fill(c, old)
		*old = netRow{key: old.key, deleted: true}
		r := n.get(k)
		*r = netRow{key: k, written: true, fresh: true, row: row, unchanged: unchanged, from: from}
	case c.Op == OpDelete:
		r := n.get(k)
		*r = netRow{key: k, deleted: true}
	default:
		r := n.get(k)
		row, unchanged, from := fill(c, r)
		fresh := c.Op == OpInsert || r.deleted || r.fresh
		*r = netRow{key: k, written: true, fresh: fresh, row: row, unchanged: unchanged, from: from}
	}
}

// fill is c's row with its unchanged columns taken from what the
// transaction already wrote to prev's key, and the columns still unknown
// with the key whose row as stored before the transaction holds them.
func fill(c Change, prev *netRow) (Row, []string, string) {
	if len(c.Unchanged) == 0 {
		return c.Row, nil, ""
	}
	if !prev.written {
		// The transaction did not write this row: its stored row has them.
		return c.Row, c.Unchanged, prev.key.PK
	}
	row := append(make(Row, 0, len(c.Row)+len(c.Unchanged)), c.Row...)
	var still []string
	for _, col := range c.Unchanged {
		if v, ok := prev.row.Lookup(col); ok {
			row.Set(col, v)
		} else {
			still = append(still, col)
		}
	}
	if still == nil {
		return row, nil, ""
	}
	return row, still, prev.from
}

func (n *netter) changes() []Change {
	out := make([]Change, 0, len(n.rows))
	for i := range n.rows {
		r := &n.rows[i]
		if r.deleted {
			out = append(out, Change{Table: r.key.Table, PK: r.key.PK, Op: OpDelete})
			continue
		}
		op := OpUpdate
		if r.fresh {
			op = OpInsert
		}
		c := Change{Table: r.key.Table, PK: r.key.PK, Op: op, Row: r.row}
		if len(r.unchanged) > 0 {
			c.Unchanged = slices.Clone(r.unchanged)
			if r.from != r.key.PK {
				c.From = r.from
			}
		}
		out = append(out, c)
	}
	return out
}

// ResolveFrom fills, before a store applies t, the unchanged columns of
// t's changes that come from another key's row (From) with that row as the
// store holds it before the transaction (stored; nil when it holds none).
// Changes without From are returned as they are: their unchanged columns
// come from their own key, which a net transaction writes once, so the
// store fills them when it applies the change (MergeUnchanged).
func ResolveFrom(t Txn, stored func(Key) Row) Txn {
	return ResolveFromChange(t, func(c Change) Row { return stored(Key{Table: c.Table, PK: c.From}) })
}

// ResolveFromChange is ResolveFrom with the row chosen per change, for a
// store that may fall back on another row when the From row is gone
// (store.ResolveUnchanged).
func ResolveFromChange(t Txn, stored func(Change) Row) Txn {
	var out []Change
	for i, c := range t.Changes {
		if c.From == "" {
			continue
		}
		if out == nil {
			out = slices.Clone(t.Changes)
		}
		c = MergeUnchanged(c, stored(c))
		out[i] = c
	}
	if out == nil {
		return t
	}
	t.Changes = out
	return t
}

// MergeUnchanged returns c with its unchanged columns filled from src, the
// row the store holds for them: the rule every store and the ground truth
// share. Columns src lacks stay absent. Unchanged and From are cleared.
func MergeUnchanged(c Change, src Row) Change {
	if len(c.Unchanged) == 0 {
		return c
	}
	row := append(make(Row, 0, len(c.Row)+len(c.Unchanged)), c.Row...)
	for _, col := range c.Unchanged {
		if v, ok := src.Lookup(col); ok {
			row.Set(col, v)
		}
	}
	c.Row, c.Unchanged, c.From = row, nil, ""
	return c
}
