package containers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/scenarios"
)

// A reset cluster is a fresh one: after a run that left every kind of
// residue (another workload's tables and rows, a second instance, a dropped
// and remade slot, retention, a crashed Redis) and faults left in force
// (a partition, a loss, a paused broker), Reset gives the fingerprint of the
// cluster just started, and the same run (one client, no faults, so the
// same transactions in the same order) sees the same committed
// transactions as on the fresh cluster and holds every claim again. It
// logs what a seed costs with and without a reset cluster.
func TestResetIsAFreshCluster(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	logger := testLogger()
	began := time.Now()
	w, err := Start(ctx, Options{LogDir: t.TempDir(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	startCost := time.Since(began)
	defer w.Close(ctx)
	fresh, err := w.Fingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"container redis (store): running", "pg-source: database postgres false true", "pg-source: schema public owner pg_database_owner"} {
		if !strings.Contains(fresh, want) {
			t.Fatalf("the fresh fingerprint lacks %q:\n%s", want, fresh)
		}
	}

	steady, err := Lookup("steady")
	if err != nil {
		t.Fatal(err)
	}
	same := Config{Scenario: steady, System: scenarios.Pipeline, Seed: 3, Txns: 40, Clients: 1, Plan: plan(t, "quiet @12s"), World: w, Logger: logger}
	a, err := Run(ctx, same)
	if err != nil {
		t.Fatal(err)
	}

	retention, err := Lookup("retention")
	if err != nil {
		t.Fatal(err)
	}
	dirty, err := Run(ctx, Config{Scenario: retention, System: scenarios.Pipeline, Seed: 9, Txns: 150, World: w, Logger: logger, Plan: plan(t, `
@2s pause applier-replica
@3s second-instance applier-replica
@5s resume applier-replica
@6s crash redis
@7s restart redis
@8s slot-drop pg-source
@12s retention 3s
quiet @16s`)})
	if err != nil {
		t.Fatal(err)
	}
	// Its verdict is not judged here: the slot drop makes a new snapshot,
	// which restarts the search index's revision counts in containers
	// (the README's soak: an open question, not the reset's).
	t.Logf("the run that dirties the cluster: %d committed, verdict %s", len(dirty.History.Committed), dirty.Report.Verdict)
	// What the run left, read before the faults below: a paused broker
	// cannot answer the fingerprint's questions to Kafka (ListGroups asks
	// every broker, and times out on it).
	used, err := w.Fingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"container applier-replica-2", "pg-source: relation public.", "pg-source: slot lockstep_audit", "pg-replica: schema lockstep_replica", "kafka: topic lockstep", "kafka: group lockstep-", "redis: # Keyspace db0:keys="} {
		if !strings.Contains(used, want) {
			t.Errorf("the used cluster's fingerprint lacks %q: it cannot tell a used cluster from a fresh one\n%s", want, used)
		}
	}
	// Faults left in force, as by a run that ended in an error before its
	// quiet phase healed them: the containers' part of the fingerprint
	// shows them.
	target := NewTarget(ctx, w)
	if err := target.Partition([]string{"pg-replica"}, []string{"kafka1"}, false); err != nil {
		t.Fatal(err)
	}
	if err := target.Loss("redis", "pg-search", 0.5); err != nil {
		t.Fatal(err)
	}
	if err := target.Pause("kafka2"); err != nil {
		t.Fatal(err)
	}
	faulted, err := w.ContainerFingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"container kafka2 (broker): paused", "-j DROP", "statistic --mode random"} {
		if !strings.Contains(faulted, want) {
			t.Errorf("the faulted cluster's fingerprint lacks %q: it cannot tell faults in force\n%s", want, faulted)
		}
	}

	began = time.Now()
	if err := w.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	resetCost := time.Since(began)
	after, err := w.Fingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after != fresh {
		t.Fatalf("after Reset the cluster is not as it started:\n%s", lineDiff(fresh, after))
	}

	c, err := Run(ctx, same)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*Outcome{a, c} {
		if o.Violated() || len(o.History.Committed) < 20 {
			t.Fatalf("steady on the %s cluster: %d committed, report:\n%s", map[bool]string{true: "fresh", false: "reset"}[o == a], len(o.History.Committed), o.Report)
		}
	}
	ta, tc := txnTexts(a.History.Committed), txnTexts(c.History.Committed)
	for i := range min(len(ta), len(tc)) {
		if ta[i] != tc[i] {
			t.Fatalf("committed transaction %d on the fresh cluster:\n%s\non the reset one:\n%s", i, ta[i], tc[i])
		}
	}

	began = time.Now()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	closeCost := time.Since(began)
	t.Logf("per-seed cost of steady (40 txns, 12 s fault phase): fresh cluster %v (start %v + run %v + close %v); reset cluster %v (reset %v + run %v)",
		(startCost + a.Wall + closeCost).Round(100*time.Millisecond), startCost.Round(100*time.Millisecond), a.Wall.Round(100*time.Millisecond), closeCost.Round(100*time.Millisecond),
		(resetCost + c.Wall).Round(100*time.Millisecond), resetCost.Round(100*time.Millisecond), c.Wall.Round(100*time.Millisecond))
}

// txnTexts are committed transactions without what differs between two
// clusters' runs of the same transactions: commit LSNs and transaction ids.
func txnTexts(txns []model.Txn) []string {
	var out []string
	for _, t := range txns {
		var b strings.Builder
		for _, c := range t.Changes {
			fmt.Fprintf(&b, "%s/%s %v %v old=%q unchanged=%v\n", c.Table, c.PK, c.Op, c.Row, c.OldPK, c.Unchanged)
		}
		out = append(out, b.String())
	}
	return out
}

// lineDiff lists the lines only one of two fingerprints has.
func lineDiff(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}
