package services

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/logcodec"
	"lockstep/sim"
)

// MinInSync is the smallest number of replicas (leader included) that must
// hold a record before it is acknowledged: acks=all, min.insync.replicas=2.
const MinInSync = 2

// DefaultMaxRecordBytes is the largest record the log takes unless
// SetMaxRecordBytes says otherwise: Kafka's default message.max.bytes.
const DefaultMaxRecordBytes = 1_048_588

// Cluster is a single-partition topic replicated on three brokers, with
// Kafka's semantics: a leader per partition, acks=all with a minimum in-sync
// set, idempotent producers (producer id + sequence, so a retried batch is
// written once), leader failover to an in-sync replica, consumer-group
// offsets, and optionally unclean leader election (an out-of-sync replica
// may lead, losing acknowledged records).
//
// It refuses a record larger than its maximum record size, sizes counted as
// Kafka counts them on the encoding the Kafka log writes (logcodec.TxnBytes).
// A Kafka broker takes one record batch per partition in a produce request
// and refuses a batch over max.message.bytes whole, with MESSAGE_TOO_LARGE
// (UnifiedLog.analyzeAndValidateRecords); franz-go cuts a produce into
// batches that fit, so only a record too large for a batch of its own is
// ever refused, and the Kafka log (pipeline/kafkalog) refuses a produce
// holding one before sending anything. So here a produce holding an oversize
// record is refused whole, with pipeline.ErrRecordTooLarge, and the
// producer's sequence does not advance (the broker never recorded it).
//
// The controller quorum and the group coordinator are modelled as this
// struct (always available); brokers are sim nodes whose logs live on their
// disks.
type Cluster struct {
	w       *sim.World
	brokers []*sim.Node
	leader  int // index into brokers, -1 when offline
	epoch   int
	isr     []bool
	unclean bool
	groups  map[string]int64
	nextPID int64
	maxRec  int // largest record, in logcodec.RecordBytes

	ackedEnd int64 // log end the producers were told about
	losses   int

	// lost is the append faults in force, by producer node name (see
	// LoseAppends and LoseAcks).
	lost map[string]lostAppends
}

// lostAppends is what the log loses of one producer's appends: each request
// with probability request before a broker takes it, each answer with
// probability ack after the leader handled the request.
// acks is a number of answers to lose outright, the next ones, whatever
// the probabilities (LoseNextAcks).
type lostAppends struct {
	request, ack float64
	acks         int
}

type logEntry struct {
	Txn model.Txn
	PID int64
	Seq int64
	At  time.Duration // when the leader appended it, for retention
}

type producerState struct {
	seq  int64
	last int64
}

// broker is the volatile state of one broker node.
type broker struct {
	c         *Cluster
	idx       int
	n         *sim.Node
	log       []logEntry // indexed by offset; entries before start are deleted
	start     int64      // the log start offset: retention deleted what is before it
	producers map[int64]producerState
	waiters   []*fetchWaiter // long-polling fetches, answered on append
}

// fetchWaiter is a consumer's fetch parked until data arrives or its wait
// runs out (Kafka's fetch.max.wait.ms).
type fetchWaiter struct {
	off   int64
	max   int
	reply func([]pipeline.Record, error)
	done  bool
}

// FetchWait is how long a fetch waits at the broker for new records.
const FetchWait = 250 * time.Millisecond

func (b *broker) fetchWait(off int64, max int, reply func([]pipeline.Record, error)) {
	recs, err := b.fetch(off, max)
	if err != nil || len(recs) > 0 {
		reply(recs, err)
		return
	}
	fw := &fetchWaiter{off: off, max: max, reply: reply}
	b.waiters = append(b.waiters, fw)
	b.n.At(b.n.World().Now()+FetchWait, func() {
		if !fw.done {
			fw.done = true
			reply(b.fetch(fw.off, fw.max))
		}
	})
}

// wakeFetches answers the parked fetches that now have records.
func (b *broker) wakeFetches() {
	kept := b.waiters[:0]
	for _, fw := range b.waiters {
		if fw.done {
			continue
		}
		recs, err := b.fetch(fw.off, fw.max)
		if err != nil || len(recs) > 0 {
			fw.done = true
			fw.reply(recs, err)
			continue
		}
		kept = append(kept, fw)
	}
	clear(b.waiters[len(kept):])
	b.waiters = kept
}

// NewCluster adds three broker nodes named prefix1..prefix3 and starts the
// controller, which checks leadership every tick.
func NewCluster(w *sim.World, prefix string) *Cluster {
	c := &Cluster{w: w, leader: 0, groups: map[string]int64{}, maxRec: DefaultMaxRecordBytes}
	for i := 0; i < 3; i++ {
		idx := i
		n := w.AddNode(prefix+string(rune('1'+i)), func(n *sim.Node) any { return c.bootBroker(n, idx) })
		c.brokers = append(c.brokers, n)
		c.isr = append(c.isr, true)
	}
	var tick func()
	tick = func() {
		c.control()
		w.At(w.Now()+25*time.Millisecond, -1, tick)
	}
	w.At(0, -1, tick)
	return c
}

func (c *Cluster) bootBroker(n *sim.Node, idx int) any {
	b := &broker{c: c, idx: idx, n: n, producers: map[int64]producerState{}}
	if v, ok := n.Disk().Get("log"); ok {
		b.log = v.([]logEntry)
	}
	if v, ok := n.Disk().Get("start"); ok {
		b.start = v.(int64)
	}
	b.rebuildProducers()
	return b
}

func (b *broker) rebuildProducers() {
	clear(b.producers)
	for off, e := range b.log {
		b.producers[e.PID] = producerState{seq: e.Seq, last: int64(off)}
	}
}

// setLog replaces the broker's log with a private copy (catch-up after
// falling out of sync), so no two brokers ever share a backing array, and
// takes the leader's log start with it.
func (b *broker) setLog(l []logEntry, start int64) {
	b.log = append([]logEntry(nil), l...)
	b.start = start
	b.persist()
}

// retain deletes the records appended at or before cutoff, from the front
// (Kafka deletes whole old segments; a record is as old as its segment):
// the log start moves to the first record younger than cutoff, or to the
// end. Deleted entries keep their slot, so offsets stay indexes, but not
// their transactions.
func (b *broker) retain(cutoff time.Duration) {
	start := b.start
	for start < int64(len(b.log)) && b.log[start].At <= cutoff {
		start++
	}
	if start == b.start {
		return
	}
	for i := b.start; i < start; i++ {
		b.log[i] = logEntry{PID: b.log[i].PID, Seq: b.log[i].Seq, At: b.log[i].At}
	}
	b.start = start
	b.persist()
}

// appendLog appends to the broker's own log and syncs it.
func (b *broker) appendLog(entries []logEntry) {
	if len(b.log)+len(entries) > cap(b.log) {
		// Double, as append does only for small slices: past 256 entries
		// it grows by a quarter, and a log of thousands of records was
		// copied a dozen times over.
		b.log = slices.Grow(b.log, max(len(b.log), len(entries)))
	}
	b.log = append(b.log, entries...)
	b.persist()
}

func (b *broker) persist() {
	b.n.Disk().Put("log", b.log)
	b.n.Disk().Put("start", b.start)
	b.n.Disk().Sync()
}

// Brokers are the broker nodes.
func (c *Cluster) Brokers() []*sim.Node { return c.brokers }

// Leader is the current leader node, or nil when the partition is offline.
func (c *Cluster) Leader() *sim.Node {
	if c.leader < 0 {
		return nil
	}
	return c.brokers[c.leader]
}

// SetMaxRecordBytes sets the largest record the log takes, in bytes as
// logcodec.RecordBytes counts them (the topic's max.message.bytes).
func (c *Cluster) SetMaxRecordBytes(n int) { c.maxRec = n }

// MaxRecordBytes is the largest record the log takes.
func (c *Cluster) MaxRecordBytes() int { return c.maxRec }

// LoseAppends makes the log lose each produce request of the client on node
// with probability p, before any broker takes it: the append does not
// happen, and the producer sees a timeout (faults.LostAppend). 0 ends it.
//
// It is a fault hook on the broker's produce handler, keyed by request type
// as kfake's are, not a lossy link: the producer's other requests (metadata,
// fetches) go through, so the only thing that fails is the append, as when
// the connection a Kafka client keeps for produce requests breaks.
func (c *Cluster) LoseAppends(node string, p float64) {
	c.setLost(node, func(l *lostAppends) { l.request = p })
}

// LoseAcks makes the log lose the answer to each produce request of the
// client on node with probability p, after the leader handled it: the
// append took effect, the producer sees a timeout and retries, and its
// retry, in the same session, is recognised by its sequence number and
// written once (faults.LostAck). 0 ends it.
func (c *Cluster) LoseAcks(node string, p float64) {
	c.setLost(node, func(l *lostAppends) { l.ack = p })
}

// LoseNextAcks makes the log lose the answers to the next n produce
// requests of the client on node that append (a refusal's answer is not
// lost): the append took effect, the client times out and retries, and the
// retry is recognised by its sequence number and answered. A conformance test does the same to a real broker through a
// proxy (kafkatest.Proxy), so the two logs can be compared on it.
func (c *Cluster) LoseNextAcks(node string, n int) {
	c.setLost(node, func(l *lostAppends) { l.acks = n })
}

// AcksToLose is how many of the answers LoseNextAcks asked to lose for the
// client on node are still to be lost.
func (c *Cluster) AcksToLose(node string) int { return c.lost[node].acks }

// HealAppends ends LoseAppends, LoseAcks and LoseNextAcks for every producer.
func (c *Cluster) HealAppends() { c.lost = nil }

func (c *Cluster) setLost(node string, set func(*lostAppends)) {
	if c.lost == nil {
		c.lost = map[string]lostAppends{}
	}
	l := c.lost[node]
	set(&l)
	if l == (lostAppends{}) {
		delete(c.lost, node)
		return
	}
	c.lost[node] = l
}

// Retain deletes, on every broker that is up, the records appended more
// than keep ago, as Kafka's retention.ms does (faults.Retention): the log
// start offset moves forward, and a fetch before it fails with
// pipeline.ErrOffsetOutOfRange. A crashed broker keeps its records until a
// leader's log replaces them.
func (c *Cluster) Retain(keep time.Duration) {
	cutoff := c.w.Now() - keep
	for _, n := range c.brokers {
		if b, ok := n.State().(*broker); ok && n.Up() {
			b.retain(cutoff)
		}
	}
}

// Start is the leader's log start offset (0 when the partition is offline).
func (c *Cluster) Start() int64 {
	if c.leader >= 0 {
		if b, ok := c.brokers[c.leader].State().(*broker); ok {
			return b.start
		}
	}
	return 0
}

// SetUnclean enables or disables unclean leader election.
func (c *Cluster) SetUnclean(on bool) { c.unclean = on }

// Losses is how many acknowledged records an unclean election threw away.
func (c *Cluster) Losses() int { return c.losses }

// Records is the leader's log (what consumers can read: from its start),
// or the longest log when the partition is offline.
func (c *Cluster) Records() []pipeline.Record {
	var best *broker
	if c.leader >= 0 {
		best, _ = c.brokers[c.leader].State().(*broker)
	}
	if best == nil {
		for _, n := range c.brokers {
			if b, ok := n.State().(*broker); ok && (best == nil || len(b.log) > len(best.log)) {
				best = b
			}
		}
	}
	if best == nil {
		return nil
	}
	out := make([]pipeline.Record, 0, int64(len(best.log))-best.start)
	for i := best.start; i < int64(len(best.log)); i++ {
		out = append(out, pipeline.Record{Offset: i, Txn: best.log[i].Txn})
	}
	return out
}

func (c *Cluster) live(i int) (*broker, bool) {
	n := c.brokers[i]
	if !n.Up() || n.Paused() {
		return nil, false
	}
	b, ok := n.State().(*broker)
	return b, ok
}

func (c *Cluster) linked(i, j int) bool {
	a, b := c.brokers[i], c.brokers[j]
	return !c.w.Net().Blocked(a, b) && !c.w.Net().Blocked(b, a)
}

// control is the controller: it elects a leader when the current one is
// gone and lets reachable replicas catch up and rejoin the in-sync set.
// (Followers leave the in-sync set when a produce cannot reach them.)
func (c *Cluster) control() {
	if c.leader >= 0 {
		if _, ok := c.live(c.leader); !ok {
			c.leader = -1
		}
	}
	if c.leader < 0 {
		c.elect()
	}
	if c.leader < 0 {
		return
	}
	lead, _ := c.live(c.leader)
	c.isr[c.leader] = true
	for i := range c.brokers {
		if i == c.leader || c.isr[i] || !c.linked(c.leader, i) {
			continue
		}
		if f, ok := c.live(i); ok {
			f.setLog(lead.log, lead.start)
			f.rebuildProducers()
			c.isr[i] = true
		}
	}
}

// elect picks a live in-sync replica as leader; the new in-sync set is the
// live part of the old one. With none live, the partition stays offline and
// keeps its in-sync set, as Kafka does, so the last in-sync replica can lead
// again when it returns, unless unclean election lets a lagging one lead.
func (c *Cluster) elect() {
	best := -1
	for i := range c.brokers {
		if _, ok := c.live(i); ok && c.isr[i] {
			best = i
			break
		}
	}
	if best >= 0 {
		c.leader = best
		c.epoch++
		for i := range c.isr {
			_, ok := c.live(i)
			c.isr[i] = c.isr[i] && ok
		}
		return
	}
	if best < 0 && c.unclean {
		longest := -1
		for i := range c.brokers {
			if b, ok := c.live(i); ok && len(b.log) > longest {
				best, longest = i, len(b.log)
			}
		}
		if best >= 0 && int64(longest) < c.ackedEnd {
			c.losses += int(c.ackedEnd - int64(longest))
			c.ackedEnd = int64(longest)
		}
	}
	if best < 0 {
		return
	}
	c.leader = best
	c.epoch++
	for i := range c.isr {
		c.isr[i] = i == best
	}
}

// takeProduce handles a produce request from the client on node from,
// with the append faults in force for it: the request may be lost before
// the broker takes it, the answer after. Where none is in force, nothing
// is drawn from the world's PRNG, so runs without them replay as before.
func (b *broker) takeProduce(from string, pid, seq int64, txns []model.Txn, reply func(int64, error)) {
	lost := b.c.lost[from]
	if lost.request > 0 && b.n.Rand().Float64() < lost.request {
		return // never taken: nothing appended, no answer
	}
	off, err := b.produce(pid, seq, txns)
	if lost.acks > 0 && err == nil {
		b.c.setLost(from, func(l *lostAppends) { l.acks-- })
		return // appended, and the answer lost (no draw: an exact count)
	}
	if lost.ack > 0 && b.n.Rand().Float64() < lost.ack {
		return // handled (appended, unless refused), and the answer lost
	}
	reply(off, err)
}

func (b *broker) produce(pid, seq int64, txns []model.Txn) (int64, error) {
	c := b.c
	if c.leader != b.idx {
		return 0, ErrNotLeader
	}
	if st, ok := b.producers[pid]; ok {
		if seq <= st.seq {
			return st.last, nil // a retry of a batch already written
		}
		if seq != st.seq+1 {
			return 0, ErrOutOfSequence
		}
	}
	var followers []*broker
	for i := range c.brokers {
		if i == b.idx || !c.isr[i] {
			continue
		}
		if f, ok := c.live(i); ok && c.linked(b.idx, i) {
			followers = append(followers, f)
		} else {
			c.isr[i] = false
		}
	}
	if 1+len(followers) < MinInSync {
		return 0, ErrNotEnoughISR
	}
	if err := c.checkSizes(txns); err != nil {
		return 0, err
	}
	entries := make([]logEntry, len(txns))
	now := c.w.Now()
	for i, t := range txns {
		entries[i] = logEntry{Txn: t, PID: pid, Seq: seq, At: now}
	}
	last := int64(len(b.log) + len(entries) - 1)
	for _, r := range append(followers, b) {
		r.appendLog(entries)
		r.producers[pid] = producerState{seq: seq, last: last}
	}
	b.wakeFetches()
	if last+1 > c.ackedEnd {
		c.ackedEnd = last + 1
	}
	return last, nil
}

// checkSizes refuses a produce holding a record over the maximum size,
// before anything of it is appended.
func (c *Cluster) checkSizes(txns []model.Txn) error {
	for i, t := range txns {
		if logcodec.TxnBytesBound(t) <= c.maxRec {
			continue
		}
		n, err := logcodec.TxnBytes(t)
		if err != nil {
			n = logcodec.TxnBytesBound(t) // the real log cannot encode it either
		}
		if n > c.maxRec {
			return fmt.Errorf("%w: record %d of %d (txn %d at %s, %d changes) is %d bytes, over the limit of %d (max.message.bytes)",
				pipeline.ErrRecordTooLarge, i, len(txns), t.XID, t.CommitLSN, len(t.Changes), n, c.maxRec)
		}
	}
	return nil
}

func (b *broker) fetch(off int64, max int) ([]pipeline.Record, error) {
	if b.c.leader != b.idx {
		return nil, ErrNotLeader
	}
	if off > int64(len(b.log)) {
		return nil, ErrOutOfRange
	}
	if off < b.start {
		return nil, fmt.Errorf("fetch from offset %d: the log starts at %d: %w", off, b.start, pipeline.ErrOffsetOutOfRange)
	}
	end := min(off+int64(max), int64(len(b.log)))
	out := make([]pipeline.Record, 0, end-off)
	for i := off; i < end; i++ {
		out = append(out, pipeline.Record{Offset: i, Txn: b.log[i].Txn})
	}
	return out, nil
}

// LogClient is a producer and consumer connection to the cluster
// (pipeline.Log): it finds the leader through any broker, retries a produce
// with the same sequence number, and starts a new producer session when it
// gives up (so later sequences stay valid; the old batch may then be
// duplicated, which consumers must tolerate). A produce refused for an
// oversize record (pipeline.ErrRecordTooLarge) is neither retried nor the
// end of the session.
type LogClient struct {
	From    *sim.Node
	Cluster *Cluster
	Timeout time.Duration
	Retries int // produce attempts (default 5)

	leader int
	pid    int64
	seq    int64
	known  bool
}

func (l *LogClient) timeout() time.Duration {
	if l.Timeout == 0 {
		return DefaultTimeout
	}
	return l.Timeout
}

// refresh asks the brokers, in turn from a random one, who leads.
func (l *LogClient) refresh(ctx context.Context) error {
	c := l.Cluster
	start := l.From.Rand().IntN(len(c.brokers))
	for k := 0; k < len(c.brokers); k++ {
		i := (start + k) % len(c.brokers)
		leader, err := sim.Call(ctx, l.From, c.brokers[i], l.timeout(), func(b *broker) (int, error) { return b.c.leader, nil })
		if err == nil && leader >= 0 {
			l.leader, l.known = leader, true
			return nil
		}
	}
	return ErrOffline
}

func (l *LogClient) leaderNode(ctx context.Context) (*sim.Node, error) {
	if !l.known {
		if err := l.refresh(ctx); err != nil {
			return nil, err
		}
	}
	return l.Cluster.brokers[l.leader], nil
}

func (l *LogClient) initProducer(ctx context.Context) error {
	n, err := l.leaderNode(ctx)
	if err != nil {
		return err
	}
	pid, err := sim.Call(ctx, l.From, n, l.timeout(), func(b *broker) (int64, error) { b.c.nextPID++; return b.c.nextPID, nil })
	if err != nil {
		l.known = false
		return err
	}
	l.pid, l.seq = pid, 0
	return nil
}

// Produce implements pipeline.Log.
func (l *LogClient) Produce(ctx context.Context, txns []model.Txn) (int64, error) {
	if len(txns) == 0 {
		return 0, errors.New("produce: no transactions") // as the Kafka log says
	}
	for _, t := range txns {
		if err := logcodec.Check(t); err != nil {
			// The Kafka log cannot encode it either, and sends nothing.
			return 0, fmt.Errorf("produce: %w: %w", pipeline.ErrUnavailable, err)
		}
	}
	retries := l.Retries
	if retries == 0 {
		retries = 5
	}
	var err error
	maybe := false // some try timed out: the batch may be in the log
	for attempt := 0; attempt < retries; attempt++ {
		if attempt > 0 {
			if e := l.From.Env().Sleep(ctx, 20*time.Millisecond<<attempt); e != nil {
				return 0, e
			}
		}
		if l.pid == 0 {
			if err = l.initProducer(ctx); err != nil {
				continue
			}
		}
		var n *sim.Node
		if n, err = l.leaderNode(ctx); err != nil {
			continue
		}
		pid, seq, from := l.pid, l.seq+1, l.From.Name()
		var off int64
		off, err = sim.CallAsync(ctx, l.From, n, l.timeout(), func(b *broker, reply func(int64, error)) {
			b.takeProduce(from, pid, seq, txns, reply)
		})
		if err == nil {
			l.seq = seq
			return off, nil
		}
		if errors.Is(err, pipeline.ErrRecordTooLarge) {
			// Permanent: retrying cannot help, and the session stays
			// valid (the broker recorded nothing, so this sequence
			// number is still the next one).
			return 0, err
		}
		if errors.Is(err, ErrOutOfSequence) {
			break
		}
		maybe = maybe || errors.Is(err, pipeline.ErrTimeout)
		l.known = false
	}
	l.pid, l.seq = 0, 0 // a new session: the lost batch's fate is unknown
	if maybe && !errors.Is(err, pipeline.ErrTimeout) {
		// The last try failed for a plain reason (no leader, too few
		// in-sync replicas), but an earlier one may have been written:
		// the outcome is unknown, as the Kafka log says of a produce it
		// retried.
		return 0, fmt.Errorf("produce: %w: a try timed out, the last one failed: %w", pipeline.ErrTimeout, err)
	}
	return 0, err
}

// MaxRecordBytes is the largest record the log takes, so a producer can
// size its records to fit.
func (l *LogClient) MaxRecordBytes() int { return l.Cluster.MaxRecordBytes() }

// Fetch implements pipeline.Log.
func (l *LogClient) Fetch(ctx context.Context, off int64, max int) ([]pipeline.Record, error) {
	if max < 1 || off < 0 {
		return nil, fmt.Errorf("fetch %d records from offset %d: %w", max, off, pipeline.ErrUnavailable)
	}
	n, err := l.leaderNode(ctx)
	if err != nil {
		return nil, err
	}
	recs, err := sim.CallAsync(ctx, l.From, n, FetchWait+l.timeout(), func(b *broker, reply func([]pipeline.Record, error)) {
		b.fetchWait(off, max, reply)
	})
	if err != nil {
		l.known = false
	}
	return recs, err
}

// End implements pipeline.Log: the leader's log end.
func (l *LogClient) End(ctx context.Context) (int64, error) {
	n, err := l.leaderNode(ctx)
	if err != nil {
		return 0, err
	}
	end, err := sim.Call(ctx, l.From, n, l.timeout(), func(b *broker) (int64, error) {
		if b.c.leader != b.idx {
			return 0, ErrNotLeader
		}
		return int64(len(b.log)), nil
	})
	if err != nil {
		l.known = false
	}
	return end, err
}

// Start implements pipeline.Log: the leader's log start offset.
func (l *LogClient) Start(ctx context.Context) (int64, error) {
	n, err := l.leaderNode(ctx)
	if err != nil {
		return 0, err
	}
	start, err := sim.Call(ctx, l.From, n, l.timeout(), func(b *broker) (int64, error) {
		if b.c.leader != b.idx {
			return 0, ErrNotLeader
		}
		return b.start, nil
	})
	if err != nil {
		l.known = false
	}
	return start, err
}

// Commit implements pipeline.Log.
func (l *LogClient) Commit(ctx context.Context, group string, off int64) error {
	if off < 0 {
		return fmt.Errorf("commit offset %d for group %s: no such offset", off, group) // as the Kafka log says
	}
	n, err := l.leaderNode(ctx)
	if err != nil {
		return err
	}
	_, err = sim.Call(ctx, l.From, n, l.timeout(), func(b *broker) (struct{}, error) { b.c.groups[group] = off; return struct{}{}, nil })
	return err
}

// Committed implements pipeline.Log.
func (l *LogClient) Committed(ctx context.Context, group string) (int64, error) {
	n, err := l.leaderNode(ctx)
	if err != nil {
		return 0, err
	}
	return sim.Call(ctx, l.From, n, l.timeout(), func(b *broker) (int64, error) { return b.c.groups[group], nil })
}
