package services

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/logcodec"
	"lockstep/sim"
)

// logRig is a three-broker cluster (b1 leads at first) and a client node.
type logRig struct {
	w   *sim.World
	c   *Cluster
	bs  []*sim.Node
	app *sim.Node
}

func newLogRig(t *testing.T, seed uint64) *logRig {
	t.Helper()
	w := newWorld(t, seed)
	c := NewCluster(w, "b")
	return &logRig{w: w, c: c, bs: c.Brokers(), app: w.AddNode("app", nil)}
}

func (r *logRig) client() *LogClient { return &LogClient{From: r.app, Cluster: r.c} }

// batch is one single-change transaction per LSN.
func batch(ls ...model.LSN) []model.Txn {
	out := make([]model.Txn, len(ls))
	for i, l := range ls {
		out[i] = txn(l, upd("k", l.String()))
	}
	return out
}

// recordLSNs lists the LSNs of records, checking their offsets are 0, 1, ...
// from first on.
func recordLSNs(t *testing.T, recs []pipeline.Record, first int64) []model.LSN {
	t.Helper()
	out := make([]model.LSN, len(recs))
	for i, r := range recs {
		if r.Offset != first+int64(i) {
			t.Fatalf("record %d has offset %d, want %d", i, r.Offset, first+int64(i))
		}
		out[i] = r.Txn.CommitLSN
	}
	return out
}

// brokerLog is the LSNs in a broker's current log (nil when it is down).
func brokerLog(n *sim.Node) []model.LSN {
	b, ok := n.State().(*broker)
	if !ok {
		return nil
	}
	out := []model.LSN{}
	for _, e := range b.log {
		out = append(out, e.Txn.CommitLSN)
	}
	return out
}

func ls(v ...model.LSN) []model.LSN { return v }

// Produce returns the offset of a batch's last record; Fetch returns records
// in order with their offsets, from any offset, up to max; an offset past the
// end is out of range. Every replica holds the same log, and group offsets
// read back what was committed.
func TestLogProduceThenFetchInOrder(t *testing.T) {
	r := newLogRig(t, 1)
	lc := r.client()
	var lasts []int64
	var all, middle []pipeline.Record
	var errs []error
	var beyond error
	var committed int64
	r.app.Go("client", func(ctx context.Context) {
		for _, b := range [][]model.Txn{batch(0x10), batch(0x20, 0x30), batch(0x40, 0x50, 0x60)} {
			off, err := lc.Produce(ctx, b)
			lasts, errs = append(lasts, off), append(errs, err)
		}
		var err error
		all, err = lc.Fetch(ctx, 0, 100)
		errs = append(errs, err)
		middle, err = lc.Fetch(ctx, 2, 2)
		errs = append(errs, err)
		_, beyond = lc.Fetch(ctx, 7, 10)
		errs = append(errs, lc.Commit(ctx, "g", 4))
		committed, err = lc.Committed(ctx, "g")
		errs = append(errs, err)
	})
	run(t, r.w, 2*time.Second)

	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if want := []int64{0, 2, 5}; !reflect.DeepEqual(lasts, want) {
		t.Fatalf("last offsets %v, want %v", lasts, want)
	}
	if got, want := recordLSNs(t, all, 0), ls(0x10, 0x20, 0x30, 0x40, 0x50, 0x60); !reflect.DeepEqual(got, want) {
		t.Fatalf("fetched %v, want %v", got, want)
	}
	if got, want := recordLSNs(t, middle, 2), ls(0x30, 0x40); !reflect.DeepEqual(got, want) {
		t.Fatalf("fetch(2, max 2) = %v, want %v", got, want)
	}
	if !errors.Is(beyond, ErrOutOfRange) {
		t.Fatalf("fetch past the end: %v, want ErrOutOfRange", beyond)
	}
	if committed != 4 {
		t.Fatalf("committed group offset %d, want 4", committed)
	}
	for _, b := range r.bs {
		if got := brokerLog(b); !reflect.DeepEqual(got, ls(0x10, 0x20, 0x30, 0x40, 0x50, 0x60)) {
			t.Fatalf("%s holds %v, want every record", b, got)
		}
	}
}

// The broker deduplicates by producer id and sequence: the same sequence
// again answers the first write's offset and writes nothing, a gap is
// refused, and since followers keep producer state too, a retry that lands
// on a new leader after failover is still recognised.
func TestLogBrokerDeduplicatesProducerSequence(t *testing.T) {
	r := newLogRig(t, 2)
	produce := func(ctx context.Context, to *sim.Node, pid, seq int64, lsns ...model.LSN) (int64, error) {
		return sim.Call(ctx, r.app, to, DefaultTimeout, func(b *broker) (int64, error) { return b.produce(pid, seq, batch(lsns...)) })
	}
	type answer struct {
		off int64
		err error
	}
	var got []answer
	r.app.Go("producer", func(ctx context.Context) {
		record := func(off int64, err error) { got = append(got, answer{off, err}) }
		record(produce(ctx, r.bs[0], 7, 1, 0x10, 0x20))
		record(produce(ctx, r.bs[0], 7, 1, 0x10, 0x20)) // a retry
		record(produce(ctx, r.bs[0], 7, 3, 0x40))       // skips sequence 2
		record(produce(ctx, r.bs[0], 7, 2, 0x30))
		record(produce(ctx, r.bs[0], 8, 1, 0x50)) // another producer
		sleepUntil(ctx, r.app, 200*time.Millisecond)
		record(produce(ctx, r.bs[1], 7, 2, 0x30)) // the retry reaches the new leader
	})
	r.w.At(100*time.Millisecond, 1, r.bs[0].Crash)
	run(t, r.w, time.Second)

	want := []answer{{1, nil}, {1, nil}, {0, ErrOutOfSequence}, {2, nil}, {3, nil}, {2, nil}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("answers %v, want %v", got, want)
	}
	if r.c.Leader() != r.bs[1] {
		t.Fatalf("leader %v, want b2 after b1 crashed", r.c.Leader())
	}
	if lsns := recordLSNs(t, r.c.Records(), 0); !reflect.DeepEqual(lsns, ls(0x10, 0x20, 0x30, 0x50)) {
		t.Fatalf("log %v, want each batch once", lsns)
	}
}

// A produce whose acknowledgement is lost (a one-way partition leader ->
// client) was written all the same; the client retries with the same
// sequence once the link heals, the leader recognises it, and the batch is in
// the log once. The session goes on: the next batch follows it.
func TestLogRetriedProduceIsWrittenOnce(t *testing.T) {
	r := newLogRig(t, 3)
	lc := r.client()
	var offB, offC int64
	var errA, errB, errC error
	var tookB time.Duration
	r.app.Go("producer", func(ctx context.Context) {
		_, errA = lc.Produce(ctx, batch(0x10))
		sleepUntil(ctx, r.app, 100*time.Millisecond)
		start := r.w.Now()
		offB, errB = lc.Produce(ctx, batch(0x20, 0x30))
		tookB = r.w.Now() - start
		offC, errC = lc.Produce(ctx, batch(0x40))
	})
	var beforeRetry []model.LSN
	r.w.At(80*time.Millisecond, 1, func() { r.w.Net().Partition([]*sim.Node{r.bs[0]}, []*sim.Node{r.app}, true) })
	r.w.At(150*time.Millisecond, 2, func() { beforeRetry = brokerLog(r.bs[0]) })
	r.w.At(220*time.Millisecond, 3, r.w.Net().Heal)
	run(t, r.w, 2*time.Second)

	if errA != nil || errB != nil || errC != nil {
		t.Fatalf("produce errors: %v, %v, %v", errA, errB, errC)
	}
	if !reflect.DeepEqual(beforeRetry, ls(0x10, 0x20, 0x30)) || tookB < DefaultTimeout {
		t.Fatalf("before the retry the leader held %v and the produce took %v; want the batch written and its ack lost", beforeRetry, tookB)
	}
	if offB != 2 || offC != 3 {
		t.Fatalf("offsets %d, %d; want 2 (the first write's) and 3", offB, offC)
	}
	if got := recordLSNs(t, r.c.Records(), 0); !reflect.DeepEqual(got, ls(0x10, 0x20, 0x30, 0x40)) {
		t.Fatalf("log %v, want the retried batch once", got)
	}
}

// LoseNextAcks loses exactly the next n answers: the produce is retried in
// its session, deduplicated, and answered with the first write's offset;
// the produce after it is answered at once.
func TestLogLoseNextAcksLosesExactlyThem(t *testing.T) {
	r := newLogRig(t, 5)
	lc := r.client()
	var offA, offB int64
	var errA, errB error
	var tookA, tookB time.Duration
	r.c.LoseNextAcks(r.app.Name(), 1)
	r.app.Go("producer", func(ctx context.Context) {
		start := r.w.Now()
		offA, errA = lc.Produce(ctx, batch(0x10, 0x20))
		tookA = r.w.Now() - start
		start = r.w.Now()
		offB, errB = lc.Produce(ctx, batch(0x30))
		tookB = r.w.Now() - start
	})
	run(t, r.w, 2*time.Second)
	if errA != nil || errB != nil {
		t.Fatalf("produce errors: %v, %v", errA, errB)
	}
	if offA != 1 || offB != 2 {
		t.Fatalf("offsets %d, %d; want 1 (the first write's) and 2", offA, offB)
	}
	if tookA < DefaultTimeout || tookB >= DefaultTimeout {
		t.Fatalf("the produces took %v and %v; want the first to wait out its lost answer and the second not", tookA, tookB)
	}
	if got := recordLSNs(t, r.c.Records(), 0); !reflect.DeepEqual(got, ls(0x10, 0x20, 0x30)) {
		t.Fatalf("log %v, want the retried batch once", got)
	}
}

// acks=all with min.insync.replicas=2: with any two brokers down, a produce
// fails with ErrNotEnoughISR and nothing is written or acknowledged; once a
// second replica is back and caught up, produces succeed again.
func TestLogProduceWithTwoBrokersDownFails(t *testing.T) {
	for _, down := range [][2]int{{0, 1}, {0, 2}, {1, 2}} {
		t.Run(fmt.Sprintf("b%d and b%d down", down[0]+1, down[1]+1), func(t *testing.T) {
			r := newLogRig(t, 4)
			lc := r.client()
			var err, fetchErr, laterErr error
			var fetched []pipeline.Record
			var later int64
			r.app.Go("producer", func(ctx context.Context) {
				sleepUntil(ctx, r.app, 50*time.Millisecond)
				_, err = lc.Produce(ctx, batch(0x10))
				fetched, fetchErr = lc.Fetch(ctx, 0, 10)
				sleepUntil(ctx, r.app, 3*time.Second) // one broker is back
				later, laterErr = lc.Produce(ctx, batch(0x20))
			})
			r.w.At(0, 1, func() { r.bs[down[0]].Crash(); r.bs[down[1]].Crash() })
			var acked int64
			var logs [][]model.LSN
			r.w.At(2500*time.Millisecond, 2, func() {
				acked = r.c.ackedEnd
				for _, b := range r.bs {
					logs = append(logs, brokerLog(b))
				}
				r.bs[down[0]].Restart()
			})
			run(t, r.w, 5*time.Second)

			if !errors.Is(err, ErrNotEnoughISR) {
				t.Fatalf("produce with one replica: %v, want ErrNotEnoughISR", err)
			}
			if fetchErr != nil || len(fetched) != 0 {
				t.Fatalf("fetch after the failed produce = %v, %v; want nothing", fetched, fetchErr)
			}
			if acked != 0 {
				t.Fatalf("cluster acknowledged up to offset %d, want nothing", acked)
			}
			for i, l := range logs {
				if len(l) != 0 {
					t.Fatalf("b%d holds %v, want an empty log", i+1, l)
				}
			}
			if laterErr != nil || later != 0 {
				t.Fatalf("produce with two replicas again = %d, %v; want offset 0", later, laterErr)
			}
		})
	}
}

// Killing the leader while a producer streams: the controller elects an
// in-sync follower, and it holds every record the producer saw acknowledged,
// once each, in order. Acks sent in the last 3ms before the crash are lost
// (a one-way partition leader -> client), so some batches are written but
// unacknowledged; their retries land on the new leader, which deduplicates
// them by the producer state the followers keep.
func TestLogLeaderFailoverKeepsEveryAcknowledgedRecord(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		r := newLogRig(t, seed)
		lc := r.client()
		old := r.c.Leader()
		crashAt := 20*time.Millisecond + time.Duration(seed*13%80)*time.Millisecond
		r.w.At(crashAt-3*time.Millisecond, 1, func() { r.w.Net().Partition([]*sim.Node{old}, []*sim.Node{r.app}, true) })
		r.w.At(crashAt, 2, old.Crash)
		r.w.At(crashAt+50*time.Millisecond, 3, r.w.Net().Heal)
		var acked []model.LSN
		ackedAfterCrash := 0
		var fetched []pipeline.Record
		r.app.Go("producer", func(ctx context.Context) {
			for i := 1; i <= 40; i++ {
				l := model.LSN(0x10 * i)
				if _, err := lc.Produce(ctx, batch(l)); err == nil {
					acked = append(acked, l)
					if r.w.Now() > crashAt {
						ackedAfterCrash++
					}
				}
			}
			for try := 0; try < 3; try++ {
				var err error
				if fetched, err = lc.Fetch(ctx, 0, 100); err == nil {
					return
				}
			}
		})
		run(t, r.w, 20*time.Second)

		leader := r.c.Leader()
		if leader == nil || leader == old {
			t.Fatalf("seed %d: leader %v after killing %v; want a follower", seed, leader, old)
		}
		if ackedAfterCrash == 0 {
			t.Fatalf("seed %d: nothing acknowledged after the crash at %v", seed, crashAt)
		}
		log := recordLSNs(t, r.c.Records(), 0)
		for i := 1; i < len(log); i++ {
			if log[i] <= log[i-1] {
				t.Fatalf("seed %d: log %v has a duplicate or is out of order at %d", seed, log, i)
			}
		}
		have := map[model.LSN]bool{}
		for _, l := range log {
			have[l] = true
		}
		for _, a := range acked {
			if !have[a] {
				t.Fatalf("seed %d: acknowledged record %v lost by the failover (log %v)", seed, a, log)
			}
		}
		if !reflect.DeepEqual(recordLSNs(t, fetched, 0), log) {
			t.Fatalf("seed %d: a consumer fetched %v from the new leader, want %v", seed, recordLSNs(t, fetched, 0), log)
		}
	}
}

// Only a lagging replica (b3, down while 0/20 and 0/30 were acknowledged) is
// alive when both in-sync replicas die. With unclean election it leads (but
// cannot take writes alone), the acknowledged records are gone for good and
// Losses counts them; without it the partition stays offline while only b3 is
// up, and comes back whole when an in-sync replica returns.
func TestLogUncleanElectionLosesAcknowledgedRecords(t *testing.T) {
	for _, unclean := range []bool{true, false} {
		t.Run(fmt.Sprint("unclean=", unclean), func(t *testing.T) {
			r := newLogRig(t, 5)
			r.c.SetUnclean(unclean)
			lc := r.client()
			var errs []error
			var whileDown error
			r.app.Go("producer", func(ctx context.Context) {
				_, err := lc.Produce(ctx, batch(0x10))
				errs = append(errs, err)
				sleepUntil(ctx, r.app, 100*time.Millisecond) // b3 is down
				_, err = lc.Produce(ctx, batch(0x20, 0x30))
				errs = append(errs, err)
				sleepUntil(ctx, r.app, 700*time.Millisecond) // only b3 is up
				_, whileDown = (&LogClient{From: r.app, Cluster: r.c, Retries: 1}).Produce(ctx, batch(0x40))
			})
			b1, b2, b3 := r.bs[0], r.bs[1], r.bs[2]
			r.w.At(50*time.Millisecond, 1, b3.Crash)
			r.w.At(500*time.Millisecond, 2, func() { b1.Crash(); b2.Crash() })
			r.w.At(600*time.Millisecond, 3, b3.Restart)
			run(t, r.w, time.Second)

			for i, err := range errs {
				if err != nil {
					t.Fatalf("produce %d: %v", i, err)
				}
			}
			if unclean {
				if r.c.Leader() != b3 {
					t.Fatalf("leader %v, want the lagging b3 elected uncleanly", r.c.Leader())
				}
				if got := recordLSNs(t, r.c.Records(), 0); !reflect.DeepEqual(got, ls(0x10)) || r.c.Losses() != 2 {
					t.Fatalf("log %v with %d losses; want [0/10] and 2 acknowledged records lost", got, r.c.Losses())
				}
				if !errors.Is(whileDown, ErrNotEnoughISR) {
					t.Fatalf("produce to the lone unclean leader: %v, want ErrNotEnoughISR", whileDown)
				}
			} else {
				if r.c.Leader() != nil || r.c.Losses() != 0 {
					t.Fatalf("leader %v, losses %d; want the partition offline and nothing lost", r.c.Leader(), r.c.Losses())
				}
				if !errors.Is(whileDown, ErrOffline) {
					t.Fatalf("produce while offline: %v, want ErrOffline", whileDown)
				}
			}

			// An in-sync replica comes back.
			r.w.At(1200*time.Millisecond, 4, b2.Restart)
			run(t, r.w, 2*time.Second)
			want, leader := ls(0x10, 0x20, 0x30), b2
			if unclean {
				want, leader = ls(0x10), b3 // b2 was truncated to the new leader's log
			}
			if r.c.Leader() != leader {
				t.Fatalf("leader %v after b2 returned, want %v", r.c.Leader(), leader)
			}
			for _, b := range []*sim.Node{b2, b3} {
				if got := brokerLog(b); !reflect.DeepEqual(got, want) {
					t.Fatalf("%s holds %v, want %v", b, got, want)
				}
			}
		})
	}
}

// A follower that was down while records were acknowledged leaves the
// in-sync set; after its restart the controller copies the leader's log to it
// and it rejoins, so it can stand in for the leader afterwards.
func TestLogRestartedFollowerCatchesUpAndRejoins(t *testing.T) {
	r := newLogRig(t, 6)
	lc := r.client()
	b1, b3 := r.bs[0], r.bs[2]
	var errs []error
	r.app.Go("producer", func(ctx context.Context) {
		sleepUntil(ctx, r.app, 50*time.Millisecond)
		_, err := lc.Produce(ctx, batch(0x10, 0x20))
		errs = append(errs, err)
		sleepUntil(ctx, r.app, 600*time.Millisecond) // b1 is dead: needs b2 and b3
		_, err = lc.Produce(ctx, batch(0x30))
		errs = append(errs, err)
	})
	var isrWhileDown, isrAfter []bool
	var logAfter []model.LSN
	r.w.At(10*time.Millisecond, 1, b3.Crash)
	r.w.At(200*time.Millisecond, 2, func() { isrWhileDown = append([]bool(nil), r.c.isr...); b3.Restart() })
	r.w.At(300*time.Millisecond, 3, func() { isrAfter = append([]bool(nil), r.c.isr...); logAfter = brokerLog(b3) })
	r.w.At(400*time.Millisecond, 4, b1.Crash)
	run(t, r.w, 2*time.Second)

	for i, err := range errs {
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	if !reflect.DeepEqual(isrWhileDown, []bool{true, true, false}) {
		t.Fatalf("in-sync set while b3 was down: %v, want b3 out", isrWhileDown)
	}
	if !reflect.DeepEqual(isrAfter, []bool{true, true, true}) || !reflect.DeepEqual(logAfter, ls(0x10, 0x20)) {
		t.Fatalf("after its restart b3 holds %v, in-sync set %v; want caught up and back in", logAfter, isrAfter)
	}
	for _, b := range r.bs[1:] {
		if got := brokerLog(b); !reflect.DeepEqual(got, ls(0x10, 0x20, 0x30)) {
			t.Fatalf("%s holds %v, want every record", b, got)
		}
	}
}

// A fetch at the end of the log waits at the leader (FetchWait) and is
// answered as soon as a produce arrives; with nothing produced it is answered
// empty, without error, once FetchWait has passed.
func TestLogFetchLongPollsUntilAProduce(t *testing.T) {
	r := newLogRig(t, 7)
	producer := r.w.AddNode("producer", nil)
	consumer := r.client()
	var first, second []pipeline.Record
	var err1, err2 error
	var firstAt, secondTook time.Duration
	r.app.Go("consumer", func(ctx context.Context) {
		first, err1 = consumer.Fetch(ctx, 0, 10)
		firstAt = r.w.Now()
		start := r.w.Now()
		second, err2 = consumer.Fetch(ctx, 1, 10)
		secondTook = r.w.Now() - start
	})
	var producedAt time.Duration
	producer.Go("producer", func(ctx context.Context) {
		sleepUntil(ctx, producer, 100*time.Millisecond)
		lc := &LogClient{From: producer, Cluster: r.c}
		_, _ = lc.Produce(ctx, batch(0x10))
		producedAt = r.w.Now()
	})
	run(t, r.w, 2*time.Second)

	if err1 != nil || len(first) != 1 || first[0].Txn.CommitLSN != 0x10 {
		t.Fatalf("first fetch = %v, %v; want the produced record", first, err1)
	}
	if firstAt < 100*time.Millisecond || firstAt > producedAt+5*time.Millisecond || firstAt >= FetchWait {
		t.Fatalf("fetch answered at %v, produce acknowledged at %v; want the answer with the produce, before FetchWait", firstAt, producedAt)
	}
	if err2 != nil || len(second) != 0 {
		t.Fatalf("fetch with nothing new = %v, %v; want empty, no error", second, err2)
	}
	if secondTook < FetchWait || secondTook > FetchWait+10*time.Millisecond {
		t.Fatalf("empty fetch answered after %v, want FetchWait (%v) plus the round trip", secondTook, FetchWait)
	}
}

// A leader paused past its failover is a zombie: when it wakes, requests
// that waited for it are refused with ErrNotLeader and write nothing, and it
// catches up from the new leader as a follower.
func TestLogZombieLeaderRefusesProduceAfterFailover(t *testing.T) {
	r := newLogRig(t, 9)
	lc := r.client()
	b1, b2 := r.bs[0], r.bs[1]
	var zombieErr, fetchErr, err error
	r.app.Go("producer", func(ctx context.Context) {
		_, err = lc.Produce(ctx, batch(0x10))
		sleepUntil(ctx, r.app, 100*time.Millisecond) // b1 paused, b2 leads
		_, zombieErr = sim.Call(ctx, r.app, b1, time.Second, func(b *broker) (int64, error) { return b.produce(99, 1, batch(0x20)) })
		_, fetchErr = sim.CallAsync(ctx, r.app, b1, time.Second, func(b *broker, reply func([]pipeline.Record, error)) { b.fetchWait(0, 10, reply) })
	})
	r.w.At(50*time.Millisecond, 1, b1.Pause)
	r.w.At(500*time.Millisecond, 2, b1.Resume)
	run(t, r.w, time.Second)

	if err != nil {
		t.Fatal(err)
	}
	if r.c.Leader() != b2 {
		t.Fatalf("leader %v, want b2 after b1 was paused", r.c.Leader())
	}
	if !errors.Is(zombieErr, ErrNotLeader) || !errors.Is(fetchErr, ErrNotLeader) {
		t.Fatalf("the woken zombie answered produce: %v, fetch: %v; want ErrNotLeader for both", zombieErr, fetchErr)
	}
	for _, b := range r.bs {
		if got := brokerLog(b); !reflect.DeepEqual(got, ls(0x10)) {
			t.Fatalf("%s holds %v, want only [0/10]", b, got)
		}
	}
}

// With the partition offline, Records shows the longest log of a live
// broker, not whichever broker happens to come first.
func TestLogRecordsWhileOfflineIsTheLongestLog(t *testing.T) {
	w := sim.New(sim.Config{Seed: 8})
	c := NewCluster(w, "b")
	bs := c.Brokers()
	long := []logEntry{{Txn: model.Txn{CommitLSN: 0x10}}, {Txn: model.Txn{CommitLSN: 0x20}}}
	bs[0].State().(*broker).setLog(long[:1], 0)
	bs[2].State().(*broker).setLog(long, 0)
	bs[1].Crash()
	c.leader = -1
	got := c.Records()
	if len(got) != 2 || got[1].Txn.CommitLSN != 0x20 {
		t.Fatalf("offline Records() = %v, want the longest log (2 records)", got)
	}
	c.leader = 0
	if got := c.Records(); len(got) != 1 {
		t.Fatalf("with b1 leading, Records() = %v, want the leader's log (1 record)", got)
	}
}

// A record over the maximum size is refused as Kafka refuses it: the whole
// produce request, with pipeline.ErrRecordTooLarge at once (no retries),
// nothing of it appended on any broker, and the producer session still
// valid, so the next produce is written right after the last good one. The
// limit counts logcodec.TxnBytes: a record of exactly the limit is taken.
func TestLogRefusesAnOversizeRecord(t *testing.T) {
	r := newLogRig(t, 3)
	big := txn(0x30, ins("big", strings.Repeat("x", 4000)))
	size, err := logcodec.TxnBytes(big)
	if err != nil {
		t.Fatal(err)
	}
	if r.c.MaxRecordBytes() != DefaultMaxRecordBytes || DefaultMaxRecordBytes != 1_048_588 {
		t.Fatalf("default maximum %d, want Kafka's 1,048,588", r.c.MaxRecordBytes())
	}
	r.c.SetMaxRecordBytes(size - 1)
	lc := r.client()
	var refusedErr, firstErr, afterErr, exactErr error
	var refusedIn time.Duration
	var after, exact int64
	r.app.Go("client", func(ctx context.Context) {
		_, firstErr = lc.Produce(ctx, batch(0x10))
		start := r.w.Now()
		_, refusedErr = lc.Produce(ctx, []model.Txn{txn(0x20, upd("k", "a")), big, txn(0x40, upd("k", "b"))})
		refusedIn = r.w.Now() - start
		after, afterErr = lc.Produce(ctx, batch(0x50))
		r.c.SetMaxRecordBytes(size)
		exact, exactErr = lc.Produce(ctx, []model.Txn{big})
	})
	run(t, r.w, 5*time.Second)

	if firstErr != nil || afterErr != nil || exactErr != nil {
		t.Fatalf("produces around the refused one: %v, %v, %v", firstErr, afterErr, exactErr)
	}
	if !errors.Is(refusedErr, pipeline.ErrRecordTooLarge) {
		t.Fatalf("produce with an oversize record: %v, want ErrRecordTooLarge", refusedErr)
	}
	if msg := refusedErr.Error(); !strings.Contains(msg, fmt.Sprint(size)) || !strings.Contains(msg, "record 1 of 3") {
		t.Fatalf("the refusal %q does not name the record and its size %d", msg, size)
	}
	if refusedIn >= 20*time.Millisecond {
		t.Fatalf("the refusal took %v: it was retried", refusedIn)
	}
	if after != 1 || exact != 2 {
		t.Fatalf("offsets after the refusal %d and %d, want 1 and 2", after, exact)
	}
	for _, b := range r.bs {
		if got := brokerLog(b); !reflect.DeepEqual(got, ls(0x10, 0x50, 0x30)) {
			t.Fatalf("%s holds %v, want nothing of the refused produce", b, got)
		}
	}
}

// lost-append: every produce request of the client is lost before a broker
// takes it. The produce fails with ErrTimeout after all its tries, no broker
// holds anything of it, and the client's fetches still work (only appends
// are hit). Once healed, the next produce is the log's first record.
func TestLogLostAppendWritesNothing(t *testing.T) {
	r := newLogRig(t, 5)
	lc := r.client()
	var lostErr, fetchErr, laterErr error
	var fetched []pipeline.Record
	var later int64
	r.app.Go("producer", func(ctx context.Context) {
		_, lostErr = lc.Produce(ctx, batch(0x10, 0x20))
		fetched, fetchErr = lc.Fetch(ctx, 0, 10)
		r.c.HealAppends()
		later, laterErr = lc.Produce(ctx, batch(0x30))
	})
	r.c.LoseAppends(r.app.Name(), 1)
	run(t, r.w, 5*time.Second)

	if !errors.Is(lostErr, pipeline.ErrTimeout) {
		t.Fatalf("produce under lost-append: %v, want ErrTimeout", lostErr)
	}
	if fetchErr != nil || len(fetched) != 0 {
		t.Fatalf("fetch under lost-append = %v, %v; want an empty log and no error", fetched, fetchErr)
	}
	if laterErr != nil || later != 0 {
		t.Fatalf("produce after the heal = %d, %v; want offset 0", later, laterErr)
	}
	for _, b := range r.bs {
		if got := brokerLog(b); !reflect.DeepEqual(got, ls(0x30)) {
			t.Fatalf("%s holds %v, want only the produce after the heal", b, got)
		}
	}
}

// lost-ack: every answer to the client's produce requests is lost after
// the leader appended. The produce fails with ErrTimeout, yet the batch is
// in the log, once: each retry of the session was recognised by its
// sequence number. Looked at from the producer, lost-ack and lost-append
// are the same failure.
func TestLogLostAckWritesOnce(t *testing.T) {
	r := newLogRig(t, 6)
	lc := r.client()
	var lostErr, laterErr error
	var later int64
	r.app.Go("producer", func(ctx context.Context) {
		_, lostErr = lc.Produce(ctx, batch(0x10, 0x20))
		r.c.LoseAcks(r.app.Name(), 0)
		later, laterErr = lc.Produce(ctx, batch(0x30))
	})
	r.c.LoseAcks(r.app.Name(), 1)
	run(t, r.w, 5*time.Second)

	if !errors.Is(lostErr, pipeline.ErrTimeout) {
		t.Fatalf("produce under lost-ack: %v, want ErrTimeout", lostErr)
	}
	if laterErr != nil || later != 2 {
		t.Fatalf("produce after lost-ack ended = %d, %v; want offset 2", later, laterErr)
	}
	for _, b := range r.bs {
		if got := brokerLog(b); !reflect.DeepEqual(got, ls(0x10, 0x20, 0x30)) {
			t.Fatalf("%s holds %v, want the unacknowledged batch once, then the next", b, got)
		}
	}
}

// lost-ack that loses some answers, not all: across many produces some
// succeed at a retry and some fail, and every batch is in the log exactly
// once, in order, whether its producer saw it acknowledged or not. The
// faults hit only the node they name: another producer is untouched.
func TestLogLostAckSometimes(t *testing.T) {
	r := newLogRig(t, 7)
	lc := r.client()
	other := r.w.AddNode("other", nil)
	oc := &LogClient{From: other, Cluster: r.c}
	var want []model.LSN
	var failed, retried int
	var otherErrs []error
	r.app.Go("producer", func(ctx context.Context) {
		for i := range 40 {
			lsn := model.LSN(0x100 + i)
			start := r.w.Now()
			_, err := lc.Produce(ctx, batch(lsn))
			switch {
			case errors.Is(err, pipeline.ErrTimeout):
				failed++
			case err != nil:
				t.Errorf("produce %d: %v, want success or ErrTimeout", i, err)
			case r.w.Now()-start >= DefaultTimeout:
				retried++
			}
			want = append(want, lsn)
		}
	})
	r.c.LoseAcks(r.app.Name(), 0.6)
	run(t, r.w, 60*time.Second)
	other.Go("other", func(ctx context.Context) {
		for range 5 {
			_, err := oc.Produce(ctx, batch(0x900))
			otherErrs = append(otherErrs, err)
		}
	})
	run(t, r.w, 61*time.Second)

	if failed == 0 || retried == 0 {
		t.Fatalf("%d produces failed and %d succeeded at a retry; want some of each (pick another seed)", failed, retried)
	}
	for i, err := range otherErrs {
		if err != nil {
			t.Fatalf("another node's produce %d: %v, want no fault", i, err)
		}
	}
	want = append(want, 0x900, 0x900, 0x900, 0x900, 0x900)
	if got := recordLSNs(t, r.c.Records(), 0); !reflect.DeepEqual(got, want) {
		t.Fatalf("log %v\nwant %v: every batch once, acknowledged or not", got, want)
	}
	t.Logf("%d of 40 produces failed, %d succeeded at a retry", failed, retried)
}

// A produce whose first try timed out and whose later tries failed for a
// plain reason (every broker down: no leader to ask) may be in the log, and
// here it is: the produce must say the outcome is unknown (ErrTimeout), as
// the Kafka log does, not report the last try's error alone.
func TestLogProduceAfterATimeoutIsAmbiguous(t *testing.T) {
	r := newLogRig(t, 8)
	lc := r.client()
	var err error
	r.app.Go("producer", func(ctx context.Context) {
		_, err = lc.Produce(ctx, batch(0x10))
	})
	r.c.LoseAcks(r.app.Name(), 1)
	// The first try is taken at once and its answer lost; before the
	// second, every broker goes down, until the produce has given up.
	r.w.At(DefaultTimeout/2, 1, func() {
		for _, b := range r.bs {
			b.Crash()
		}
	})
	r.w.At(4*time.Second, 2, func() {
		for _, b := range r.bs {
			b.Restart()
		}
	})
	run(t, r.w, 5*time.Second)

	if !errors.Is(err, pipeline.ErrTimeout) || !errors.Is(err, ErrOffline) {
		t.Fatalf("produce = %v, want ErrTimeout naming the last try's ErrOffline", err)
	}
	if got := recordLSNs(t, r.c.Records(), 0); !reflect.DeepEqual(got, ls(0x10)) {
		t.Fatalf("the log holds %v, want the batch the first try wrote", got)
	}
}

// Retention deletes the records appended more than the age kept ago, on
// every broker, as Kafka's retention.ms does: the log start moves forward,
// offsets stay where they were, a fetch before the start fails with
// ErrOffsetOutOfRange (one past the end still with ErrOutOfRange), and a
// leader failover and a crashed broker's restart keep the start.
func TestLogRetentionMovesTheStart(t *testing.T) {
	r := newLogRig(t, 9)
	lc := r.client()
	var produceErrs []error
	var startBefore, startAfter, startFailover int64
	var before, after []pipeline.Record
	var beforeErr, afterErr, pastEnd error
	r.app.Go("client", func(ctx context.Context) {
		_, err := lc.Produce(ctx, batch(0x10, 0x20))
		produceErrs = append(produceErrs, err)
		sleepUntil(ctx, r.app, time.Second)
		_, err = lc.Produce(ctx, batch(0x30))
		produceErrs = append(produceErrs, err)
		startBefore, _ = lc.Start(ctx)
		sleepUntil(ctx, r.app, 2*time.Second) // retention keeps 1.5s at 1.6s
		startAfter, _ = lc.Start(ctx)
		before, beforeErr = lc.Fetch(ctx, 1, 10)
		after, afterErr = lc.Fetch(ctx, 2, 10)
		_, pastEnd = lc.Fetch(ctx, 4, 10)
		sleepUntil(ctx, r.app, 5*time.Second) // the leader failed over
		startFailover, _ = lc.Start(ctx)
	})
	r.w.At(1600*time.Millisecond, 1, func() { r.c.Retain(1500 * time.Millisecond) })
	r.w.At(3*time.Second, 2, func() { r.c.Leader().Crash() })
	run(t, r.w, 6*time.Second)
	for i, err := range produceErrs {
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	if startBefore != 0 || startAfter != 2 || startFailover != 2 {
		t.Fatalf("log start %d before retention, %d after, %d after a failover; want 0, 2, 2", startBefore, startAfter, startFailover)
	}
	if !errors.Is(beforeErr, pipeline.ErrOffsetOutOfRange) || len(before) != 0 {
		t.Fatalf("fetch from a deleted offset: %v, %v; want ErrOffsetOutOfRange", before, beforeErr)
	}
	if afterErr != nil || !reflect.DeepEqual(recordLSNs(t, after, 2), ls(0x30)) {
		t.Fatalf("fetch from the start: %v, %v; want the record kept, at its offset", after, afterErr)
	}
	if pastEnd == nil || errors.Is(pastEnd, pipeline.ErrOffsetOutOfRange) {
		t.Fatalf("fetch past the end: %v; want out of range, not before the start", pastEnd)
	}
	if got := r.c.Records(); len(got) != 1 || got[0].Offset != 2 {
		t.Fatalf("Records after retention: %+v, want the one kept record at offset 2", got)
	}
}
