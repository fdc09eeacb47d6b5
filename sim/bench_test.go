package sim

import (
	"context"
	"iter"
	"testing"
	"time"
)

// BenchmarkTaskSwitch measures pure scheduling: 8 tasks on one node each
// sleeping 1µs in a loop; every iteration is one park + one resume.
func BenchmarkTaskSwitch(b *testing.B) {
	w := New(Config{Seed: 1})
	n := w.AddNode("n", nil)
	per := b.N/8 + 1
	for i := 0; i < 8; i++ {
		n.Go("t", func(ctx context.Context) {
			for j := 0; j < per; j++ {
				w.sleep(time.Microsecond)
			}
		})
	}
	b.ResetTimer()
	start := time.Now()
	if err := w.Run(time.Duration(1 << 62)); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.ReportMetric(float64(w.Stats().Switches)/el.Seconds(), "switches/s")
}

// BenchmarkMessages measures request/response calls: 8 client tasks calling
// a server; each call is two messages and one task switch.
func BenchmarkMessages(b *testing.B) {
	w := New(Config{Seed: 1})
	srv := w.AddNode("srv", func(n *Node) any { return &counter{n: n} })
	cli := w.AddNode("cli", nil)
	per := b.N/8 + 1
	for i := 0; i < 8; i++ {
		cli.Go("c", func(ctx context.Context) {
			for j := 0; j < per; j++ {
				_, _ = Call(ctx, cli, srv, time.Second, func(c *counter) (int, error) { c.hits++; return c.hits, nil })
			}
		})
	}
	b.ResetTimer()
	start := time.Now()
	if err := w.Run(time.Duration(1 << 62)); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.ReportMetric(float64(w.Stats().Messages)/el.Seconds(), "msgs/s")
}

// BenchmarkSleepHeavySpeedup runs tasks that mostly sleep (10ms..100ms) and
// reports how much faster than wall time virtual time passes.
func BenchmarkSleepHeavySpeedup(b *testing.B) {
	var virtual, wall time.Duration
	for i := 0; i < b.N; i++ {
		w := New(Config{Seed: uint64(i)})
		n := w.AddNode("n", nil)
		for j := 0; j < 16; j++ {
			n.Go("sleeper", func(ctx context.Context) {
				for k := 0; k < 100; k++ {
					w.sleep(10*time.Millisecond + time.Duration(w.Rand().Int64N(int64(90*time.Millisecond))))
				}
			})
		}
		start := time.Now()
		if err := w.Run(time.Hour); err != nil {
			b.Fatal(err)
		}
		wall += time.Since(start)
		virtual += w.Now()
	}
	b.ReportMetric(float64(virtual)/float64(wall), "x-wall")
}

// BenchmarkRawCoroutineSwitch is the floor the kernel builds on: a bare
// iter.Pull ping-pong with nothing else. TaskSwitch / RawCoroutineSwitch is
// the kernel's overhead (event queue, trace, wake bookkeeping).
func BenchmarkRawCoroutineSwitch(b *testing.B) {
	next, stop := iter.Pull(func(yield func(struct{}) bool) {
		for yield(struct{}{}) {
		}
	})
	defer stop()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		next()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "switches/s")
}
