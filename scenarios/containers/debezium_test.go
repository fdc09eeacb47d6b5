package containers

import (
	"context"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"lockstep/model"
	"lockstep/pipeline/debezium"
	"lockstep/scenarios"
)

// requireDebezium skips Debezium's container tests with one line without
// Docker or without the Debezium image (make images and make test build
// it; CI too), and fails instead under LOCKSTEP_REQUIRE_DOCKER=1.
func requireDebezium(t *testing.T) {
	t.Helper()
	requireDocker(t)
	if _, err := docker(context.Background(), "image", "inspect", "--format", "{{.Id}}", DebeziumImage); err != nil {
		if os.Getenv("LOCKSTEP_REQUIRE_DOCKER") == "1" {
			t.Fatalf("LOCKSTEP_REQUIRE_DOCKER=1 but image %s is missing (run images/build-debezium.sh)", DebeziumImage)
		}
		t.Skipf("skipping: image %s is missing (run images/build-debezium.sh)", DebeziumImage)
	}
}

// debeziumTxn is one source transaction of TestDebeziumDecodes and the
// changes Debezium must carry for it; rollback ones must carry nothing.
type debeziumTxn struct {
	sql      []string
	want     []model.Change
	rollback bool
}

var body = strings.Repeat("0123456789", 500) // stored out of line: docs.body is STORAGE EXTERNAL

var debeziumTxns = []debeziumTxn{
	{sql: []string{
		"INSERT INTO accounts VALUES (1, 'ann', 100, NULL), (2, 'bob', 50, 'vip')",
		"INSERT INTO docs VALUES ('d1', 1, repeat('0123456789', 500))",
	}, want: []model.Change{
		{Table: "accounts", PK: "1", Op: model.OpInsert, Row: model.R("owner", "ann", "balance", "100")},
		{Table: "accounts", PK: "2", Op: model.OpInsert, Row: model.R("owner", "bob", "balance", "50", "note", "vip")},
		{Table: "docs", PK: "d1", Op: model.OpInsert, Row: model.R("rev", "1", "body", body)},
	}},
	{sql: []string{
		"UPDATE accounts SET balance = balance - 30 WHERE id = 1",
		"UPDATE accounts SET balance = balance + 30 WHERE id = 2",
	}, want: []model.Change{
		{Table: "accounts", PK: "1", Op: model.OpUpdate, Row: model.R("owner", "ann", "balance", "70")},
		{Table: "accounts", PK: "2", Op: model.OpUpdate, Row: model.R("owner", "bob", "balance", "80", "note", "vip")},
	}},
	{sql: []string{"UPDATE docs SET rev = 2 WHERE id = 'd1'"}, want: []model.Change{
		{Table: "docs", PK: "d1", Op: model.OpUpdate, Row: model.R("rev", "2"), Unchanged: []string{"body"}},
	}},
	{sql: []string{"UPDATE accounts SET id = 3 WHERE id = 1"}, want: []model.Change{
		{Table: "accounts", PK: "3", OldPK: "1", Op: model.OpUpdate, Row: model.R("owner", "ann", "balance", "70")},
	}},
	{sql: []string{"INSERT INTO accounts VALUES (9, 'tmp', 0, NULL)"}, rollback: true},
	{sql: []string{"UPDATE docs SET id = 'd2', rev = 3 WHERE id = 'd1'"}, want: []model.Change{
		{Table: "docs", PK: "d2", OldPK: "d1", Op: model.OpUpdate, Row: model.R("rev", "3"), Unchanged: []string{"body"}},
	}},
	{sql: []string{
		"INSERT INTO pairs VALUES (1, 'x', 'one'), (2, 'y', 'two')",
		"UPDATE pairs SET v = NULL WHERE a = 1",
		"DELETE FROM pairs WHERE a = 2",
		"DELETE FROM accounts WHERE id = 2",
	}, want: []model.Change{
		{Table: "pairs", PK: "1,x", Op: model.OpInsert, Row: model.R("v", "one")},
		{Table: "pairs", PK: "2,y", Op: model.OpInsert, Row: model.R("v", "two")},
		{Table: "pairs", PK: "1,x", Op: model.OpUpdate, Row: model.Row{}},
		{Table: "pairs", PK: "2,y", Op: model.OpDelete},
		{Table: "accounts", PK: "2", Op: model.OpDelete},
	}},
	{sql: []string{"UPDATE docs SET body = 'short', rev = 4 WHERE id = 'd2'"}, want: []model.Change{
		{Table: "docs", PK: "d2", Op: model.OpUpdate, Row: model.R("rev", "4", "body", "short")},
	}},
}

// TestDebeziumDecodes runs Debezium's connector on the container world's
// source and Kafka, commits transactions of every kind the decoder handles
// (several tables, a key change, an unchanged TOASTed value, a composite
// key, NULLs, deletes, a rollback), and checks that the decoder rebuilds
// exactly the committed ones from Debezium's topics, in commit order, with
// their XIDs and commit LSNs.
func TestDebeziumDecodes(t *testing.T) {
	requireDebezium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	w, err := Start(ctx, Options{LogDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.WithoutCancel(ctx))
	conn, err := pgx.Connect(ctx, w.SourceDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, q := range []string{
		"CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL, note text)",
		"CREATE TABLE docs (id text PRIMARY KEY, rev int NOT NULL, body text)",
		"ALTER TABLE docs ALTER body SET STORAGE EXTERNAL",
		"CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b))",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	opts := DebeziumOptions{Tables: []string{"public.accounts", "public.docs", "public.pairs"}, Poll: 10 * time.Millisecond, Flush: time.Second}
	dec := &debezium.Decoder{TransactionTopic: opts.TransactionTopic()}
	cl := debeziumConsumer(ctx, t, w, opts)
	defer func() {
		if t.Failed() {
			if svc, ok := w.Service(DebeziumService); ok {
				out, _ := docker(context.WithoutCancel(ctx), "logs", "--tail", "30", svc.ID)
				t.Logf("Debezium's log, last lines:\n%s", out)
			}
		}
	}()
	if err := w.StartDebezium(ctx, opts); err != nil {
		t.Fatal(err)
	}

	// Commit, noting each transaction's XID and the WAL insert position
	// just before and just after its COMMIT: the commit record ends between.
	type bounds struct{ before, after model.LSN }
	var want []model.Txn
	var lsns []bounds
	lsn := func(tx pgx.Tx) model.LSN {
		var s string
		if err := tx.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
			t.Fatal(err)
		}
		l, err := model.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	var lastCommit time.Time
	for _, dt := range debeziumTxns {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var xid uint64
		if err := tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&xid); err != nil {
			t.Fatal(err)
		}
		for _, q := range dt.sql {
			if _, err := tx.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if dt.rollback {
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b := bounds{before: lsn(tx)}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		lastCommit = time.Now()
		after, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b.after = lsn(after)
		_ = after.Rollback(ctx)
		want = append(want, model.Txn{XID: xid, Changes: dt.want})
		lsns = append(lsns, b)
	}

	var got []model.Txn
	pollCtx, pollCancel := context.WithTimeout(ctx, 3*time.Minute)
	defer pollCancel()
	for len(got) < len(want) {
		fs := cl.PollFetches(pollCtx)
		if pollCtx.Err() != nil {
			t.Fatalf("after %s Debezium's topics held %d of %d transactions (%d ENDs waiting for their events): %v",
				time.Since(lastCommit).Round(time.Millisecond), len(got), len(want), dec.Waiting(), got)
		}
		for _, e := range fs.Errors() {
			t.Logf("fetch %s: %v", e.Topic, e.Err) // the client retries
		}
		for _, r := range fs.Records() {
			txns, err := dec.Add(debezium.FromKafka(r))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, txns...)
		}
	}
	t.Logf("the last commit came out of Debezium's topics %s after it", time.Since(lastCommit).Round(time.Millisecond))
	if len(got) != len(want) {
		t.Fatalf("got %d transactions, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if b := lsns[i]; got[i].CommitLSN <= b.before || got[i].CommitLSN > b.after {
			t.Errorf("transaction %d (xid %d): commit LSN %s, want in (%s, %s]", i, want[i].XID, got[i].CommitLSN, b.before, b.after)
		}
		want[i].CommitLSN = got[i].CommitLSN
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("transaction %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

// debeziumConsumer creates the connector's topics (replication factor 3,
// one partition, as an operator would before starting it) and returns a
// client that reads them from the start. Topics the connector would create
// on its first write could be missing when the consumer starts.
func debeziumConsumer(ctx context.Context, t *testing.T, w *World, opts DebeziumOptions) *kgo.Client {
	t.Helper()
	topics := opts.Topics()
	admin, err := kgo.NewClient(kgo.SeedBrokers(w.Kafka...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	created, err := kadm.NewClient(admin).CreateTopics(ctx, 1, -1, nil, topics...)
	if err == nil {
		err = created.Error()
	}
	if err != nil {
		t.Fatalf("create Debezium's topics: %v", err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.Kafka...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Debezium under kill -9 and pause of its Connect worker: the checker's
// verdict on the stores is a pass, and Debezium did send transactions
// again after the kill (at least once, its documented promise), which
// lockstep's appliers skipped because each store holds its position.
func TestDebeziumSurvivesConnectKill(t *testing.T) {
	requireDebezium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	w, err := Start(ctx, Options{LogDir: t.TempDir(), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.WithoutCancel(ctx))
	sc, err := Lookup("crash-capture")
	if err != nil {
		t.Fatal(err)
	}
	p := plan(t, "@4s crash debezium\n@9s restart debezium\n@16s pause debezium\n@19s resume debezium\nquiet @22s")
	out, err := Run(ctx, Config{Scenario: sc, System: scenarios.Debezium, Seed: 1, Txns: 80, Plan: p, World: w, Logger: testLogger(), LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d committed txns, %d reads, converged %v, wall %v", len(out.History.Committed), len(out.History.Reads), out.History.ConvergedAt, out.Wall.Round(time.Second))
	if len(out.History.Committed) < 20 {
		t.Fatalf("only %d committed transactions: the workload did not run", len(out.History.Committed))
	}
	if !out.Report.OK() {
		t.Fatalf("Debezium broke a claimed property:\n%s", out.Report)
	}
	if len(out.History.ConvergedAt) != 3 {
		t.Fatalf("stores converged: %v, want all three", out.History.ConvergedAt)
	}
	// Read Debezium's topics as the appliers did: the kill must have
	// made it send transactions again.
	log, err := debezium.OpenLog(w.Kafka, SystemDebezium.prefix())
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	// Until the end stops moving: each End reads what one poll brings.
	var end, prev int64 = 0, -1
	for i := 0; i < 300 && (end == 0 || end != prev); i++ {
		prev = end
		if end, err = log.End(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if end < int64(len(out.History.Committed)) || log.Resent() == 0 {
		t.Fatalf("Debezium's topics hold %d transactions, %d of them sent again; want at least the %d committed, and copies after the kill", end, log.Resent(), len(out.History.Committed))
	}
	t.Logf("Debezium's topics: %d transactions, %d of them sent again after the kill", end, log.Resent())
}
