package debezium

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"lockstep/model"
	"lockstep/pipeline"
)

// Log is Debezium's topics read back as lockstep's log (pipeline.Log), so
// that lockstep's own appliers apply what Debezium captured: the sink
// adapter between Debezium and the stores. Its records are the
// transactions the Decoder hands out, numbered from 0 in the order it
// hands them out (the transaction topic's order of END events, copies sent
// again after a restart included). Every Log reads the topics from their
// start, so the numbering is the same in every process and after every
// restart, and an offset a store saved names the same transaction later.
// Transactions without changes (an END that counts no events) are left
// out, as the audit slot's truth leaves them out.
//
// It keeps every transaction in memory: fine for a run of the container
// world, not for a production log. Debezium's topics have no retention
// here, so Start is 0. It is read-only: Produce fails. Consumer-group
// offsets, which lockstep's appliers commit only for monitoring, are kept
// in memory.
type Log struct {
	cl     *kgo.Client
	dec    *Decoder
	prefix string
	// wait bounds how long a fetch at the end polls the topics.
	wait time.Duration

	// Logger hears how many transactions Debezium sent again (a restart
	// resends what it sent since its last flushed offset).
	Logger *slog.Logger

	mu        sync.Mutex
	next      map[string]int64 // by topic: the offset after the last record read
	txns      []model.Txn
	last      model.LSN // the newest commit LSN handed out
	resent    int
	err       error // the decoder's: the topics cannot be read on
	committed map[string]int64
}

// ErrReadOnly is Produce's error: Debezium writes these topics.
var ErrReadOnly = errors.New("debezium: the log is Debezium's topics, read-only")

// OpenLog reads the topics of the connector whose topic.prefix is prefix
// (every "<prefix>.*" topic, the transaction topic
// "<prefix>.transaction" among them; topics the connector creates later are
// found within a second) on the given brokers.
func OpenLog(brokers []string, prefix string) (*Log, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumeRegex(), kgo.ConsumeTopics("^"+regexp.QuoteMeta(prefix)+`\.`),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(250*time.Millisecond), kgo.MetadataMaxAge(time.Second),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("debezium: kafka client: %w", err)
	}
	return &Log{cl: cl, prefix: prefix, dec: &Decoder{TransactionTopic: prefix + ".transaction"}, wait: 200 * time.Millisecond, committed: map[string]int64{}, next: map[string]int64{}}, nil
}

// Resent is how many transactions Debezium sent again so far: records
// whose commit LSN is not past one handed out before.
func (l *Log) Resent() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resent
}

// Close closes the Kafka client.
func (l *Log) Close() { l.cl.Close() }

// poll reads what the topics have now, waiting up to l.wait for a first
// record, and decodes it. Called with l.mu held.
func (l *Log) poll(ctx context.Context) error {
	if l.err != nil {
		return l.err
	}
	pctx, cancel := context.WithTimeout(ctx, l.wait)
	defer cancel()
	fs := l.cl.PollFetches(pctx)
	before := l.resent
	// Fetch errors are the client's to retry (a broker down, a leader
	// moving); the context's end is only the wait being over.
	for _, r := range fs.Records() {
		l.next[r.Topic] = r.Offset + 1
		txns, err := l.dec.Add(FromKafka(r))
		if err != nil {
			l.err = fmt.Errorf("debezium: decode %s: %w", FromKafka(r), err)
			return l.err
		}
		for _, t := range txns {
			if len(t.Changes) == 0 {
				continue
			}
			if t.CommitLSN <= l.last {
				l.resent++
			}
			l.last = max(l.last, t.CommitLSN)
			l.txns = append(l.txns, t)
		}
	}
	if resent := l.resent - before; resent > 0 && l.Logger != nil {
		l.Logger.Info("debezium: transactions sent again", "now", resent, "in all", l.resent, "of", len(l.txns))
	}
	return ctx.Err()
}

// fromKafka is a franz-go record as the decoder takes it.
func FromKafka(r *kgo.Record) Record {
	d := Record{Topic: r.Topic, Offset: r.Offset, Key: r.Key, Value: r.Value}
	for _, h := range r.Headers {
		d.Headers = append(d.Headers, Header{Key: h.Key, Value: h.Value})
	}
	return d
}

// Produce implements pipeline.Log; it always fails.
func (l *Log) Produce(context.Context, []model.Txn) (int64, error) { return 0, ErrReadOnly }

// Fetch returns up to max transactions from offset on; at the end it
// polls the topics for a short while first.
func (l *Log) Fetch(ctx context.Context, offset int64, max int) ([]pipeline.Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if offset < 0 {
		return nil, fmt.Errorf("debezium: fetch at offset %d: %w", offset, pipeline.ErrOffsetOutOfRange)
	}
	if offset >= int64(len(l.txns)) {
		if err := l.poll(ctx); err != nil {
			return nil, err
		}
	}
	var out []pipeline.Record
	for i := offset; i < int64(len(l.txns)) && len(out) < max; i++ {
		out = append(out, pipeline.Record{Offset: i, Txn: l.txns[i]})
	}
	return out, nil
}

// Start is 0: nothing is deleted from Debezium's topics in a run.
func (l *Log) Start(context.Context) (int64, error) { return 0, nil }

// End is the number of transactions decoded, after reading every topic up
// to its end offset as the brokers give it now (for at most endReading): a
// rebuild folds up to End, so a large transaction Debezium has written goes
// into the rebuild's one reset batch rather than into the next incremental
// batch (where Redis would WATCH each of its keys).
func (l *Log) End(ctx context.Context) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ends, err := l.ends(ctx)
	if err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(endReading); time.Now().Before(deadline); {
		behind := false
		for topic, end := range ends {
			behind = behind || l.next[topic] < end
		}
		if !behind {
			break
		}
		if err := l.poll(ctx); err != nil {
			return 0, err
		}
	}
	return int64(len(l.txns)), nil
}

// ends are the end offsets of the connector's topics (partition 0 each: the
// connector's topics have one partition).
func (l *Log) ends(ctx context.Context) (map[string]int64, error) {
	adm := kadm.NewClient(l.cl)
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("debezium: list topics: %w", err)
	}
	var ours []string
	for _, t := range topics.Names() {
		if strings.HasPrefix(t, l.prefix+".") {
			ours = append(ours, t)
		}
	}
	out := map[string]int64{}
	if len(ours) == 0 {
		return out, nil
	}
	listed, err := adm.ListEndOffsets(ctx, ours...)
	if err != nil {
		return nil, fmt.Errorf("debezium: end offsets: %w", err)
	}
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Topic] = max(out[o.Topic], o.Offset)
		}
	})
	return out, nil
}

// endReading bounds End's reading, for brokers that do not answer.
const endReading = 5 * time.Second

// Last is the commit LSN of the newest transaction decoded so far.
func (l *Log) Last() model.LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Commit keeps a group's offset in memory (lockstep's appliers resume
// from their stores' positions; the offset is only for monitoring).
func (l *Log) Commit(_ context.Context, group string, offset int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.committed[group] = offset
	return nil
}

// Committed reads back what Commit kept, 0 when nothing.
func (l *Log) Committed(_ context.Context, group string) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.committed[group], nil
}

var _ pipeline.Log = (*Log)(nil)
