package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"lockstep/internal/needs"
	"lockstep/model"
	"lockstep/pipeline/kafkalog/kafkatest"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/store/pgstore"
	"lockstep/pipeline/store/redisstore"
)

// beMain makes the test binary the lockstep command when a test runs it as
// a child process (as a user runs the services: separate processes,
// stopped with SIGTERM).
const beMain = "LOCKSTEP_TEST_BE_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(beMain) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// The README's standalone section, followed as a user would on a
// one-broker development Kafka: the capture and the three appliers as
// processes with --replication-factor 1 --min-insync 1, on a source that
// has rows before the capture starts (snapshot) and gets the field's
// transaction shapes after (a row changed twice, a key change, a delete and
// re-insert). Every store must end at the source's state: the replica's
// table equal to the source's by plain SQL, the cache and the search index
// holding each row's document. A clean SIGTERM ends every process with
// exit 0.
func TestStandaloneOnOneBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: needs PostgreSQL, Kafka and Redis (-short)")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		needs.Missing(t, "redis-server not installed")
	}
	server := pgtest.Start(t)
	source, replica, search := pgtest.NewDatabase(t, server), pgtest.NewDatabase(t, server), pgtest.NewDatabase(t, server)
	broker := kafkatest.Start(t)
	cache := startRedis(t)

	sqlExec(t, source, `CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance int NOT NULL);
		INSERT INTO accounts SELECT g, 'owner' || g, 100 FROM generate_series(1, 20) g`)
	one := []string{"--brokers", broker.Addr, "--topic", "standalone", "--replication-factor", "1", "--min-insync", "1"}
	procs := []*service{startService(t, "capture", append([]string{"capture", "--source", source}, one...))}
	for _, s := range []struct{ store, target string }{{"replica", replica}, {"cache", cache}, {"search", search}} {
		procs = append(procs, startService(t, "apply "+s.store, append([]string{"apply", "--store", s.store, "--target", s.target}, one...)))
	}

	// The changes go in once the replica holds the snapshot, so they
	// reach the stores through the stream, not in the snapshot.
	await := func(what string, want map[string]model.Row) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for !equalRows(replicaRows(ctx, replica), want) {
			select {
			case <-ctx.Done():
				t.Fatalf("the replica did not hold %s in 2 minutes:\n%s", what, logsOf(procs))
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	await("the snapshot", sourceRows(t, source))
	for _, q := range []string{
		`BEGIN; UPDATE accounts SET balance = balance - 5 WHERE id = 1; UPDATE accounts SET balance = balance + 5 WHERE id = 1; UPDATE accounts SET owner = 'twice' WHERE id = 1; COMMIT`,
		`BEGIN; INSERT INTO accounts VALUES (21, 'new', 1); UPDATE accounts SET balance = 2 WHERE id = 21; COMMIT`,
		`UPDATE accounts SET id = 101 WHERE id = 2`,
		`BEGIN; DELETE FROM accounts WHERE id = 3; INSERT INTO accounts VALUES (3, 'again', 3); COMMIT`,
		`BEGIN; UPDATE accounts SET balance = 0 WHERE id = 4; DELETE FROM accounts WHERE id = 4; COMMIT`,
		`UPDATE accounts SET balance = balance + 1 WHERE id > 10`,
	} {
		sqlExec(t, source, q)
	}
	want := sourceRows(t, source)
	wantDocs := map[model.StoreKind]model.Docs{}
	for _, kind := range []model.StoreKind{model.Cache, model.Search} {
		wantDocs[kind] = model.Docs{}
		for pk, row := range want {
			// A document is the row's other columns: its key names the row.
			doc := row.Clone()
			doc.Delete("id")
			wantDocs[kind][model.Key{Table: "accounts", PK: pk}] = model.ProjectEntry(kind, model.Entry{Row: doc})
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last string
	for caughtUp := false; !caughtUp; {
		select {
		case <-ctx.Done():
			t.Fatalf("the stores did not reach the source's state in 2 minutes: %s\n%s", last, logsOf(procs))
		case <-time.After(200 * time.Millisecond):
		}
		for _, p := range procs {
			if p.exited() {
				t.Fatalf("%s exited early:\n%s", p.name, logsOf(procs))
			}
		}
		last = ""
		if got := replicaRows(ctx, replica); !equalRows(got, want) {
			last = fmt.Sprintf("replica holds %d rows, the source %d", len(got), len(want))
		}
		for kind, read := range map[model.StoreKind]func(context.Context) (model.Docs, error){
			model.Cache:  func(ctx context.Context) (model.Docs, error) { return readCache(ctx, cache) },
			model.Search: func(ctx context.Context) (model.Docs, error) { return readSearch(ctx, search) },
		} {
			docs, err := read(ctx)
			if err != nil || !sameValues(docs, wantDocs[kind]) {
				last += fmt.Sprintf("; %s: %d documents, want %d (%v)%s", kind, len(docs), len(wantDocs[kind]), err, firstDiff(docs, wantDocs[kind]))
			}
		}
		caughtUp = last == ""
	}
	for _, p := range procs {
		if code := p.stop(t); code != 0 {
			t.Errorf("%s exited %d on SIGTERM, want 0 (a clean drain)\n%s", p.name, code, p.logs.String())
		}
	}
}

// sourceRows reads the source's accounts as the capture renders rows: every
// column as text, keyed by the primary key.
func sourceRows(t *testing.T, dsn string) map[string]model.Row {
	t.Helper()
	rows, err := queryRows(context.Background(), dsn, `SELECT id::text, owner, balance::text FROM accounts`)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func replicaRows(ctx context.Context, dsn string) map[string]model.Row {
	rows, err := queryRows(ctx, dsn, `SELECT id::text, owner, balance::text FROM lockstep_replica.accounts`)
	if err != nil {
		return nil // not created yet
	}
	return rows
}

func queryRows(ctx context.Context, dsn, q string) (map[string]model.Row, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	rs, err := pool.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[string]model.Row{}
	for rs.Next() {
		var id, owner, balance string
		if err := rs.Scan(&id, &owner, &balance); err != nil {
			return nil, err
		}
		out[id] = model.R("id", id, "owner", owner, "balance", balance)
	}
	return out, rs.Err()
}

func equalRows(a, b map[string]model.Row) bool {
	if len(a) != len(b) {
		return false
	}
	for pk, r := range a {
		if b[pk].Encode() != r.Encode() {
			return false
		}
	}
	return true
}

// firstDiff shows the first key (in order) whose document differs.
func firstDiff(got, want model.Docs) string {
	keys := make([]model.Key, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b model.Key) int { return strings.Compare(a.String(), b.String()) })
	for _, k := range keys {
		if got[k].Value != want[k].Value {
			return fmt.Sprintf(": %s has %q, want %q", k, got[k].Value, want[k].Value)
		}
	}
	return ""
}

func sameValues(got, want model.Docs) bool {
	if len(got) != len(want) {
		return false
	}
	for k, d := range want {
		if got[k].Value != d.Value {
			return false
		}
	}
	return true
}

func readCache(ctx context.Context, addr string) (model.Docs, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	c, err := redisstore.New(ctx, rdb, redisstore.Options{})
	if err != nil {
		return nil, err
	}
	snap, err := c.ReadAll(ctx)
	return snap.Docs, err
}

func readSearch(ctx context.Context, dsn string) (model.Docs, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	s, err := pgstore.NewSearch(ctx, pool, pgstore.Options{})
	if err != nil {
		return nil, err
	}
	snap, err := s.ReadAll(ctx)
	return snap.Docs, err
}

// service is a lockstep command running as a child process.
type service struct {
	name string
	cmd  *exec.Cmd
	logs lockedBuffer
	done chan struct{}
	code int
}

func startService(t *testing.T, name string, args []string) *service {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := &service{name: name, cmd: exec.Command(exe, args...), done: make(chan struct{})}
	s.cmd.Env = append(os.Environ(), beMain+"=1")
	s.cmd.Stdout, s.cmd.Stderr = &s.logs, &s.logs // one writer: exec copies both through one pipe
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		s.cmd.Wait()
		s.code = s.cmd.ProcessState.ExitCode()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
	return s
}

func (s *service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and returns the exit code, failing after 30 s.
func (s *service) stop(t *testing.T) int {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return s.code
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit within 30 s of SIGTERM:\n%s", s.name, s.logs.String())
		return -1
	}
}

func logsOf(procs []*service) string {
	var b strings.Builder
	for _, p := range procs {
		fmt.Fprintf(&b, "--- %s\n%s", p.name, p.logs.String())
	}
	return b.String()
}

// startRedis runs a throwaway redis-server on a loopback port until the
// test ends and returns its address.
func startRedis(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for rdb.Ping(ctx).Err() != nil {
		select {
		case <-ctx.Done():
			t.Fatal("redis-server did not answer within 10 s")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return addr
}

// lockedBuffer is a bytes.Buffer a child's output goroutine writes while
// the test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
