package services

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/sim"
)

// Recorder is the harness's view of the source that survives crashes: what
// was rolled back (values that must never be seen downstream).
type Recorder struct {
	Aborted []model.Txn
}

// SourceDB is a simulated PostgreSQL: tables with primary keys, transactions
// that commit atomically in one total order with increasing LSNs, a durable
// WAL synced at every commit, and one logical replication slot whose
// confirmed position is saved only at checkpoints, so after a crash it moves
// back a little, as PostgreSQL's does.
//
// Tables have a primary key unless declared keyless (CreateTable), as
// pgsource names them: under REPLICA IDENTITY FULL every row is named by
// all its columns (pipeline.KeylessTable.Key, in the declared order) in the
// tables, the snapshot and the stream; two identical rows are one key and
// are counted, so that deleting them gives one delete per row, as
// PostgreSQL's stream does. A keyless table with the default identity has
// no name for its rows: a snapshot refuses it, and the stream fails on the
// first transaction that wrote to it, with a *pipeline.NoKeyError, every
// time it gets there (the change is in the WAL: nothing added later helps).
//
// A keyed table may be defined (Define) with its columns and unique
// constraints; a snapshot carries the definitions of every defined table
// (model.Txn.Schema), and a write that would give two rows equal values
// under a unique constraint fails its transaction at that statement, as
// PostgreSQL's non-deferrable constraints do. A table never defined is
// keyed by pk and has no constraint besides it.
type SourceDB struct {
	n      *sim.Node
	rec    *Recorder
	state  *model.State
	wal    []model.Txn
	lsn    model.LSN
	xid    uint64
	slot   slot
	tables map[string]pipeline.KeylessTable // the keyless ones, by name
	// copies counts the rows of a keyless key beyond the first (identical
	// rows); absent is one row, or none when the state has no such key.
	copies map[model.Key]int
	// refusing is set once some keyless table has no FULL identity.
	refusing bool
	// defs are the keyed tables' definitions (Define), by name.
	defs map[string]model.Table
	// uniq holds, per unique constraint and value, the key of the one
	// committed row that holds it.
	uniq map[uniqSlot]string
	// streams are walsenders waiting for the next commit.
	streams []*streamWaiter
	// holder is the streaming session that holds the slot (volatile: a
	// restart ends every session); see start.
	holder holder
	// part is the prepared transactions under two-phase commit
	// (twopc.go), loaded from the disk on first use.
	part *participant
	// exports are the snapshots processes may still read (volatile), and
	// how many were taken since boot, for the next one's id; see export.
	exports   []exported
	exportGen int
}

// holder is the process streaming from the slot, as pg_replication_slots'
// active_pid names it: its session, its node and that node's incarnation,
// and when the source last heard from it.
type holder struct {
	sess  int // 0: nobody
	node  *sim.Node
	inc   int
	heard time.Duration
	gen   int // sessions started since boot, for the next session's id
	// announced are the tables whose definitions the session was given.
	announced map[string]bool
}

// WalSenderTimeout is how long the source keeps a streaming session that
// it does not hear from (a paused or cut-off capture) before it ends it and
// frees the slot: PostgreSQL's wal_sender_timeout, as the container world
// sets it (images/pg-entrypoint.sh).
const WalSenderTimeout = 20 * time.Second

// uniqSlot is one value under one unique constraint of a table.
type uniqSlot struct {
	table string
	i     int // the constraint's index in the table's Unique
	value string
}

type streamWaiter struct {
	sess  int
	after model.LSN
	max   int
	reply func([]model.Txn, error)
	done  bool
}

// StreamWait is how long a walsender holds a read open waiting for commits
// before answering with nothing (a keepalive).
const StreamWait = 250 * time.Millisecond

func (db *SourceDB) nextWait(sess int, after model.LSN, max int, reply func([]model.Txn, error)) {
	txns, err := db.next(sess, after, max)
	if err != nil || len(txns) > 0 {
		reply(txns, err)
		return
	}
	sw := &streamWaiter{sess: sess, after: after, max: max, reply: reply}
	db.streams = append(db.streams, sw)
	db.n.At(db.n.World().Now()+StreamWait, func() {
		if !sw.done {
			sw.done = true
			reply(db.next(sw.sess, sw.after, sw.max))
		}
	})
}

// wakeStreams pushes a new commit to the walsenders waiting for one.
func (db *SourceDB) wakeStreams() {
	for _, sw := range db.streams {
		if !sw.done {
			sw.done = true
			sw.reply(db.next(sw.sess, sw.after, sw.max))
		}
	}
	clear(db.streams)
	db.streams = db.streams[:0]
}

type slot struct {
	Exists    bool
	Confirmed model.LSN
}

// CheckpointEvery is how often the slot's confirmed position reaches disk.
const CheckpointEvery = time.Second

// BootSourceDB returns the boot function of a source database node.
func BootSourceDB(rec *Recorder) func(n *sim.Node) any {
	return func(n *sim.Node) any {
		db := &SourceDB{n: n, rec: rec, state: model.NewState(), tables: map[string]pipeline.KeylessTable{}, copies: map[model.Key]int{},
			defs: map[string]model.Table{}, uniq: map[uniqSlot]string{}}
		if v, ok := n.Disk().Get("tables"); ok {
			for _, t := range v.([]pipeline.KeylessTable) {
				db.declare(t)
			}
		}
		if v, ok := n.Disk().Get("defs"); ok {
			for _, t := range v.([]model.Table) {
				db.defs[t.Name] = t
			}
		}
		if v, ok := n.Disk().Get("wal"); ok {
			db.wal = v.([]model.Txn)
		}
		for _, t := range db.wal {
			db.applyCommitted(t)
			db.lsn, db.xid = t.CommitLSN, t.XID
		}
		if v, ok := n.Disk().Get("slot"); ok {
			db.slot = v.(slot)
		}
		n.Go("checkpointer", func(ctx context.Context) {
			for n.Env().Sleep(ctx, CheckpointEvery) == nil {
				db.checkpoint()
			}
		})
		return db
	}
}

func (db *SourceDB) checkpoint() {
	db.n.Disk().Put("slot", db.slot)
	db.n.Disk().Sync()
}

// CreateTable declares a table without a primary key (DDL, durable at
// once, as PostgreSQL's catalog is). It writes nothing to the stream: the
// table shows there with its first change. A name already declared, or
// written as a keyed table, is refused.
func (db *SourceDB) CreateTable(t pipeline.KeylessTable) error {
	if _, ok := db.tables[t.Name]; ok {
		return fmt.Errorf("create table %s: it exists", t.Name)
	}
	if _, ok := db.defs[t.Name]; ok {
		return fmt.Errorf("create table %s: it exists, with a primary key", t.Name)
	}
	for _, k := range db.state.Keys() {
		if k.Table == t.Name {
			return fmt.Errorf("create table %s: it exists, with a primary key", t.Name)
		}
	}
	if len(t.Columns) == 0 {
		return fmt.Errorf("create table %s: no columns", t.Name)
	}
	t.Columns = append([]string(nil), t.Columns...)
	db.declare(t)
	all := make([]pipeline.KeylessTable, 0, len(db.tables))
	for _, name := range db.tableNames(false) {
		all = append(all, db.tables[name])
	}
	db.n.Disk().Put("tables", all)
	db.n.Disk().Sync()
	return nil
}

// Define declares a keyed table with its columns, key and unique
// constraints (DDL, durable at once). Its key must be the one column pk,
// which every keyed table of the simulated source has; a table with rows
// already, or declared keyless, is refused, as is one with rows that would
// break its constraints.
func (db *SourceDB) Define(t model.Table) error {
	if err := t.Check(); err != nil {
		return fmt.Errorf("define table: %w", err)
	}
	if len(t.Key) != 1 || t.Key[0] != "pk" {
		return fmt.Errorf("define table %s: the key must be the column pk", t.Name)
	}
	if _, ok := db.tables[t.Name]; ok {
		return fmt.Errorf("define table %s: it exists without a primary key", t.Name)
	}
	if _, ok := db.defs[t.Name]; ok {
		return fmt.Errorf("define table %s: it exists", t.Name)
	}
	for _, k := range db.state.Keys() {
		if k.Table == t.Name {
			return fmt.Errorf("define table %s: it has rows", t.Name)
		}
	}
	db.defs[t.Name] = t.Clone()
	all := make([]model.Table, 0, len(db.defs))
	for _, name := range slices.Sorted(maps.Keys(db.defs)) {
		all = append(all, db.defs[name])
	}
	db.n.Disk().Put("defs", all)
	db.n.Disk().Sync()
	return nil
}

// keylessDef is a keyless table's definition: text columns in the declared
// order, no key.
func keylessDef(t pipeline.KeylessTable) model.Table {
	def := model.Table{Name: t.Name}
	for _, c := range t.Columns {
		def.Columns = append(def.Columns, model.Column{Name: c, Type: "text"})
	}
	return def
}

// relation is what a pgoutput Relation message says of a table, which the
// stream hands out with the first transaction of a session that changes
// it: its columns and key, no unique constraints. False for a table of
// which the stream has none (never defined, or keyless without FULL
// identity).
func (db *SourceDB) relation(name string) (model.Table, bool) {
	if t, ok := db.defs[name]; ok {
		t = t.Clone()
		t.Unique = nil
		return t, true
	}
	if t, ok := db.tables[name]; ok && t.Full {
		return keylessDef(t), true
	}
	return model.Table{}, false
}

// Schema is the definition of every defined table, keyed and keyless
// (text columns in the declared order, no key), sorted by name: what a
// snapshot carries.
func (db *SourceDB) Schema() []model.Table {
	var out []model.Table
	for _, t := range db.defs {
		out = append(out, t.Clone())
	}
	for _, t := range db.tables {
		out = append(out, keylessDef(t))
	}
	slices.SortFunc(out, func(a, b model.Table) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// applyCommitted applies a committed transaction to the tables and their
// indexes.
func (db *SourceDB) applyCommitted(t model.Txn) {
	db.countCopies(t)
	// The keys under a unique constraint the transaction writes (a key
	// change's old key too), in key order, and their rows before it.
	var keys []model.Key
	for _, c := range t.Changes {
		for _, k := range [2]model.Key{c.Key(), {Table: c.Table, PK: c.OldPK}} {
			if k.PK != "" && len(db.defs[k.Table].Unique) > 0 {
				keys = append(keys, k)
			}
		}
	}
	if len(keys) == 0 {
		db.state.Apply(t)
		return
	}
	slices.SortFunc(keys, func(a, b model.Key) int { return cmp.Or(cmp.Compare(a.Table, b.Table), cmp.Compare(a.PK, b.PK)) })
	keys = slices.Compact(keys)
	before := make([]model.Row, len(keys))
	for i, k := range keys {
		e, _ := db.state.Get(k)
		before[i] = e.Row
	}
	db.state.Apply(t)
	// The unique index follows the rows the transaction touched: their
	// old values go, then their new ones come (in key order: a value
	// moves from one row to another within a transaction).
	for j, k := range keys {
		def := db.defs[k.Table]
		for i := range def.Unique {
			if v, ok := def.UniqueValue(i, k.PK, before[j]); ok && db.uniq[uniqSlot{k.Table, i, v}] == k.PK {
				delete(db.uniq, uniqSlot{k.Table, i, v})
			}
		}
	}
	for _, k := range keys {
		def := db.defs[k.Table]
		e, live := db.state.Get(k)
		if !live {
			continue
		}
		for i := range def.Unique {
			if v, ok := def.UniqueValue(i, k.PK, e.Row); ok {
				db.uniq[uniqSlot{k.Table, i, v}] = k.PK
			}
		}
	}
}

func (db *SourceDB) declare(t pipeline.KeylessTable) {
	db.tables[t.Name] = t
	db.refusing = db.refusing || !t.Full
}

// tableNames is the sorted names of the keyless tables, or only of those
// without FULL identity (whose rows have no name).
func (db *SourceDB) tableNames(nameless bool) []string {
	var names []string
	for name, t := range db.tables {
		if !nameless || !t.Full {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// countCopies keeps the count of identical keyless rows as t commits:
// an insert of a key that exists adds a copy, a delete removes one.
func (db *SourceDB) countCopies(t model.Txn) {
	if len(db.tables) == 0 {
		return
	}
	var present map[model.Key]bool // as of the changes so far
	for _, c := range t.Changes {
		if _, keyless := db.tables[c.Table]; !keyless {
			continue
		}
		if present == nil {
			present = map[model.Key]bool{}
		}
		k := c.Key()
		here, seen := present[k]
		if !seen {
			_, here = db.state.Get(k)
		}
		switch {
		case c.Op == model.OpDelete:
			here = db.copies[k] > 0
			if here {
				db.copies[k]--
			}
		case here:
			db.copies[k]++
		default:
			here = true
		}
		present[k] = here
		if db.copies[k] == 0 {
			delete(db.copies, k)
		}
	}
}

// refused is the error a stream meets at t: a *pipeline.NoKeyError when t
// wrote to a keyless table without FULL identity.
func (db *SourceDB) refused(t model.Txn) error {
	if !db.refusing {
		return nil
	}
	for _, c := range t.Changes {
		if kt, ok := db.tables[c.Table]; ok && !kt.Full {
			return fmt.Errorf("%s at %s: %w", c.Op, t.CommitLSN, &pipeline.NoKeyError{Tables: []string{c.Table}, XID: t.XID})
		}
	}
	return nil
}

// Refuses reports whether a stream refuses t: it wrote to a keyless table
// without FULL identity.
func (db *SourceDB) Refuses(t model.Txn) bool { return db.refused(t) != nil }

// WAL is every committed transaction in commit order (the ground truth).
func (db *SourceDB) WAL() []model.Txn { return db.wal }

// LastLSN is the commit LSN of the newest transaction.
func (db *SourceDB) LastLSN() model.LSN { return db.lsn }

// State is the current table content.
func (db *SourceDB) State() *model.State { return db.state }

// Exec runs fn as one transaction: on error it rolls back (and the attempt
// is recorded as aborted), otherwise it commits durably. It returns a copy
// of the committed transaction: the WAL keeps the rows fn wrote.
func (db *SourceDB) Exec(fn pipeline.TxnFunc) (model.Txn, error) {
	t, err := db.exec(fn)
	if err != nil {
		return model.Txn{}, err
	}
	return t.Clone(), nil
}

// Commit is Exec for a caller that needs to know only whether the
// transaction committed (the harness's clients): nothing is copied.
func (db *SourceDB) Commit(fn pipeline.TxnFunc) error {
	_, err := db.exec(fn)
	return err
}

// exec is Exec; the transaction it returns holds the WAL's own rows.
// The rows fn wrote become the WAL's: a workload builds rows for one
// transaction and never changes them after (model.Row).
func (db *SourceDB) exec(fn pipeline.TxnFunc) (model.Txn, error) {
	tx := &dbTx{db: db}
	db.xid++
	err := fn(tx)
	if err == nil {
		err = tx.err
	}
	return db.commitTx(tx, err)
}

// commitTx ends tx, under the XID exec took: rolled back when err (fn's,
// or its first failed statement's), else committed.
func (db *SourceDB) commitTx(tx *dbTx, err error) (model.Txn, error) {
	if err != nil {
		db.rec.Aborted = append(db.rec.Aborted, model.Txn{XID: db.xid, Changes: tx.changes})
		return model.Txn{}, fmt.Errorf("%w: %w", ErrAborted, err)
	}
	if len(tx.changes) == 0 {
		return model.Txn{XID: db.xid}, nil
	}
	db.lsn += model.LSN(8 * (1 + db.n.Rand().IntN(64)))
	t := model.Txn{XID: db.xid, CommitLSN: db.lsn, Changes: tx.changes}
	// The WAL and the tables keep these rows, and hand callers and
	// readers copies (Exec, the stream, snapshots). So the truth is safe
	// from everything but fn's author writing to a row after passing it
	// in, which workloads never do (model.Row: immutable once built).
	db.applyCommitted(t)
	db.wal = append(db.wal, t)
	db.n.Disk().Put("wal", db.wal)
	db.n.Disk().Sync()
	db.wakeStreams()
	return t, nil
}

// ToastThreshold is the value size from which the simulated source stores a
// column value out of line, as PostgreSQL's TOAST does for a row over about
// 2 kB (with STORAGE EXTERNAL, no compression first). Workloads keep their
// values either well under it or well over it, so the exact boundary, which
// in PostgreSQL depends on the whole row, never decides.
const ToastThreshold = 2000

type dbTx struct {
	db      *SourceDB
	view    ownWrites
	copies  map[model.Key]int // own writes' identical keyless rows beyond the first (likewise)
	changes []model.Change
	err     error // the first failed statement; the transaction rolls back
}

// see records the transaction's own write of k (nil: deleted).
func (tx *dbTx) see(k model.Key, row model.Row) { tx.view.set(k, row) }

// ownWrites are a transaction's own writes by key (a nil row: deleted): a
// short list while there are few (most transactions write a row or two),
// a map once there are more than ownWritesListed.
type ownWrites struct {
	list  []ownWrite
	byKey map[model.Key]model.Row
}

type ownWrite struct {
	k   model.Key
	row model.Row
}

const ownWritesListed = 8

func (o *ownWrites) get(k model.Key) (model.Row, bool) {
	if o.byKey != nil {
		r, ok := o.byKey[k]
		return r, ok
	}
	for i := range o.list {
		if o.list[i].k == k {
			return o.list[i].row, true
		}
	}
	return nil, false
}

func (o *ownWrites) set(k model.Key, row model.Row) {
	if o.byKey != nil {
		o.byKey[k] = row
		return
	}
	for i := range o.list {
		if o.list[i].k == k {
			o.list[i].row = row
			return
		}
	}
	if len(o.list) < ownWritesListed {
		o.list = append(o.list, ownWrite{k, row})
		return
	}
	o.byKey = make(map[model.Key]model.Row, 2*ownWritesListed)
	for _, w := range o.list {
		o.byKey[w.k] = w.row
	}
	o.byKey[k] = row
}

// keys calls fn for every key written, in no particular order.
func (o *ownWrites) keys(fn func(model.Key)) {
	if o.byKey != nil {
		for k := range o.byKey {
			fn(k)
		}
		return
	}
	for _, w := range o.list {
		fn(w.k)
	}
}

func (tx *dbTx) setCopies(k model.Key, n int) {
	if tx.copies == nil {
		tx.copies = map[model.Key]int{}
	}
	tx.copies[k] = n
}

// keyed fails the transaction when table is keyless: it has no key column
// to look a row up by or to conflict on (pgsource's statements name pk).
func (tx *dbTx) keyed(op, table string) bool {
	if _, keyless := tx.db.tables[table]; keyless && tx.err == nil {
		tx.err = fmt.Errorf("%s %s: the table has no primary key (write it with InsertRow and DeleteRow)", op, table)
	}
	return tx.err == nil
}

func (tx *dbTx) Get(table, pk string) (model.Row, bool) {
	if !tx.keyed("get", table) {
		return nil, false
	}
	return tx.get(table, pk)
}

func (tx *dbTx) get(table, pk string) (model.Row, bool) {
	k := model.Key{Table: table, PK: pk}
	if r, ok := tx.view.get(k); ok {
		return r, r != nil
	}
	e, ok := tx.db.state.Get(k)
	return e.Row, ok
}

func (tx *dbTx) Put(table, pk string, row model.Row) {
	if !tx.keyed("put", table) {
		return
	}
	k := model.Key{Table: table, PK: pk}
	old, exists := tx.get(table, pk)
	if !exists {
		if !tx.unique(table, pk, row) {
			return
		}
		tx.see(k, row)
		tx.changes = append(tx.changes, model.Change{Table: table, PK: pk, Op: model.OpInsert, Row: row})
		return
	}
	merged := row
	for c := range old.All() {
		if _, set := row.Lookup(c); !set {
			merged = nil // some column keeps its value: merge
			break
		}
	}
	if merged == nil {
		merged = append(make(model.Row, 0, len(old)+len(row)), old...)
		for c, v := range row.All() {
			merged.Set(c, v)
		}
	}
	if !tx.unique(table, pk, merged) {
		return
	}
	tx.see(k, merged)
	sent, unchanged := toastImage(merged, func(c string) bool { _, set := row.Lookup(c); return !set })
	tx.changes = append(tx.changes, model.Change{Table: table, PK: pk, Op: model.OpUpdate, Row: sent, Unchanged: unchanged})
}

// unique fails the transaction when writing row under pk would give two
// rows of table equal values under one of its unique constraints, as the
// transaction sees the rows: the committed holder of the value, unless the
// transaction changed it, or a row the transaction wrote.
func (tx *dbTx) unique(table, pk string, row model.Row) bool {
	def, ok := tx.db.defs[table]
	if !ok || len(def.Unique) == 0 || tx.err != nil {
		return tx.err == nil
	}
	holds := func(other string, i int, v string) bool {
		r, live := tx.get(table, other)
		w, ok := def.UniqueValue(i, other, r)
		return live && ok && w == v
	}
	for i := range def.Unique {
		v, ok := def.UniqueValue(i, pk, row)
		if !ok {
			continue
		}
		other := ""
		if h, held := tx.db.uniq[uniqSlot{table, i, v}]; held && h != pk && holds(h, i, v) {
			other = h
		}
		// keys comes in no particular order: the smallest key wins.
		tx.view.keys(func(k model.Key) {
			if k.Table == table && k.PK != pk && (other == "" || k.PK < other) && holds(k.PK, i, v) {
				other = k.PK
			}
		})
		if other != "" {
			tx.err = &model.UniqueViolationError{Table: table, Columns: def.Unique[i], Value: strings.ReplaceAll(v, "\x00", ", "), Keys: [2]string{other, pk}}
			return false
		}
	}
	return true
}

// toastImage is what pgoutput sends of an updated row on a table whose
// replica identity is its key: every column, except the out-of-line ones
// the update did not set, which it marks unchanged (their data is not in
// the WAL record).
func toastImage(row model.Row, untouched func(col string) bool) (model.Row, []string) {
	big := false
	for c, v := range row.All() {
		big = big || (len(v) >= ToastThreshold && untouched(c))
	}
	if !big {
		return row, nil
	}
	var unchanged []string
	for _, c := range row {
		if len(c.Value) >= ToastThreshold && untouched(c.Name) {
			unchanged = append(unchanged, c.Name)
		}
	}
	if unchanged == nil {
		return row, nil
	}
	sent := row.Clone()
	for _, c := range unchanged {
		sent.Delete(c)
	}
	return sent, unchanged
}

func (tx *dbTx) Delete(table, pk string) {
	if !tx.keyed("delete", table) {
		return
	}
	if _, ok := tx.get(table, pk); !ok {
		return
	}
	tx.see(model.Key{Table: table, PK: pk}, nil)
	tx.changes = append(tx.changes, model.Change{Table: table, PK: pk, Op: model.OpDelete})
}

func (tx *dbTx) Rekey(table, pk, newPK string) {
	if !tx.keyed("rekey", table) {
		return
	}
	row, ok := tx.get(table, pk)
	if !ok || tx.err != nil || newPK == pk {
		return
	}
	if _, taken := tx.get(table, newPK); taken {
		tx.err = fmt.Errorf("rekey %s/%s: duplicate key %s", table, pk, newPK)
		return
	}
	tx.see(model.Key{Table: table, PK: pk}, nil)
	tx.see(model.Key{Table: table, PK: newPK}, row)
	sent, unchanged := toastImage(row, func(string) bool { return true })
	tx.changes = append(tx.changes, model.Change{Table: table, PK: newPK, OldPK: pk, Op: model.OpUpdate, Row: sent, Unchanged: unchanged})
}

// keyless is table's declaration, or a failed transaction when it has
// none (a keyed table, or no table: PostgreSQL's "relation does not
// exist").
func (tx *dbTx) keyless(op, table string, row model.Row) (pipeline.KeylessTable, bool) {
	t, ok := tx.db.tables[table]
	if tx.err != nil {
		return t, false
	}
	if !ok {
		tx.err = fmt.Errorf("%s %s: no keyless table of that name (CreateTable declares one)", op, table)
		return t, false
	}
	for c := range row.All() {
		if !slices.Contains(t.Columns, c) {
			tx.err = fmt.Errorf("%s %s: column %q does not exist", op, table, c)
			return t, false
		}
	}
	return t, true
}

// count is how many identical rows hold k as the transaction sees them.
func (tx *dbTx) count(k model.Key) int {
	if _, ok := tx.get(k.Table, k.PK); !ok {
		return 0
	}
	if n, ok := tx.copies[k]; ok {
		return n + 1
	}
	return tx.db.copies[k] + 1
}

func (tx *dbTx) InsertRow(table string, row model.Row) {
	t, ok := tx.keyless("insert row", table, row)
	if !ok {
		return
	}
	k := model.Key{Table: table, PK: t.Key(row)}
	if n := tx.count(k); n > 0 {
		tx.setCopies(k, n) // one more beyond the first
	}
	stored := row.Clone()
	tx.see(k, stored)
	tx.changes = append(tx.changes, model.Change{Table: table, PK: k.PK, Op: model.OpInsert, Row: stored})
}

func (tx *dbTx) DeleteRow(table string, row model.Row) {
	t, ok := tx.keyless("delete row", table, row)
	if !ok {
		return
	}
	if !t.Full {
		// PostgreSQL refuses it, since the publication publishes deletes
		// and the table has no identity to send with one.
		tx.err = fmt.Errorf("delete row %s: cannot delete from table %q because it does not have a replica identity and publishes deletes", table, table)
		return
	}
	k := model.Key{Table: table, PK: t.Key(row)}
	n := tx.count(k)
	if n == 0 {
		return
	}
	tx.see(k, nil)
	tx.setCopies(k, 0)
	for range n {
		tx.changes = append(tx.changes, model.Change{Table: table, PK: k.PK, Op: model.OpDelete})
	}
}

// export (re)creates the slot at the current LSN and keeps every row as of
// that LSN, in key order, for from to read (snapshotRows), in one atomic
// step. With a keyless table that has no FULL identity it refuses, naming
// every such table, and leaves no slot (as pgsource drops a slot whose
// snapshot it could not read).
//
// The rows stay readable, as an exported snapshot does for the transaction
// that imported it whatever slots come after, until the reader closes the
// snapshot, its process goes away, or nobody read it for WalSenderTimeout
// (a client that gave up on its request closed the connection), and are
// lost when the source crashes. Like PostgreSQL's, the rows carry no write
// counts (Revs): nothing in a snapshot says how often a row was written.
func (db *SourceDB) export(from *sim.Node) (snapshotHandle, error) {
	db.endSession() // whoever streamed from the slot is fenced off
	if db.refusing {
		db.slot = slot{}
		db.checkpoint()
		return snapshotHandle{}, &pipeline.NoKeyError{Tables: db.tableNames(true)}
	}
	db.slot = slot{Exists: true, Confirmed: db.lsn}
	db.checkpoint()
	var rows []model.Change
	for _, k := range db.state.Keys() {
		e, _ := db.state.Get(k)
		// Identical keyless rows are read one by one, as PostgreSQL's
		// snapshot reads them.
		for range 1 + db.copies[k] {
			rows = append(rows, model.Change{Table: k.Table, PK: k.PK, Op: model.OpInsert, Row: e.Row})
		}
	}
	now := db.n.World().Now()
	db.exports = slices.DeleteFunc(db.exports, func(x exported) bool {
		return !x.node.Up() || x.node.Incarnation() != x.inc || now-x.read >= WalSenderTimeout
	})
	db.exportGen++
	h := snapshotHandle{ID: db.exportGen, Head: model.Txn{CommitLSN: db.lsn, Snapshot: true, Schema: db.Schema()}}
	db.exports = append(db.exports, exported{id: h.ID, node: from, inc: from.Incarnation(), read: now, rows: rows})
	return h, nil
}

// release lets exported snapshot id go.
func (db *SourceDB) release(id int) {
	db.exports = slices.DeleteFunc(db.exports, func(x exported) bool { return x.id == id })
}

// snapshotHandle names an exported snapshot and holds its head.
type snapshotHandle struct {
	ID   int
	Head model.Txn
}

// exported is a snapshot a process took and may still read (see export).
type exported struct {
	id   int
	node *sim.Node
	inc  int
	read time.Duration // when it was taken or last read
	rows []model.Change
}

// snapshotRows returns up to max rows of exported snapshot id from row
// from on, copies: the rows are the source's own.
func (db *SourceDB) snapshotRows(id, from, max int) ([]model.Change, error) {
	i := slices.IndexFunc(db.exports, func(x exported) bool { return x.id == id })
	if i < 0 || from < 0 {
		return nil, ErrSnapshotGone
	}
	db.exports[i].read = db.n.World().Now()
	rows := db.exports[i].rows
	page := slices.Clone(rows[min(from, len(rows)):min(from+max, len(rows))])
	for j := range page {
		page[j].Row = page[j].Row.Clone()
	}
	return page, nil
}

// DropSlot removes the replication slot (a fault: an operator or a WAL
// retention limit dropped it).
func (db *SourceDB) DropSlot() {
	db.endSession()
	db.slot = slot{}
	db.checkpoint()
}

// Confirmed is the slot's confirmed position in memory.
func (db *SourceDB) Confirmed() model.LSN { return db.slot.Confirmed }

type session struct {
	ID        int
	Confirmed model.LSN
}

// start opens a streaming session on the slot for a process on node from.
// Exactly one session streams from a slot, as in PostgreSQL: a session of
// another process holds it until that process dies (its node crashed or
// restarted: the kernel closes its connection), until the source has not
// heard from it for WalSenderTimeout (a paused or cut-off process), or
// until a snapshot takes the slot over (Snapshot ends it, as pgsource
// terminates the slot's holder). A process starting again takes over its
// own earlier session: it closed that connection first.
func (db *SourceDB) start(from *sim.Node) (session, error) {
	if !db.slot.Exists {
		return session{}, pipeline.ErrNoSlot
	}
	now := db.n.World().Now()
	if h := db.holder; h.sess != 0 && h.node != from && h.node.Up() && h.node.Incarnation() == h.inc && now-h.heard < WalSenderTimeout {
		return session{}, fmt.Errorf("%w (%s)", ErrSlotInUse, h.node.Name())
	}
	db.holder.gen++
	id := db.n.Incarnation()<<20 | db.holder.gen
	db.holder = holder{sess: id, node: from, inc: from.Incarnation(), heard: now, gen: db.holder.gen}
	return session{ID: id, Confirmed: db.slot.Confirmed}, nil
}

// hear checks that sess is the session holding the slot, and notes that
// the source heard from it.
func (db *SourceDB) hear(sess int) error {
	if sess == 0 || sess != db.holder.sess || !db.slot.Exists {
		return ErrStaleSession
	}
	db.holder.heard = db.n.World().Now()
	return nil
}

// endSession ends whatever session holds the slot.
func (db *SourceDB) endSession() { db.holder.sess, db.holder.node = 0, nil }

func (db *SourceDB) next(sess int, after model.LSN, max int) ([]model.Txn, error) {
	if err := db.hear(sess); err != nil {
		return nil, err
	}
	i := sort.Search(len(db.wal), func(i int) bool { return db.wal[i].CommitLSN > after })
	j := min(i+max, len(db.wal))
	for k := i; k < j; k++ {
		if err := db.refused(db.wal[k]); err != nil {
			if k == i {
				return nil, err
			}
			j = k // the whole transactions before it first, as pgsource does
			break
		}
	}
	out := make([]model.Txn, j-i)
	for k := range out {
		out[k] = db.wal[i+k].Clone() // the WAL is the ground truth: hand out copies
		for _, c := range out[k].Changes {
			if db.holder.announced[c.Table] {
				continue
			}
			if def, ok := db.relation(c.Table); ok {
				out[k].Schema = append(out[k].Schema, def)
				if db.holder.announced == nil {
					db.holder.announced = map[string]bool{}
				}
				db.holder.announced[c.Table] = true
			}
		}
	}
	return out, nil
}

// confirm moves the slot's confirmed position forward, for the session
// that holds it only: an ended session's connection is gone.
func (db *SourceDB) confirm(sess int, lsn model.LSN) error {
	if err := db.hear(sess); err != nil {
		return err
	}
	if lsn > db.slot.Confirmed {
		db.slot.Confirmed = lsn
	}
	return nil
}

// SourceClient is the application's connection to the source (pipeline.Source).
type SourceClient struct {
	From, DB *sim.Node
	Timeout  time.Duration
	// LockTimeout is how long a transaction waits for rows a prepared
	// transaction holds (two-phase commit's; lock_timeout) before it
	// fails with twopc.ErrLockTimeout (default DefaultLockTimeout).
	LockTimeout time.Duration
}

func (c *SourceClient) timeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Exec implements pipeline.Source.
func (c *SourceClient) Exec(ctx context.Context, fn pipeline.TxnFunc) (model.Txn, error) {
	lt := orDefault(c.LockTimeout, DefaultLockTimeout)
	return sim.CallAsync(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB, reply func(model.Txn, error)) {
		db.execWaiting(fn, lt, func(t model.Txn, err error) { reply(t.Clone(), err) })
	})
}

// Commit is Exec without the committed transaction (SourceDB.Commit).
func (c *SourceClient) Commit(ctx context.Context, fn pipeline.TxnFunc) error {
	lt := orDefault(c.LockTimeout, DefaultLockTimeout)
	_, err := sim.CallAsync(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB, reply func(struct{}, error)) {
		db.execWaiting(fn, lt, func(_ model.Txn, err error) { reply(struct{}{}, err) })
	})
	return err
}

// StreamClient is the capture's replication connection (pipeline.ChangeStream).
type StreamClient struct {
	From, DB *sim.Node
	Timeout  time.Duration
	Max      int // transactions per message (default 64)

	session int
	after   model.LSN
}

func (c *StreamClient) timeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Snapshot implements pipeline.ChangeStream: one call makes the slot and
// the snapshot, and the reader fetches its rows SnapshotPage at a time.
func (c *StreamClient) Snapshot(ctx context.Context) (pipeline.SnapshotReader, error) {
	from := c.From
	h, err := sim.Call(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB) (snapshotHandle, error) { return db.export(from) })
	if err != nil {
		return nil, err
	}
	return &snapshotReader{c: c, h: h}, nil
}

// SnapshotPage is how many rows one call of a snapshot's Scan fetches.
const SnapshotPage = 500

// ErrSnapshotGone: the snapshot read is no longer there (the source
// restarted, or its reader closed it or took a newer one).
var ErrSnapshotGone = errors.New("the snapshot is gone")

// snapshotReader reads an exported snapshot of the simulated source.
type snapshotReader struct {
	c      *StreamClient
	h      snapshotHandle
	closed bool
}

func (r *snapshotReader) Head() model.Txn { return r.h.Head.Clone() }

// Scan implements pipeline.SnapshotReader: one call per page, in key order.
func (r *snapshotReader) Scan(ctx context.Context, fn func([]model.Change) error) error {
	id := r.h.ID
	for from := 0; ; from += SnapshotPage {
		if r.closed {
			return ErrSnapshotGone
		}
		page, err := sim.Call(ctx, r.c.From, r.c.DB, r.c.timeout(), func(db *SourceDB) ([]model.Change, error) {
			return db.snapshotRows(id, from, SnapshotPage)
		})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		if err := fn(page); err != nil {
			return err
		}
	}
}

// Close implements pipeline.SnapshotReader: it tells the source, without
// waiting, as closing a connection does (a lost message leaves the
// snapshot to its idle timeout).
func (r *snapshotReader) Close(context.Context) error {
	if !r.closed {
		r.closed = true
		id, db := r.h.ID, r.c.DB
		r.c.From.World().Net().Send(r.c.From, db, func() {
			if s, ok := db.State().(*SourceDB); ok && db.Up() {
				s.release(id)
			}
		})
	}
	return nil
}

// Start implements pipeline.ChangeStream.
func (c *StreamClient) Start(ctx context.Context) (model.LSN, error) {
	from := c.From
	s, err := sim.Call(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB) (session, error) { return db.start(from) })
	if err != nil {
		return 0, err
	}
	c.session, c.after = s.ID, s.Confirmed
	return s.Confirmed, nil
}

// Next implements pipeline.ChangeStream: the source holds each read open
// until a commit arrives, or answers with nothing after StreamWait (a
// keepalive), as a walsender streams WAL; Next then returns no
// transactions, so a capture can confirm while the source is quiet.
func (c *StreamClient) Next(ctx context.Context) ([]model.Txn, error) {
	max := c.Max
	if max == 0 {
		max = 64
	}
	sess, after := c.session, c.after
	txns, err := sim.CallAsync(ctx, c.From, c.DB, StreamWait+c.timeout(), func(db *SourceDB, reply func([]model.Txn, error)) {
		db.nextWait(sess, after, max, reply)
	})
	if err != nil {
		return nil, err
	}
	if len(txns) > 0 {
		c.after = txns[len(txns)-1].CommitLSN
	}
	return txns, nil
}

// Confirm implements pipeline.ChangeStream.
func (c *StreamClient) Confirm(ctx context.Context, lsn model.LSN) error {
	sess := c.session
	_, err := sim.Call(ctx, c.From, c.DB, c.timeout(), func(db *SourceDB) (struct{}, error) { return struct{}{}, db.confirm(sess, lsn) })
	return err
}
