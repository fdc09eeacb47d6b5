package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"lockstep/model"
	"lockstep/pipeline"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func newLog(t *testing.T, broker, topic string) *Log {
	t.Helper()
	l, err := New(Config{Brokers: []string{broker}, Topic: topic, ReplicationFactor: 1, MinInSync: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if err := l.EnsureTopic(ctx(t)); err != nil {
		t.Fatal(err)
	}
	return l
}

func txns(from, n int) []model.Txn {
	out := make([]model.Txn, n)
	for i := range out {
		x := from + i
		out[i] = model.Txn{XID: uint64(x), CommitLSN: model.LSN(100 * (x + 1)), Changes: []model.Change{
			{Table: "t", PK: fmt.Sprint("k", x%7), Op: model.OpUpdate, Row: model.R("v", fmt.Sprint(x))},
		}}
	}
	return out
}

// fetchN fetches from off until it has n records (or fails after 20s).
func fetchN(t *testing.T, l *Log, off int64, n int) []pipeline.Record {
	t.Helper()
	var out []pipeline.Record
	for deadline := time.Now().Add(20 * time.Second); len(out) < n; {
		recs, err := l.Fetch(ctx(t), off, n-len(out))
		if err != nil {
			t.Fatalf("Fetch(%d): %v", off, err)
		}
		out = append(out, recs...)
		off += int64(len(recs))
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d records after 20s", len(out), n)
		}
	}
	return out
}

func TestKafka(t *testing.T) {
	broker := startBroker(t)
	l := newLog(t, broker, "lockstep-log")
	var produced []model.Txn
	produce := func(t *testing.T, batch []model.Txn) int64 {
		t.Helper()
		last, err := l.Produce(ctx(t), batch)
		if err != nil {
			t.Fatal(err)
		}
		produced = append(produced, batch...)
		if want := int64(len(produced) - 1); last != want {
			t.Fatalf("Produce returned last offset %d, want %d", last, want)
		}
		return last
	}
	check := func(t *testing.T, recs []pipeline.Record, from int64) {
		t.Helper()
		for i, r := range recs {
			if r.Offset != from+int64(i) {
				t.Fatalf("record %d has offset %d, want %d", i, r.Offset, from+int64(i))
			}
			if !reflect.DeepEqual(r.Txn, produced[r.Offset]) {
				t.Fatalf("offset %d holds %s, want %s", r.Offset, r.Txn, produced[r.Offset])
			}
		}
	}

	t.Run("EnsureTopic", func(t *testing.T) {
		if err := l.EnsureTopic(ctx(t)); err != nil {
			t.Fatalf("EnsureTopic on an existing topic: %v", err)
		}
		adm := kadm.NewClient(l.prod)
		cfgs, err := adm.DescribeTopicConfigs(ctx(t), "lockstep-log")
		if err != nil {
			t.Fatal(err)
		}
		rc, err := cfgs.On("lockstep-log", nil)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range rc.Configs {
			got[c.Key] = c.MaybeValue()
		}
		if got["min.insync.replicas"] != "1" || got["unclean.leader.election.enable"] != "false" || got["max.message.bytes"] != fmt.Sprint(16<<20) {
			t.Fatalf("topic configs: min.insync.replicas=%s unclean=%s max.message.bytes=%s", got["min.insync.replicas"], got["unclean.leader.election.enable"], got["max.message.bytes"])
		}
		if _, err := adm.CreateTopic(ctx(t), 3, 1, nil, "three-partitions"); err != nil {
			t.Fatal(err)
		}
		three, err := New(Config{Brokers: []string{broker}, Topic: "three-partitions", ReplicationFactor: 1, MinInSync: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer three.Close()
		if err := three.EnsureTopic(ctx(t)); err == nil || !strings.Contains(err.Error(), "3 partitions") {
			t.Fatalf("EnsureTopic on a topic of 3 partitions: %v", err)
		}
		if _, err := New(Config{Brokers: []string{broker}, Topic: "x", Partitions: 2}); err == nil {
			t.Fatal("a config of 2 partitions was accepted")
		}
	})

	t.Run("ProduceFetchInOrder", func(t *testing.T) {
		produce(t, txns(0, 5))
		produce(t, txns(5, 1))
		produce(t, txns(6, 20))
		var all []pipeline.Record
		for off := int64(0); off < 26; {
			recs := fetchN(t, l, off, min(7, 26-int(off)))
			all = append(all, recs...)
			off += int64(len(recs))
		}
		check(t, all, 0)
	})

	t.Run("FetchAnywhere", func(t *testing.T) {
		for _, off := range []int64{17, 3, 3, 25, 0, 12, 13, 24} {
			n := min(4, 26-int(off))
			recs := fetchN(t, l, off, n)
			if len(recs) != n {
				t.Fatalf("Fetch(%d) returned %d records, want %d", off, len(recs), n)
			}
			check(t, recs, off)
		}
		// A consumer that has returned nothing yet is moved by removing
		// and adding its partition again.
		fresh := newLog(t, broker, "lockstep-log")
		if recs, err := fresh.Fetch(ctx(t), 26, 5); err != nil || len(recs) != 0 {
			t.Fatalf("Fetch at the end = %d records, %v", len(recs), err)
		}
		check(t, fetchN(t, fresh, 3, 2), 3)
		check(t, fetchN(t, fresh, 9, 2), 9)
	})

	t.Run("FetchAtTheEndWaits", func(t *testing.T) {
		fetchN(t, l, 20, 6) // the consumer now stands at the end
		start := time.Now()
		recs, err := l.Fetch(ctx(t), 26, 10)
		if err != nil || len(recs) != 0 {
			t.Fatalf("Fetch at the end = %d records, %v; want none", len(recs), err)
		}
		if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
			t.Fatalf("an empty fetch at the end returned after %v, want about 250ms", d)
		}
		// A record produced while a fetch waits is returned at once.
		var wg sync.WaitGroup
		wg.Go(func() {
			time.Sleep(50 * time.Millisecond)
			if _, err := l.Produce(ctx(t), txns(26, 1)); err != nil {
				t.Error(err)
			}
		})
		start = time.Now()
		recs = fetchN(t, l, 26, 1)
		wg.Wait()
		produced = append(produced, txns(26, 1)...)
		check(t, recs, 26)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("a record produced during a fetch took %v to arrive", d)
		}
	})

	t.Run("FetchPastTheEnd", func(t *testing.T) {
		_, err := l.Fetch(ctx(t), 1000, 10)
		for i := 0; err == nil && i < 20; i++ { // the broker answers out of range soon
			_, err = l.Fetch(ctx(t), 1000, 10)
		}
		if !errors.Is(err, pipeline.ErrUnavailable) {
			t.Fatalf("Fetch past the end: %v, want an error wrapping ErrUnavailable", err)
		}
		check(t, fetchN(t, l, 2, 3), 2) // and the consumer recovers
	})

	t.Run("BadArguments", func(t *testing.T) {
		if _, err := l.Fetch(ctx(t), 0, 0); err == nil {
			t.Fatal("Fetch of 0 records succeeded")
		}
		if _, err := l.Produce(ctx(t), nil); err == nil {
			t.Fatal("Produce of nothing succeeded")
		}
	})

	t.Run("LargeRecord", func(t *testing.T) {
		snap := model.Txn{XID: 99, CommitLSN: 99999, Snapshot: true}
		for i := range 20000 { // about 2 MB of JSON, over Kafka's default 1 MB
			snap.Changes = append(snap.Changes, model.Change{Table: "t", PK: fmt.Sprint("k", i), Op: model.OpInsert, Row: model.R("v", strings.Repeat("x", 64)), Revs: 1})
		}
		off := produce(t, []model.Txn{snap})
		check(t, fetchN(t, l, off, 1), off)
	})

	t.Run("ConcurrentProducers", func(t *testing.T) {
		other := newLog(t, broker, "concurrent")
		var wg sync.WaitGroup
		for p := range 3 {
			wg.Go(func() {
				for i := range 10 {
					if _, err := other.Produce(ctx(t), txns(1000*p+10*i, 10)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		recs := fetchN(t, other, 0, 300)
		last := map[uint64]uint64{}
		for _, r := range recs {
			p := r.Txn.XID / 1000
			if x, ok := last[p]; ok && r.Txn.XID != x+1 {
				t.Fatalf("producer %d: txn %d after %d", p, r.Txn.XID, x)
			}
			last[p] = r.Txn.XID
		}
	})

	t.Run("GroupOffsets", func(t *testing.T) {
		if off, err := l.Committed(ctx(t), "appliers"); err != nil || off != 0 {
			t.Fatalf("Committed of a new group = %d, %v; want 0", off, err)
		}
		for _, off := range []int64{17, 20, 5} {
			if err := l.Commit(ctx(t), "appliers", off); err != nil {
				t.Fatal(err)
			}
			if got, err := l.Committed(ctx(t), "appliers"); err != nil || got != off {
				t.Fatalf("Committed = %d, %v; want %d", got, err, off)
			}
		}
		if err := l.Commit(ctx(t), "others", 3); err != nil {
			t.Fatal(err)
		}
		again := newLog(t, broker, "lockstep-log")
		if got, err := again.Committed(ctx(t), "appliers"); err != nil || got != 5 {
			t.Fatalf("Committed from a new client = %d, %v; want 5", got, err)
		}
	})

	t.Run("End", func(t *testing.T) {
		before, err := l.End(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if before != int64(len(produced)) {
			t.Fatalf("End = %d before producing, want %d", before, len(produced))
		}
		last := produce(t, []model.Txn{{XID: 901, CommitLSN: 0x901}, {XID: 902, CommitLSN: 0x902}})
		end, err := l.End(ctx(t))
		if err != nil || end != last+1 {
			t.Fatalf("End = %d, %v after producing up to %d, want %d", end, err, last, last+1)
		}
	})

	t.Run("RecordSize", func(t *testing.T) { testRecordSize(t, broker) })

	t.Run("Unavailable", func(t *testing.T) {
		dead, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", ReplicationFactor: 1, MinInSync: 1, DeliveryTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer dead.Close()
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := dead.Produce(c, txns(0, 1)); !errors.Is(err, pipeline.ErrTimeout) && !errors.Is(err, pipeline.ErrUnavailable) {
			t.Fatalf("Produce without a broker: %v", err)
		}
		if _, err := dead.Committed(c, "g"); !errors.Is(err, pipeline.ErrUnavailable) {
			t.Fatalf("Committed without a broker: %v", err)
		}
	})
}
