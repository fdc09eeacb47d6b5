package redisstore

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"lockstep/internal/needs"
	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/store/storetest"
)

// server is a throwaway redis-server on a loopback port, without
// persistence: a restart comes back empty, as a cache does.
type server struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func startServer(t testing.TB) *server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		needs.Missing(t, "redis-server not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &server{t: t, port: port}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *server) start() {
	s.t.Helper()
	s.cmd = exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", os.TempDir())
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphan if the test binary dies
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(s.cmd, s.done)
	rdb := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1})
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if rdb.Ping(context.Background()).Err() == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatal("redis-server did not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// restart kills the server and starts an empty one on the same port.
func (s *server) restart() {
	s.stop()
	s.start()
}

func (s *server) client(t testing.TB) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: s.addr()})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestRedis(t *testing.T) {
	srv := startServer(t)
	open := func(t *testing.T, opts Options) *Cache {
		t.Helper()
		c, err := New(ctx(t), srv.client(t), opts)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{
			Kind: model.Cache,
			Open: func(t *testing.T, blind bool) storetest.Store { return open(t, Options{Blind: blind}) },
			Lose: func(t *testing.T) { srv.restart() },
		})
	})
	t.Run("FlushAll", func(t *testing.T) {
		c := open(t, Options{})
		if err := c.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{{CommitLSN: 10, Changes: []model.Change{{Table: "t", PK: "a", Op: model.OpInsert, Row: model.R("v", "1")}}}}, Position: model.Position{Offset: 1, LSN: 10}}); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := c.Position(ctx(t)); err != nil || !ok {
			t.Fatalf("position after a batch: %v, %v", ok, err)
		}
		if err := srv.client(t).FlushAll(ctx(t)).Err(); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := c.Position(ctx(t)); err != nil || ok {
			t.Fatalf("position after FLUSHALL: ok=%v, %v; want none, so the applier rebuilds", ok, err)
		}
	})
	t.Run("Layout", func(t *testing.T) {
		c := open(t, Options{})
		if err := c.Clear(ctx(t)); err != nil {
			t.Fatal(err)
		}
		err := c.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{{CommitLSN: 10, Changes: []model.Change{{Table: "users", PK: "u/1", Op: model.OpInsert, Row: model.R("name", "Ann")}}}}, Position: model.Position{Offset: 3, LSN: 10}})
		if err != nil {
			t.Fatal(err)
		}
		rdb := srv.client(t)
		if got := rdb.HGetAll(ctx(t), "doc:users/u/1").Val(); got["value"] != "name=Ann" || got["lsn"] != "10" || len(got) != 2 {
			t.Fatalf("doc:users/u/1 = %v", got)
		}
		if got := rdb.HGetAll(ctx(t), PositionKey).Val(); got["offset"] != "3" || got["lsn"] != "10" {
			t.Fatalf("%s = %v", PositionKey, got)
		}
		snap, err := c.ReadAll(ctx(t))
		if err != nil || snap.Docs[model.Key{Table: "users", PK: "u/1"}].Value != "name=Ann" {
			t.Fatalf("ReadAll = %+v, %v", snap, err)
		}
		bad := model.Txn{CommitLSN: 11, Changes: []model.Change{{Table: "a/b", PK: "1", Op: model.OpInsert, Row: model.Row{}}}}
		if err := c.Write(ctx(t), bad); err == nil {
			t.Fatal("a table name with '/' was accepted")
		}
	})
	t.Run("ConcurrentAppliers", func(t *testing.T) { testConcurrent(t, open(t, Options{}), open(t, Options{})) })
	t.Run("Unavailable", func(t *testing.T) {
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
		defer rdb.Close()
		if _, err := New(ctx(t), rdb, Options{}); err == nil {
			t.Fatal("New succeeded without a server")
		}
	})
}

// Two appliers on two connections sending batches from the same base: the
// WATCH makes one start over, find the position moved and refuse; the
// cache holds exactly the winner's batch.
func testConcurrent(t *testing.T, a, b *Cache) {
	if err := a.Clear(ctx(t)); err != nil {
		t.Fatal(err)
	}
	base := model.Position{}
	if err := a.Apply(ctx(t), pipeline.Batch{Position: base}); err != nil {
		t.Fatal(err)
	}
	for round := range 20 {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, c := range []*Cache{a, b} {
			wg.Go(func() {
				next := model.Position{Offset: base.Offset + 1, LSN: base.LSN + model.LSN(1+i)}
				var changes []model.Change
				for j := range 30 {
					changes = append(changes, model.Change{Table: "t", PK: fmt.Sprint("k", j), Op: model.OpUpdate, Row: model.R("writer", fmt.Sprint(i))})
				}
				errs[i] = c.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{{CommitLSN: next.LSN, Changes: changes}}, Position: next, Base: &base})
			})
		}
		wg.Wait()
		winner := storetest.OneWinner(t, round, base, errs)
		snap, err := a.ReadAll(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		want := model.Position{Offset: base.Offset + 1, LSN: base.LSN + model.LSN(1+winner)}
		if snap.Position != want || len(snap.Docs) != 30 {
			t.Fatalf("round %d: %d docs at %s, want 30 at the winner's %s", round, len(snap.Docs), snap.Position, want)
		}
		for k, d := range snap.Docs {
			if d.LSN != want.LSN {
				t.Fatalf("round %d: %s holds %+v, not the winner's write", round, k, d)
			}
		}
		base = want
	}
}

// BenchmarkApplyLargeTxn applies one transaction of 100,000 new rows (what
// pgbench's data load commits at scale 1) as one batch. With every
// document WATCHed as well as the position, one such Apply took 59 s on
// this machine, all of it in the WATCH; watching the position alone, 2.2 s
// a round on a loaded machine, the Clear of the round before included.
func BenchmarkApplyLargeTxn(b *testing.B) {
	srv := startServer(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), ReadTimeout: 2 * time.Minute, WriteTimeout: 2 * time.Minute})
	defer rdb.Close()
	c, err := New(context.Background(), rdb, Options{})
	if err != nil {
		b.Fatal(err)
	}
	filler := strings.Repeat(" ", 84)
	for i := 0; b.Loop(); i++ {
		if err := c.Clear(context.Background()); err != nil {
			b.Fatal(err)
		}
		txn := model.Txn{XID: uint64(i + 1), CommitLSN: 100}
		for pk := range 100_000 {
			id := strconv.Itoa(pk)
			txn.Changes = append(txn.Changes, model.Change{Table: "pgbench_accounts", PK: id, Op: model.OpInsert, Row: model.R("aid", id, "bid", "1", "abalance", "0", "filler", filler)})
		}
		if err := c.Apply(context.Background(), pipeline.Batch{Txns: []model.Txn{txn}, Position: model.Position{Offset: 1, LSN: 100}}); err != nil {
			b.Fatal(err)
		}
	}
}
