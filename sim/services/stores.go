package services

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/store"
	"lockstep/sim"
)

// Store is a simulated downstream store. Its durability depends on its kind:
// the replica (a transactional database) and the search index keep their
// documents and position on disk, synced at every write; the cache keeps
// everything in memory and restarts empty. Only the replica and the cache
// apply a batch atomically; the search index takes one document per call.
//
// The replica is a copy of the source's tables: it takes their definitions
// from the snapshot that resets it (model.Txn.Schema; dual writes' replica
// from CreateTables) and keeps their unique constraints, as PostgreSQL
// does: DEFERRABLE INITIALLY DEFERRED, checked when a batch (one database
// transaction) commits, or, with Immediate (the unique-row-by-row bug), at
// every row written. A batch that breaks one is refused whole with a
// *model.UniqueViolationError and changes nothing. The cache and the
// search index keep documents and no constraints.
type Store struct {
	kind  model.StoreKind
	n     *sim.Node
	docs  map[model.Key]storedDoc
	tombs map[model.Key]model.LSN // search: deleted documents' versions
	// view is the documents as the last Snapshot saw them, and dirty the
	// keys written since: a snapshot projects only those and then copies
	// the view whole (maps.Clone), where projecting every document again
	// cost more than the writes it serves. Nil until the first snapshot
	// (volatile; the replica is snapshotted all run long, the others at
	// the end).
	view  model.Docs
	dirty []model.Key
	// shared is the copy of the view the last Snapshot handed out: handed
	// out again while no document changed (a snapshot's holders only read
	// it), as a quiet store's snapshots are about one in four.
	shared model.Docs
	pos    model.Position
	hasPos bool
	// revsFrom is the LSN of the snapshot the search index was last reset
	// to, from which it counts revisions (model.Snapshot.RevsFrom); resets
	// counts the resets it took, durably: every later request of a reset
	// batch names its own, so a newer reset fences it off.
	revsFrom model.LSN
	resets   int
	// audit, when set, hears of every change of the saved position, as
	// a store's own log would show it (see BootAuditedStore).
	audit func(model.PositionWrite)
	name  string

	// schema is the replica's table definitions (durable); uniq, for its
	// tables with unique constraints, the keys holding each value
	// (volatile: rebuilt from the documents at boot).
	schema map[string]model.Table
	uniq   map[uniqSlot][]string
	// txn is the open replica transaction while a batch is applied: what
	// to undo when it is refused.
	txn *storeTxn
	// part is the store's prepared transactions under two-phase commit
	// (twopc.go), loaded from the disk on first use.
	part *participant
	// dropped counts, per table name, the replica's resets that dropped
	// the table and made it again with no lock its whole readers hold
	// (the reset-by-ddl bug). A reader whose snapshot came before such a
	// reset finds the new table, empty to it, or none (see WholeRead).
	// Volatile: a restart ends every reader's transaction.
	dropped map[string]int
}

// storeTxn is an open replica transaction: the rows it overwrote, the
// unique values it wrote, and the first violation an immediate check met.
type storeTxn struct {
	immediate bool
	undo      []undoRow
	schema    map[string]model.Table // before the transaction
	touched   []uniqSlot
	violation error
}

// undoRow is a key's document before the transaction first wrote it.
type undoRow struct {
	k   model.Key
	doc storedDoc
	had bool
}

// storedDoc is a document as the store keeps it: its version and the row
// it was built from (the search index's stored source, a search engine's
// _source, which a partial update merges unchanged columns into; the
// replica's and the cache's row). Its projection, model.ProjectEntry's, is
// worked out when the document is first read: most versions are
// overwritten before anyone reads them, and a search document's terms are
// dear to compute.
type storedDoc struct {
	lsn  model.LSN
	revs int
	row  model.Row
	// disk is the document's key on disk (durable kinds), made once per
	// key rather than at every write.
	disk string
	// projection is model.ProjectEntry's document, once projected is set.
	// Projecting is a pure function of the row and version, so two copies
	// of a storedDoc that each project get equal documents.
	projection model.Doc
	projected  bool
}

// diskDoc is what a durable store keeps on disk of a document.
type diskDoc struct {
	lsn  model.LSN
	revs int
	row  model.Row
}

func (d storedDoc) onDisk() diskDoc { return diskDoc{lsn: d.lsn, revs: d.revs, row: d.row} }

// doc is the document as a reader sees it, projected for kind.
func (d *storedDoc) doc(kind model.StoreKind) model.Doc {
	if !d.projected {
		d.projection = model.ProjectEntry(kind, model.Entry{Row: d.row, LSN: d.lsn, Writes: d.revs})
		d.projected = true
	}
	return d.projection
}

// read is k's document, projected (and the projection kept).
func (s *Store) read(k model.Key) (model.Doc, bool) {
	d, ok := s.docs[k]
	if !ok {
		return model.Doc{}, false
	}
	fresh := !d.projected
	doc := d.doc(s.kind)
	if fresh {
		s.docs[k] = d
	}
	return doc, true
}

func durable(k model.StoreKind) bool { return k != model.Cache }

// BootStore returns the boot function of a store node of the given kind.
func BootStore(kind model.StoreKind) func(n *sim.Node) any {
	return BootAuditedStore(kind, nil)
}

// BootAuditedStore is BootStore with an audit of the store's saved
// position: audit hears, outside the simulation, of every write of it and
// of its loss, and of the position the store holds at every boot. The
// harness keeps it for the checker (History.Positions); nil hears nothing.
func BootAuditedStore(kind model.StoreKind, audit func(model.PositionWrite)) func(n *sim.Node) any {
	return func(n *sim.Node) any {
		s := &Store{kind: kind, n: n, docs: map[model.Key]storedDoc{}, tombs: map[model.Key]model.LSN{},
			audit: audit, name: n.Name(), schema: map[string]model.Table{}, uniq: map[uniqSlot][]string{},
			dropped: map[string]int{}}
		defer s.heard()
		if !durable(kind) {
			return s
		}
		defer s.reindex()
		d := n.Disk()
		for _, k := range d.Keys() {
			v, _ := d.Get(k)
			switch {
			case k == "pos":
				s.pos, s.hasPos = v.(model.Position), true
			case k == "revsfrom":
				s.revsFrom = v.(model.LSN)
			case k == "resets":
				s.resets = v.(int)
			case k == "schema":
				s.schema = model.SchemaOf(v.([]model.Table))
			case strings.HasPrefix(k, "doc\x00"):
				d := v.(diskDoc)
				s.docs[diskKey(k)] = storedDoc{lsn: d.lsn, revs: d.revs, row: d.row, disk: k}
			case strings.HasPrefix(k, "tomb\x00"):
				s.tombs[diskKey(k)] = v.(model.LSN)
			}
		}
		return s
	}
}

func docKey(prefix string, k model.Key) string { return prefix + "\x00" + k.Table + "\x00" + k.PK }

// docDiskKey is k's document's key on disk: the one it holds, if any.
func (s *Store) docDiskKey(k model.Key) string {
	if d, ok := s.docs[k]; ok && d.disk != "" {
		return d.disk
	}
	return docKey("doc", k)
}

func diskKey(s string) model.Key {
	parts := strings.SplitN(s, "\x00", 3)
	return model.Key{Table: parts[1], PK: parts[2]}
}

// Kind is the store's kind.
func (s *Store) Kind() model.StoreKind { return s.kind }

// Snapshot is the whole store at this instant, for the harness's observer
// and checker, which only read it: consecutive snapshots of an unchanged
// store share their documents.
func (s *Store) Snapshot(name string, at time.Duration) model.Snapshot {
	snap := model.Snapshot{Store: name, At: at, HasPosition: s.hasPos, Position: s.pos, RevsFrom: s.revsFrom}
	if s.shared != nil {
		snap.Docs = s.shared
		return snap
	}
	if s.view == nil {
		s.view = make(model.Docs, len(s.docs))
		for k := range s.docs {
			s.view[k], _ = s.read(k)
		}
	}
	for _, k := range s.dirty {
		if d, ok := s.read(k); ok {
			s.view[k] = d
		} else {
			delete(s.view, k)
		}
	}
	s.dirty = s.dirty[:0]
	// maps.Clone copies the table whole instead of inserting key by key.
	s.shared = maps.Clone(s.view)
	snap.Docs = s.shared
	return snap
}

// changed notes that k's document was written or deleted, for the view.
// When the keys noted outnumber the documents (snapshots stopped coming:
// the observer is cut off), the view is dropped and the next snapshot
// builds it again, so the list stays bounded.
func (s *Store) changed(k model.Key) {
	s.shared = nil
	if s.view == nil {
		return
	}
	if len(s.dirty) > len(s.docs)+64 {
		s.view, s.dirty = nil, nil
		return
	}
	s.dirty = append(s.dirty, k)
}

// Position is the store's saved position.
func (s *Store) Position() (model.Position, bool) { return s.pos, s.hasPos }

// row is the row the store holds for k, for merging unchanged columns.
func (s *Store) row(k model.Key) model.Row {
	return s.docs[k].row
}

// CreateTables gives the replica its tables' definitions, as an
// application's migration creates them (the pipeline's replica takes them
// from the snapshot instead). Other kinds keep no tables.
func (s *Store) CreateTables(tables []model.Table) {
	if s.kind != model.Replica {
		return
	}
	s.setSchema(tables)
	s.sync()
}

func (s *Store) setSchema(tables []model.Table) {
	s.schema = model.SchemaOf(tables)
	s.n.Disk().Put("schema", tables)
	s.reindex()
}

// announce takes the definitions a streamed transaction carries of tables
// the replica has none of (tables created after the snapshot), as
// pgstore's replica creates them. A snapshot's are taken by the reset.
func (s *Store) announce(t model.Txn) {
	if s.kind != model.Replica || t.Snapshot || len(t.Schema) == 0 {
		return
	}
	var have []model.Table
	for _, name := range slices.Sorted(maps.Keys(s.schema)) {
		have = append(have, s.schema[name])
	}
	if all := model.AddTables(have, t.Schema); len(all) > len(have) {
		s.setSchema(all)
	}
}

// Tables is the replica's table definitions, by name.
func (s *Store) Tables() map[string]model.Table { return s.schema }

// reindex builds the unique index from the documents.
func (s *Store) reindex() {
	clear(s.uniq)
	for _, k := range model.SortedKeys(s.docs) {
		s.index(k, s.row(k), nil)
	}
}

// constrained is the definition of k's table when the store keeps unique
// constraints on it.
func (s *Store) constrained(table string) (model.Table, bool) {
	if s.kind != model.Replica {
		return model.Table{}, false
	}
	t, ok := s.schema[table]
	return t, ok && len(t.Unique) > 0
}

// index adds k's unique values; in an open transaction it notes them for
// the check at commit, or checks them at once when it is immediate.
func (s *Store) index(k model.Key, row model.Row, tx *storeTxn) {
	def, ok := s.constrained(k.Table)
	if !ok || row == nil {
		return
	}
	for i := range def.Unique {
		v, ok := def.UniqueValue(i, k.PK, row)
		if !ok {
			continue
		}
		slot := uniqSlot{k.Table, i, v}
		holders := append(s.uniq[slot], k.PK)
		slices.Sort(holders)
		s.uniq[slot] = holders
		if tx == nil {
			continue
		}
		tx.touched = append(tx.touched, slot)
		if tx.immediate && len(holders) > 1 && tx.violation == nil {
			tx.violation = s.violation(def, slot, false)
		}
	}
}

// unindex removes k's unique values.
func (s *Store) unindex(k model.Key, row model.Row) {
	def, ok := s.constrained(k.Table)
	if !ok || row == nil {
		return
	}
	for i := range def.Unique {
		if v, ok := def.UniqueValue(i, k.PK, row); ok {
			slot := uniqSlot{k.Table, i, v}
			holders := slices.DeleteFunc(s.uniq[slot], func(pk string) bool { return pk == k.PK })
			if len(holders) == 0 {
				delete(s.uniq, slot)
			} else {
				s.uniq[slot] = holders
			}
		}
	}
}

func (s *Store) violation(def model.Table, slot uniqSlot, deferred bool) error {
	h := s.uniq[slot]
	return &model.UniqueViolationError{Table: def.Name, Columns: def.Unique[slot.i], Value: strings.ReplaceAll(slot.value, "\x00", ", "),
		Keys: [2]string{h[0], h[1]}, Deferred: deferred}
}

// begin opens a replica transaction (other kinds have none).
func (s *Store) begin(immediate bool) {
	if s.kind == model.Replica {
		s.txn = &storeTxn{immediate: immediate, schema: s.schema}
	}
}

// commit checks the deferred constraints and ends the transaction: on a
// violation it undoes everything and returns it.
func (s *Store) commit() error {
	tx := s.txn
	if tx == nil {
		return nil
	}
	s.txn = nil
	err := tx.violation
	if err == nil {
		for _, slot := range tx.touched {
			if len(s.uniq[slot]) > 1 {
				err = s.violation(s.schema[slot.table], slot, true)
				break
			}
		}
	}
	if err == nil {
		return nil
	}
	for i := len(tx.undo) - 1; i >= 0; i-- {
		u := tx.undo[i]
		s.unindex(u.k, s.row(u.k))
		if u.had {
			s.docs[u.k] = u.doc
			s.changed(u.k)
			s.n.Disk().Put(u.doc.disk, u.doc.onDisk())
		} else {
			delete(s.docs, u.k)
			s.changed(u.k)
			s.n.Disk().Delete(s.docDiskKey(u.k))
		}
	}
	// The schema and the index as they were, and on disk too: a crash
	// must not keep part of a refused batch (the store syncs after every
	// batch, so this sync makes durable only the state before it).
	tables := make([]model.Table, 0, len(tx.schema))
	for _, name := range slices.Sorted(maps.Keys(tx.schema)) {
		tables = append(tables, tx.schema[name])
	}
	s.schema = tx.schema
	s.n.Disk().Put("schema", tables)
	s.reindex()
	s.sync()
	return fmt.Errorf("replica refused the batch: %w", err)
}

// journal keeps k's document before the open transaction first changes it.
func (s *Store) journal(k model.Key) {
	d, had := s.docs[k]
	s.keep(k, d, had)
}

// keep journals d, k's document before the open transaction changes it
// (had: whether k held one), if a transaction is open.
func (s *Store) keep(k model.Key, d storedDoc, had bool) {
	if s.txn != nil {
		s.txn.undo = append(s.txn.undo, undoRow{k: k, doc: d, had: had})
	}
}

// setDoc writes k's document d over prev, the one it holds (had: whether
// it holds one). The store keeps its own copy of d's row: a real store
// gets the row over the network, so what the sender does with its map
// afterwards must not change the document.
func (s *Store) setDoc(k model.Key, d, prev storedDoc, had bool) {
	s.keep(k, prev, had)
	d.row = d.row.Clone()
	if _, ok := s.constrained(k.Table); ok {
		s.unindex(k, prev.row)
		s.index(k, d.row, s.txn)
	}
	if durable(s.kind) {
		d.disk = prev.disk
		if d.disk == "" {
			d.disk = docKey("doc", k)
		}
		s.n.Disk().Put(d.disk, d.onDisk())
	}
	s.docs[k] = d
	s.changed(k)
	if _, ok := s.tombs[k]; ok {
		delete(s.tombs, k)
		if durable(s.kind) {
			s.n.Disk().Delete(docKey("tomb", k))
		}
	}
}

func (s *Store) deleteDoc(k model.Key, lsn model.LSN) {
	s.journal(k)
	if _, ok := s.constrained(k.Table); ok {
		s.unindex(k, s.row(k))
	}
	if durable(s.kind) {
		s.n.Disk().Delete(s.docDiskKey(k))
	}
	delete(s.docs, k)
	s.changed(k)
	if s.kind == model.Search {
		s.tombs[k] = lsn
		s.n.Disk().Put(docKey("tomb", k), lsn)
	}
}

func (s *Store) setPos(p model.Position) {
	s.pos, s.hasPos = p, true
	if durable(s.kind) {
		s.n.Disk().Put("pos", p)
	}
	s.heard()
}

// heard tells the audit, if any, the position the store holds now.
func (s *Store) heard() {
	if s.audit != nil {
		s.audit(model.PositionWrite{Store: s.name, At: s.n.World().Now(), Position: s.pos, Lost: !s.hasPos})
	}
}

func (s *Store) sync() {
	if durable(s.kind) {
		s.n.Disk().Sync()
	}
}

// reset drops every document for a batch that starts again from the
// snapshot its first transaction is, and counts revisions from there.
func (s *Store) reset(b pipeline.Batch) {
	if s.kind == model.Search {
		s.revsFrom = 0
		if len(b.Txns) > 0 && b.Txns[0].Snapshot {
			s.revsFrom = b.Txns[0].CommitLSN
		}
		s.n.Disk().Put("revsfrom", s.revsFrom)
		s.resets++
		s.n.Disk().Put("resets", s.resets)
	}
	clear(s.uniq)
	for _, k := range model.SortedKeys(s.docs) {
		s.journal(k)
		if durable(s.kind) {
			s.n.Disk().Delete(s.docDiskKey(k))
		}
		delete(s.docs, k)
		s.changed(k)
	}
	for _, k := range model.SortedKeys(s.tombs) {
		delete(s.tombs, k)
		if durable(s.kind) {
			s.n.Disk().Delete(docKey("tomb", k))
		}
	}
}

// write applies one change. guarded skips it when the store already holds
// this version or a newer one (external versioning); unguarded it is a
// blind write, as naive dual writes do.
func (s *Store) write(c model.Change, lsn model.LSN, guarded bool) {
	if len(c.Unchanged) > 0 {
		// Unchanged columns keep the values held for the row (the old
		// key's on a key change), read before that key is deleted.
		c = model.MergeUnchanged(c, s.row(c.UnchangedFrom()))
	}
	if c.OldPK != "" && c.OldPK != c.PK {
		s.write(model.Change{Table: c.Table, PK: c.OldPK, Op: model.OpDelete}, lsn, guarded)
	}
	k := c.Key()
	prev, had := s.docs[k]
	if guarded {
		if had && prev.lsn >= lsn {
			return
		}
		if t, dead := s.tombs[k]; dead && t >= lsn {
			return
		}
	}
	if c.Op == model.OpDelete {
		s.deleteDoc(k, lsn)
		return
	}
	s.setDoc(k, storedDoc{lsn: lsn, revs: model.ChangeRevs(c, prev.revs, had), row: c.Row}, prev, had)
}

// checkBase refuses a batch the store is not where it expects (see
// pipeline.Batch's Base and Fresh).
func (s *Store) checkBase(b pipeline.Batch) error {
	if b.Refuses(s.pos, s.hasPos) {
		return pipeline.ErrPositionMismatch
	}
	return nil
}

// writeTxn applies a transaction's changes in order, after filling the
// unchanged columns that come from another key's row as it stood before
// the transaction (model.ResolveFrom).
func (s *Store) writeTxn(t model.Txn, guarded bool) {
	s.announce(t)
	t = model.ResolveFrom(t, s.row)
	for _, c := range t.Changes {
		s.write(c, t.CommitLSN, guarded)
	}
}

// Load writes a transaction's changes directly, as the application's
// initial load does for naive dual writes (which have no log to replay).
func (s *Store) Load(t model.Txn) error {
	s.begin(false)
	s.writeTxn(t, false)
	if err := s.commit(); err != nil {
		return err
	}
	s.sync()
	return nil
}

// applyBatch applies whole transactions and the new position in one step:
// in the replica, one transaction that a unique violation refuses whole.
// A reset takes the table definitions of the snapshot that starts it.
//
// How the replica's whole readers see a reset is PostgreSQL's (pgstore's
// Replica): it empties tables whose definitions stay with DELETE, which a
// reader with an older snapshot does not see; a table it must drop and
// make again (a definition changed) it drops under a lock every whole
// reader holds from before its snapshot, so PostgreSQL has the reset wait
// for those readers, and they read the replica as their snapshot had it.
// The simulator commits the reset at once and lets those readers keep
// their snapshot: what they read is the same, only the reset is not held
// back for them. With ddl (the reset-by-ddl bug) every table is dropped
// and made again with no such lock: see WholeRead for what a reader finds.
func (s *Store) applyBatch(b pipeline.Batch, guarded, immediate, ddl bool) error {
	if err := s.checkBase(b); err != nil {
		return err
	}
	s.begin(immediate)
	var drops []string // the tables a reset by DDL drops, once it commits
	if b.Reset {
		s.reset(b)
		if s.kind == model.Replica && len(b.Txns) > 0 {
			if ddl { // Broken: DROP SCHEMA CASCADE, no lock readers take.
				drops = slices.Sorted(maps.Keys(s.schema))
			}
			s.setSchema(b.Txns[0].Schema)
		}
	}
	for _, t := range b.Txns {
		s.writeTxn(t, guarded)
	}
	if err := s.commit(); err != nil {
		return err
	}
	for _, name := range drops {
		s.dropped[name]++
	}
	s.setPos(b.Position)
	s.sync()
	return nil
}

// StoreClient is a sink applier's connection to a store (pipeline.Store).
// The replica and the cache take a batch in one atomic call; the search
// index takes one call per document and one for the position, so a crash
// between them leaves a partial batch that the next attempt must complete
// idempotently.
type StoreClient struct {
	From, To  *sim.Node
	StoreKind model.StoreKind
	Timeout   time.Duration
	// Blind turns off the per-document version check (a bug variant: a
	// non-idempotent sink).
	Blind bool
	// ImmediateUnique checks the replica's unique constraints at every row
	// written instead of at commit (a bug variant: the unique-row-by-row
	// apply).
	ImmediateUnique bool
	// DDLReset has the replica's rebuild drop and make again every table
	// with no lock its whole readers take (a bug variant: reset-by-ddl).
	DDLReset bool
}

func (c *StoreClient) timeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Kind implements pipeline.Store.
func (c *StoreClient) Kind() model.StoreKind { return c.StoreKind }

// Apply implements pipeline.Store.
func (c *StoreClient) Apply(ctx context.Context, b pipeline.Batch) error {
	guarded := !c.Blind
	if c.StoreKind != model.Search {
		immediate, ddl := c.ImmediateUnique, c.DDLReset
		_, err := sim.Call(ctx, c.From, c.To, c.timeout(), func(s *Store) (struct{}, error) {
			return struct{}{}, s.applyBatch(b, guarded, immediate, ddl)
		})
		return err
	}
	// A reset batch's requests after its reset belong to that reset: a
	// newer reset (another applier's rebuild, which passed the same base
	// or Fresh check since the index has no new position until the last
	// request) removed what they build on, so they are refused.
	reset := 0
	call := func(fn func(s *Store)) error {
		_, err := sim.Call(ctx, c.From, c.To, c.timeout(), func(s *Store) (struct{}, error) {
			if err := s.checkBase(b); err != nil {
				return struct{}{}, err
			}
			if reset != 0 && s.resets != reset {
				return struct{}{}, fmt.Errorf("another reset came after this batch's: %w", pipeline.ErrPositionMismatch)
			}
			fn(s)
			s.sync()
			return struct{}{}, nil
		})
		return err
	}
	if b.Reset {
		n, err := sim.Call(ctx, c.From, c.To, c.timeout(), func(s *Store) (int, error) {
			if err := s.checkBase(b); err != nil {
				return 0, err
			}
			s.reset(b)
			s.sync()
			return s.resets, nil
		})
		if err != nil {
			return err
		}
		reset = n
	}
	// Unchanged columns across bulk requests: read the stored rows they
	// come from first (a search engine's multi-get), as the real adapter
	// does, since no one request sees the whole transaction.
	txns, err := store.ResolveUnchanged(b.Txns, func(keys []model.Key) (map[model.Key]model.Row, error) {
		return sim.Call(ctx, c.From, c.To, c.timeout(), func(s *Store) (map[model.Key]model.Row, error) {
			out := map[model.Key]model.Row{}
			for _, k := range keys {
				if r := s.row(k); r != nil {
					out[k] = r.Clone() // the store's own row: hand out a copy
				}
			}
			return out, nil
		})
	})
	if err != nil {
		return err
	}
	// Bulk requests of at most BulkDocs documents, each applied on its own:
	// a crash between two leaves the batch half done.
	type docWrite struct {
		c   model.Change
		lsn model.LSN
	}
	left := 0 // documents not yet in a request
	for _, t := range txns {
		left += len(t.Changes)
	}
	// Each request's slice is made at its final size (the handler keeps
	// it until it runs, so it is not reused).
	bulk := make([]docWrite, 0, min(left, BulkDocs))
	flush := func(last bool) error {
		docs := bulk
		left -= len(docs)
		bulk = make([]docWrite, 0, min(left, BulkDocs))
		return call(func(s *Store) {
			for _, d := range docs {
				s.write(d.c, d.lsn, guarded)
			}
			if last { // the position document goes last in the last request
				s.setPos(b.Position)
			}
		})
	}
	for _, t := range txns {
		for _, ch := range t.Changes {
			bulk = append(bulk, docWrite{ch, t.CommitLSN})
			if len(bulk) == BulkDocs {
				if err := flush(false); err != nil {
					return err
				}
			}
		}
	}
	return flush(true)
}

// BulkDocs is the most documents the search index takes in one request.
const BulkDocs = 16

// Position implements pipeline.Store.
func (c *StoreClient) Position(ctx context.Context) (model.Position, bool, error) {
	type answer struct {
		pos model.Position
		ok  bool
	}
	a, err := sim.Call(ctx, c.From, c.To, c.timeout(), func(s *Store) (answer, error) {
		p, ok := s.Position()
		return answer{p, ok}, nil
	})
	return a.pos, a.ok, err
}

// Write implements pipeline.DirectStore: one blind request.
func (c *StoreClient) Write(ctx context.Context, t model.Txn) error {
	_, err := sim.Call(ctx, c.From, c.To, c.timeout(), func(s *Store) (struct{}, error) { return struct{}{}, s.Load(t) })
	return err
}

// ReadResult is one sampled read.
type ReadResult struct {
	Doc   model.Doc
	Found bool
}

// Read reads one document over the network, as an observer would.
func Read(ctx context.Context, from, to *sim.Node, k model.Key, timeout time.Duration) (ReadResult, error) {
	return sim.Call(ctx, from, to, timeout, func(s *Store) (ReadResult, error) {
		d, ok := s.read(k)
		return ReadResult{Doc: d, Found: ok}, nil
	})
}

// ReadAll reads the whole store as pgstore's Replica.ReadAll does: a
// repeatable-read transaction that takes its snapshot with its first
// request and reads the tables' rows with its second (BeginReadAll, then
// WholeRead.Finish).
func ReadAll(ctx context.Context, from, to *sim.Node, timeout time.Duration) (model.Snapshot, error) {
	r, err := BeginReadAll(ctx, from, to, timeout)
	if err != nil {
		return model.Snapshot{}, err
	}
	return r.Finish(ctx)
}

// WholeRead is a whole read of a store under way: its snapshot is taken
// (the position and the table definitions, read in PostgreSQL by the first
// statements of a REPEATABLE READ transaction), its rows not yet read.
//
// What PostgreSQL shows such a reader of a table dropped and created again
// after its snapshot (DDL is not MVCC-safe): names are looked up in the
// catalog as it is now, so the reader finds the new table, whose rows were
// all written after its snapshot and are invisible to it: the table is
// empty to it, beside the old position (a torn read); a table dropped and
// not made again is not there at all ("relation does not exist"). Rows
// written or deleted by DML after the snapshot it does not see, whatever
// the table held since.
type WholeRead struct {
	from, to *sim.Node
	timeout  time.Duration
	snap     model.Snapshot
	inc      int            // the store's incarnation: its session
	dropped  map[string]int // Store.dropped of the snapshot's tables
}

// BeginReadAll takes a whole read's snapshot of the store (its first
// request).
func BeginReadAll(ctx context.Context, from, to *sim.Node, timeout time.Duration) (*WholeRead, error) {
	return sim.Call(ctx, from, to, timeout, func(s *Store) (*WholeRead, error) {
		r := &WholeRead{from: from, to: to, timeout: timeout, snap: s.Snapshot(to.Name(), 0), inc: s.n.Incarnation(),
			dropped: make(map[string]int, len(s.schema))}
		for name := range s.schema {
			r.dropped[name] = s.dropped[name]
		}
		return r, nil
	})
}

// Finish reads the rows and ends the read. Like pgstore's reader it
// first checks that the tables exist and reads their definitions, two
// round trips that change nothing it sees (the definitions are the
// snapshot's) but come between its snapshot and its rows, as on
// PostgreSQL. It returns the snapshot's documents, but none of a table
// dropped and made again since (empty to this reader), and an error for a
// table dropped and not made again or when the store restarted (the
// reader's session died with it).
func (r *WholeRead) Finish(ctx context.Context) (model.Snapshot, error) {
	for range 2 {
		if _, err := r.call(ctx, func(*Store) (model.Snapshot, error) { return model.Snapshot{}, nil }); err != nil {
			return model.Snapshot{}, err
		}
	}
	return r.call(ctx, func(s *Store) (model.Snapshot, error) {
		snap := r.snap
		var remade []string
		for _, name := range slices.Sorted(maps.Keys(r.dropped)) {
			if s.dropped[name] == r.dropped[name] {
				continue
			}
			if _, ok := s.schema[name]; !ok {
				return model.Snapshot{}, fmt.Errorf("read %s: relation does not exist (dropped after the read's snapshot)", name)
			}
			remade = append(remade, name)
		}
		if len(remade) > 0 {
			// A copy: the store may hand the same documents to other readers.
			snap.Docs = maps.Clone(snap.Docs)
			maps.DeleteFunc(snap.Docs, func(k model.Key, _ model.Doc) bool { return slices.Contains(remade, k.Table) })
		}
		return snap, nil
	})
}

// call is one request of the read's session, which a restart of the store
// ended.
func (r *WholeRead) call(ctx context.Context, fn func(s *Store) (model.Snapshot, error)) (model.Snapshot, error) {
	return sim.Call(ctx, r.from, r.to, r.timeout, func(s *Store) (model.Snapshot, error) {
		if s.n.Incarnation() != r.inc {
			return model.Snapshot{}, fmt.Errorf("%s restarted during a whole read: its transaction is gone", r.to.Name())
		}
		return fn(s)
	})
}
