package containers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"lockstep/faults"
	"lockstep/pipeline/debezium"
	"lockstep/pipeline/logcodec"
)

// CompareConfig shapes the side-by-side benchmark: lockstep's capture and
// Debezium's connector (stock, tuned or both) on the same PostgreSQL and
// Kafka, under the same pgbench load, all killed with kill -9 at the same
// moment.
type CompareConfig struct {
	Clients  int           // pgbench clients (-c and -j)
	Duration time.Duration // pgbench's run time (-T)
	// KillAt is when, after the load started, every capture is killed
	// (kill -9); they start again a second later. Zero: no kill.
	KillAt time.Duration
	// Warmup is left out of the steady latency: the first seconds of the
	// load, while the captures' producers and Connect's topics start
	// (3 s lags for both in a run with every transaction kept).
	Warmup time.Duration
	// Debezium are the connectors run beside lockstep's capture, each on
	// its own slot, publication, topics and Connect worker (Variants).
	Debezium []DebeziumVariant
	// MaxRate, when not zero, is a second load once the first is caught
	// up: MaxClients clients of a script with no row every transaction
	// updates (maxRateScript) for MaxRate, without a kill, for each
	// capture's maximum sustained rate.
	MaxRate    time.Duration
	MaxClients int
	LogDir     string
	Logger     *slog.Logger
}

// DebeziumVariant is one Debezium connector of a comparison.
type DebeziumVariant struct {
	Name    string // "stock" or "tuned"
	Options DebeziumOptions
}

// Label names the variant and its two settings in the table.
func (v DebeziumVariant) Label() string {
	return fmt.Sprintf("Debezium %s (poll %s, flush %s)", v.Name, msOr(v.Options.Poll, "500 ms"), msOr(v.Options.Flush, "60 s"))
}

// Variants are the Debezium connectors named (stock, tuned): stock as
// shipped (poll.interval.ms 500 ms, offset.flush.interval.ms 60 s),
// tuned with poll and flush. Each has its own container, slot,
// publication and topic prefix, so they share nothing but the source and
// the brokers.
func Variants(names []string, poll, flush time.Duration) ([]DebeziumVariant, error) {
	var out []DebeziumVariant
	for _, n := range names {
		n = strings.TrimSpace(n)
		v := DebeziumVariant{Name: n}
		switch n {
		case "stock":
			v.Options = DebeziumOptions{TopicPrefix: "dbz", Slot: "debezium", Publication: "debezium", Service: DebeziumService}
		case "tuned":
			v.Options = DebeziumOptions{TopicPrefix: "dbzt", Slot: "debezium_tuned", Publication: "debezium_tuned", Service: DebeziumService + "-tuned", Poll: poll, Flush: flush}
		default:
			return nil, fmt.Errorf("--debezium takes stock and tuned, not %q", n)
		}
		if slices.ContainsFunc(out, func(o DebeziumVariant) bool { return o.Name == n }) {
			return nil, fmt.Errorf("--debezium names %s twice", n)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("--debezium must name stock, tuned or both")
	}
	return out, nil
}

// Validate refuses a configuration that cannot measure anything.
func (c CompareConfig) Validate() error {
	switch {
	case c.Clients < 1:
		return fmt.Errorf("--clients must be at least 1, not %d", c.Clients)
	case c.Duration < time.Second:
		return fmt.Errorf("--duration must be at least 1s, not %v", c.Duration)
	case c.KillAt < 0 || (c.KillAt > 0 && c.KillAt+time.Second >= c.Duration):
		return fmt.Errorf("--kill-at %v must be within the load (%v), a second before its end", c.KillAt, c.Duration)
	case c.Warmup < 0 || c.Warmup >= c.Duration || (c.KillAt > 0 && c.Warmup >= c.KillAt):
		return fmt.Errorf("--warmup %v must end before the kill and the load's end", c.Warmup)
	case len(c.Debezium) == 0:
		return errors.New("--debezium must name stock, tuned or both")
	case c.MaxRate != 0 && c.MaxRate < time.Second:
		return fmt.Errorf("--max-rate must be 0 (none) or at least 1s, not %v", c.MaxRate)
	case c.MaxRate > 0 && c.MaxClients < 1:
		return fmt.Errorf("--max-clients must be at least 1, not %d", c.MaxClients)
	}
	for _, v := range c.Debezium {
		if v.Options.Poll < 0 || v.Options.Flush < 0 {
			return errors.New("--poll and --flush must not be negative")
		}
	}
	return nil
}

// CaptureFigures are one capture's measurements over one load.
type CaptureFigures struct {
	Name    string
	Txns    int     // distinct workload transactions in its topic
	Changes int     // their row changes (Debezium: END's event_count)
	Rate    float64 // Changes per second, load start to its last append
	// LatencyP50 and LatencyP99 are from commit (pg_xact_commit_timestamp)
	// to the first append of the transaction's record (lockstep's) or END
	// event (Debezium's) in Kafka: the broker's LogAppendTime when
	// AppendTime says so, else the record's own timestamp.
	// SteadyP50 and SteadyP99 are the same over the transactions
	// committed after the warm-up and appended before the kill (those the
	// kill held back are the restart's).
	LatencyP50, LatencyP99 time.Duration
	SteadyP50, SteadyP99   time.Duration
	// GapP50 and GapP99 are the time between one append of its topic and
	// the next over the same steady transactions: records appended
	// together carry one LogAppendTime, so this is the pace of its
	// producer's batches. A capture that waits for each append's
	// acknowledgement before the next (lockstep's) cannot append again
	// sooner than acks=all from three brokers allows.
	GapP50, GapP99 time.Duration
	// Steady and Gaps count the steady transactions and the gaps between
	// their appends: none when every capture lagged past the kill.
	Steady, Gaps int
	AppendTime   bool
	CPU          time.Duration // the container's CPU, load start to caught up, restarts summed
	PeakRSS      int64         // the most memory its cgroup held, over its lives
	Measured     bool          // CPU and PeakRSS read from its cgroup
	// Restart is, after the kill, from the container's start until its
	// topic held every transaction committed before that start; -1 if it
	// never did. Duplicates are records of a transaction already appended.
	Restart    time.Duration
	Duplicates int
	// CatchUp is from the load's end (its last commit) until its topic
	// held every transaction of the load (0: it had them all then; -1:
	// never).
	CatchUp time.Duration
	// SlotLag is its slot's lag, sampled once a second during the load.
	SlotLag LagFigures
}

// Phase is one load's result: the transactions committed and each
// capture's figures, lockstep's first.
type Phase struct {
	Committed int     // workload transactions committed (any capture saw them)
	Changes   int     // their row changes
	Offered   float64 // Changes per second of the load
	Captures  []CaptureFigures
}

// Comparison is the result of Compare.
type Comparison struct {
	Config CompareConfig
	Phase
	// MaxRate is the second load's (nil without --max-rate).
	MaxRate *Phase
	// Times is a CSV file of every workload record's commit and append
	// times, for a closer look at the percentiles (in the run's log dir).
	Times string
}

// compared is one capture under test: its container, slot and how to read
// its topic.
type compared struct {
	name, service, slot string
	read                func(context.Context) ([]appended, error)
	meter               *cgroupMeter
}

// load is one pgbench run's window on the source's clock.
type load struct {
	start, end      time.Time
	warm            time.Time // start plus the warm-up
	killAt, restart time.Time // zero: no kill
	marker          uint64    // committed after end: every capture holding it has the load
}

// maxRateScript is the maximum-rate load: one account updated (100,000 to
// pick from, so clients rarely wait on each other, unlike TPC-B's one
// branch row at scale 1) and maxRateBatch-1 history rows inserted in one
// statement. Batches, because the source's commits (each one flushed to
// disk) bound the transactions per second well below what either capture
// takes on this machine, not the changes per second.
const maxRateScript = `\set aid random(1, 100000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) SELECT 1, 1, :aid, g, CURRENT_TIMESTAMP FROM generate_series(2, 50) AS g;
END;
`

// maxRateBatch is the changes of one maxRateScript transaction.
const maxRateBatch = 50

// Compare runs the side-by-side benchmark: one world (PostgreSQL with
// track_commit_timestamp, three Kafka brokers appending with
// LogAppendTime), pgbench's tables, then lockstep's capture and one Kafka
// Connect worker per Debezium variant, each on its own slot, pgbench for
// Duration with Clients clients, every capture killed at KillAt, and
// afterwards every topic read back; then, with MaxRate, the maximum-rate
// load. Every figure comes from this one run.
func Compare(ctx context.Context, cfg CompareConfig) (*Comparison, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w, err := Start(ctx, Options{LogDir: cfg.LogDir, Logger: log, CommitTimestamps: true})
	if err != nil {
		return nil, err
	}
	defer w.Close(context.WithoutCancel(ctx))
	src, err := pgx.Connect(ctx, w.SourceDSN)
	if err != nil {
		return nil, fmt.Errorf("containers: compare: connect to the source: %w", err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	if err := appendTimeDefault(ctx, w); err != nil {
		return nil, err
	}
	// The tables as the pgbench scenario makes them (keyed, for lockstep;
	// mtime as text, for Debezium's decoder, though only its END events
	// are read here), then pgbench's rows, before any capture starts.
	if err := pgbenchTables(ctx, w.SourceDSN, src, true); err != nil {
		return nil, err
	}
	if err := pgbench(ctx, w.SourceDSN, "-i", "-I", "g", "-s", "1"); err != nil {
		return nil, err
	}
	log.Info("compare: starting the captures", "debezium", len(cfg.Debezium))
	caps := []*compared{{name: "lockstep", service: "capture", slot: "lockstep",
		read: func(ctx context.Context) ([]appended, error) { return readLockstep(ctx, w) }}}
	for _, v := range cfg.Debezium {
		o := v.Options
		o.SnapshotMode = "no_data" // the initial load is not the benchmark's
		if err := w.StartDebezium(ctx, o); err != nil {
			return nil, err
		}
		caps = append(caps, &compared{name: "debezium " + v.Name, service: o.ServiceName(), slot: o.SlotName(),
			read: func(ctx context.Context) ([]appended, error) { return readDebezium(ctx, w, o.TransactionTopic()) }})
	}
	brokers := strings.Join(w.InternalKafka, ",")
	if err := w.startProcs(ctx, []proc{{"capture", faults.RoleCapture, []string{"capture", "--source", w.InternalSourceDSN, "--brokers", brokers, "--topic", Topic}}}); err != nil {
		return nil, err
	}
	for _, c := range caps {
		s, _ := w.Service(c.service)
		c.meter = &cgroupMeter{id: s.ID}
	}
	// The cgroups every 100 ms, the slots every second (on a connection
	// of their own), until the end.
	lagConn, err := pgx.Connect(ctx, w.SourceDSN)
	if err != nil {
		return nil, fmt.Errorf("containers: compare: connect to the source: %w", err)
	}
	defer lagConn.Close(context.WithoutCancel(ctx))
	lags := &slotLags{}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		lags.run(sampleCtx, lagConn, time.Second)
	}()
	go func() {
		defer wg.Done()
		for sleepUntil(sampleCtx, time.Now().Add(100*time.Millisecond)) {
			for _, c := range caps {
				c.meter.sample()
			}
		}
	}()
	defer func() { stopSampling(); wg.Wait() }()

	first, err := runLoad(ctx, w, src, caps, cfg.KillAt, "-n", "-c", strconv.Itoa(cfg.Clients), "-j", strconv.Itoa(cfg.Clients), "-T", strconv.Itoa(int(cfg.Duration.Seconds())))
	if err != nil {
		return nil, err
	}
	first.warm = first.start.Add(cfg.Warmup)
	log.Info("compare: load done, waiting for every capture", "marker", first.marker)
	recs, err := awaitMarker(ctx, caps, first.marker, w.LogDir, 2*time.Second, stallLimit)
	if err != nil {
		return nil, err
	}
	out := &Comparison{Config: cfg, Times: filepath.Join(w.LogDir, "compare-times.csv")}
	commits, err := measure(ctx, src, &out.Phase, first, caps, recs, lags)
	if err != nil {
		return nil, err
	}
	if cfg.MaxRate == 0 {
		return out, writeTimes(out.Times, first.start, commits, caps, recs)
	}
	script := filepath.Join(w.LogDir, "max-rate.sql")
	if err := os.WriteFile(script, []byte(maxRateScript), 0o644); err != nil {
		return nil, fmt.Errorf("containers: compare: %w", err)
	}
	log.Info("compare: maximum-rate load", "clients", cfg.MaxClients, "for", cfg.MaxRate)
	c := strconv.Itoa(cfg.MaxClients)
	second, err := runLoad(ctx, w, src, caps, 0, "-n", "-f", script, "-c", c, "-j", c, "-T", strconv.Itoa(int(cfg.MaxRate.Seconds())))
	if err != nil {
		return nil, err
	}
	second.warm = second.start
	if recs, err = awaitMarker(ctx, caps, second.marker, w.LogDir, 2*time.Second, stallLimit); err != nil {
		return nil, err
	}
	out.MaxRate = &Phase{}
	// The topics hold both loads now: every record's times, from the
	// first load's start.
	if commits, err = measure(ctx, src, out.MaxRate, second, caps, recs, lags); err != nil {
		return nil, err
	}
	return out, writeTimes(out.Times, first.start, commits, caps, recs)
}

// runLoad runs pgbench with args against the source, every capture's
// cgroup counted from its start; with killAt, every capture is killed
// (kill -9) that long into it and started again a second later. After
// the load it commits a marker transaction.
func runLoad(ctx context.Context, w *World, src *pgx.Conn, caps []*compared, killAt time.Duration, args ...string) (load, error) {
	var l load
	if err := src.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&l.start); err != nil {
		return l, fmt.Errorf("containers: compare: %w", err)
	}
	for _, c := range caps {
		c.meter.sample()
		c.meter.start()
	}
	done := make(chan error, 1)
	go func() { done <- pgbench(ctx, w.SourceDSN, args...) }()
	if killAt > 0 {
		t := NewTarget(ctx, w)
		if !sleepUntil(ctx, l.start.Add(killAt)) {
			return l, ctx.Err()
		}
		l.killAt = time.Now()
		for _, c := range caps {
			c.meter.sample() // its last figures before the kill
			if err := t.Crash(c.service); err != nil {
				return l, fmt.Errorf("containers: compare: kill -9 %s: %w", c.service, err)
			}
		}
		sleepUntil(ctx, time.Now().Add(time.Second))
		l.restart = time.Now()
		for _, c := range caps {
			if err := t.Restart(c.service); err != nil {
				return l, fmt.Errorf("containers: compare: restart %s: %w", c.service, err)
			}
		}
	}
	if err := <-done; err != nil {
		return l, err
	}
	if err := src.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&l.end); err != nil {
		return l, fmt.Errorf("containers: compare: %w", err)
	}
	// Once a topic holds the marker, its capture appended everything the
	// load committed.
	if err := src.QueryRow(ctx, `INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (0, 0, 0, 0, now()) RETURNING txid_current()`).Scan(&l.marker); err != nil {
		return l, fmt.Errorf("containers: compare: marker: %w", err)
	}
	return l, nil
}

// stallLimit is how long a capture whose topic lacks the marker may append
// nothing before the benchmark gives up on it: a capture far behind (at
// the maximum rate, minutes) is waited for as long as it appends.
const stallLimit = time.Minute

// awaitMarker reads every capture's topic, every period, until each holds
// the marker; it gives up on a capture whose topic grew by nothing for
// stall (its log is in logDir).
func awaitMarker(ctx context.Context, caps []*compared, marker uint64, logDir string, period, stall time.Duration) (map[string][]appended, error) {
	seen := map[string]int{}
	moved := time.Now()
	for {
		recs := map[string][]appended{}
		var missing []string
		for _, c := range caps {
			r, err := c.read(ctx)
			if err != nil {
				return nil, err
			}
			recs[c.name] = r
			if !holds(r, marker) {
				missing = append(missing, c.name)
				if len(r) > seen[c.name] {
					seen[c.name], moved = len(r), time.Now()
				}
			}
		}
		if len(missing) == 0 {
			for _, c := range caps {
				c.meter.sample()
			}
			return recs, nil
		}
		if time.Since(moved) > stall {
			return nil, fmt.Errorf("containers: compare: %s appended nothing for %v and not the marker (logs in %s)", strings.Join(missing, ", "), stall, logDir)
		}
		if !sleepUntil(ctx, time.Now().Add(period)) {
			return nil, ctx.Err()
		}
	}
}

// measure fills p with each capture's figures over the load l: its
// transactions are those committed from its start to its end.
func measure(ctx context.Context, src *pgx.Conn, p *Phase, l load, caps []*compared, recs map[string][]appended, lags *slotLags) (map[uint64]time.Time, error) {
	var sets [][]appended
	for _, c := range caps {
		sets = append(sets, recs[c.name])
	}
	commits, err := commitTimes(ctx, src, sets...)
	if err != nil {
		return nil, err
	}
	workload := map[uint64]bool{}
	changes := map[uint64]int{}
	for _, set := range sets {
		for _, r := range set {
			if at, ok := commits[r.xid]; ok && !at.Before(l.start) && !at.After(l.end) {
				workload[r.xid] = true
				changes[r.xid] = max(changes[r.xid], r.changes)
			}
		}
	}
	p.Committed = len(workload)
	for _, n := range changes {
		p.Changes += n
	}
	// The load ended with its last commit: pgbench takes a while to
	// return after its clients stop, and a capture that appended the
	// last transaction by then had not kept up on time for it.
	l.end = lastCommit(commits, workload, l.end)
	if d := l.end.Sub(l.start).Seconds(); d > 0 {
		p.Offered = float64(p.Changes) / d
	}
	for _, c := range caps {
		f := figures(c.name, recs[c.name], commits, workload, l, c.meter)
		f.SlotLag = lags.figures(c.slot, l.start, l.end)
		p.Captures = append(p.Captures, f)
	}
	return commits, nil
}

// writeTimes writes every workload record as capture, xid, commit and
// append time in ms since the load started.
func writeTimes(path string, loadStart time.Time, commits map[uint64]time.Time, caps []*compared, by map[string][]appended) error {
	var b strings.Builder
	b.WriteString("capture,xid,commit_ms,append_ms\n")
	for _, c := range caps {
		for _, r := range by[c.name] {
			if at, ok := commits[r.xid]; ok && !at.Before(loadStart) {
				fmt.Fprintf(&b, "%s,%d,%.3f,%.3f\n", c.name, r.xid, float64(at.Sub(loadStart))/1e6, float64(r.at.Sub(loadStart))/1e6)
			}
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("containers: compare: %w", err)
	}
	return nil
}

// appended is one transaction's record as a topic holds it.
type appended struct {
	xid        uint64
	changes    int
	at         time.Time
	appendTime bool // at is the broker's LogAppendTime
}

func holds(recs []appended, xid uint64) bool {
	for _, r := range recs {
		if r.xid == xid {
			return true
		}
	}
	return false
}

// appendTimeDefault makes every topic created from now on stamp its
// records with the broker's append time (a cluster-wide dynamic config):
// Debezium's topics are created by Connect, lockstep's by its capture.
func appendTimeDefault(ctx context.Context, w *World) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.Kafka...))
	if err != nil {
		return fmt.Errorf("containers: compare: %w", err)
	}
	defer cl.Close()
	v := "LogAppendTime"
	rs, err := kadm.NewClient(cl).AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "log.message.timestamp.type", Value: &v}})
	if err == nil {
		for _, r := range rs {
			err = errors.Join(err, r.Err)
		}
	}
	if err != nil {
		return fmt.Errorf("containers: compare: set LogAppendTime: %w", err)
	}
	return nil
}

// readTopic reads every record of topic from its start to its end now.
func readTopic(ctx context.Context, w *World, topic string) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.Kafka...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, fmt.Errorf("containers: compare: read %s: %w", topic, err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("containers: compare: end of %s: %w", topic, err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	var recs []*kgo.Record
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for len(left) > 0 {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			return nil, fmt.Errorf("containers: compare: read %s: %w", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			if end, ok := left[r.Partition]; ok && r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	return recs, nil
}

// readLockstep is lockstep's log: one record per transaction (the first
// chunk of one cut in parts), the snapshot left out.
func readLockstep(ctx context.Context, w *World) ([]appended, error) {
	recs, err := readTopic(ctx, w, Topic)
	if err != nil {
		return nil, err
	}
	var out []appended
	for _, r := range recs {
		t, err := logcodec.DecodeTxn(r.Value)
		if err != nil {
			return nil, fmt.Errorf("containers: compare: %s@%d: %w", r.Topic, r.Offset, err)
		}
		if t.Snapshot || t.Chunk > 0 {
			continue
		}
		// A transaction cut in parts counts its first part's changes
		// only: pgbench's transactions are five rows, never cut.
		out = append(out, appended{xid: t.XID, changes: len(t.Changes), at: r.Timestamp, appendTime: r.Attrs.TimestampType() == 1})
	}
	return out, nil
}

// readDebezium is Debezium's transaction topic's END events: the moment a
// transaction is whole in Kafka (its change events are sent before it).
func readDebezium(ctx context.Context, w *World, topic string) ([]appended, error) {
	recs, err := readTopic(ctx, w, topic)
	if err != nil {
		return nil, err
	}
	var out []appended
	for _, r := range recs {
		e, isEnd, err := debezium.ParseBoundary(r.Value)
		if err != nil {
			return nil, fmt.Errorf("containers: compare: %s@%d: %w", r.Topic, r.Offset, err)
		}
		if isEnd {
			out = append(out, appended{xid: e.XID, changes: e.Count, at: r.Timestamp, appendTime: r.Attrs.TimestampType() == 1})
		}
	}
	return out, nil
}

// commitTimes asks the source when each transaction in either topic
// committed (track_commit_timestamp).
func commitTimes(ctx context.Context, src *pgx.Conn, sets ...[]appended) (map[uint64]time.Time, error) {
	var xids []int64
	seen := map[uint64]bool{}
	for _, recs := range sets {
		for _, r := range recs {
			if !seen[r.xid] {
				seen[r.xid] = true
				xids = append(xids, int64(r.xid))
			}
		}
	}
	rows, err := src.Query(ctx, `SELECT x, pg_xact_commit_timestamp(x::text::xid) FROM unnest($1::bigint[]) AS x`, xids)
	if err != nil {
		return nil, fmt.Errorf("containers: compare: commit timestamps: %w", err)
	}
	out := map[uint64]time.Time{}
	for rows.Next() {
		var x int64
		var at *time.Time
		if err := rows.Scan(&x, &at); err != nil {
			return nil, fmt.Errorf("containers: compare: commit timestamps: %w", err)
		}
		if at != nil {
			out[uint64(x)] = *at
		}
	}
	return out, rows.Err()
}

// figures measures one capture over the load l from its topic's records:
// recs in append order, workload the transactions the load committed; the
// steady latency counts those committed from l.warm on and appended before
// the kill (none: the end).
func figures(name string, recs []appended, commits map[uint64]time.Time, workload map[uint64]bool, l load, m *cgroupMeter) CaptureFigures {
	f := CaptureFigures{Name: name, AppendTime: len(recs) > 0, Restart: -1}
	first := map[uint64]time.Time{}
	var lags, steady []time.Duration
	var last time.Time
	var steadyAt []time.Time
	for _, r := range recs {
		if !workload[r.xid] {
			continue
		}
		f.AppendTime = f.AppendTime && r.appendTime
		if _, dup := first[r.xid]; dup {
			f.Duplicates++
			continue
		}
		first[r.xid] = r.at
		f.Txns++
		f.Changes += r.changes
		lags = append(lags, r.at.Sub(commits[r.xid]))
		if !commits[r.xid].Before(l.warm) && (l.killAt.IsZero() || r.at.Before(l.killAt)) {
			steady = append(steady, r.at.Sub(commits[r.xid]))
			steadyAt = append(steadyAt, r.at)
		}
		if r.at.After(last) {
			last = r.at
		}
	}
	f.LatencyP50, f.LatencyP99 = percentiles(lags)
	f.SteadyP50, f.SteadyP99 = percentiles(steady)
	gaps := appendGaps(steadyAt)
	f.GapP50, f.GapP99 = percentiles(gaps)
	f.Steady, f.Gaps = len(steady), len(gaps)
	if last.After(l.start) {
		f.Rate = float64(f.Changes) / last.Sub(l.start).Seconds()
	}
	if !l.restart.IsZero() {
		f.Restart = heldAll(first, commits, workload, l.restart)
	}
	f.CatchUp = heldAll(first, commits, workload, l.end)
	f.CPU, f.PeakRSS, f.Measured = m.figures()
	return f
}

// lastCommit is the latest commit of workload's transactions (or, with
// none, otherwise).
func lastCommit(commits map[uint64]time.Time, workload map[uint64]bool, otherwise time.Time) time.Time {
	var last time.Time
	for x := range workload {
		if commits[x].After(last) {
			last = commits[x]
		}
	}
	if last.IsZero() {
		return otherwise
	}
	return last
}

// appendGaps are the intervals between the distinct append times in at.
func appendGaps(at []time.Time) []time.Duration {
	slices.SortFunc(at, time.Time.Compare)
	at = slices.CompactFunc(at, time.Time.Equal)
	var gaps []time.Duration
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]))
	}
	return gaps
}

// heldAll is how long after since the topic (first: each transaction's
// first append) held every workload transaction committed by since:
// 0 if it held them then, -1 if it never did.
func heldAll(first, commits map[uint64]time.Time, workload map[uint64]bool, since time.Time) time.Duration {
	var took time.Duration
	for x := range workload {
		if commits[x].After(since) {
			continue
		}
		at, ok := first[x]
		if !ok {
			return -1
		}
		took = max(took, at.Sub(since))
	}
	return took
}

// percentiles are the median and 99th percentile of lags (zero if none).
func percentiles(lags []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(lags)
	if n := len(lags); n > 0 {
		return lags[n/2], lags[min(n-1, n*99/100)]
	}
	return 0, 0
}

// cgroupMeter sums a container's CPU over its lives (a restarted
// container's cgroup counts from zero again) and keeps its highest memory.
type cgroupMeter struct {
	id         string
	mu         sync.Mutex
	base, last time.Duration // CPU of earlier lives; the last sample
	from       time.Duration // total at start()
	peak       int64
	ok         bool
}

func (m *cgroupMeter) sample() {
	if cpu, peak, ok := containerUsage(m.id); ok { // not between lives (killed)
		m.add(cpu, peak)
	}
}

// add takes one reading of the cgroup.
func (m *cgroupMeter) add(cpu time.Duration, peak int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ok = true
	if cpu < m.last {
		m.base += m.last
	}
	m.last = cpu
	m.peak = max(m.peak, peak)
}

func (m *cgroupMeter) start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.from = m.base + m.last
}

func (m *cgroupMeter) figures() (time.Duration, int64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.base + m.last - m.from, m.peak, m.ok
}
