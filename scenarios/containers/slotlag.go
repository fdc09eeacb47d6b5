package containers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// slotLags samples how far each replication slot's confirmed position is
// behind the source's WAL end (pg_current_wal_lsn() - confirmed_flush_lsn,
// in bytes): the WAL PostgreSQL keeps for a capture, and what it would send
// again after a crash. Debezium confirms an LSN only when Connect flushes
// its offsets, so its lag grows by design between flushes.
type slotLags struct {
	mu      sync.Mutex
	samples map[string][]lagAt // by slot name, in time order
}

type lagAt struct {
	at    time.Time
	bytes int64
}

// slotLagSQL reads every slot's lag in one statement, with the source's
// clock, so the samples line up with the commit timestamps.
const slotLagSQL = `SELECT slot_name::text, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, clock_timestamp()
FROM pg_replication_slots WHERE confirmed_flush_lsn IS NOT NULL`

// sample takes one reading of every slot.
func (s *slotLags) sample(ctx context.Context, db *pgx.Conn) error {
	rows, err := db.Query(ctx, slotLagSQL)
	if err != nil {
		return fmt.Errorf("containers: slot lag: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var slot string
		var bytes int64
		var at time.Time
		if err := rows.Scan(&slot, &bytes, &at); err != nil {
			return fmt.Errorf("containers: slot lag: %w", err)
		}
		s.add(slot, at, bytes)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("containers: slot lag: %w", err)
	}
	return nil
}

func (s *slotLags) add(slot string, at time.Time, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.samples == nil {
		s.samples = map[string][]lagAt{}
	}
	s.samples[slot] = append(s.samples[slot], lagAt{at, bytes})
}

// run samples every period until ctx ends; a failed reading (the source
// busy past the period) is skipped, not guessed.
func (s *slotLags) run(ctx context.Context, db *pgx.Conn, period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, period)
		_ = s.sample(qctx, db)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// LagFigures are one slot's lag over a load: the median and the largest
// sample, in bytes of WAL, and how many samples they come from.
type LagFigures struct {
	P50, Max int64
	Samples  int
}

// figures is slot's lag over the samples taken from from to to.
func (s *slotLags) figures(slot string, from, to time.Time) LagFigures {
	s.mu.Lock()
	defer s.mu.Unlock()
	var in []int64
	for _, l := range s.samples[slot] {
		if !l.at.Before(from) && !l.at.After(to) {
			in = append(in, l.bytes)
		}
	}
	if len(in) == 0 {
		return LagFigures{}
	}
	slices.Sort(in)
	return LagFigures{P50: in[len(in)/2], Max: in[len(in)-1], Samples: len(in)}
}
