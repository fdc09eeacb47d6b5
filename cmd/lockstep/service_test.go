package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/kafkalog/kafkatest"
	"lockstep/pipeline/pgsource"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/realenv"
)

// TestCaptureTables runs the capture command's table handling against a
// real PostgreSQL 15.
func TestCaptureTables(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: needs a PostgreSQL server (-short)")
	}
	dsn := pgtest.Start(t)
	t.Run("RefusesKeylessAtStart", func(t *testing.T) { testRefusesKeyless(t, pgtest.NewDatabase(t, dsn)) })
	t.Run("StopsOnKeylessChange", func(t *testing.T) { testStopsOnKeyless(t, pgtest.NewDatabase(t, dsn)) })
	t.Run("StopsWhenRefused", func(t *testing.T) { testStopsWhenRefused(t, pgtest.NewDatabase(t, dsn)) })
}

// A source that turns the capture away (a database that does not exist, a
// user who may not create the publication) stops it at once with one line
// saying what to do, exit 2: it used to retry five times a second for ever.
func testStopsWhenRefused(t *testing.T, dsn string) {
	sqlExec(t, dsn, `CREATE TABLE ok (id int PRIMARY KEY, v text);
		CREATE ROLE capturer LOGIN REPLICATION;
		GRANT SELECT ON ok TO capturer`)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	missing := *u
	missing.Path = "/no_such_db"
	plain := *u
	plain.User = url.User("capturer")
	for _, c := range []struct {
		name, source string
		want         []string
	}{
		{"missing database", missing.String(), []string{`database "no_such_db" does not exist`, "the database in --source does not exist"}},
		{"no right to create the publication", plain.String(), []string{"FOR ALL TABLES", "needs a superuser", "--publication"}},
	} {
		done := make(chan struct{})
		var code int
		var errw string
		go func() {
			defer close(done)
			code, _, errw = lockstep("capture", "--source", c.source, "--brokers", "127.0.0.1:1")
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the capture still runs after 30 s; want it stopped at the first refusal", c.name)
		}
		if code != 2 || strings.Count(errw, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 and one line", c.name, code, errw)
		}
		for _, w := range c.want {
			if !strings.Contains(errw, w) {
				t.Errorf("%s: stderr %q; want it to say %q", c.name, errw, w)
			}
		}
	}
}

// TestCaptureCheckRetries: while the source cannot be reached, the table
// check retries with a growing pause and says so, until stopped.
func TestCaptureCheckRetries(t *testing.T) {
	s, err := pgsource.NewStream(pgsource.Config{DSN: "postgres://nobody@127.0.0.1:1/db?connect_timeout=1"})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err = checkTables(ctx, s, slog.New(slog.NewTextHandler(&logs, nil)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("checkTables = %v, want the context's end", err)
	}
	if n := strings.Count(logs.String(), "retrying"); n < 2 || !strings.Contains(logs.String(), "in=400ms") {
		t.Errorf("want warnings with a growing pause, logged:\n%s", logs.String())
	}
}

func sqlExec(t *testing.T, dsn, q string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// testRefusesKeyless: a table with neither a primary key nor REPLICA
// IDENTITY FULL stops the capture before it connects to Kafka (there is
// none here), with exit 2 and one line saying what to do.
func testRefusesKeyless(t *testing.T, dsn string) {
	sqlExec(t, dsn, `CREATE TABLE ok (id int PRIMARY KEY, v text);
		CREATE TABLE full_rows (a int, b text);
		ALTER TABLE full_rows REPLICA IDENTITY FULL;
		CREATE TABLE bare (a int, b text)`)
	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"lockstep capture: table bare has neither a primary key nor REPLICA IDENTITY FULL",
			"add a primary key", "REPLICA IDENTITY FULL (all columns then form the key)", "--exclude-tables bare"}},
		{[]string{"--tables", "ok,bare"}, []string{"lockstep capture: table bare has neither"}},
		{[]string{"--tables", "ok,nope"}, []string{"lockstep capture: pgsource: tables to capture nope are not in the database"}},
		{[]string{"--tables", "ok", "--exclude-tables", "bare"}, []string{"lockstep capture: pgsource: tables: give the tables to capture or the tables to leave out, not both"}},
	} {
		args := append([]string{"capture", "--source", dsn, "--brokers", "127.0.0.1:1"}, c.args...)
		code, _, errw := lockstep(args...)
		if code != 2 || strings.Count(errw, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line", c.args, code, errw)
		}
		for _, w := range c.want {
			if !strings.Contains(errw, w) {
				t.Errorf("%v: stderr %q, want it to say %q", c.args, errw, w)
			}
		}
	}
}

// memLog is a pipeline.Log in memory.
type memLog struct {
	mu   sync.Mutex
	txns []model.Txn
}

func (l *memLog) Produce(_ context.Context, txns []model.Txn) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.txns = append(l.txns, txns...)
	return int64(len(l.txns) - 1), nil
}

func (l *memLog) Fetch(_ context.Context, off int64, max int) ([]pipeline.Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []pipeline.Record
	for i := off; i < int64(len(l.txns)) && len(out) < max; i++ {
		out = append(out, pipeline.Record{Offset: i, Txn: l.txns[i]})
	}
	return out, nil
}

func (l *memLog) End(context.Context) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.txns)), nil
}

func (l *memLog) Start(context.Context) (int64, error)             { return 0, nil }
func (l *memLog) Commit(context.Context, string, int64) error      { return nil }
func (l *memLog) Committed(context.Context, string) (int64, error) { return 0, nil }

// has reports whether the log holds a change to table (with key pk, unless
// pk is "").
func (l *memLog) has(table, pk string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range l.txns {
		for _, c := range t.Changes {
			if c.Table == table && (pk == "" || c.PK == pk) {
				return true
			}
		}
	}
	return false
}

// await waits until cond holds, failing if the capture ends first.
func await(t *testing.T, ctx context.Context, done <-chan error, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("the capture ended before %s: %v", what, err)
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// testStopsOnKeyless: a keyless table created while the capture runs stops
// it for good with exit 2 and what to do (the old capture reconnected for
// ever and no table moved); excluded, its changes are skipped and the rest
// flows.
func testStopsOnKeyless(t *testing.T, dsn string) {
	sqlExec(t, dsn, "CREATE TABLE acct (id int PRIMARY KEY, v text)")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	newStream := func(exclude ...string) *pgsource.Stream {
		s, err := pgsource.NewStream(pgsource.Config{DSN: dsn, ExcludeTables: exclude, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close(context.Background()) })
		return s
	}
	log := &memLog{}
	capture := func(ctx context.Context, s *pgsource.Stream) error {
		c := &pipeline.Capture{Env: &realenv.Env{Base: ctx}, Log: log, Logger: logger, Backoff: 10 * time.Millisecond}
		return runCapture(ctx, c, s)
	}

	// The snapshot comes first; the keyless table and its change after it.
	sqlExec(t, dsn, "INSERT INTO acct VALUES (1, 'a')")
	s := newStream()
	if _, err := s.CheckTables(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- capture(ctx, s) }()
	await(t, ctx, done, "the snapshot", func() bool { return log.has("acct", "1") })
	sqlExec(t, dsn, "CREATE TABLE events (at int, what text); INSERT INTO events VALUES (1, 'boot')")
	sqlExec(t, dsn, "INSERT INTO acct VALUES (2, 'b')")
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("the capture did not stop on a change to a table without a key")
	}
	var ue usageError
	if !errors.As(err, &ue) || !strings.HasPrefix(ue.msg, "stopped: a change to events in xid ") || !strings.Contains(ue.msg, "--exclude-tables events") ||
		strings.Contains(ue.msg, "\n") {
		t.Fatalf("capture ended with %v; want a one-line usage error (exit 2) naming events and the flag", err)
	}
	if log.has("acct", "2") {
		t.Error("a change after the keyless one reached the log")
	}

	// Restarted with the table left out, it gets past it.
	s.Close(ctx)
	runCtx, stop := context.WithCancel(ctx)
	go func() { done <- capture(runCtx, newStream("events")) }()
	await(t, ctx, done, "acct's change after the keyless one", func() bool { return log.has("acct", "2") })
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("stopped capture: %v", err)
	}
	if log.has("events", "") {
		t.Error("a change to the excluded table reached the log")
	}
}

// A cache target is HOST:PORT or a redis:// URL with a password and a
// database; a malformed URL is bad input; logs never show the password.
func TestRedisTarget(t *testing.T) {
	o, err := redisOptions("127.0.0.1:6379")
	if err != nil || o.Addr != "127.0.0.1:6379" || o.Password != "" || o.DB != 0 {
		t.Fatalf("HOST:PORT: %+v, %v", o, err)
	}
	o, err = redisOptions("redis://:s3cret@cache.internal:6380/2")
	if err != nil || o.Addr != "cache.internal:6380" || o.Password != "s3cret" || o.DB != 2 || o.ReadTimeout != 30*time.Second {
		t.Fatalf("URL: %+v, %v", o, err)
	}
	if _, err := redisOptions("redis://host:6379/notanumber"); err == nil || !isUsage(err) {
		t.Fatalf("malformed URL: %v, want a usage error", err)
	}
	for _, target := range []string{"redis://:s3cret@cache.internal:6380/2", "postgres://app:s3cret@db/app", "host=db password=s3cret"} {
		if strings.Contains(redact(target), "s3cret") {
			t.Errorf("redact(%q) = %q shows the password", target, redact(target))
		}
	}
}

// The topic's replication is a flag: a one-broker Kafka works with
// --replication-factor 1 --min-insync 1, and the default of 3 is refused
// there with one line that says so, not "are the brokers reachable?".
func TestTopicReplicationFlags(t *testing.T) {
	bad := &commonFlags{brokers: "127.0.0.1:1", topic: "t", replicas: 1, minInSync: 2}
	if _, err := bad.log(context.Background()); err == nil || !isUsage(err) || !strings.Contains(err.Error(), "--min-insync") {
		t.Fatalf("min-insync above the replication factor: %v, want a usage error naming the flags", err)
	}
	if testing.Short() {
		t.Skip("skipping: needs a Kafka broker (-short)")
	}
	b := kafkatest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	three := &commonFlags{brokers: b.Addr, topic: "three", replicas: 3, minInSync: 2}
	if l, err := three.log(ctx); err == nil {
		l.Close()
		t.Fatal("a replication factor of 3 on one broker was accepted")
	} else if !isUsage(err) || !strings.Contains(err.Error(), "--replication-factor 1 --min-insync 1") || strings.Contains(err.Error(), "reachable") {
		t.Fatalf("replication factor 3 on one broker: %v; want one usage line with the one-broker flags", err)
	}
	one := &commonFlags{brokers: b.Addr, topic: "one", replicas: 1, minInSync: 1}
	l, err := one.log(ctx)
	if err != nil {
		t.Fatalf("one broker, --replication-factor 1 --min-insync 1: %v", err)
	}
	defer l.Close()
	if _, err := l.Produce(ctx, []model.Txn{{XID: 1, CommitLSN: 8, Changes: []model.Change{{Table: "t", PK: "1", Op: model.OpInsert, Row: model.R("v", "a")}}}}); err != nil {
		t.Fatalf("append on a one-broker topic: %v", err)
	}
}

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}
