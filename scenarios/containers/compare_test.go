package containers

import (
	"strings"
	"testing"
	"time"
)

// figures counts a transaction once, at its first append; a copy sent
// again after the kill is a duplicate; latency runs from commit to the
// first append; the restart lasts until the topic holds every transaction
// committed before the start; transactions outside the load are ignored.
func TestCompareFigures(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	commits := map[uint64]time.Time{1: at(0), 2: at(100), 3: at(200), 4: at(900), 9: at(-5000)}
	workload := map[uint64]bool{1: true, 2: true, 3: true, 4: true}
	restart := at(500)
	recs := []appended{
		{xid: 9, changes: 100, at: at(-4000), appendTime: true}, // the initial load: not the workload's
		{xid: 1, changes: 5, at: at(10), appendTime: true},
		{xid: 2, changes: 5, at: at(120), appendTime: true},
		// killed at 300, started at 500: 3 comes late, 2 again.
		{xid: 2, changes: 5, at: at(1400), appendTime: true},
		{xid: 3, changes: 5, at: at(1500), appendTime: true},
		{xid: 4, changes: 5, at: at(1600), appendTime: true},
	}
	f := figures("x", recs, commits, workload, t0, at(5), at(300), restart, &cgroupMeter{})
	if f.Txns != 4 || f.Changes != 20 || f.Duplicates != 1 {
		t.Fatalf("txns %d changes %d duplicates %d, want 4, 20, 1", f.Txns, f.Changes, f.Duplicates)
	}
	if f.Restart != time.Second {
		t.Errorf("restart %v, want 1s (3, committed at 200 ms, appended at 1500 ms; started at 500 ms)", f.Restart)
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
	// A transaction committed before the start that never arrives: the
	// restart never completed.
	f = figures("x", recs[:3], commits, workload, t0, at(5), at(300), restart, &cgroupMeter{})
	if f.Restart != -1 {
		t.Errorf("restart %v with transaction 3 missing, want -1 (never)", f.Restart)
	}
	recs[1].appendTime = false
	if f = figures("x", recs, commits, workload, t0, at(5), at(300), restart, &cgroupMeter{}); f.AppendTime {
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

// The table shows both captures' figures and lockstep/Debezium per row,
// says when the timestamps were not the broker's, and shows no ratio
// where Debezium's figure is zero or a restart never finished.
func TestCompareTable(t *testing.T) {
	c := &Comparison{
		Config:    CompareConfig{Clients: 4, Duration: 30 * time.Second, KillAt: 10 * time.Second, Warmup: 5 * time.Second, Debezium: DebeziumOptions{Poll: 10 * time.Millisecond, Flush: time.Second}},
		Committed: 1000,
		Lockstep: CaptureFigures{Txns: 1000, Changes: 5000, Rate: 160, SteadyP50: 5 * time.Millisecond, SteadyP99: 40 * time.Millisecond, LatencyP50: 6 * time.Millisecond, LatencyP99: 2 * time.Second,
			AppendTime: true, CPU: time.Second, PeakRSS: 40 << 20, Measured: true, Restart: 2 * time.Second, Duplicates: 0},
		Debezium: CaptureFigures{Txns: 1000, Changes: 5000, Rate: 160, SteadyP50: 20 * time.Millisecond, SteadyP99: 80 * time.Millisecond, LatencyP50: 60 * time.Millisecond, LatencyP99: 10 * time.Second,
			AppendTime: true, CPU: 4 * time.Second, PeakRSS: 400 << 20, Measured: true, Restart: -1, Duplicates: 30},
	}
	tab := c.Table()
	for _, want := range []string{
		"pgbench -c 4 for 30s, 1000 transactions committed; Debezium poll 10ms, flush 1s",
		"| commit -> Kafka append p50, after 5s warm-up, appended before the kill | 5.0 ms | 20.0 ms | 0.25 |",
		"| commit -> Kafka append p99, after 5s warm-up, appended before the kill | 40.0 ms | 80.0 ms | 0.50 |",
		"| commit -> Kafka append p99, whole load (kill included) | 2000.0 ms | 10000.0 ms | 0.20 |",
		"| CPU per change (cgroup) | 200µs | 800µs | 0.25 |",
		"| peak memory (cgroup) | 40 MB | 400 MB | 0.10 |",
		"| 2s | never | - |",
		"| duplicates after the crash | 0 | 30 | 0.00 |",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	c.Debezium.AppendTime = false
	c.Config.Debezium = DebeziumOptions{}
	tab = c.Table()
	for _, want := range []string{"not LogAppendTime", "poll 500 ms (stock), flush 60 s (stock)"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}

func TestCompareConfigValidate(t *testing.T) {
	ok := CompareConfig{Clients: 4, Duration: 30 * time.Second, KillAt: 10 * time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for name, c := range map[string]CompareConfig{
		"no clients":        {Clients: 0, Duration: 30 * time.Second},
		"no load":           {Clients: 4, Duration: 0},
		"kill after load":   {Clients: 4, Duration: 30 * time.Second, KillAt: 30 * time.Second},
		"negative kill":     {Clients: 4, Duration: 30 * time.Second, KillAt: -time.Second},
		"negative poll":     {Clients: 4, Duration: 30 * time.Second, Debezium: DebeziumOptions{Poll: -1}},
		"restart past load": {Clients: 4, Duration: 10 * time.Second, KillAt: 9500 * time.Millisecond},
		"warm-up past kill": {Clients: 4, Duration: 30 * time.Second, KillAt: 5 * time.Second, Warmup: 5 * time.Second},
	} {
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
