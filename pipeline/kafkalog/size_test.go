package kafkalog

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/logcodec"
)

// logcodec.RecordBytes is the size of the record batch franz-go writes for
// one record (kmsg's own encoding), which is what a broker compares with
// max.message.bytes.
func TestRecordBytesIsKafkasBatchSize(t *testing.T) {
	for _, n := range []int{0, 1, 57, 58, 63, 64, 8000, 8191, 8192, 8300, 1 << 20, 1_048_500} {
		r := kmsg.Record{Value: make([]byte, n)} // no key, no headers
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		b := kmsg.RecordBatch{Magic: 2, NumRecords: 1, Records: r.AppendTo(nil)}
		if got, want := logcodec.RecordBytes(n), len(b.AppendTo(nil)); got != want {
			t.Errorf("RecordBytes(%d) = %d, Kafka's batch is %d", n, got, want)
		}
	}
}

// rawBatch is txns as one uncompressed magic-2 record batch of a producer
// that is not idempotent, as a broker receives it.
func rawBatch(t *testing.T, txns []model.Txn) []byte {
	t.Helper()
	var recs []byte
	for i, r := range values(t, txns...) {
		rec := kmsg.Record{OffsetDelta: int32(i), Value: r.Value}
		rec.Length = int32(len(rec.AppendTo(nil)) - 1) // its length field takes 1 byte while 0
		rec.Length = int32(len(rec.AppendTo(nil)) - varintLen(rec.Length))
		recs = append(recs, rec.AppendTo(nil)...)
	}
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(len(txns) - 1),
		FirstTimestamp: now, MaxTimestamp: now, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: int32(len(txns)), Records: recs}
	b.Length = int32(49 + len(recs))
	raw := b.AppendTo(nil)
	crc := crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)) // from the attributes on
	binary.BigEndian.PutUint32(raw[17:21], crc)
	return raw
}

// varintLen is the length of n as a zig-zag varint.
func varintLen(n int32) int { return len(binary.AppendVarint(nil, int64(n))) }

// sized is a one-change transaction at lsn whose record is exactly n bytes.
func sized(t *testing.T, lsn model.LSN, n int) model.Txn {
	t.Helper()
	tx := model.Txn{XID: uint64(lsn), CommitLSN: lsn, Changes: []model.Change{{Table: "t", PK: "big", Op: model.OpInsert}}}
	for pad := max(0, n-200); pad < n; pad++ {
		tx.Changes[0].Row = model.R("v", strings.Repeat("x", pad))
		if got, _ := logcodec.TxnBytes(tx); got == n {
			return tx
		}
	}
	t.Fatalf("no padding makes a record of %d bytes", n)
	return tx
}

func rawProducer(t *testing.T, broker, topic string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(broker), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func values(t *testing.T, txns ...model.Txn) []*kgo.Record {
	t.Helper()
	out := make([]*kgo.Record, len(txns))
	for i, tx := range txns {
		v, err := logcodec.EncodeTxn(tx)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = &kgo.Record{Value: v}
	}
	return out
}

func end(t *testing.T, l *Log) int64 {
	t.Helper()
	n, err := l.End(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// testRecordSize runs against a real broker, on topics whose
// max.message.bytes is 20,000.
func testRecordSize(t *testing.T, broker string) {
	const limit = 20000
	small := func(t *testing.T, topic string) *Log {
		l, err := New(Config{Brokers: []string{broker}, Topic: topic, ReplicationFactor: 1, MinInSync: 1, MaxRecordBytes: limit})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		if err := l.EnsureTopic(ctx(t)); err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := txns(0, 1)[0], txns(1, 1)[0]

	// A record of exactly the limit is written; one byte more is refused
	// at once with nothing of its call written, and the log goes on.
	t.Run("Refused", func(t *testing.T) {
		l := small(t, "size-refused")
		if _, err := l.Produce(ctx(t), []model.Txn{sized(t, 10, limit)}); err != nil {
			t.Fatalf("a record of exactly the limit: %v", err)
		}
		start := time.Now()
		_, err := l.Produce(ctx(t), []model.Txn{a, sized(t, 11, limit+1), b})
		if !errors.Is(err, pipeline.ErrRecordTooLarge) || !strings.Contains(err.Error(), "20001 bytes") {
			t.Fatalf("a record one byte over: %v; want ErrRecordTooLarge naming its size", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("the refusal took %v", d)
		}
		if n := end(t, l); n != 1 {
			t.Fatalf("the log ends at %d after the refusal, want 1: nothing of the call written", n)
		}
		if last, err := l.Produce(ctx(t), []model.Txn{b}); err != nil || last != 1 {
			t.Fatalf("produce after the refusal = %d, %v; want offset 1", last, err)
		}
	})

	// What franz-go does alone, with its batch limit matching the topic's
	// (as New sets it): it fails the oversize record before sending it
	// (kerr.MessageTooLarge) and writes the records after it. A capture
	// that retries then appends those again at every retry: issue 7.
	t.Run("FranzGoAloneWritesPastIt", func(t *testing.T) {
		l := small(t, "size-franz")
		raw := rawProducer(t, broker, "size-franz", kgo.ProducerBatchMaxBytes(limit+4))
		recs := values(t, a, sized(t, 11, limit+1), b)
		errs := map[*kgo.Record]error{}
		for _, r := range raw.ProduceSync(ctx(t), recs...) { // in the order they finished
			errs[r.Record] = r.Err
		}
		if errs[recs[0]] != nil || !errors.Is(errs[recs[1]], kerr.MessageTooLarge) || errs[recs[2]] != nil {
			t.Fatalf("franz-go: %v, %v, %v; want only the middle record refused", errs[recs[0]], errs[recs[1]], errs[recs[2]])
		}
		if got := fetchN(t, l, 0, 2); got[0].Txn.XID != a.XID || got[1].Txn.XID != b.XID {
			t.Fatalf("the log holds %v; want the records before and after the refused one", got)
		}
		if err := raw.ProduceSync(ctx(t), values(t, sized(t, 12, limit))...).FirstErr(); err != nil {
			t.Fatalf("franz-go refused a record of exactly the limit: %v", err)
		}
	})

	// What the broker does: it takes one record batch per partition in a
	// produce request (more is INVALID_RECORD), compares its size with
	// max.message.bytes as RecordBytes counts, and refuses it whole: a
	// batch holding an oversize record appends nothing, the records
	// around it included.
	t.Run("BrokerRefusesTheRequest", func(t *testing.T) {
		l := small(t, "size-broker")
		raw := rawProducer(t, broker, "size-broker")
		refused, exact := sized(t, 11, limit+1), sized(t, 12, limit)
		for _, c := range []struct {
			name    string
			batches [][]model.Txn
			err     error
			end     int64
		}{
			{"one batch: a, oversize, b", [][]model.Txn{{a, refused, b}}, kerr.MessageTooLarge, 0},
			{"two batches: a; oversize", [][]model.Txn{{a}, {refused}}, kerr.InvalidRecord, 0},
			{"oversize alone", [][]model.Txn{{refused}}, kerr.MessageTooLarge, 0},
			{"exactly the limit", [][]model.Txn{{exact}}, nil, 1},
		} {
			req := kmsg.NewPtrProduceRequest()
			req.Acks, req.TimeoutMillis = -1, 10000
			part := kmsg.ProduceRequestTopicPartition{Partition: partition}
			for _, batch := range c.batches {
				part.Records = append(part.Records, rawBatch(t, batch)...)
			}
			req.Topics = []kmsg.ProduceRequestTopic{{Topic: "size-broker", Partitions: []kmsg.ProduceRequestTopicPartition{part}}}
			resp, err := req.RequestWith(ctx(t), raw)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			got := kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode)
			if !errors.Is(got, c.err) && got != c.err {
				t.Fatalf("%s: the broker answered %v, want %v", c.name, got, c.err)
			}
			if n := end(t, l); n != c.end {
				t.Fatalf("%s: the log ends at %d, want %d", c.name, n, c.end)
			}
		}
		// Our Log maps a broker's refusal to ErrRecordTooLarge (a topic
		// whose limit is under MaxRecordBytes). The producer compresses
		// (snappy) and the broker counts compressed bytes, so the value
		// is one that does not compress.
		rng := rand.New(rand.NewPCG(7, 7))
		noise := make([]byte, 30000)
		for i := range noise {
			noise[i] = byte('a' + rng.IntN(26))
		}
		refused = model.Txn{XID: 13, CommitLSN: 13, Changes: []model.Change{{Table: "t", PK: "noise", Op: model.OpInsert, Row: model.R("v", string(noise))}}}
		over, err := New(Config{Brokers: []string{broker}, Topic: "size-broker", ReplicationFactor: 1, MinInSync: 1, MaxRecordBytes: 2 * limit})
		if err != nil {
			t.Fatal(err)
		}
		defer over.Close()
		if _, err := over.Produce(ctx(t), []model.Txn{refused}); !errors.Is(err, pipeline.ErrRecordTooLarge) {
			t.Fatalf("a record over the topic's limit, under MaxRecordBytes: %v; want ErrRecordTooLarge", err)
		}
	})

	// A transaction the capture split goes to the log in parts that fit and
	// comes back, through Plan, as the one transaction it was.
	t.Run("SplitTxnRoundTrips", func(t *testing.T) {
		l := small(t, "size-split")
		big := model.Txn{XID: 77, CommitLSN: 7700}
		for i := range 100 {
			big.Changes = append(big.Changes, model.Change{Table: "t", PK: strings.Repeat("k", i+1), Op: model.OpInsert, Row: model.R("v", strings.Repeat("é", 500))})
		}
		if _, err := l.Produce(ctx(t), []model.Txn{big}); !errors.Is(err, pipeline.ErrRecordTooLarge) {
			t.Fatalf("the whole transaction: %v; want ErrRecordTooLarge", err)
		}
		parts, err := pipeline.SplitTxn(big, 0, l.MaxRecordBytes())
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) < 5 {
			t.Fatalf("%d parts of about 100 KB under 20,000 bytes each", len(parts))
		}
		if _, err := l.Produce(ctx(t), parts); err != nil {
			t.Fatal(err)
		}
		batches := pipeline.Plan(model.Position{}, fetchN(t, l, 0, len(parts)), false)
		if len(batches) != 1 || len(batches[0].Txns) != 1 || !reflect.DeepEqual(batches[0].Txns[0], big) {
			t.Fatalf("the parts planned as %+v; want the whole transaction in one batch", batches)
		}
	})
}
