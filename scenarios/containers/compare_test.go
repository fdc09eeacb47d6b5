package containers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// figures counts a transaction once, at its first append; a copy sent
// again after the kill is a duplicate; latency runs from commit to the
// first append; the restart lasts until the topic holds every transaction
// committed before the start, the catch-up until it holds every
// transaction committed before the load's end; transactions outside the
// load are ignored.
func TestCompareFigures(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	commits := map[uint64]time.Time{1: at(0), 2: at(100), 3: at(200), 4: at(900), 9: at(-5000)}
	workload := map[uint64]bool{1: true, 2: true, 3: true, 4: true}
	l := load{start: t0, warm: at(5), killAt: at(300), restart: at(500), end: at(1000)}
	recs := []appended{
		{xid: 9, changes: 100, at: at(-4000), appendTime: true}, // the initial load: not the workload's
		{xid: 1, changes: 5, at: at(10), appendTime: true},
		{xid: 2, changes: 5, at: at(120), appendTime: true},
		// killed at 300, started at 500: 3 comes late, 2 again.
		{xid: 2, changes: 5, at: at(1400), appendTime: true},
		{xid: 3, changes: 5, at: at(1500), appendTime: true},
		{xid: 4, changes: 5, at: at(1600), appendTime: true},
	}
	f := figures("x", recs, commits, workload, l, &cgroupMeter{})
	if f.Txns != 4 || f.Changes != 20 || f.Duplicates != 1 {
		t.Fatalf("txns %d changes %d duplicates %d, want 4, 20, 1", f.Txns, f.Changes, f.Duplicates)
	}
	if f.Restart != time.Second {
		t.Errorf("restart %v, want 1s (3, committed at 200 ms, appended at 1500 ms; started at 500 ms)", f.Restart)
	}
	if f.CatchUp != 600*time.Millisecond {
		t.Errorf("catch-up %v, want 600ms (4, committed at 900 ms, appended at 1600 ms; load ended at 1000 ms)", f.CatchUp)
	}
	// Lags 10, 20, 700, 1300 ms.
	if f.LatencyP50 != 700*time.Millisecond || f.LatencyP99 != 1300*time.Millisecond {
		t.Errorf("p50 %v p99 %v, want 700ms and 1.3s", f.LatencyP50, f.LatencyP99)
	}
	// Committed after the warm-up (5 ms) and appended before the kill at
	// 300 ms: 2 only (20 ms); 3, held back by the kill, is the restart's.
	if f.SteadyP50 != 20*time.Millisecond || f.SteadyP99 != 20*time.Millisecond {
		t.Errorf("before the kill: p50 %v p99 %v, want 20ms and 20ms", f.SteadyP50, f.SteadyP99)
	}
	if want := 20 / 1.6; f.Rate < want-0.01 || f.Rate > want+0.01 {
		t.Errorf("rate %.2f, want %.2f", f.Rate, want)
	}
	if !f.AppendTime {
		t.Error("every record had LogAppendTime, but AppendTime is false")
	}
	// One steady transaction: no gap between appends.
	if f.Steady != 1 || f.Gaps != 0 {
		t.Errorf("%d steady transactions, %d gaps; want 1 and 0", f.Steady, f.Gaps)
	}
	// A transaction committed before the start that never arrives: the
	// restart never completed.
	f = figures("x", recs[:3], commits, workload, l, &cgroupMeter{})
	if f.Restart != -1 || f.CatchUp != -1 {
		t.Errorf("restart %v, catch-up %v with transactions 3 and 4 missing, want -1 (never) for both", f.Restart, f.CatchUp)
	}
	// The load's end is its last commit (900 ms, transaction 4's), which
	// the catch-up waits for too.
	if end := lastCommit(commits, workload, at(5000)); !end.Equal(at(900)) {
		t.Errorf("last commit %v, want 900 ms", end.Sub(t0))
	}
	if end := lastCommit(commits, map[uint64]bool{}, at(5000)); !end.Equal(at(5000)) {
		t.Errorf("last commit of no transactions %v, want the load's own end", end.Sub(t0))
	}
	atLast := l
	atLast.end = at(900)
	if f = figures("x", recs, commits, workload, atLast, &cgroupMeter{}); f.CatchUp != 700*time.Millisecond {
		t.Errorf("catch-up %v from the last commit at 900 ms, want 700ms (its own append at 1600 ms)", f.CatchUp)
	}
	// A load that ended after the last append: caught up at its end.
	late := l
	late.end = at(2000)
	if f = figures("x", recs, commits, workload, late, &cgroupMeter{}); f.CatchUp != 0 {
		t.Errorf("catch-up %v with every transaction appended before the load's end, want 0", f.CatchUp)
	}
	// Without a kill there is no restart, and every latency is steady.
	calm := load{start: t0, warm: t0, end: at(1000)}
	if f = figures("x", recs, commits, workload, calm, &cgroupMeter{}); f.Restart != -1 || f.SteadyP99 != f.LatencyP99 {
		t.Errorf("no kill: restart %v, steady p99 %v, whole p99 %v; want -1 and the same p99", f.Restart, f.SteadyP99, f.LatencyP99)
	}
	// First appends at 10, 120, 1500 and 1600 ms (the copy of 2 is not
	// one): gaps 110, 1380 and 100 ms.
	if f.GapP50 != 110*time.Millisecond || f.GapP99 != 1380*time.Millisecond || f.Gaps != 3 {
		t.Errorf("no kill: gaps p50 %v p99 %v, want 110ms and 1.38s", f.GapP50, f.GapP99)
	}
	recs[1].appendTime = false
	if f = figures("x", recs, commits, workload, l, &cgroupMeter{}); f.AppendTime {
		t.Error("a record with its producer's timestamp, but AppendTime is true")
	}
}

// A restarted container's cgroup counts from zero: the meter adds its
// lives, from the sample at start(), and keeps the highest peak.
func TestCgroupMeterSumsLives(t *testing.T) {
	m := &cgroupMeter{}
	feed := m.add
	feed(2*time.Second, 100)
	m.start()
	feed(3*time.Second, 300) // first life: 1 s since start
	feed(time.Second/2, 50)  // killed and started again
	feed(time.Second, 80)    // second life: 1 s
	cpu, peak, ok := m.figures()
	if cpu != 2*time.Second || peak != 300 || !ok {
		t.Fatalf("cpu %v peak %d ok %v, want 2s, 300, true", cpu, peak, ok)
	}
}

// The table shows every capture's figures, lockstep / Debezium beside each
// Debezium column, says when the timestamps were not the broker's, shows no
// ratio where Debezium's figure is zero or a restart never finished, and
// adds the maximum-rate load's table with whether each capture kept up.
func TestCompareTable(t *testing.T) {
	variants, err := Variants([]string{"stock", "tuned"}, 10*time.Millisecond, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lag := func(p50, max int64) LagFigures { return LagFigures{P50: p50, Max: max, Samples: 30} }
	c := &Comparison{
		Config: CompareConfig{Clients: 4, Duration: 30 * time.Second, KillAt: 10 * time.Second, Warmup: 5 * time.Second, Debezium: variants, MaxRate: 20 * time.Second, MaxClients: 16},
		Phase: Phase{Committed: 1000, Offered: 166, Captures: []CaptureFigures{
			{Txns: 1000, Changes: 5000, Rate: 160, Steady: 800, Gaps: 100, SteadyP50: 5 * time.Millisecond, SteadyP99: 40 * time.Millisecond, LatencyP50: 6 * time.Millisecond, LatencyP99: 2 * time.Second,
				AppendTime: true, GapP99: 50 * time.Millisecond, CPU: time.Second, PeakRSS: 40 << 20, Measured: true, Restart: 2 * time.Second, Duplicates: 0, CatchUp: 0, SlotLag: lag(8<<10, 3<<20)},
			{Txns: 1000, Changes: 5000, Rate: 80, Steady: 800, Gaps: 100, SteadyP50: 500 * time.Millisecond, SteadyP99: 800 * time.Millisecond, LatencyP50: 600 * time.Millisecond, LatencyP99: 20 * time.Second,
				AppendTime: true, CPU: 6172500 * time.Microsecond, PeakRSS: 400 << 20, Measured: true, Restart: -1, Duplicates: 3000, CatchUp: 4 * time.Second, SlotLag: lag(30<<20, 60<<20)},
			{Txns: 1000, Changes: 5000, Rate: 160, Steady: 800, Gaps: 100, SteadyP50: 20 * time.Millisecond, SteadyP99: 80 * time.Millisecond, LatencyP50: 60 * time.Millisecond, LatencyP99: 10 * time.Second,
				AppendTime: true, GapP99: 25 * time.Millisecond, CPU: 4 * time.Second, PeakRSS: 400 << 20, Measured: true, Restart: 8 * time.Second, Duplicates: 30, CatchUp: time.Second, SlotLag: lag(1<<20, 2<<20)},
		}},
		MaxRate: &Phase{Committed: 2000, Offered: 1000, Captures: []CaptureFigures{
			{Changes: 20000, Rate: 1000, AppendTime: true, Measured: true, CPU: 2 * time.Second, CatchUp: 500 * time.Millisecond, LatencyP99: 100 * time.Millisecond, SlotLag: lag(1<<20, 2<<20)},
			{Changes: 20000, Rate: 500, AppendTime: true, Measured: true, CPU: 8 * time.Second, CatchUp: 20 * time.Second, LatencyP99: 20 * time.Second, SlotLag: lag(50<<20, 80<<20)},
			{Changes: 20000, Rate: 900, AppendTime: true, Measured: true, CPU: 4 * time.Second, CatchUp: 2 * time.Second, LatencyP99: 200 * time.Millisecond, SlotLag: lag(2<<20, 4<<20)},
		}},
	}
	tab := c.Table()
	for _, want := range []string{
		"pgbench TPC-B -c 4 for 30s: 1000 transactions committed, 166 changes/s; every capture killed -9 at 10s",
		"| measure | lockstep | Debezium stock (poll 500 ms, flush 60 s) | lockstep / stock | Debezium tuned (poll 10ms, flush 1s) | lockstep / tuned |\n|---|---|---|---|---|---|\n",
		"| changes/s, load start to last append | 160 | 80 | 2.00 | 160 | 1.00 |",
		"| commit -> Kafka append p50, after 5s warm-up, appended before the kill | 5.0 ms | 500.0 ms | 0.01 | 20.0 ms | 0.25 |",
		"| commit -> Kafka append p99, whole load (kill included) | 2000.0 ms | 20000.0 ms | 0.10 | 10000.0 ms | 0.20 |",
		"| slot lag p50 (WAL bytes behind confirmed_flush_lsn, sampled each second) | 8 kB | 30.0 MB | 0.00 | 1.0 MB | 0.01 |",
		"| time between its topic's appends p99, same | 50.0 ms | 0.0 ms | - | 25.0 ms | 2.00 |",
		"| slot lag max (same) | 3.0 MB | 60.0 MB | 0.05 | 2.0 MB | 1.50 |",
		"| catch-up after the load's end (until its topic held all committed before it) | 0s | 4s | 0.00 | 1s | 0.00 |",
		"| CPU per change (cgroup, load start to caught up) | 200µs | 1.23ms | 0.16 | 800µs | 0.25 |",
		"| peak memory (cgroup) | 40 MB | 400 MB | 0.10 | 400 MB | 0.10 |",
		"| 2s | never | - | 8s | 0.25 |",
		"| duplicates after the crash | 0 | 3000 | 0.00 | 30 | 0.00 |",
		"maximum rate: pgbench -f max-rate.sql (50 changes per transaction: an account update, 49 history rows in one insert) -c 16 for 20s, no kill: 2000 transactions committed, 1000 changes/s offered",
		"| changes/s, load start to last append | 1000 | 500 | 2.00 | 900 | 1.11 |",
		"| kept up (caught up within 2s of the load's end) | yes | no | - | yes | - |",
		"maximum rate: pgbench -f max-rate.sql (50 changes per transaction: an account update, 49 history rows in one insert) -c 16 for 20s, no kill: 2000 transactions committed, 1000 changes/s offered\n\n| measure | lockstep | Debezium stock (poll 500 ms, flush 60 s) | lockstep / stock | Debezium tuned (poll 10ms, flush 1s) | lockstep / tuned |\n|---|---|---|---|---|---|\n| transactions captured | 0 | 0 | - | 0 | - |",
		"| commit -> Kafka append p99 | 100.0 ms | 20000.0 ms | 0.01 | 200.0 ms | 0.50 |",
		"| CPU per change (cgroup, load start to caught up) | 100µs | 400µs | 0.25 | 200µs | 0.50 |",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	// One variant: one Debezium column pair; a record with its producer's
	// timestamp renames the latency rows; no cgroup, no CPU rows.
	c.Config.Debezium = variants[1:]
	c.Captures = []CaptureFigures{c.Captures[0], c.Captures[2]}
	c.Captures[1].AppendTime = false
	c.Captures[1].Measured = false
	c.Captures[1].Gaps = 0 // the capture lagged past the kill
	c.MaxRate = nil
	tab = c.Table()
	for _, want := range []string{
		"| measure | lockstep | Debezium tuned (poll 10ms, flush 1s) | lockstep / tuned |\n|---|---|---|---|\n",
		"| commit -> Kafka record timestamp (not LogAppendTime) p50, after 5s warm-up, appended before the kill | 5.0 ms | 20.0 ms | 0.25 |",
		"| CPU per change, peak memory | not measured (no readable cgroup) | not measured (no readable cgroup) | - |",
		"| time between its topic's appends p99, same | 50.0 ms | none | - |",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	if strings.Contains(tab, "maximum rate") || strings.Contains(tab, "stock") {
		t.Errorf("a table with the tuned connector alone and no maximum-rate load names them:\n%s", tab)
	}
}

func TestCompareConfigValidate(t *testing.T) {
	both, err := Variants([]string{"stock", " tuned"}, 10*time.Millisecond, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ok := CompareConfig{Clients: 4, Duration: 30 * time.Second, KillAt: 10 * time.Second, Debezium: both, MaxRate: 10 * time.Second, MaxClients: 16}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	with := func(f func(*CompareConfig)) CompareConfig { c := ok; f(&c); return c }
	for name, c := range map[string]CompareConfig{
		"no clients":      with(func(c *CompareConfig) { c.Clients = 0 }),
		"no load":         with(func(c *CompareConfig) { c.Duration = 0 }),
		"kill after load": with(func(c *CompareConfig) { c.KillAt = 30 * time.Second }),
		"negative kill":   with(func(c *CompareConfig) { c.KillAt = -time.Second }),
		"negative poll": with(func(c *CompareConfig) {
			c.Debezium = []DebeziumVariant{{Name: "tuned", Options: DebeziumOptions{Poll: -1}}}
		}),
		"restart past load":    with(func(c *CompareConfig) { c.Duration, c.KillAt = 10*time.Second, 9500*time.Millisecond }),
		"warm-up past kill":    with(func(c *CompareConfig) { c.KillAt, c.Warmup = 5*time.Second, 5*time.Second }),
		"no Debezium":          with(func(c *CompareConfig) { c.Debezium = nil }),
		"max rate too short":   with(func(c *CompareConfig) { c.MaxRate = time.Millisecond }),
		"max rate, no clients": with(func(c *CompareConfig) { c.MaxClients = 0 }),
	} {
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if c := with(func(c *CompareConfig) { c.MaxRate, c.MaxClients = 0, 0 }); c.Validate() != nil {
		t.Errorf("no maximum-rate load refused: %v", c.Validate())
	}
}

// The two variants share nothing but the source and the brokers: their own
// container, slot, publication and topics; stock keeps Debezium's
// defaults and tuned takes poll and flush. Unknown or repeated names are
// refused.
func TestVariants(t *testing.T) {
	vs, err := Variants([]string{"stock", "tuned"}, 10*time.Millisecond, time.Second)
	if err != nil || len(vs) != 2 {
		t.Fatalf("%v, %v", vs, err)
	}
	s, u := vs[0].Options, vs[1].Options
	if s.ServiceName() == u.ServiceName() || s.SlotName() == u.SlotName() || s.Publication == u.Publication || s.TransactionTopic() == u.TransactionTopic() {
		t.Errorf("stock %+v and tuned %+v share a name", s, u)
	}
	if s.Poll != 0 || s.Flush != 0 || u.Poll != 10*time.Millisecond || u.Flush != time.Second {
		t.Errorf("stock poll %v flush %v, tuned poll %v flush %v; want 0, 0, 10ms, 1s", s.Poll, s.Flush, u.Poll, u.Flush)
	}
	if s.ServiceName() != DebeziumService || u.SlotName() != "debezium_tuned" {
		t.Errorf("services %s and %s, slots %s and %s", s.ServiceName(), u.ServiceName(), s.SlotName(), u.SlotName())
	}
	for _, names := range [][]string{{"stock", "stock"}, {"fast"}, {""}, nil} {
		if _, err := Variants(names, 0, 0); err == nil {
			t.Errorf("%q accepted", names)
		}
	}
}

// Records appended together share one LogAppendTime: the gaps are between
// distinct append times, in time order.
func TestAppendGaps(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	got := appendGaps([]time.Time{at(50), at(10), at(10), at(30), at(50), at(50)})
	if want := []time.Duration{20 * time.Millisecond, 20 * time.Millisecond}; !slices.Equal(got, want) {
		t.Errorf("gaps %v, want %v", got, want)
	}
	if got := appendGaps([]time.Time{at(5), at(5)}); len(got) != 0 {
		t.Errorf("one batch: gaps %v, want none", got)
	}
}

// awaitMarker waits for a capture far behind as long as its topic grows,
// and gives up, naming it, on one that stopped appending.
func TestAwaitMarker(t *testing.T) {
	topic := func(grows, stopsAt int) *compared {
		var recs []appended
		return &compared{name: fmt.Sprintf("grows-%d", grows), meter: &cgroupMeter{id: "none"},
			read: func(context.Context) ([]appended, error) {
				for i := 0; i < grows && len(recs) < stopsAt; i++ {
					recs = append(recs, appended{xid: uint64(len(recs) + 1)})
				}
				return slices.Clone(recs), nil
			}}
	}
	ctx := context.Background()
	// One record a read: the marker (xid 40) comes after 40 reads, far
	// past the stall limit of 20 ms if that were a deadline.
	slow := topic(1, 1000)
	got, err := awaitMarker(ctx, []*compared{slow, topic(100, 1000)}, 40, "logs", time.Millisecond, 20*time.Millisecond)
	if err != nil || !holds(got[slow.name], 40) {
		t.Fatalf("a growing topic: %v, holds the marker %v", err, holds(got[slow.name], 40))
	}
	// A topic that stops at 10 records never holds the marker 40.
	stuck := topic(1, 10)
	_, err = awaitMarker(ctx, []*compared{topic(100, 1000), stuck}, 40, "logs", time.Millisecond, 20*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), stuck.name+" appended nothing for 20ms") {
		t.Fatalf("a stuck topic: %v", err)
	}
}
