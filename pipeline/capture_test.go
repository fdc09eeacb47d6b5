package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"lockstep/model"
	"lockstep/pipeline/logcodec"
	"lockstep/pipeline/realenv"
)

// wide is a transaction at lsn of n inserts whose rows carry size bytes.
func wide(lsn model.LSN, n, size int) model.Txn {
	t := model.Txn{XID: uint64(lsn), CommitLSN: lsn}
	for i := range n {
		t.Changes = append(t.Changes, model.Change{Table: "t", PK: fmt.Sprintf("k%d-%d", lsn, i), Op: model.OpInsert, Row: model.R("v", strings.Repeat("x", size))})
	}
	return t
}

func recordBytes(t *testing.T, tx model.Txn) int {
	t.Helper()
	n, err := logcodec.TxnBytes(tx)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkParts checks that parts are t cut in order: numbered, at t's LSN and
// XID, each within limit, their changes t's.
func checkParts(t *testing.T, tx model.Txn, parts []model.Txn, limit int) {
	t.Helper()
	var changes []model.Change
	for i, p := range parts {
		if p.Chunk != i || p.Chunks != len(parts) || p.CommitLSN != tx.CommitLSN || p.XID != tx.XID || p.Snapshot != tx.Snapshot {
			t.Fatalf("part %d is chunk %d of %d at %s xid %d; want %d of %d at %s xid %d", i, p.Chunk, p.Chunks, p.CommitLSN, p.XID, i, len(parts), tx.CommitLSN, tx.XID)
		}
		if n := recordBytes(t, p); n > limit {
			t.Fatalf("part %d takes %d bytes, over the limit of %d", i, n, limit)
		}
		if len(p.Changes) == 0 && len(tx.Changes) > 0 {
			t.Fatalf("part %d is empty", i)
		}
		changes = append(changes, p.Changes...)
	}
	if !reflect.DeepEqual(changes, tx.Changes) {
		t.Fatalf("the parts hold %d changes, not the transaction's %d in order", len(changes), len(tx.Changes))
	}
}

func TestSplitTxn(t *testing.T) {
	small := wide(10, 3, 10)
	if parts, err := SplitTxn(small, 0, 1000); err != nil || len(parts) != 1 || !reflect.DeepEqual(parts[0], small) {
		t.Fatalf("a transaction that fits came back as %+v, %v; want it unchanged", parts, err)
	}
	big := wide(20, 100, 1000) // about 100 KB
	const limit = 16 << 10
	parts, err := SplitTxn(big, 0, limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) < 7 || len(parts) > 8 {
		t.Fatalf("%d parts of a 100 KB transaction under %d bytes each, want 7 (as full as they can be)", len(parts), limit)
	}
	checkParts(t, big, parts, limit)

	// A snapshot is always numbered, and cut by rows as well as bytes.
	snap := wide(30, 10, 10)
	snap.Snapshot = true
	if parts, _ := SplitTxn(snap, 2000, limit); len(parts) != 1 || parts[0].Chunks != 1 {
		t.Fatalf("a small snapshot came back as %+v; want chunk 0 of 1", parts)
	}
	parts, err = SplitTxn(snap, 4, limit)
	if err != nil || len(parts) != 3 || len(parts[2].Changes) != 2 {
		t.Fatalf("a snapshot of 10 rows in chunks of 4: %d chunks, %v", len(parts), err)
	}
	checkParts(t, snap, parts, limit)
}

func TestSplitTxnProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		tx := model.Txn{XID: rapid.Uint64().Draw(rt, "xid"), CommitLSN: model.LSN(rapid.Uint64().Draw(rt, "lsn")), Snapshot: rapid.Bool().Draw(rt, "snapshot")}
		for i := range rapid.IntRange(0, 40).Draw(rt, "changes") {
			tx.Changes = append(tx.Changes, model.Change{Table: "t", PK: fmt.Sprint(i), Op: model.OpInsert,
				Row: model.R("v", strings.Repeat("\"", rapid.IntRange(0, 3000).Draw(rt, "size")))})
		}
		limit := rapid.IntRange(400, 40000).Draw(rt, "limit")
		rows := rapid.IntRange(0, 8).Draw(rt, "rows")
		parts, err := SplitTxn(tx, rows, limit)
		var tooLarge *ChangeTooLargeError
		if errors.As(err, &tooLarge) {
			for _, c := range tx.Changes {
				if c.PK == tooLarge.PK && recordBytes(t, model.Txn{XID: tx.XID, CommitLSN: tx.CommitLSN, Snapshot: tx.Snapshot, Chunk: math.MaxInt, Chunks: math.MaxInt, Changes: []model.Change{c}}) > limit {
					return
				}
			}
			rt.Fatalf("refused change %q, which fits", tooLarge.PK)
		}
		if err != nil {
			rt.Fatal(err)
		}
		if len(parts) == 1 && !tx.Snapshot {
			if !reflect.DeepEqual(parts[0], tx) || recordBytes(t, tx) > limit || (rows > 0 && len(tx.Changes) > rows) {
				rt.Fatalf("came back whole but does not fit")
			}
			return
		}
		for _, p := range parts {
			if rows > 0 && len(p.Changes) > rows {
				rt.Fatalf("a part of %d changes, over %d", len(p.Changes), rows)
			}
		}
		checkParts(t, tx, parts, limit)
	})
}

// A single change too large for a record cannot be split: the error names
// the table, the key, the size and what to do, and is ErrRecordTooLarge.
func TestSplitTxnRefusesAChangeTooLarge(t *testing.T) {
	tx := wide(40, 3, 100)
	tx.Changes[1].Row = model.R("v", strings.Repeat("x", 20000))
	_, err := SplitTxn(tx, 0, 16<<10)
	var tooLarge *ChangeTooLargeError
	if !errors.As(err, &tooLarge) || !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("SplitTxn = %v; want a ChangeTooLargeError that is ErrRecordTooLarge", err)
	}
	msg := err.Error()
	for _, want := range []string{"table t", `key "k40-1"`, fmt.Sprint(tooLarge.Bytes), "16384", "max.message.bytes", "MaxTxnBytes"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("%q does not say %q", msg, want)
		}
	}
}

// testEnv is an Env for driving the pipeline's loops by hand: a clock that
// moves a second per reading and sleeps that return at once.
type testEnv struct{ now time.Time }

func (e *testEnv) Now() time.Time                                   { e.now = e.now.Add(time.Second); return e.now }
func (e *testEnv) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }
func (e *testEnv) Go(string, func(context.Context))                 {} // never runs: a stop's time limit never passes
func (e *testEnv) Rand() *rand.Rand                                 { return rand.New(rand.NewPCG(1, 2)) }

var errDrained = errors.New("no more transactions")

// fakeSource is a replication slot over a fixed list of transactions: a
// stream starts after the confirmed position, Next hands out batch
// transactions at a time, then errDrained.
type fakeSource struct {
	txns      []model.Txn
	batch     int
	confirmed model.LSN
	next      int
	starts    int
	onStart   func(starts int)
	// refuse is a transaction the source can never deliver: Next hands
	// out the ones before it, then fails on it with ErrUnsupported, at
	// every read after every Start.
	refuse model.LSN
	// refuseSnapshot makes Snapshot fail with ErrUnsupported.
	refuseSnapshot bool
	// drained, when set, is what Next does once every transaction is
	// handed out (errDrained otherwise).
	drained func(ctx context.Context) error
	// confirmCtx, when set, is what Confirm does first; an error fails
	// the confirmation.
	confirmCtx func(ctx context.Context) error
}

func (s *fakeSource) Snapshot(context.Context) (SnapshotReader, error) {
	if s.refuseSnapshot {
		return nil, fmt.Errorf("snapshot: table x has no key: %w", ErrUnsupported)
	}
	s.confirmed = 1
	return HeldSnapshot{Txn: model.Txn{CommitLSN: 1, Snapshot: true}}, nil
}

func (s *fakeSource) Start(context.Context) (model.LSN, error) {
	s.starts++
	if s.onStart != nil {
		s.onStart(s.starts)
	}
	s.next = 0
	for s.next < len(s.txns) && s.txns[s.next].CommitLSN <= s.confirmed {
		s.next++
	}
	return s.confirmed, nil
}

func (s *fakeSource) Next(ctx context.Context) ([]model.Txn, error) {
	if s.next >= len(s.txns) {
		if s.drained != nil {
			return nil, s.drained(ctx)
		}
		return nil, errDrained
	}
	out := s.txns[s.next:min(s.next+s.batch, len(s.txns))]
	for i, t := range out {
		if s.refuse != 0 && t.CommitLSN == s.refuse {
			if i == 0 {
				return nil, fmt.Errorf("txn at %s: a change to a table without a key: %w", t.CommitLSN, ErrUnsupported)
			}
			out = out[:i]
			break
		}
	}
	s.next += len(out)
	return out, nil
}

func (s *fakeSource) Confirm(ctx context.Context, lsn model.LSN) error {
	if s.confirmCtx != nil {
		if err := s.confirmCtx(ctx); err != nil {
			return err
		}
	}
	s.confirmed = lsn
	return nil
}

// limitLog is memLog with a maximum record size. Refusing as Kafka's broker
// does (and kafkalog now does), it writes nothing of a produce holding an
// oversize record; as franz-go does alone (writeOthers), it fails only the
// oversize record and writes the others, and the produce fails.
type limitLog struct {
	memLog
	max         int
	writeOthers bool
}

func (l *limitLog) MaxRecordBytes() int { return l.max }

func (l *limitLog) Produce(ctx context.Context, txns []model.Txn) (int64, error) {
	var fits []model.Txn
	var refused error
	for i, t := range txns {
		n, err := logcodec.TxnBytes(t)
		if err != nil {
			return 0, err
		}
		if n > l.max {
			if refused == nil {
				refused = fmt.Errorf("record %d of %d is %d bytes: %w", i, len(txns), n, ErrRecordTooLarge)
			}
			continue
		}
		fits = append(fits, t)
	}
	if refused != nil && !l.writeOthers {
		return 0, refused
	}
	last, err := l.memLog.Produce(ctx, fits)
	if refused != nil {
		return 0, fmt.Errorf("%d of %d written: %w", len(fits), len(txns), refused)
	}
	return last, err
}

func (l *limitLog) lsns() []model.LSN {
	var out []model.LSN
	for _, r := range l.recs {
		if !r.Txn.Snapshot {
			out = append(out, r.Txn.CommitLSN)
		}
	}
	return out
}

// The capture appends a transaction larger than a record as parts, in
// commit order with the others, each once, and confirms past it.
func TestCaptureSplitsALargeTxn(t *testing.T) {
	const limit = 16 << 10
	big := wide(30, 100, 1000)
	src := &fakeSource{txns: []model.Txn{wide(20, 1, 10), big, wide(40, 1, 10)}, batch: 3}
	log := &limitLog{max: limit}
	c := &Capture{Env: &testEnv{}, Source: src, Log: log}
	if err := c.stream(context.Background()); !errors.Is(err, errDrained) {
		t.Fatalf("stream ended with %v, want the source drained", err)
	}
	var parts []model.Txn
	for _, r := range log.recs {
		if r.Txn.CommitLSN == 30 {
			parts = append(parts, r.Txn)
		}
	}
	checkParts(t, big, parts, limit)
	got := log.lsns()
	if got[0] != 20 || got[len(got)-1] != 40 || len(got) != len(parts)+2 {
		t.Fatalf("log holds %v; want 20, the parts of 30, 40", got)
	}
	if src.confirmed != 40 || src.starts != 1 {
		t.Fatalf("confirmed %s after %d starts; want 40 after 1", src.confirmed, src.starts)
	}
}

// The old rule (a large transaction appended whole) against a Kafka client
// that, as franz-go does, fails only the oversize record and writes the rest
// of the produce: every retry re-reads from the confirmed position and
// appends the next transaction again, and the large one never arrives. The
// split capture appends everything once, even on that client.
func TestCaptureOldRuleLoopsAndDuplicates(t *testing.T) {
	const limit = 16 << 10
	txns := []model.Txn{wide(20, 1, 10), wide(30, 100, 1000), wide(40, 1, 10)}

	src := &fakeSource{txns: txns, batch: 3}
	old := &limitLog{max: limit, writeOthers: true}
	c := &Capture{Env: &testEnv{}, Source: src, Log: old, Bugs: Bugs{NoSplitLargeTxn: true}}
	for range 5 {
		if err := c.stream(context.Background()); !errors.Is(err, ErrRecordTooLarge) {
			t.Fatalf("old rule: stream ended with %v, want the log's refusal", err)
		}
	}
	if got, want := old.lsns(), []model.LSN{20, 40, 20, 40, 20, 40, 20, 40, 20, 40}; !reflect.DeepEqual(got, want) {
		t.Fatalf("old rule: log holds %v, want %v (30 never, 40 once per retry)", got, want)
	}

	src = &fakeSource{txns: txns, batch: 3}
	fixed := &limitLog{max: limit, writeOthers: true}
	c = &Capture{Env: &testEnv{}, Source: src, Log: fixed}
	if err := c.stream(context.Background()); !errors.Is(err, errDrained) {
		t.Fatalf("stream ended with %v, want the source drained", err)
	}
	seen := map[model.LSN]int{}
	for _, r := range fixed.recs {
		if !r.Txn.Snapshot && r.Txn.Chunk == 0 {
			seen[r.Txn.CommitLSN]++
		}
	}
	if !reflect.DeepEqual(seen, map[model.LSN]int{20: 1, 30: 1, 40: 1}) {
		t.Fatalf("log holds %v (first parts by LSN); want each transaction once", fixed.lsns())
	}
}

// A change too large for any record stops the capture with the error that
// says what to do, having appended nothing of its transaction; the old rule
// retries it for ever.
func TestCaptureStopsOnAChangeTooLarge(t *testing.T) {
	huge := wide(30, 2, 10)
	huge.Changes[1].Row = model.R("v", strings.Repeat("x", 20000))
	src := &fakeSource{txns: []model.Txn{wide(20, 1, 10), huge, wide(40, 1, 10)}, batch: 1}
	log := &limitLog{max: 16 << 10}
	c := &Capture{Env: &testEnv{}, Source: src, Log: log}
	err := c.Run(context.Background())
	var tooLarge *ChangeTooLargeError
	if !errors.As(err, &tooLarge) || tooLarge.Table != "t" || tooLarge.PK != "k30-1" || tooLarge.Limit != 16<<10 {
		t.Fatalf("Run = %v; want it stopped by a ChangeTooLargeError for t/k30-1", err)
	}
	if got := log.lsns(); !reflect.DeepEqual(got, []model.LSN{20}) || src.starts != 1 {
		t.Fatalf("log holds %v after %d starts; want 20 only, after 1", got, src.starts)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src = &fakeSource{txns: src.txns, batch: 1, onStart: func(n int) {
		if n == 10 {
			cancel()
		}
	}}
	c = &Capture{Env: &testEnv{}, Source: src, Log: &limitLog{max: 16 << 10}, Bugs: Bugs{NoSplitLargeTxn: true}}
	if err := c.Run(ctx); !errors.Is(err, context.Canceled) || src.starts != 10 {
		t.Fatalf("old rule: Run = %v after %d starts; want it retrying until cancelled", err, src.starts)
	}
}

// A change the source can never deliver stops the capture with the
// source's error, after everything before it reached the log and was
// confirmed; a snapshot the source refuses stops it too. The old rule
// (keyless-wedge) reconnects at the same position for ever, and nothing
// after the change, in any table, moves.
func TestCaptureStopsOnAnUnsupportedChange(t *testing.T) {
	txns := []model.Txn{wide(20, 1, 10), wide(30, 1, 10), wide(40, 1, 10)}
	src := &fakeSource{txns: txns, batch: 3, refuse: 30}
	log := &limitLog{max: 1 << 20}
	c := &Capture{Env: &testEnv{}, Source: src, Log: log}
	err := c.Run(context.Background())
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "at 0/1E") {
		t.Fatalf("Run = %v; want it stopped by the source's ErrUnsupported at 0/1E", err)
	}
	if got := log.lsns(); !reflect.DeepEqual(got, []model.LSN{20}) || src.starts != 1 || src.confirmed != 20 {
		t.Fatalf("log holds %v, confirmed %s after %d starts; want 20 only, confirmed, after 1 start", got, src.confirmed, src.starts)
	}

	src = &fakeSource{txns: txns, batch: 3, refuseSnapshot: true}
	if err := (&Capture{Env: &testEnv{}, Source: src, Log: &memLog{}}).Run(context.Background()); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("refused snapshot: Run = %v; want it stopped with ErrUnsupported", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src = &fakeSource{txns: txns, batch: 3, refuse: 30, onStart: func(n int) {
		if n == 10 {
			cancel()
		}
	}}
	log = &limitLog{max: 1 << 20}
	c = &Capture{Env: &testEnv{}, Source: src, Log: log, Bugs: Bugs{KeylessWedge: true}}
	if err := c.Run(ctx); !errors.Is(err, context.Canceled) || src.starts != 10 {
		t.Fatalf("old rule: Run = %v after %d starts; want it retrying until cancelled", err, src.starts)
	}
	if got := log.lsns(); !reflect.DeepEqual(got, []model.LSN{20}) {
		t.Fatalf("old rule: log holds %v; want 20 only (40 never gets past the wedge)", got)
	}
}

// lossyLog is limitLog whose produce of a batch holding the transaction at
// lose times out once, as a produce whose request, or acknowledgement, was
// lost does: the append did not happen (or, with took, it did).
type lossyLog struct {
	limitLog
	lose model.LSN
	took bool
}

func (l *lossyLog) Produce(ctx context.Context, txns []model.Txn) (int64, error) {
	for _, t := range txns {
		if l.lose == 0 || t.CommitLSN != l.lose {
			continue
		}
		l.lose = 0
		if l.took {
			_, _ = l.limitLog.Produce(ctx, txns)
		}
		return 0, fmt.Errorf("produce: %w", ErrTimeout)
	}
	return l.limitLog.Produce(ctx, txns)
}

// An append that timed out may not have happened: the capture confirms
// nothing past it and streams it again in its next session, so the log
// ends up holding it (twice, when the first append did take effect), and
// the source's slot never moves past what the log lacks. The old rule
// (confirm-on-append-timeout) takes the timeout for done: it confirms past
// 30, which the log never got, and 40 arrives chained to it (PrevLSN 30),
// the hole appliers stop at.
func TestCaptureNeverConfirmsATimedOutAppend(t *testing.T) {
	txns := []model.Txn{wide(20, 1, 10), wide(30, 1, 10), wide(40, 1, 10)}
	for _, took := range []bool{false, true} {
		src := &fakeSource{txns: txns, batch: 1}
		log := &lossyLog{limitLog: limitLog{max: 1 << 20}, lose: 30, took: took}
		c := &Capture{Env: &testEnv{}, Source: src, Log: log}
		err := c.stream(context.Background())
		if !errors.Is(err, ErrTimeout) || src.confirmed != 20 {
			t.Fatalf("took=%t: first session ended with %v, confirmed %s; want the timeout, 20 confirmed", took, err, src.confirmed)
		}
		if err := c.stream(context.Background()); !errors.Is(err, errDrained) || src.confirmed != 40 {
			t.Fatalf("took=%t: second session ended with %v, confirmed %s; want the source drained, 40 confirmed", took, err, src.confirmed)
		}
		want := []model.LSN{20, 30, 40}
		if took {
			want = []model.LSN{20, 30, 30, 40}
		}
		if got := log.lsns(); !reflect.DeepEqual(got, want) {
			t.Fatalf("took=%t: log holds %v, want %v", took, got, want)
		}
	}

	src := &fakeSource{txns: txns, batch: 1}
	log := &lossyLog{limitLog: limitLog{max: 1 << 20}, lose: 30}
	c := &Capture{Env: &testEnv{}, Source: src, Log: log, Bugs: Bugs{ConfirmOnAppendTimeout: true}}
	if err := c.stream(context.Background()); !errors.Is(err, errDrained) || src.confirmed != 40 || src.starts != 1 {
		t.Fatalf("old rule: stream ended with %v, confirmed %s after %d starts; want it to carry on and confirm 40 in one session", err, src.confirmed, src.starts)
	}
	if got := log.lsns(); !reflect.DeepEqual(got, []model.LSN{20, 40}) {
		t.Fatalf("old rule: log holds %v, want 20 and 40 only: 30 lost", got)
	}
	if last := log.recs[len(log.recs)-1].Txn; last.PrevLSN != 30 {
		t.Fatalf("old rule: 40 follows %s in the chain, want 30 (the hole)", last.PrevLSN)
	}
}

// The capture cuts to the smaller of its own limit and the log's.
func TestCaptureLimitIsTheLogsWhenSmaller(t *testing.T) {
	c := &Capture{Log: &memLog{}}
	if got := c.maxTxnBytes(); got != DefaultMaxTxnBytes {
		t.Fatalf("default limit %d, want %d", got, DefaultMaxTxnBytes)
	}
	c = &Capture{Log: &limitLog{max: 5000}, MaxTxnBytes: 8000}
	if got := c.maxTxnBytes(); got != 5000 {
		t.Fatalf("limit %d with a log of 5000, want 5000", got)
	}
	c = &Capture{Log: &limitLog{max: 50000}, MaxTxnBytes: 8000}
	if got := c.maxTxnBytes(); got != 8000 {
		t.Fatalf("limit %d with MaxTxnBytes 8000, want 8000", got)
	}
}

// countingLog is memLog counting the records its fetches hand back, and
// optionally coming back empty from the first fetch at each new offset, as a
// Kafka consumer just moved there may.
type countingLog struct {
	memLog
	read    int
	fetches int
	slow    bool
	last    int64 // the offset the previous fetch asked for
}

func (l *countingLog) Fetch(ctx context.Context, off int64, max int) ([]Record, error) {
	l.fetches++
	if l.slow && off != l.last {
		l.last = off
		return nil, nil
	}
	recs, err := l.memLog.Fetch(ctx, off, max)
	l.read += len(recs)
	return recs, err
}

// longLog is a log of a complete snapshot of rows rows (in chunks of 2)
// followed by n streamed transactions.
func longLog(rows, n int) *countingLog {
	l := &countingLog{}
	snap := model.Txn{CommitLSN: 1, Snapshot: true}
	for i := range rows {
		snap.Changes = append(snap.Changes, model.Change{Table: "t", PK: fmt.Sprint(i), Op: model.OpInsert})
	}
	l.Produce(context.Background(), SplitSnapshot(snap, 2))
	batch := make([]model.Txn, 0, 1000)
	for i := range n {
		batch = append(batch, txn(model.LSN(10+i), false))
		if len(batch) == cap(batch) || i == n-1 {
			l.Produce(context.Background(), batch)
			batch = batch[:0]
		}
	}
	return l
}

// A capture start reads the log's tail, not the log: the records it reads
// do not grow with the log's length (the old scan read back to the last
// snapshot, all 100,000 records here), and a snapshot at the end costs
// about its chunks.
func TestSnapshotInLogReadsTheTailOnly(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{1000, 100_000} {
		l := longLog(10, n)
		c := &Capture{Log: l}
		if ok, _, err := c.snapshotInLog(ctx); !ok || err != nil {
			t.Fatalf("%d records: %v, %v; want the snapshot complete", n, ok, err)
		}
		if l.read > tailRecords {
			t.Fatalf("%d records: the start read %d of them, want at most %d", n, l.read, tailRecords)
		}
	}

	// A log ending in a complete snapshot of 1,000 chunks, after a long
	// stream: read back to its first chunk, not to the log's start.
	l := longLog(10, 100_000)
	big := model.Txn{CommitLSN: 200_000, Snapshot: true}
	for i := range 2000 {
		big.Changes = append(big.Changes, model.Change{Table: "t", PK: fmt.Sprint(i), Op: model.OpInsert})
	}
	l.Produce(ctx, SplitSnapshot(big, 2))
	c := &Capture{Log: l}
	if ok, _, err := c.snapshotInLog(ctx); !ok || err != nil {
		t.Fatalf("ends in a big snapshot: %v, %v; want it complete", ok, err)
	}
	if l.read > 1000+2*tailRecords {
		t.Fatalf("ends in a snapshot of 1000 chunks: the start read %d records, want about 1000", l.read)
	}
	// The same snapshot missing its last chunk is retaken.
	l.recs = l.recs[:len(l.recs)-1]
	l.read = 0
	if ok, _, err := c.snapshotInLog(ctx); ok || err != nil {
		t.Fatalf("big snapshot missing its last chunk: %v, %v; want it judged incomplete", ok, err)
	}
	if l.read > 1000+4*tailRecords {
		t.Fatalf("big snapshot missing its last chunk: the start read %d records, want about 1000", l.read)
	}
}

// A fetch that comes back empty below the log's end (a consumer just moved)
// is asked again; the old scan gave up the start at the first one, and on
// a long log started its whole scan over.
func TestSnapshotInLogAsksAgainAfterAnEmptyFetch(t *testing.T) {
	l := longLog(10, 1000)
	l.slow = true
	c := &Capture{Log: l}
	if ok, _, err := c.snapshotInLog(context.Background()); !ok || err != nil {
		t.Fatalf("slow log: %v, %v; want the snapshot complete", ok, err)
	}
}

// judgeSnapshot's verdicts, on the heads of a log's records: s(lsn, chunk,
// chunks) is a snapshot chunk, x(lsn) a streamed transaction.
func TestJudgeSnapshot(t *testing.T) {
	s := func(lsn model.LSN, chunk, chunks int) recordHead {
		return recordHead{Snapshot: true, LSN: lsn, Chunk: chunk, Chunks: chunks}
	}
	x := func(lsn model.LSN) recordHead { return recordHead{LSN: lsn} }
	for _, tc := range []struct {
		name string
		lo   int64
		recs []recordHead
		want snapshotVerdict
	}{
		{"empty log", 0, nil, snapshotMissing},
		{"no snapshot in the whole log", 0, []recordHead{x(5), x(6)}, snapshotMissing},
		{"a tail of streamed records", 5000, []recordHead{x(5), x(6)}, snapshotComplete},
		{"complete", 0, []recordHead{s(1, 0, 3), s(1, 1, 3), s(1, 2, 3), x(5)}, snapshotComplete},
		{"complete at the end", 0, []recordHead{x(0), s(9, 0, 2), s(9, 1, 2)}, snapshotComplete},
		{"last chunk missing", 0, []recordHead{x(0), s(9, 0, 3), s(9, 1, 3)}, snapshotMissing},
		{"a middle chunk missing", 0, []recordHead{x(0), s(9, 0, 3), s(9, 2, 3)}, snapshotMissing},
		{"half then a streamed record", 0, []recordHead{s(1, 0, 1), x(5), s(9, 0, 3), s(9, 1, 3), x(10)}, snapshotMissing},
		{"half then whole again", 0, []recordHead{s(9, 0, 3), s(9, 1, 3), s(12, 0, 3), s(12, 1, 3), s(12, 2, 3)}, snapshotComplete},
		{"whole then half a retry", 0, []recordHead{x(0), s(9, 0, 3), s(9, 1, 3), s(9, 2, 3), s(9, 0, 3)}, snapshotComplete},
		{"half, then the rest in a retry", 0, []recordHead{x(0), s(9, 0, 3), s(9, 1, 3), s(9, 2, 3), s(9, 1, 3)}, snapshotComplete},
		{"older whole snapshot does not count", 0, []recordHead{s(1, 0, 2), s(1, 1, 2), s(9, 1, 2)}, snapshotMissing},
		{"first chunks before the tail", 1000, []recordHead{s(9, 2, 3), x(10)}, snapshotUnknown},
	} {
		recs := append([]recordHead(nil), tc.recs...)
		for i := range recs {
			recs[i].Offset = tc.lo + int64(i)
		}
		if got, _ := judgeSnapshot(tc.lo, 0, recs); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}

	// A snapshot whose first chunk lies further back than twice its
	// chunks and a tail beyond its last is judged missing, whatever
	// else the log holds: the check never reads the whole log.
	recs := []recordHead{s(9, 0, 2)}
	for range 2*2 + tailRecords + 1 {
		recs = append(recs, x(5))
	}
	recs = append(recs, s(9, 1, 2))
	for i := range recs {
		recs[i].Offset = int64(i)
	}
	if got, _ := judgeSnapshot(0, 0, recs); got != snapshotMissing {
		t.Errorf("chunks out of reach: %v, want missing", got)
	}
	if got, need := judgeSnapshot(1, 0, recs[1:]); got != snapshotMissing || need != 0 {
		t.Errorf("chunks out of reach, read from 1: %v (wants %d more), want missing", got, need)
	}
}

// stopLog is memLog that is stopped (stop is called) as it is asked to
// append the transaction at stopAt, and fails that append as a produce cut
// short by a stop does: its outcome unknown, nothing acknowledged.
type stopLog struct {
	memLog
	stopAt model.LSN
	stop   func()
}

func (l *stopLog) Produce(ctx context.Context, txns []model.Txn) (int64, error) {
	for _, t := range txns {
		if t.CommitLSN == l.stopAt {
			l.stop()
			return 0, fmt.Errorf("produce: %w: %w", ErrTimeout, ctx.Err())
		}
	}
	return l.memLog.Produce(ctx, txns)
}

// A capture stopped (its context cancelled) while the source is quiet
// confirms everything the log acknowledged, so the next start does not
// stream it again: the old capture left the batches appended since its last
// confirmation (at most every ConfirmEvery) unconfirmed. Nothing the log did
// not acknowledge is confirmed, and a source that does not answer does not
// hold the stop up for longer than StopTimeout.
func TestCaptureConfirmsOnACleanStop(t *testing.T) {
	txns := []model.Txn{wide(20, 1, 10), wide(30, 1, 10), wide(40, 1, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	src := &fakeSource{txns: txns, batch: 1, drained: func(ctx context.Context) error {
		cancel() // SIGTERM while Next waits
		return fmt.Errorf("next: %w", ctx.Err())
	}}
	c := &Capture{Env: &testEnv{}, Source: src, Log: &memLog{}, ConfirmEvery: time.Hour}
	if err := c.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want it stopped", err)
	}
	if src.confirmed != 40 {
		t.Fatalf("stopped with 20, 30, 40 in the log and confirmed %s, want 40", src.confirmed)
	}

	// Stopped while 40 is being appended: 30 is the most the log
	// acknowledged.
	ctx, cancel = context.WithCancel(context.Background())
	src = &fakeSource{txns: txns, batch: 1}
	c = &Capture{Env: &testEnv{}, Source: src, Log: &stopLog{stopAt: 40, stop: cancel}, ConfirmEvery: time.Hour}
	if err := c.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped mid-append: Run = %v, want it stopped", err)
	}
	if src.confirmed != 30 {
		t.Fatalf("stopped while appending 40: confirmed %s, want 30 (the log acknowledged 20 and 30 only)", src.confirmed)
	}

	// A source that does not answer the stop's confirmation: the stop
	// waits StopTimeout for it, then gives up.
	ctx, cancel = context.WithCancel(context.Background())
	var stopErr error
	src = &fakeSource{txns: txns, batch: 1, drained: func(ctx context.Context) error {
		cancel()
		return ctx.Err()
	}}
	src.confirmCtx = func(cctx context.Context) error {
		if ctx.Err() == nil {
			return nil // streaming: answered
		}
		<-cctx.Done() // stopping: no answer
		stopErr = cctx.Err()
		return stopErr
	}
	c = &Capture{Env: &realenv.Env{}, Source: src, Log: &memLog{}, ConfirmEvery: time.Hour, StopTimeout: 20 * time.Millisecond}
	if err := c.Run(ctx); !errors.Is(err, context.Canceled) || !errors.Is(stopErr, context.Canceled) || src.confirmed != 20 {
		t.Fatalf("unanswered stop: Run = %v, the stop's confirmation ended with %v, confirmed %s; want both cancelled, 20 confirmed", err, stopErr, src.confirmed)
	}
}

// refusingSource turns every start away, as PostgreSQL does a wrong
// password or a server without logical decoding.
type refusingSource struct {
	fakeSource
	stop func()
}

func (s *refusingSource) Start(context.Context) (model.LSN, error) {
	s.starts++
	if s.starts > 3 {
		s.stop() // the capture kept asking: end the test
	}
	return 0, fmt.Errorf("pgsource: start: login refused: %w", ErrSourceRefused)
}

// A source that turns the capture away stops it at the first answer, with
// that answer; retrying would only log it again five times a second.
func TestCaptureStopsWhenTheSourceRefuses(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &refusingSource{stop: cancel}
	log := &memLog{}
	log.Produce(ctx, []model.Txn{{CommitLSN: 1, Snapshot: true, Chunks: 1}}) // a complete snapshot: go straight to Start
	c := &Capture{Env: &testEnv{}, Source: src, Log: log}
	err := c.Run(ctx)
	if !errors.Is(err, ErrSourceRefused) || src.starts != 1 {
		t.Fatalf("Run = %v after %d starts; want the refusal after one", err, src.starts)
	}
}

// A slot that starts past the last transaction the log holds (a snapshot
// request that timed out ran late and made the slot again) would leave a
// hole: the capture takes a new snapshot instead of streaming. Under
// trust-slot-position it streams from the slot.
func TestCaptureRetakesASnapshotWhenTheSlotIsPastTheLog(t *testing.T) {
	for _, trust := range []bool{false, true} {
		ctx := context.Background()
		log := &memLog{}
		log.Produce(ctx, []model.Txn{{CommitLSN: 10, Snapshot: true, Chunks: 1}})
		src := &fakeSource{txns: []model.Txn{{CommitLSN: 40, Changes: []model.Change{{Table: "t", PK: "1", Op: model.OpInsert}}}}, batch: 1, confirmed: 30}
		c := &Capture{Env: &testEnv{}, Source: src, Log: log, Bugs: Bugs{TrustSlotPosition: trust}}
		err := c.stream(ctx)
		last := log.recs[len(log.recs)-1].Txn
		switch {
		case !trust && (err != nil || !last.Snapshot || last.CommitLSN != 1 || src.starts != 1):
			t.Fatalf("slot at 30, log at 10: stream %v, last record %+v; want a new snapshot appended and nothing streamed", err, last)
		case trust && (last.Snapshot || last.CommitLSN != 40 || last.PrevLSN != 30):
			t.Fatalf("trust-slot-position: last record %+v; want 40 streamed, chained to the slot's 30 (a hole after 10)", last)
		}
	}
}

// The capture tells whether retention left its last snapshot whole, from
// the log's start and the one record there; one that knows no snapshot and
// finds the front deleted takes a new one rather than guess.
func TestSnapshotKept(t *testing.T) {
	ctx := context.Background()
	snap := func(lsn model.LSN) model.Txn {
		return model.Txn{CommitLSN: lsn, Snapshot: true, Chunks: 1, Changes: []model.Change{{Table: "t", PK: "a", Op: model.OpInsert}}}
	}
	l := &memLog{}
	l.Produce(ctx, []model.Txn{snap(10), chained(20, 10, "b"), chained(30, 20, "c"), snap(40), chained(50, 40, "d")})
	kept := func(c *Capture, start int64) bool {
		t.Helper()
		l.start = start
		ok, err := c.snapshotKept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	c := &Capture{Log: l}
	if ok, _, err := c.snapshotInLog(ctx); !ok || err != nil || c.snapLSN != 40 {
		t.Fatalf("snapshotInLog: %v, %v, knows snapshot %v; want the one at 40", ok, err, c.snapLSN)
	}
	for start, want := range []bool{true, true, true, true, false} {
		if got := kept(c, int64(start)); got != want {
			t.Errorf("log starting at %d (%+v): kept=%v, want %v", start, l.recs[start].Txn.CommitLSN, got, want)
		}
	}
	// A capture that knows no snapshot: only one at the log's start will do.
	for start, want := range map[int64]bool{0: true, 1: false, 3: true, 4: false} {
		if got := kept(&Capture{Log: l}, start); got != want {
			t.Errorf("knowing no snapshot, log starting at %d: kept=%v, want %v", start, got, want)
		}
	}
	if !kept(&Capture{Log: l, Bugs: Bugs{IgnoreRetention: true}}, 4) {
		t.Error("ignore-retention looked at the log's start")
	}
}

// A capture whose snapshot retention deleted while it streams takes a new
// one, and the session after it streams on from the new slot.
func TestCaptureSnapshotsAgainAfterRetention(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := &memLog{}
	src := &fakeSource{}
	c := &Capture{Env: &testEnv{}, Source: src, Log: l, RetentionCheck: time.Nanosecond}
	if _, err := c.snapshotIfNeeded(ctx); err != nil {
		t.Fatal(err)
	}
	l.Produce(ctx, []model.Txn{chained(900, 1, "x")})
	l.start = 1 // the snapshot is gone
	f := forwarder{c: c}
	if err := f.run(ctx); !errors.Is(err, errSnapshotDeleted) {
		t.Fatalf("forwarder: %v, want errSnapshotDeleted", err)
	}
	if err := c.stream(ctx); err != nil {
		t.Fatalf("stream after retention: %v", err)
	}
	if last := l.recs[len(l.recs)-1].Txn; !last.Snapshot || last.Chunk != 0 {
		t.Fatalf("the log ends with %+v, want a new snapshot", last)
	}
}
