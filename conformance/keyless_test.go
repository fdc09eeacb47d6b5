package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/pgsource"
	"lockstep/sim"
	"lockstep/sim/services"
)

// bareTable has no primary key and the default replica identity: lockstep
// cannot name its rows.
var bareTable = pipeline.KeylessTable{Name: "bare", Columns: []string{"at", "what"}}

// refusals creates bare while the stream runs, writes it, and tells what the
// source and the stream make of it: the transactions streamed before the
// refusal, the refusal (a NoKeyError naming bare and the transaction that
// wrote it, its xid left out of the text), the same after a new Start, a
// delete from bare, and a snapshot. It is the same code in both worlds.
func refusals(ctx context.Context, src pipeline.Source, stream pipeline.ChangeStream, create func() error) (string, error) {
	if _, err := pipeline.ReadSnapshot(ctx, stream); err != nil {
		return "", fmt.Errorf("snapshot: %w", err)
	}
	if _, err := stream.Start(ctx); err != nil {
		return "", fmt.Errorf("start: %w", err)
	}
	if err := create(); err != nil {
		return "", fmt.Errorf("create bare: %w", err)
	}
	if _, err := src.Exec(ctx, func(tx pipeline.Tx) error { tx.Put("t1", "a", model.R("v", "1")); return nil }); err != nil {
		return "", err
	}
	blocked, err := src.Exec(ctx, func(tx pipeline.Tx) error {
		tx.Put("t1", "b", model.R("v", "1"))
		tx.InsertRow(bareTable.Name, model.R("at", "1", "what", "boot"))
		return nil
	})
	if err != nil {
		return "", err
	}
	_, delErr := src.Exec(ctx, func(tx pipeline.Tx) error {
		tx.DeleteRow(bareTable.Name, model.R("at", "1", "what", "boot"))
		return nil
	})
	var b strings.Builder
	refusal := func(what string) error {
		for {
			txns, err := stream.Next(ctx)
			var nk *pipeline.NoKeyError
			switch {
			case errors.As(err, &nk) && errors.Is(err, pipeline.ErrUnsupported):
				if nk.XID != blocked.XID {
					return fmt.Errorf("%s: the refusal names xid %d, the transaction that wrote bare is %d", what, nk.XID, blocked.XID)
				}
				fmt.Fprintf(&b, "%s: refused: %s\n", what, strings.Replace(nk.Error(), fmt.Sprint(nk.XID), "X", 1))
				return nil
			case err != nil:
				return fmt.Errorf("%s: %w", what, err)
			}
			for _, t := range txns {
				if t.CommitLSN >= blocked.CommitLSN && blocked.CommitLSN != 0 {
					return fmt.Errorf("%s: streamed past the refused transaction", what)
				}
				for _, c := range t.Changes {
					fmt.Fprintf(&b, "%s: streamed %s\n", what, showChange(c))
				}
			}
		}
	}
	if err := refusal("stream"); err != nil {
		return "", err
	}
	if _, err := stream.Start(ctx); err != nil {
		return "", fmt.Errorf("start again: %w", err)
	}
	if err := refusal("stream started again"); err != nil {
		return "", err
	}
	const noIdentity = "because it does not have a replica identity and publishes deletes"
	fmt.Fprintf(&b, "delete from bare refused: %v\n", delErr != nil && strings.Contains(delErr.Error(), noIdentity))
	_, err = pipeline.ReadSnapshot(ctx, stream)
	var nk *pipeline.NoKeyError
	if !errors.As(err, &nk) {
		return "", fmt.Errorf("snapshot with bare: %v, want a NoKeyError", err)
	}
	fmt.Fprintf(&b, "snapshot refused: %s\n", nk)
	return b.String(), nil
}

// A table without a key or FULL identity is refused alike by the
// simulated source and by PostgreSQL through pgsource: the stream delivers
// what came before the first transaction that wrote it and then fails
// there, again after a new Start, with the same NoKeyError; a delete from
// it fails; a snapshot refuses it in the same words.
func testKeylessRefused(t *testing.T, dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE t1 (pk text PRIMARY KEY, v text); CREATE PUBLICATION refuse FOR ALL TABLES`); err != nil {
		t.Fatal(err)
	}
	stream, err := pgsource.NewStream(pgsource.Config{DSN: dsn, Slot: "refuse", Publication: "refuse"})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close(context.Background())
	want, err := refusals(ctx, &pgsource.Source{Pool: pool}, stream, func() error {
		return pgsource.CreateKeylessTable(ctx, pool, bareTable)
	})
	if err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}

	w := sim.New(sim.Config{Seed: 1})
	defer w.Stop()
	db := w.AddNode("db", services.BootSourceDB(&services.Recorder{}))
	app := w.AddNode("app", nil)
	var got string
	var simErr error
	done := false
	app.Go("program", func(ctx context.Context) {
		got, simErr = refusals(ctx, &services.SourceClient{From: app, DB: db}, &services.StreamClient{From: app, DB: db}, func() error {
			return db.State().(*services.SourceDB).CreateTable(bareTable)
		})
		done = true
	})
	for !done && w.Now() < time.Minute {
		if err := w.Run(w.Now() + time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if !done || simErr != nil {
		t.Fatalf("simulator: done=%v: %v", done, simErr)
	}
	if got != want {
		t.Fatalf("the simulated source and PostgreSQL refuse differently\n--- simulator\n%s--- PostgreSQL 15\n%s", got, want)
	}
	if !strings.Contains(want, "stream: streamed insert t1/a") || !strings.Contains(want, "delete from bare refused: true") {
		t.Fatalf("PostgreSQL did not do what the test expects of it:\n%s", want)
	}
	t.Logf("both worlds:\n%s", want)
}
