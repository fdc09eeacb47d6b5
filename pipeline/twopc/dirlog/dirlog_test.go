package dirlog

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"lockstep/model"
	"lockstep/pipeline/twopc"
)

func gids(t *testing.T, l *Log) []string {
	t.Helper()
	ds, err := l.Decisions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.GID)
	}
	return out
}

// Decisions come back in the order logged, with their changes, after the
// log is opened again (a restarted coordinator); Done forgets one gid and
// no other (not one whose name ends like it); a half-written decision left
// by a kill is dropped, not read.
func TestDecisionsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	txn := model.Txn{XID: 7, Changes: []model.Change{{Table: "t", PK: "a/1", Op: model.OpInsert, Row: model.R("v", "1")}}}
	for _, gid := range []string{"c#1.10", "c#1.2", "x-c#1.2", "a/b%"} {
		if err := l.Commit(ctx, twopc.Decision{GID: gid, Txn: txn}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, fileName(99, "torn")+".tmp"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.Done(ctx, "c#1.2"); err != nil {
		t.Fatal(err)
	}
	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := gids(t, again), []string{"c#1.10", "x-c#1.2", "a/b%"}; !slices.Equal(got, want) {
		t.Fatalf("decisions after reopening: %v, want %v", got, want)
	}
	ds, _ := again.Decisions(ctx)
	if got := ds[0].Txn; got.XID != 7 || len(got.Changes) != 1 || got.Changes[0].Row.Get("v") != "1" {
		t.Fatalf("decision's transaction: %+v, want %+v", got, txn)
	}
	if err := again.Commit(ctx, twopc.Decision{GID: "c#2.1"}); err != nil {
		t.Fatal(err)
	}
	if got := gids(t, again); got[len(got)-1] != "c#2.1" {
		t.Fatalf("a decision logged after reopening is not last: %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, fileName(99, "torn")+".tmp")); !os.IsNotExist(err) {
		t.Fatalf("the half-written decision is still there: %v", err)
	}
}
