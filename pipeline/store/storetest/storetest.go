// Package storetest checks a real store adapter against the simulated
// stores' semantics: Ref is an in-memory reference store built on the same
// rules as sim/services (store.Overlay), and Run drives an adapter and the
// reference through the same batches and writes and compares them after
// every step: documents, versions, revision counts and the saved position.
//
// An adapter's own test package calls Run with a Harness that opens the
// adapter over a real service (PostgreSQL, Redis) and, for a volatile store,
// makes that service lose its data.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/store"
)

// Store is what every real store adapter offers: the applier's port, the
// dual writers' port, and reads for observers and the checker.
type Store interface {
	pipeline.Store
	pipeline.DirectStore
	// Read returns one live document.
	Read(ctx context.Context, k model.Key) (model.Doc, bool, error)
	// ReadAll returns every live document and the position, read at one
	// instant.
	ReadAll(ctx context.Context) (model.Snapshot, error)
	// Clear drops every document, tombstone and the position.
	Clear(ctx context.Context) error
}

// Ref is the reference store: the simulated store's semantics over a map.
// The zero value is not ready; use NewRef.
type Ref struct {
	Kind  model.StoreKind
	Blind bool

	slots  map[model.Key]store.Slot
	pos    model.Position
	hasPos bool
}

// NewRef returns an empty reference store of the given kind.
func NewRef(kind model.StoreKind, blind bool) *Ref {
	return &Ref{Kind: kind, Blind: blind, slots: map[model.Key]store.Slot{}}
}

// Apply applies a batch as the simulated store does, refusing one whose
// Base is not the store's position.
func (r *Ref) Apply(b pipeline.Batch) error {
	if b.Refuses(r.pos, r.hasPos) {
		return pipeline.ErrPositionMismatch
	}
	if b.Reset {
		clear(r.slots)
	}
	r.apply(b.Txns, !r.Blind)
	r.pos, r.hasPos = b.Position, true
	return nil
}

// Write applies a transaction blindly, as a dual writer does.
func (r *Ref) Write(t model.Txn) { r.apply([]model.Txn{t}, false) }

func (r *Ref) apply(txns []model.Txn, guarded bool) {
	o := store.NewOverlay(r.Kind, guarded, r.slots)
	for _, t := range txns {
		o.ApplyTxn(t)
	}
	for _, w := range o.Changed() {
		if w.Slot == (store.Slot{}) {
			delete(r.slots, w.Key)
		} else {
			r.slots[w.Key] = w.Slot
		}
	}
}

// Clear empties the store.
func (r *Ref) Clear() { clear(r.slots); r.pos, r.hasPos = model.Position{}, false }

// Lose is a volatile store's restart: everything is gone.
func (r *Ref) Lose() { r.Clear() }

// Docs returns the live documents.
func (r *Ref) Docs() model.Docs {
	docs := model.Docs{}
	for k, s := range r.slots {
		if s.Live {
			docs[k] = s.Doc
		}
	}
	return docs
}

// Position returns the saved position.
func (r *Ref) Position() (model.Position, bool) { return r.pos, r.hasPos }

// Harness opens the adapter under test.
type Harness struct {
	Kind model.StoreKind
	// Open returns a new connection to the same backing store, Blind when
	// asked (the non-idempotent bug variant; Apply skips the version guard).
	Open func(t *testing.T, blind bool) Store
	// Lose, when set, makes the backing service lose everything, as a
	// volatile store's restart does; Open is called again afterwards.
	Lose func(t *testing.T)
}

// Run runs the conformance suite. The subtests share the backing store and
// clear it first, so they must not run in parallel.
func Run(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"Empty", testEmpty},
		{"ApplyAndReopen", testApplyAndReopen},
		{"BaseMismatch", testBaseMismatch},
		{"GuardedRedelivery", testGuardedRedelivery},
		{"Tombstones", testTombstones},
		{"NetShapes", testNetShapes},
		{"BlindApply", testBlindApply},
		{"Write", testWrite},
		{"Reset", testReset},
		{"Random", testRandom},
		{"Clear", testClear},
		{"Lose", testLose},
		{"Fresh", testFresh},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// pair is the adapter and the reference, driven together.
type pair struct {
	t   *testing.T
	h   Harness
	s   Store
	ref *Ref
}

func start(t *testing.T, h Harness, blind bool) *pair {
	t.Helper()
	s := h.Open(t, blind)
	if err := s.Clear(ctx(t)); err != nil {
		t.Fatalf("clear: %v", err)
	}
	if s.Kind() != h.Kind {
		t.Fatalf("Kind() = %s, want %s", s.Kind(), h.Kind)
	}
	return &pair{t: t, h: h, s: s, ref: NewRef(h.Kind, blind)}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// apply applies b to both and checks they agree on the outcome.
func (p *pair) apply(b pipeline.Batch) error {
	p.t.Helper()
	want := p.ref.Apply(b)
	got := p.s.Apply(ctx(p.t), b)
	if (want == nil) != (got == nil) || (want != nil && !errors.Is(got, want)) {
		p.t.Fatalf("Apply(%s) = %v, want %v", describe(b), got, want)
	}
	return got
}

func (p *pair) write(t model.Txn) {
	p.t.Helper()
	p.ref.Write(t)
	if err := p.s.Write(ctx(p.t), t); err != nil {
		p.t.Fatalf("Write(%s) = %v", t, err)
	}
}

// check compares the adapter's whole content and position with the
// reference's, and every reference document read on its own.
func (p *pair) check(what string) {
	p.t.Helper()
	Equal(p.t, what, p.s, p.ref)
}

// Equal fails t when s and ref differ in documents or position.
func Equal(t *testing.T, what string, s Store, ref *Ref) {
	t.Helper()
	snap, err := s.ReadAll(ctx(t))
	if err != nil {
		t.Fatalf("%s: ReadAll: %v", what, err)
	}
	want := ref.Docs()
	if !maps.Equal(snap.Docs, want) {
		t.Fatalf("%s: documents differ from the reference:\n%s", what, diff(snap.Docs, want))
	}
	pos, ok := ref.Position()
	if snap.HasPosition != ok || (ok && snap.Position != pos) {
		t.Fatalf("%s: ReadAll position %v (has %v), want %v (has %v)", what, snap.Position, snap.HasPosition, pos, ok)
	}
	gotPos, gotOK, err := s.Position(ctx(t))
	if err != nil {
		t.Fatalf("%s: Position: %v", what, err)
	}
	if gotOK != ok || (ok && gotPos != pos) {
		t.Fatalf("%s: Position() = %v, %v, want %v, %v", what, gotPos, gotOK, pos, ok)
	}
	for _, k := range model.SortedKeys(want) {
		d, found, err := s.Read(ctx(t), k)
		if err != nil || !found || d != want[k] {
			t.Fatalf("%s: Read(%s) = %+v, %v, %v, want %+v", what, k, d, found, err, want[k])
		}
	}
	if _, found, err := s.Read(ctx(t), model.Key{Table: "nosuch", PK: "x"}); err != nil || found {
		t.Fatalf("%s: Read of a missing key = found %v, %v", what, found, err)
	}
}

func diff(got, want model.Docs) string {
	var b strings.Builder
	all := maps.Clone(got)
	maps.Copy(all, want)
	for _, k := range model.SortedKeys(all) {
		g, gok := got[k]
		w, wok := want[k]
		if gok != wok || g != w {
			fmt.Fprintf(&b, "  %s: got %+v (%v), want %+v (%v)\n", k, g, gok, w, wok)
		}
	}
	return b.String()
}

func describe(b pipeline.Batch) string {
	base := "nil"
	if b.Base != nil {
		base = b.Base.String()
	}
	return fmt.Sprintf("%d txns reset=%v base=%s fresh=%v to %s", len(b.Txns), b.Reset, base, b.Fresh, b.Position)
}

// Helpers building changes.

func ins(table, pk string, row model.Row) model.Change {
	return model.Change{Table: table, PK: pk, Op: model.OpInsert, Row: row}
}

func upd(table, pk string, row model.Row) model.Change {
	return model.Change{Table: table, PK: pk, Op: model.OpUpdate, Row: row}
}

func del(table, pk string) model.Change {
	return model.Change{Table: table, PK: pk, Op: model.OpDelete}
}

func txn(lsn model.LSN, cs ...model.Change) model.Txn {
	return model.Txn{XID: uint64(lsn), CommitLSN: lsn, Changes: cs}
}

func posp(p model.Position) *model.Position { return &p }

func testEmpty(t *testing.T, h Harness) {
	p := start(t, h, false)
	p.check("a cleared store")
	snap, err := p.s.ReadAll(ctx(t))
	if err != nil || snap.HasPosition || len(snap.Docs) != 0 {
		t.Fatalf("cleared store: %+v, %v", snap, err)
	}
}

// Data and position change together and survive a new connection.
func testApplyAndReopen(t *testing.T, h Harness) {
	p := start(t, h, false)
	p.apply(pipeline.Batch{
		Txns: []model.Txn{
			txn(10, ins("users", "u1", model.R("name", "Ann Lee", "bio", "likes Tango tango")), ins("users", "u2", model.R("name", "Bo"))),
			txn(20, upd("users", "u1", model.R("name", "Ann Lee", "bio", "golf")), ins("accounts", "a1", model.R("balance", "100"))),
			txn(30, del("users", "u2"), model.Change{Table: "accounts", PK: "a2", OldPK: "a1", Op: model.OpUpdate, Row: model.R("balance", "100")}),
		},
		Position: model.Position{Offset: 3, LSN: 30},
	})
	p.check("after one batch")
	p.apply(pipeline.Batch{
		Txns:     []model.Txn{txn(40, upd("users", "u1", model.R("name", "Ann Lee", "bio", "chess")))},
		Position: model.Position{Offset: 4, LSN: 40},
		Base:     posp(model.Position{Offset: 3, LSN: 30}),
	})
	p.check("after a second batch")
	if d, _, _ := p.s.Read(ctx(t), model.Key{Table: "users", PK: "u1"}); h.Kind == model.Search && d.Revs != 3 {
		t.Fatalf("search revs after insert and two updates = %d, want 3", d.Revs)
	}
	p.s = h.Open(t, false)
	p.check("after reconnecting")
}

// A batch whose Base is not the store's position changes nothing.
func testBaseMismatch(t *testing.T, h Harness) {
	p := start(t, h, false)
	err := p.apply(pipeline.Batch{
		Txns:     []model.Txn{txn(10, ins("t", "k1", model.R("v", "one")))},
		Position: model.Position{Offset: 1, LSN: 10},
		Base:     posp(model.Position{}),
	})
	if !errors.Is(err, pipeline.ErrPositionMismatch) {
		t.Fatalf("a batch with a Base on a store without position: %v, want ErrPositionMismatch", err)
	}
	p.check("after a refused batch on an empty store")
	p.apply(pipeline.Batch{
		Txns:     []model.Txn{txn(10, ins("t", "k1", model.R("v", "one")))},
		Position: model.Position{Offset: 1, LSN: 10},
	})
	var many []model.Txn
	for i := range 40 { // more than one search bulk request
		many = append(many, txn(model.LSN(20+i), upd("t", "k1", model.R("v", fmt.Sprint("v", i))), ins("t", fmt.Sprint("n", i), model.R("v", "x"))))
	}
	for _, base := range []model.Position{{Offset: 0, LSN: 10}, {Offset: 1, LSN: 9}, {Offset: 2, LSN: 20}} {
		err := p.apply(pipeline.Batch{Txns: many, Position: model.Position{Offset: 41, LSN: 59}, Base: posp(base)})
		if !errors.Is(err, pipeline.ErrPositionMismatch) {
			t.Fatalf("base %s on a store at offset=1 lsn=10: %v, want ErrPositionMismatch", base, err)
		}
		p.check("after a refused batch")
	}
	p.apply(pipeline.Batch{Txns: many, Position: model.Position{Offset: 41, LSN: 59}, Base: posp(model.Position{Offset: 1, LSN: 10})})
	p.check("after the right base")
}

// Redelivered changes the store holds are skipped: values, versions and
// revision counts stay; an older version never overwrites a newer one.
func testGuardedRedelivery(t *testing.T, h Harness) {
	p := start(t, h, false)
	txns := []model.Txn{
		txn(10, ins("t", "k1", model.R("v", "a")), ins("t", "k2", model.R("v", "b"))),
		txn(20, upd("t", "k1", model.R("v", "c"))),
		txn(30, upd("t", "k1", model.R("v", "d")), del("t", "k2")),
	}
	p.apply(pipeline.Batch{Txns: txns, Position: model.Position{Offset: 3, LSN: 30}})
	p.check("first delivery")
	before, err := p.s.ReadAll(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	p.apply(pipeline.Batch{Txns: txns, Position: model.Position{Offset: 3, LSN: 30}, Base: posp(model.Position{Offset: 3, LSN: 30})})
	p.check("redelivery")
	p.apply(pipeline.Batch{Txns: txns[1:2], Position: model.Position{Offset: 3, LSN: 30}, Base: posp(model.Position{Offset: 3, LSN: 30})})
	p.check("an older version alone")
	after, _ := p.s.ReadAll(ctx(t))
	k1 := model.Key{Table: "t", PK: "k1"}
	if after.Docs[k1] != before.Docs[k1] {
		t.Fatalf("redelivery changed %s: %+v -> %+v", k1, before.Docs[k1], after.Docs[k1])
	}
}

// What applications do in one transaction, as the applier hands it over
// (model.Net): rows changed twice, deleted and re-inserted, moved to a new
// key, and updates that leave an out-of-line column unchanged, which the
// store fills from the row it holds (the old key's on a key change), also
// when an earlier transaction of the same batch wrote that row.
func testNetShapes(t *testing.T, h Harness) {
	p := start(t, h, false)
	big := strings.Repeat("blob ", 700)
	unchanged := func(c model.Change, cols ...string) model.Change { c.Unchanged = cols; return c }
	p.apply(pipeline.Batch{Txns: []model.Txn{
		txn(10, ins("t", "1", model.R("v", "a", "b", big)), ins("t", "2", model.R("v", "b")),
			ins("t", "3", model.R("v", "c")), ins("t", "6", model.R("v", "f", "b", big))),
	}, Position: model.Position{Offset: 1, LSN: 10}})
	p.check("initial rows")
	raw := []model.Txn{
		txn(20, upd("t", "6", model.R("v", "f1", "b", big)), unchanged(upd("t", "6", model.R("v", "f2")), "b")),
		txn(30, ins("t", "5", model.R("v", "e")), upd("t", "5", model.R("v", "e2")), upd("t", "2", model.R("v", "b2")), del("t", "2")),
		txn(40, unchanged(upd("t", "1", model.R("v", "a2")), "b"), unchanged(model.Change{Table: "t", PK: "101", OldPK: "1", Op: model.OpUpdate, Row: model.R("v", "a2")}, "b")),
		txn(50, del("t", "3"), ins("t", "3", model.R("v", "c2"))),
		txn(60, unchanged(model.Change{Table: "t", PK: "102", OldPK: "101", Op: model.OpUpdate, Row: model.R("v", "a3")}, "b")),
	}
	net := make([]model.Txn, len(raw))
	for i, t := range raw {
		net[i] = model.Net(t)
	}
	p.apply(pipeline.Batch{Txns: net[:2], Position: model.Position{Offset: 3, LSN: 30}, Base: posp(model.Position{Offset: 1, LSN: 10})})
	p.check("update/update, insert/update, update/delete")
	p.apply(pipeline.Batch{Txns: net[2:], Position: model.Position{Offset: 6, LSN: 60}, Base: posp(model.Position{Offset: 3, LSN: 30})})
	p.check("key changes with unchanged columns, delete/re-insert")
	docs, err := p.s.ReadAll(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"1", "101"} {
		if _, ok := docs.Docs[model.Key{Table: "t", PK: k}]; ok {
			t.Errorf("key %s is still in the store after the row moved to 102", k)
		}
	}
	if d, ok := docs.Docs[model.Key{Table: "t", PK: "102"}]; !ok || (h.Kind != model.Search && !strings.Contains(d.Value, big)) {
		t.Errorf("t/102 = %+v (found %v): want the moved row with its unchanged column", d, ok)
	}
}

// The search index keeps tombstones: a redelivered older write of a deleted
// document does not bring it back. The replica and the cache keep none
// (their applier never redelivers below its position).
func testTombstones(t *testing.T, h Harness) {
	p := start(t, h, false)
	k := model.Key{Table: "t", PK: "k"}
	p.apply(pipeline.Batch{Txns: []model.Txn{txn(10, ins("t", "k", model.R("v", "alive")))}, Position: model.Position{Offset: 1, LSN: 10}})
	p.apply(pipeline.Batch{Txns: []model.Txn{txn(20, del("t", "k"))}, Position: model.Position{Offset: 2, LSN: 20}})
	p.apply(pipeline.Batch{Txns: []model.Txn{txn(10, ins("t", "k", model.R("v", "alive")))}, Position: model.Position{Offset: 2, LSN: 20}})
	p.check("older insert after a delete")
	_, found, err := p.s.Read(ctx(t), k)
	if err != nil {
		t.Fatal(err)
	}
	if h.Kind == model.Search && found {
		t.Fatal("search: a redelivered insert resurrected a deleted document")
	}
	// A newer write after the delete does bring it back, counting afresh.
	p.apply(pipeline.Batch{Txns: []model.Txn{txn(30, upd("t", "k", model.R("v", "again")))}, Position: model.Position{Offset: 3, LSN: 30}})
	p.check("newer write after a delete")
	if d, _, _ := p.s.Read(ctx(t), k); h.Kind == model.Search && d.Revs != 1 {
		t.Fatalf("search revs after delete and rewrite = %d, want 1", d.Revs)
	}
}

// Blind apply (the non-idempotent bug variant) re-applies what the store
// holds: the search index's revision count goes up again.
func testBlindApply(t *testing.T, h Harness) {
	p := start(t, h, true)
	txns := []model.Txn{txn(10, ins("t", "k", model.R("v", "a"))), txn(20, upd("t", "k", model.R("v", "b")))}
	p.apply(pipeline.Batch{Txns: txns, Position: model.Position{Offset: 2, LSN: 20}})
	p.apply(pipeline.Batch{Txns: txns[1:], Position: model.Position{Offset: 2, LSN: 20}})
	p.check("blind redelivery")
	if d, _, _ := p.s.Read(ctx(t), model.Key{Table: "t", PK: "k"}); h.Kind == model.Search && d.Revs != 3 {
		t.Fatalf("search revs after a blind redelivery = %d, want 3", d.Revs)
	}
	// An older version overwrites a newer one when blind.
	p.apply(pipeline.Batch{Txns: txns[:1], Position: model.Position{Offset: 2, LSN: 20}})
	p.check("blind older version")
}

// Write is a dual writer's blind request: no version check, no position.
func testWrite(t *testing.T, h Harness) {
	p := start(t, h, false)
	p.write(txn(10, ins("t", "k", model.R("v", "a")), ins("t", "j", model.R("v", "x"))))
	p.write(txn(20, upd("t", "k", model.R("v", "b"))))
	p.write(txn(20, upd("t", "k", model.R("v", "b"))))
	p.write(txn(5, upd("t", "j", model.R("v", "older")), del("t", "nothing")))
	p.check("blind writes")
	if d, _, _ := p.s.Read(ctx(t), model.Key{Table: "t", PK: "k"}); h.Kind == model.Search && d.Revs != 3 {
		t.Fatalf("search revs after an insert and the same update twice = %d, want 3", d.Revs)
	}
	var big model.Txn
	big.CommitLSN = 30
	for i := range 40 {
		big.Changes = append(big.Changes, upd("t", fmt.Sprint("b", i%25), model.R("v", fmt.Sprint("w", i))))
	}
	p.write(big)
	p.check("a large blind write")
}

// Reset drops every document (and tombstone) before the batch.
func testReset(t *testing.T, h Harness) {
	p := start(t, h, false)
	p.apply(pipeline.Batch{Txns: []model.Txn{
		txn(10, ins("t", "a", model.R("v", "1")), ins("t", "b", model.R("v", "2"))),
		txn(20, del("t", "b")),
	}, Position: model.Position{Offset: 2, LSN: 20}})
	snap := model.Txn{CommitLSN: 15, Snapshot: true, Changes: []model.Change{
		{Table: "t", PK: "b", Op: model.OpInsert, Row: model.R("v", "2"), Revs: 4},
		{Table: "t", PK: "c", Op: model.OpInsert, Row: model.R("v", "3"), Revs: 1},
	}}
	p.apply(pipeline.Batch{Reset: true, Txns: []model.Txn{snap}, Position: model.Position{Offset: 1, LSN: 15}})
	p.check("after a reset to an older snapshot")
	if d, ok, _ := p.s.Read(ctx(t), model.Key{Table: "t", PK: "b"}); !ok || (h.Kind == model.Search && d.Revs != 4) {
		t.Fatalf("snapshot row after reset: %+v, %v (want revs 4 in search)", d, ok)
	}
	p.apply(pipeline.Batch{Reset: true, Position: model.Position{Offset: 7, LSN: 70}, Base: posp(model.Position{Offset: 1, LSN: 15})})
	p.check("after an empty reset")
}

func testClear(t *testing.T, h Harness) {
	p := start(t, h, false)
	p.apply(pipeline.Batch{Txns: []model.Txn{txn(10, ins("t", "a", model.R("v", "1")), del("t", "b"))}, Position: model.Position{Offset: 1, LSN: 10}})
	if err := p.s.Clear(ctx(t)); err != nil {
		t.Fatal(err)
	}
	p.ref.Clear()
	p.check("after Clear")
	// The tombstone went too: an older write applies.
	p.apply(pipeline.Batch{Txns: []model.Txn{txn(5, ins("t", "b", model.R("v", "old")))}, Position: model.Position{Offset: 1, LSN: 5}})
	p.check("after Clear and an older write")
}

// A store whose service lost everything has no position, so the applier
// rebuilds it.
func testLose(t *testing.T, h Harness) {
	if h.Lose == nil {
		t.Skip("durable store")
	}
	p := start(t, h, false)
	p.apply(pipeline.Batch{Txns: []model.Txn{txn(10, ins("t", "a", model.R("v", "1")))}, Position: model.Position{Offset: 1, LSN: 10}})
	h.Lose(t)
	p.ref.Lose()
	p.s = h.Open(t, false)
	p.check("after the service lost its data")
	if _, ok, err := p.s.Position(ctx(t)); err != nil || ok {
		t.Fatalf("Position after losing data: ok=%v, %v; want no position", ok, err)
	}
	err := p.apply(pipeline.Batch{Txns: []model.Txn{txn(20, ins("t", "b", model.R("v", "2")))}, Position: model.Position{Offset: 2, LSN: 20}, Base: posp(model.Position{Offset: 1, LSN: 10})})
	if !errors.Is(err, pipeline.ErrPositionMismatch) {
		t.Fatalf("a batch after losing data: %v, want ErrPositionMismatch", err)
	}
}

// testRandom drives random batches, redeliveries, stale bases, resets and
// blind writes through the adapter and the reference and compares them
// after every step, guarded and blind.
func testRandom(t *testing.T, h Harness) {
	for _, blind := range []bool{false, true} {
		t.Run(fmt.Sprintf("blind=%v", blind), func(t *testing.T) {
			p := start(t, h, blind)
			rng := rand.New(rand.NewPCG(uint64(h.Kind), 7))
			g := &gen{rng: rng}
			var offset int64
			for step := range 60 {
				pos, has := p.ref.Position()
				var base *model.Position
				if has && rng.IntN(10) > 0 {
					base = posp(pos)
				}
				if has && rng.IntN(12) == 0 {
					base = posp(model.Position{Offset: pos.Offset + 1, LSN: pos.LSN})
				}
				switch r := rng.IntN(20); {
				case r < 2: // a rebuild from a snapshot
					offset++
					p.apply(pipeline.Batch{Reset: true, Txns: []model.Txn{g.snapshot()}, Position: model.Position{Offset: offset, LSN: g.lsn}})
				case r < 5 && len(g.past) > 0: // a redelivery of what was applied
					from := rng.IntN(len(g.past))
					p.apply(pipeline.Batch{Txns: g.past[from:], Position: pos, Base: base})
				case r < 7:
					p.write(g.txn(rng.IntN(30) + 1))
				default:
					n := 1 + rng.IntN(6)
					var txns []model.Txn
					for range n {
						size := 1 + rng.IntN(4)
						if rng.IntN(4) == 0 {
							size = 10 + rng.IntN(15)
						}
						txns = append(txns, g.txn(size))
					}
					offset += int64(n)
					if err := p.apply(pipeline.Batch{Txns: txns, Position: model.Position{Offset: offset, LSN: g.lsn}, Base: base}); err == nil {
						g.past = append(g.past, txns...)
					}
				}
				p.check(fmt.Sprintf("step %d", step))
			}
		})
	}
}

type gen struct {
	rng  *rand.Rand
	lsn  model.LSN
	past []model.Txn
}

var words = []string{"alpha", "Beta", "gamma", "delta", "Alpha", "tango", "x", "golf  club", ""}

func (g *gen) row() model.Row {
	r := model.Row{}
	for _, c := range []string{"name", "bio", "n"}[:1+g.rng.IntN(3)] {
		r.Set(c, words[g.rng.IntN(len(words))]+" "+words[g.rng.IntN(len(words))])
	}
	return r
}

func (g *gen) key() (string, string) {
	return []string{"users", "accounts"}[g.rng.IntN(2)], fmt.Sprint("k", g.rng.IntN(12))
}

func (g *gen) txn(n int) model.Txn {
	g.lsn += model.LSN(1 + g.rng.IntN(100))
	t := model.Txn{XID: uint64(g.lsn), CommitLSN: g.lsn}
	for range n {
		table, pk := g.key()
		switch r := g.rng.IntN(10); {
		case r < 3:
			t.Changes = append(t.Changes, ins(table, pk, g.row()))
		case r < 7:
			t.Changes = append(t.Changes, upd(table, pk, g.row()))
		case r < 9:
			t.Changes = append(t.Changes, del(table, pk))
		default:
			_, old := g.key()
			t.Changes = append(t.Changes, model.Change{Table: table, PK: pk, OldPK: old, Op: model.OpUpdate, Row: g.row()})
		}
	}
	return t
}

func (g *gen) snapshot() model.Txn {
	g.lsn += model.LSN(1 + g.rng.IntN(100))
	t := model.Txn{XID: uint64(g.lsn), CommitLSN: g.lsn, Snapshot: true}
	for i := range g.rng.IntN(20) {
		t.Changes = append(t.Changes, model.Change{Table: "users", PK: fmt.Sprint("k", i), Op: model.OpInsert, Row: g.row(), Revs: 1 + g.rng.IntN(5)})
	}
	g.past = nil
	return t
}

// OneWinner judges a race of appliers that all sent a batch from the same
// base position: exactly one may have applied it, every other must have
// been refused with pipeline.ErrPositionMismatch. It returns the winner.
func OneWinner(t *testing.T, round int, base model.Position, errs []error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			t.Fatalf("round %d: two appliers' batches applied from base %s", round, base)
		case !errors.Is(err, pipeline.ErrPositionMismatch):
			t.Fatalf("round %d: applier %d: %v", round, i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("round %d: every applier was refused: %v", round, errs)
	}
	return winner
}

// A fresh batch (a rebuild) is taken only by a store without a position:
// one that another writer brought up meanwhile refuses it and keeps what
// it holds, and one that lost its data takes it again.
func testFresh(t *testing.T, h Harness) {
	p := start(t, h, false)
	p.apply(pipeline.Batch{
		Reset:    true,
		Fresh:    true,
		Txns:     []model.Txn{txn(10, ins("t", "k1", model.R("v", "one")), ins("t", "k2", model.R("v", "two")))},
		Position: model.Position{Offset: 1, LSN: 10},
	})
	p.check("after a fresh rebuild of an empty store")
	p.apply(pipeline.Batch{
		Txns:     []model.Txn{txn(20, upd("t", "k1", model.R("v", "uno")))},
		Position: model.Position{Offset: 2, LSN: 20},
		Base:     posp(model.Position{Offset: 1, LSN: 10}),
	})
	var many []model.Txn // more than one search bulk request
	for i := range 40 {
		many = append(many, txn(model.LSN(1+i%9), ins("t", fmt.Sprint("old", i), model.R("v", "stale"))))
	}
	err := p.apply(pipeline.Batch{Reset: true, Fresh: true, Txns: many, Position: model.Position{Offset: 1, LSN: 9}})
	if !errors.Is(err, pipeline.ErrPositionMismatch) {
		t.Fatalf("a fresh rebuild over a store at offset=2 lsn=20: %v, want ErrPositionMismatch", err)
	}
	p.check("after a stale rebuild was refused")
	if err := p.s.Clear(ctx(t)); err != nil {
		t.Fatal(err)
	}
	p.ref.Clear()
	p.apply(pipeline.Batch{Reset: true, Fresh: true, Txns: many, Position: model.Position{Offset: 40, LSN: 9}})
	p.check("after a fresh rebuild of a cleared store")
}
