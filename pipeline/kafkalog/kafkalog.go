// Package kafkalog is lockstep's replicated log on Apache Kafka, with
// franz-go: Log implements pipeline.Log over one partition of one topic.
//
// Producing is idempotent (franz-go's default: a producer id and per-batch
// sequence numbers, so a retried batch is written once and never out of
// order, with as many requests in flight as the broker allows for idempotent
// producers) and waits for acks=all, so a record is acknowledged only once
// every in-sync replica has it and the topic's min.insync.replicas holds.
// Each transaction is one record whose value is logcodec's versioned JSON.
//
// A record larger than Config.MaxRecordBytes (as logcodec.RecordBytes counts,
// which is how Kafka counts against max.message.bytes) is refused before
// anything of its produce call is sent, with pipeline.ErrRecordTooLarge. This
// matters: franz-go alone fails only the oversize record (kerr.MessageTooLarge,
// client-side, before buffering it) and sends the records after it, so a
// caller that retries appends those again and again and the log has a gap
// where the large one belongs. A broker whose limit is lower than ours
// refuses the batch holding it whole with MESSAGE_TOO_LARGE, and franz-go
// then fails every record buffered after it for the partition; that is
// reported as ErrRecordTooLarge too, the records before it possibly written.
// (The producer compresses with snappy and a broker counts compressed bytes;
// the limit here, like franz-go's own check, counts uncompressed ones, the
// stricter.)
//
// Fetching reads only acknowledged records (up to the high watermark) with
// one long-lived consumer client that is repositioned only when asked for an
// offset other than the one after the last record it returned; a fetch with
// nothing to return waits up to Config.FetchWait (a long poll).
//
// Consumer-group offsets are committed and read with the admin API, outside
// any group membership: commits are manual only.
//
// Errors wrap pipeline.ErrUnavailable when the call certainly had no effect
// and pipeline.ErrTimeout when its outcome is unknown (a produce that may
// have been written), besides the underlying cause.
package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/logcodec"
)

// Config says where the log lives. Zero fields take the defaults named.
type Config struct {
	Brokers []string // seed brokers, host:port
	Topic   string
	// Partitions must be 1 (the default): the log is one ordered partition.
	Partitions int32
	// ReplicationFactor is the topic's replica count (default 3).
	ReplicationFactor int16
	// MinInSync is the topic's min.insync.replicas (default 2): with
	// acks=all, a record is acknowledged only when that many replicas,
	// the leader included, hold it.
	MinInSync int
	// MaxRecordBytes bounds one record (one transaction, or one part of a
	// transaction or snapshot the capture split), counted as
	// logcodec.RecordBytes does: the topic's max.message.bytes, and the
	// producer's batch limit (default 16 MiB).
	MaxRecordBytes int32
	// FetchWait is how long a fetch waits for records when there are none
	// (default 250ms).
	FetchWait time.Duration
	// DeliveryTimeout bounds how long a produced record may wait for its
	// acknowledgement, retries included (default 30s).
	DeliveryTimeout time.Duration
	// MetadataMinAge is how soon the producer may refresh the cluster's
	// metadata again, which it does before retrying a request whose
	// connection broke (default franz-go's, 5s). Tests that break
	// connections on purpose set it low.
	MetadataMinAge time.Duration
	_              struct{}
}

func (c *Config) defaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("no brokers")
	}
	if c.Topic == "" {
		return errors.New("no topic")
	}
	if c.Partitions == 0 {
		c.Partitions = 1
	}
	if c.Partitions != 1 {
		return fmt.Errorf("%d partitions: the log is a single partition", c.Partitions)
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = 3
	}
	if c.MinInSync == 0 {
		c.MinInSync = 2
	}
	if c.MinInSync > int(c.ReplicationFactor) {
		return fmt.Errorf("min.insync.replicas %d above the replication factor %d", c.MinInSync, c.ReplicationFactor)
	}
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = 16 << 20
	}
	if c.FetchWait == 0 {
		c.FetchWait = 250 * time.Millisecond
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 30 * time.Second
	}
	return nil
}

// partition is the log's one partition.
const partition = 0

// Log is the log: a producer (and admin) client and a consumer client.
// Produce, Commit and Committed are safe for concurrent use; Fetch calls
// take turns on the one consumer, which is repositioned whenever a call asks
// for an offset other than where the previous one left it, so give each
// reader its own Log.
type Log struct {
	cfg  Config
	prod *kgo.Client
	adm  *kadm.Client

	mu        sync.Mutex // guards the consumer
	cons      *kgo.Client
	next      int64 // the offset the consumer stands at
	delivered bool  // the consumer returned records since it was placed, so its cursor exists
	stale     bool  // the consumer must be placed again (after an error)
}

var _ pipeline.Log = (*Log)(nil)

// New connects to the brokers (lazily: no request is made yet). The topic
// must exist; EnsureTopic creates it.
func New(cfg Config) (*Log, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("kafkalog: config: %w", err)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotence stays on (the default)
		kgo.ProducerLinger(0),
		// franz-go counts a batch's 4-byte length prefix in the produce
		// request against this limit too; the broker does not.
		kgo.ProducerBatchMaxBytes(cfg.MaxRecordBytes + 4),
		kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout),
	}
	if cfg.MetadataMinAge > 0 {
		opts = append(opts, kgo.MetadataMinAge(cfg.MetadataMinAge))
	}
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkalog: producer client: %w", err)
	}
	return &Log{cfg: cfg, prod: prod, adm: kadm.NewClient(prod)}, nil
}

// Close closes both clients.
func (l *Log) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cons != nil {
		l.cons.Close()
		l.cons = nil
	}
	l.prod.Close()
}

// EnsureTopic creates the topic when it does not exist (one partition, the
// configured replication factor, min.insync.replicas and record size, no
// unclean leader election) and waits until its partition has a leader. An
// existing topic must have one partition.
func (l *Log) EnsureTopic(ctx context.Context) error {
	configs := map[string]*string{
		"min.insync.replicas":            kadm.StringPtr(strconv.Itoa(l.cfg.MinInSync)),
		"max.message.bytes":              kadm.StringPtr(strconv.Itoa(int(l.cfg.MaxRecordBytes))),
		"unclean.leader.election.enable": kadm.StringPtr("false"),
	}
	_, err := l.adm.CreateTopic(ctx, l.cfg.Partitions, l.cfg.ReplicationFactor, configs, l.cfg.Topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("kafkalog: create topic %s: %w", l.cfg.Topic, err)
	}
	for {
		topics, err := l.adm.ListTopics(ctx, l.cfg.Topic)
		if err == nil {
			td := topics[l.cfg.Topic]
			switch {
			case td.Err == nil && len(td.Partitions) > 1:
				return fmt.Errorf("kafkalog: topic %s has %d partitions, want 1", l.cfg.Topic, len(td.Partitions))
			case td.Err == nil && len(td.Partitions) == 1 && td.Partitions[partition].Leader >= 0:
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkalog: topic %s has no leader yet: %w", l.cfg.Topic, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// MaxRecordBytes is the largest record the log takes (Config.MaxRecordBytes),
// so a producer can size its records to fit.
func (l *Log) MaxRecordBytes() int { return int(l.cfg.MaxRecordBytes) }

// Produce implements pipeline.Log: one record per transaction, in order,
// each acknowledged by every in-sync replica. It returns the offset of the
// last one. A record over MaxRecordBytes fails the call with
// pipeline.ErrRecordTooLarge before anything is sent.
func (l *Log) Produce(ctx context.Context, txns []model.Txn) (int64, error) {
	if len(txns) == 0 {
		return 0, errors.New("kafkalog: produce: no transactions")
	}
	recs := make([]*kgo.Record, len(txns))
	for i, t := range txns {
		v, err := logcodec.EncodeTxn(t)
		if err != nil {
			return 0, fmt.Errorf("kafkalog: produce: %w: %w", pipeline.ErrUnavailable, err)
		}
		if n := logcodec.RecordBytes(len(v)); n > int(l.cfg.MaxRecordBytes) {
			return 0, fmt.Errorf("kafkalog: produce: %w: record %d of %d (txn %d at %s, %d changes) is %d bytes, over the limit of %d (MaxRecordBytes, the topic's max.message.bytes); nothing was sent",
				pipeline.ErrRecordTooLarge, i, len(txns), t.XID, t.CommitLSN, len(t.Changes), n, l.cfg.MaxRecordBytes)
		}
		recs[i] = &kgo.Record{Topic: l.cfg.Topic, Partition: partition, Value: v}
	}
	results := l.prod.ProduceSync(ctx, recs...)
	last, written, definite, tooLarge := int64(-1), 0, true, false
	var first error
	for _, r := range results {
		if r.Err != nil {
			if first == nil {
				first = r.Err
			}
			if errors.Is(r.Err, kerr.MessageTooLarge) {
				tooLarge = true // the broker's limit is under ours
			}
			var ke *kerr.Error
			if !errors.As(r.Err, &ke) || ke.Retriable {
				definite = false // timed out or retried: it may be in the log
			}
			continue
		}
		written++
		last = max(last, r.Record.Offset)
	}
	switch {
	case first == nil:
		return last, nil
	case tooLarge:
		return 0, fmt.Errorf("kafkalog: produce %d txns (%d acknowledged): the topic's max.message.bytes is under MaxRecordBytes (%d): %w: %w",
			len(txns), written, l.cfg.MaxRecordBytes, pipeline.ErrRecordTooLarge, first)
	case written == 0 && definite:
		return 0, fmt.Errorf("kafkalog: produce %d txns: %w: %w", len(txns), pipeline.ErrUnavailable, first)
	default:
		return 0, fmt.Errorf("kafkalog: produce %d txns (%d acknowledged): %w: %w", len(txns), written, pipeline.ErrTimeout, first)
	}
}

// place makes the consumer stand at offset: it creates the consumer there,
// or moves it with SetOffsets while its cursor exists, or removes and adds
// the partition again otherwise. It does nothing when the consumer already
// stands there.
func (l *Log) place(offset int64) error {
	at := map[string]map[int32]kgo.Offset{l.cfg.Topic: {partition: kgo.NewOffset().At(offset)}}
	switch {
	case l.cons == nil:
		cons, err := kgo.NewClient(
			kgo.SeedBrokers(l.cfg.Brokers...),
			kgo.ConsumePartitions(at),
			kgo.ConsumeResetOffset(kgo.NoResetOffset()), // out of range is an error, never a silent jump
			kgo.FetchMaxWait(l.cfg.FetchWait),
			kgo.FetchMaxPartitionBytes(l.cfg.MaxRecordBytes),
		)
		if err != nil {
			return err
		}
		l.cons, l.delivered = cons, false
	case offset == l.next && !l.stale:
		return nil
	case l.delivered && !l.stale:
		l.cons.SetOffsets(map[string]map[int32]kgo.EpochOffset{l.cfg.Topic: {partition: {Epoch: -1, Offset: offset}}})
	default:
		l.cons.RemoveConsumePartitions(map[string][]int32{l.cfg.Topic: {partition}})
		l.cons.AddConsumePartitions(at)
		l.delivered = false
	}
	l.next, l.stale = offset, false
	return nil
}

// Fetch implements pipeline.Log: up to max acknowledged records from offset
// on, waiting up to Config.FetchWait when there are none yet. An offset past
// the end of the log is an error (Kafka's OffsetOutOfRange).
func (l *Log) Fetch(ctx context.Context, offset int64, max int) ([]pipeline.Record, error) {
	if max < 1 || offset < 0 {
		return nil, fmt.Errorf("kafkalog: fetch %d records from offset %d: %w", max, offset, pipeline.ErrUnavailable)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fail := func(err error) ([]pipeline.Record, error) {
		l.stale = true
		return nil, fmt.Errorf("kafkalog: fetch from offset %d: %w: %w", offset, pipeline.ErrUnavailable, err)
	}
	if err := l.place(offset); err != nil {
		return fail(err)
	}
	wait, cancel := context.WithTimeout(ctx, l.cfg.FetchWait)
	defer cancel()
	fetches := l.cons.PollRecords(wait, max)
	var out []pipeline.Record
	var err error
	fetches.EachRecord(func(r *kgo.Record) {
		if err != nil || r.Offset < l.next {
			return // after a failure, or left over from an earlier position
		}
		var t model.Txn
		if t, err = logcodec.DecodeTxn(r.Value); err != nil {
			err = fmt.Errorf("record at offset %d: %w", r.Offset, err)
			return
		}
		out = append(out, pipeline.Record{Offset: r.Offset, Txn: t})
		l.next = r.Offset + 1
	})
	if err != nil {
		return fail(err) // the records polled after the bad one are gone
	}
	if len(out) > 0 {
		l.delivered = true
		return out, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("kafkalog: fetch from offset %d: %w", offset, ctx.Err())
	}
	fetches.EachError(func(_ string, _ int32, e error) {
		if err == nil && !errors.Is(e, context.DeadlineExceeded) { // the long poll ran out
			err = e
		}
	})
	if errors.Is(err, kerr.OffsetOutOfRange) {
		// Kafka says the same for an offset past the end (a reader
		// ahead of a log that lost records) as for one before the
		// start (retention deleted it); only the second is
		// ErrOffsetOutOfRange, which a reader must not step over.
		if start, serr := l.logStart(ctx); serr == nil && offset < start {
			l.stale = true
			return nil, fmt.Errorf("kafkalog: fetch from offset %d: the log starts at %d: %w", offset, start, pipeline.ErrOffsetOutOfRange)
		}
	}
	if err != nil {
		return fail(err)
	}
	return nil, nil
}

// Start implements pipeline.Log: the partition's log start offset, which
// moves forward when retention deletes old segments.
func (l *Log) Start(ctx context.Context) (int64, error) {
	return l.logStart(ctx)
}

// logStart lists the log start offset with the admin client, which
// needs none of Fetch's state.
func (l *Log) logStart(ctx context.Context) (int64, error) {
	var start int64
	err := retriable(ctx, func() error {
		offs, err := l.adm.ListStartOffsets(ctx, l.cfg.Topic)
		if err != nil {
			return err
		}
		o, ok := offs.Lookup(l.cfg.Topic, partition)
		if !ok {
			return fmt.Errorf("no partition %d", partition)
		}
		start = o.Offset
		return o.Err
	})
	if err != nil {
		return 0, fmt.Errorf("kafkalog: start offset of %s: %w: %w", l.cfg.Topic, pipeline.ErrUnavailable, err)
	}
	return start, nil
}

// retriable retries fn while it fails with an error Kafka calls retriable
// (the group coordinator is loading or moving), for up to about two seconds.
func retriable(ctx context.Context, fn func() error) error {
	var err error
	for attempt := 1; ; attempt++ {
		if err = fn(); err == nil || !kerr.IsRetriable(err) || attempt == 20 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Commit implements pipeline.Log: it stores the group's next offset, as a
// manual commit outside any group membership.
func (l *Log) Commit(ctx context.Context, group string, offset int64) error {
	if offset < 0 {
		return fmt.Errorf("kafkalog: commit offset %d for group %s: no such offset", offset, group)
	}
	var offs kadm.Offsets
	offs.AddOffset(l.cfg.Topic, partition, offset, -1)
	err := retriable(ctx, func() error {
		resps, err := l.adm.CommitOffsets(ctx, group, offs)
		if err != nil {
			return err
		}
		return resps.Error()
	})
	if err != nil {
		return fmt.Errorf("kafkalog: commit offset %d for group %s: %w: %w", offset, group, pipeline.ErrTimeout, err)
	}
	return nil
}

// Committed implements pipeline.Log: the group's committed offset, 0 when
// it has none.
// End returns the partition's high watermark: the offset after the last
// acknowledged record.
func (l *Log) End(ctx context.Context) (int64, error) {
	var end int64
	err := retriable(ctx, func() error {
		offs, err := l.adm.ListEndOffsets(ctx, l.cfg.Topic)
		if err != nil {
			return err
		}
		o, ok := offs.Lookup(l.cfg.Topic, partition)
		if !ok {
			return fmt.Errorf("no partition %d", partition)
		}
		end = o.Offset
		return o.Err
	})
	if err != nil {
		return 0, fmt.Errorf("kafkalog: end offset of %s: %w: %w", l.cfg.Topic, pipeline.ErrUnavailable, err)
	}
	return end, nil
}

func (l *Log) Committed(ctx context.Context, group string) (int64, error) {
	var r kadm.OffsetResponse
	var ok bool
	err := retriable(ctx, func() error {
		resps, err := l.adm.FetchOffsets(ctx, group)
		if err != nil {
			return err
		}
		r, ok = resps.Lookup(l.cfg.Topic, partition)
		return r.Err
	})
	if err != nil {
		return 0, fmt.Errorf("kafkalog: read offset of group %s: %w: %w", group, pipeline.ErrUnavailable, err)
	}
	if !ok || r.At < 0 {
		return 0, nil
	}
	return r.At, nil
}
