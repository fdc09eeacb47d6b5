package containers

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"lockstep/pipeline/pgsource/pgtest"
)

// A slot's figures are the median and largest of its samples within the
// load's window, and nothing for a slot never sampled.
func TestSlotLagFigures(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &slotLags{}
	for i, b := range []int64{900, 10, 40, 20, 30, 5000} {
		s.add("a", t0.Add(time.Duration(i)*time.Second), b)
	}
	s.add("b", t0.Add(2*time.Second), 7)
	// 1 s to 4 s: 10, 40, 20, 30; the first and last samples are outside.
	if got, want := s.figures("a", t0.Add(time.Second), t0.Add(4*time.Second)), (LagFigures{P50: 30, Max: 40, Samples: 4}); got != want {
		t.Errorf("a: %+v, want %+v", got, want)
	}
	if got, want := s.figures("b", t0, t0.Add(10*time.Second)), (LagFigures{P50: 7, Max: 7, Samples: 1}); got != want {
		t.Errorf("b: %+v, want %+v", got, want)
	}
	if got := s.figures("c", t0, t0.Add(10*time.Second)); got.Samples != 0 {
		t.Errorf("a slot never sampled: %+v", got)
	}
}

// Sampled from a real PostgreSQL: a slot that confirmed the WAL's end lags
// by nothing, one that confirmed nothing since WAL was written lags by at
// least what was written.
func TestSlotLagSample(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	for _, sql := range []string{
		`SELECT pg_create_logical_replication_slot('behind', 'test_decoding')`,
		`SELECT pg_create_logical_replication_slot('ahead', 'test_decoding')`,
		`CREATE TABLE t (id int PRIMARY KEY, v text)`,
		`INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 1000) AS g`,
		`SELECT pg_replication_slot_advance('ahead', pg_current_wal_lsn())`,
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	from := time.Now().Add(-time.Hour)
	s := &slotLags{}
	if err := s.sample(ctx, db); err != nil {
		t.Fatal(err)
	}
	to := time.Now().Add(time.Hour)
	behind, ahead := s.figures("behind", from, to), s.figures("ahead", from, to)
	if behind.Samples != 1 || behind.Max < 100_000 {
		t.Errorf("behind: %+v, want one sample of at least the 100 kB inserted", behind)
	}
	if ahead.Samples != 1 || ahead.Max >= behind.Max || ahead.Max > 1<<10 {
		t.Errorf("ahead: %+v, want one sample of under 1 kB (behind: %+v)", ahead, behind)
	}
}
