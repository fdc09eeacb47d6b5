package remote

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
)

// memDB is a source in memory: rows of table t, prepared transactions'
// changes, and a lock on rows a prepared transaction holds (a Get of one
// fails the transaction with ErrLockTimeout).
type memDB struct {
	mu        sync.Mutex
	rows      map[string]model.Row
	prepared  map[string][]model.Change
	committed []string
}

func (db *memDB) locked(pk string) bool {
	for _, cs := range db.prepared {
		if slices.ContainsFunc(cs, func(c model.Change) bool { return c.PK == pk }) {
			return true
		}
	}
	return false
}

// memTx records a transaction's statements.
type memTx struct {
	db      *memDB
	changes []model.Change
	err     error
}

func (t *memTx) Get(table, pk string) (model.Row, bool) {
	t.db.mu.Lock()
	defer t.db.mu.Unlock()
	if t.db.locked(pk) {
		t.err = twopc.ErrLockTimeout
		return nil, false
	}
	r, ok := t.db.rows[pk]
	return r, ok
}
func (t *memTx) Put(table, pk string, row model.Row) {
	t.changes = append(t.changes, model.Change{Table: table, PK: pk, Op: model.OpUpdate, Row: row})
}
func (t *memTx) Delete(table, pk string) {
	t.changes = append(t.changes, model.Change{Table: table, PK: pk, Op: model.OpDelete})
}
func (t *memTx) Rekey(table, pk, newPK string) {
	t.changes = append(t.changes, model.Change{Table: table, PK: newPK, OldPK: pk, Op: model.OpUpdate})
}
func (t *memTx) InsertRow(table string, row model.Row) {
	t.changes = append(t.changes, model.Change{Table: table, Op: model.OpInsert, Row: row})
}
func (t *memTx) DeleteRow(table string, row model.Row) {
	t.changes = append(t.changes, model.Change{Table: table, Op: model.OpDelete, Row: row})
}

type memSource struct{ db *memDB }

func (s memSource) Prepare(_ context.Context, gid string, fn pipeline.TxnFunc) (model.Txn, error) {
	tx := &memTx{db: s.db}
	if err := fn(tx); err != nil {
		return model.Txn{}, err
	}
	if tx.err != nil {
		return model.Txn{}, tx.err
	}
	if len(tx.changes) == 0 {
		return model.Txn{}, nil
	}
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	s.db.prepared[gid] = tx.changes
	return model.Txn{Changes: tx.changes}, nil
}

func (s memSource) CommitPrepared(_ context.Context, gid string) (model.LSN, error) {
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	cs, ok := s.db.prepared[gid]
	if !ok {
		return 0, twopc.ErrUnknownGID
	}
	delete(s.db.prepared, gid)
	for _, c := range cs {
		if c.Op == model.OpDelete {
			delete(s.db.rows, c.PK)
		} else {
			s.db.rows[c.PK] = c.Row
		}
	}
	s.db.committed = append(s.db.committed, gid)
	return model.LSN(len(s.db.committed)), nil
}

func (s memSource) RollbackPrepared(_ context.Context, gid string) error {
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	delete(s.db.prepared, gid)
	return nil
}

func (s memSource) Prepared(context.Context) ([]string, error) {
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	var gids []string
	for g := range s.db.prepared {
		gids = append(gids, g)
	}
	slices.Sort(gids)
	return gids, nil
}

type memLog struct {
	mu sync.Mutex
	ds []twopc.Decision
}

func (l *memLog) Commit(_ context.Context, d twopc.Decision) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ds = append(l.ds, d)
	return nil
}

func (l *memLog) Done(_ context.Context, gid string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ds = slices.DeleteFunc(l.ds, func(d twopc.Decision) bool { return d.GID == gid })
	return nil
}

func (l *memLog) Decisions(context.Context) ([]twopc.Decision, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ds), nil
}

type noSleep struct{}

func (noSleep) Now() time.Time                                   { return time.Time{} }
func (noSleep) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }
func (noSleep) Go(string, func(context.Context))                 {}
func (noSleep) Rand() *rand.Rand                                 { return rand.New(rand.NewPCG(1, 2)) }

// serve starts a coordinator service on db; the client talks to it.
func serve(t *testing.T, db *memDB, idle time.Duration) (*Client, *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{Coordinator: &twopc.Coordinator{Env: noSleep{}, ID: "c#1", Source: memSource{db}, Log: &memLog{}}, Idle: idle}
	hs := httptest.NewServer(srv.Handler(ctx))
	t.Cleanup(func() { cancel(); hs.Close() })
	return &Client{URL: hs.URL, Timeout: 2 * time.Second}, srv
}

func newDB() *memDB {
	return &memDB{rows: map[string]model.Row{"a": model.R("v", "1"), "c": model.R("v", "3")}, prepared: map[string][]model.Change{}}
}

// A read-modify-write transaction runs through the wire statement by
// statement: the read sees the source's row, and the writes reach it in
// the order the application made them, committed.
func TestTransactionThroughTheService(t *testing.T) {
	db := newDB()
	client, _ := serve(t, db, time.Second)
	err := client.Do(context.Background(), func(tx pipeline.Tx) error {
		a, ok := tx.Get("t", "a")
		if !ok {
			return errors.New("a not found")
		}
		tx.Put("t", "a", model.R("v", a.Get("v")+"1"))
		tx.Put("t", "b", model.R("v", "2"))
		if _, ok := tx.Get("t", "zz"); ok {
			return errors.New("a row that does not exist was found")
		}
		tx.Delete("t", "c")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]model.Row{"a": model.R("v", "11"), "b": model.R("v", "2")}
	if len(db.rows) != 2 || db.rows["a"].Get("v") != "11" || db.rows["b"].Get("v") != "2" || len(db.committed) != 1 {
		t.Fatalf("source after the transaction: %v (committed %v), want %v", db.rows, db.committed, want)
	}
}

// The application rolling back, a lock timeout and an unreachable
// coordinator each reach the client as what they are: its own error,
// twopc.ErrLockTimeout (retry), pipeline.ErrTimeout (outcome unknown);
// nothing stays prepared.
func TestFailuresReachTheClient(t *testing.T) {
	db := newDB()
	client, _ := serve(t, db, time.Second)
	overdraft := errors.New("overdraft")
	err := client.Do(context.Background(), func(tx pipeline.Tx) error {
		tx.Get("t", "a")
		tx.Put("t", "a", model.R("v", "-1"))
		return overdraft
	})
	if !errors.Is(err, overdraft) || db.rows["a"].Get("v") != "1" {
		t.Fatalf("a transaction the application rolled back: %v, a = %v; want its error and a unchanged", err, db.rows["a"])
	}
	db.prepared["other"] = []model.Change{{Table: "t", PK: "a"}}
	err = client.Do(context.Background(), func(tx pipeline.Tx) error { tx.Get("t", "a"); return nil })
	if !errors.Is(err, twopc.ErrLockTimeout) {
		t.Fatalf("a transaction on a row in doubt: %v, want ErrLockTimeout", err)
	}
	delete(db.prepared, "other")
	gone := &Client{URL: "http://127.0.0.1:1", Timeout: time.Second}
	if err := gone.Do(context.Background(), func(tx pipeline.Tx) error { tx.Get("t", "a"); return nil }); !errors.Is(err, pipeline.ErrTimeout) {
		t.Fatalf("an unreachable coordinator: %v, want ErrTimeout", err)
	}
	if len(db.prepared) != 0 {
		t.Fatalf("left prepared: %v", db.prepared)
	}
}

// A client that stops half-way (it died, or was cut off) does not hold
// its transaction open: the coordinator rolls it back after Idle, and the
// rest of the transaction, arriving late, is refused (ErrGone) rather than
// run as a transaction of its own without the statements before it.
func TestAbandonedTransactionRollsBack(t *testing.T) {
	db := newDB()
	client, srv := serve(t, db, 50*time.Millisecond)
	ctx := context.Background()
	t1 := &remoteTx{ctx: ctx, c: client, id: "abandoned", begin: true}
	if row, ok := t1.Get("t", "a"); !ok || row.Get("v") != "1" {
		t.Fatalf("first read: %v %v", row, ok)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		srv.mu.Lock()
		open := len(srv.txns)
		srv.mu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the abandoned transaction is still open after 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t1.Put("t", "a", model.R("v", "2"))
	rep, err := t1.send(EndCommit)
	if err != nil {
		t.Fatal(err)
	}
	if err := errorOf(rep); !errors.Is(err, ErrGone) {
		t.Fatalf("the rest of an abandoned transaction: %v, want ErrGone", err)
	}
	if db.rows["a"].Get("v") != "1" || len(db.committed) != 0 {
		t.Fatalf("the abandoned transaction's write landed: %v", db.rows)
	}
}
