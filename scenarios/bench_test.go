package scenarios

import (
	"testing"
	"time"
)

// BenchmarkScenarioRun is the yardstick: one seed of a scenario with
// 1,000 transactions, 3 stores and faults, on one core. It reports seeds per
// second and how much faster than wall time simulated time ran.
func BenchmarkScenarioRun(b *testing.B) {
	for _, name := range []string{"swarm", "zombie-pause"} {
		for _, sys := range Systems {
			b.Run(name+"/"+string(sys), func(b *testing.B) {
				sc := ByName(name)
				var virtual time.Duration
				start := time.Now()
				for i := 0; i < b.N; i++ {
					out, err := Run(sc, sys, uint64(i+1), Options{})
					if err != nil {
						b.Fatal(err)
					}
					virtual += out.Virtual
				}
				wall := time.Since(start)
				b.ReportMetric(float64(b.N)/wall.Seconds(), "seeds/s")
				b.ReportMetric(float64(virtual)/float64(wall), "x-wall")
			})
		}
	}
}
