package checker

import (
	"testing"
	"time"
)

// BenchmarkCheck judges a correct history of the size a scenario records:
// 1,000 committed transactions, 10 stores over 200 keys, 3,000 reads and
// 10 replica snapshots. Check must stay well under 50ms for it.
func BenchmarkCheck(b *testing.B) {
	h := benchHistory(1)
	b.ReportAllocs()
	for b.Loop() {
		if rep := Check(h, Options{}); len(rep.Anomalies) != 0 {
			b.Fatalf("bench history judged wrong:\n%s", rep)
		}
	}
}

// The benchmark's history is correct, and Check is fast on it: a loose
// bound here (the benchmark gives the real figure) so a slow machine does
// not flake.
func TestBenchHistoryIsCorrectAndFast(t *testing.T) {
	h := benchHistory(2)
	start := time.Now()
	rep := Check(h, Options{})
	took := time.Since(start)
	if len(rep.Anomalies) != 0 || rep.Verdict != Pass {
		t.Fatalf("bench history judged wrong:\n%s", rep)
	}
	if rep.Reads != 3000 || rep.Committed != 1000 || rep.Stores != 10 {
		t.Fatalf("unexpected size: %+v", rep)
	}
	t.Logf("Check took %s", took)
	if took > time.Second {
		t.Fatalf("Check took %s on the benchmark history", took)
	}
}
