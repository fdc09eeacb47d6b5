package containers

import (
	"context"
	"encoding/json"
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
	"lockstep/pipeline/logcodec"
)

// CompareConfig shapes the side-by-side benchmark: lockstep's capture and
// Debezium's connector on the same PostgreSQL and Kafka, under the same
// pgbench load, both killed with kill -9 at the same moment.
type CompareConfig struct {
	Clients  int           // pgbench clients (-c and -j)
	Duration time.Duration // pgbench's run time (-T)
	// KillAt is when, after the load started, both captures are killed
	// (kill -9); they start again a second later. Zero: no kill.
	KillAt time.Duration
	// Warmup is left out of the steady latency: the first seconds of the
	// load, while both captures' producers and Connect's topics start
	// (3 s lags for both in a run with every transaction kept).
	Warmup   time.Duration
	Debezium DebeziumOptions // Poll and Flush: stock (zero) or tuned
	LogDir   string
	Logger   *slog.Logger
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
	case c.Debezium.Poll < 0 || c.Debezium.Flush < 0:
		return errors.New("--poll and --flush must not be negative")
	}
	return nil
}

// CaptureFigures are one capture's measurements in a comparison.
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
	AppendTime             bool
	CPU                    time.Duration // the container's CPU, load start to caught up, restarts summed
	PeakRSS                int64         // the most memory its cgroup held, over its lives
	Measured               bool          // CPU and PeakRSS read from its cgroup
	// Restart is, after the kill, from the container's start until its
	// topic held every transaction committed before that start; -1 if it
	// never did. Duplicates are records of a transaction already appended.
	Restart    time.Duration
	Duplicates int
}

// Comparison is the result of Compare.
type Comparison struct {
	Config             CompareConfig
	Committed          int // workload transactions committed (either capture saw them)
	Lockstep, Debezium CaptureFigures
	// Times is a CSV file of every workload record's commit and append
	// times, for a closer look at the percentiles (in the run's log dir).
	Times string
}

// Compare runs the side-by-side benchmark: one world (PostgreSQL with
// track_commit_timestamp, three Kafka brokers appending with
// LogAppendTime), pgbench's tables, then lockstep's capture and one Kafka
// Connect worker with Debezium's connector on their own slots, pgbench for
// Duration with Clients clients, both captures killed at KillAt, and
// afterwards both topics read back: every figure comes from this one run.
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
	// are read here), then pgbench's rows, before either capture starts.
	if err := pgbenchTables(ctx, w.SourceDSN, src, true); err != nil {
		return nil, err
	}
	if err := pgbench(ctx, w.SourceDSN, "-i", "-I", "g", "-s", "1"); err != nil {
		return nil, err
	}
	log.Info("compare: starting both captures")
	dbz := cfg.Debezium
	dbz.SnapshotMode = "no_data" // the initial load is not the benchmark's
	if err := w.StartDebezium(ctx, dbz); err != nil {
		return nil, err
	}
	brokers := strings.Join(w.InternalKafka, ",")
	if err := w.startProcs(ctx, []proc{{"capture", faults.RoleCapture, []string{"capture", "--source", w.InternalSourceDSN, "--brokers", brokers, "--topic", Topic}}}); err != nil {
		return nil, err
	}
	names := []string{"capture", DebeziumService}
	meters := map[string]*cgroupMeter{}
	for _, n := range names {
		s, _ := w.Service(n)
		meters[n] = &cgroupMeter{id: s.ID}
	}
	var loadStart time.Time
	if err := src.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&loadStart); err != nil {
		return nil, fmt.Errorf("containers: compare: %w", err)
	}
	for _, m := range meters {
		m.sample()
		m.start()
	}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-tick.C:
			}
			for _, m := range meters {
				m.sample()
			}
		}
	}()
	defer func() { stopSampling(); wg.Wait() }()
	load := make(chan error, 1)
	go func() {
		c := strconv.Itoa(cfg.Clients)
		load <- pgbench(ctx, w.SourceDSN, "-n", "-c", c, "-j", c, "-T", strconv.Itoa(int(cfg.Duration.Seconds())))
	}()
	var killAt, restartAt time.Time
	if cfg.KillAt > 0 {
		t := NewTarget(ctx, w)
		if !sleepUntil(ctx, loadStart.Add(cfg.KillAt)) {
			return nil, ctx.Err()
		}
		killAt = time.Now()
		for _, n := range names {
			m := meters[n]
			m.sample() // its last figures before the kill
			if err := t.Crash(n); err != nil {
				return nil, fmt.Errorf("containers: compare: kill -9 %s: %w", n, err)
			}
		}
		sleepUntil(ctx, time.Now().Add(time.Second))
		restartAt = time.Now()
		for _, n := range names {
			if err := t.Restart(n); err != nil {
				return nil, fmt.Errorf("containers: compare: restart %s: %w", n, err)
			}
		}
	}
	if err := <-load; err != nil {
		return nil, err
	}
	// A marker transaction after the load: once both topics hold it, both
	// captures have appended everything the load committed.
	var marker uint64
	if err := src.QueryRow(ctx, `INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (0, 0, 0, 0, now()) RETURNING txid_current()`).Scan(&marker); err != nil {
		return nil, fmt.Errorf("containers: compare: marker: %w", err)
	}
	log.Info("compare: load done, waiting for both captures", "marker", marker)
	var lsRecs, dbzRecs []appended
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if lsRecs, err = readLockstep(ctx, w); err == nil {
			dbzRecs, err = readDebezium(ctx, w, dbz.TransactionTopic())
		}
		if err != nil {
			return nil, err
		}
		if holds(lsRecs, marker) && holds(dbzRecs, marker) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("containers: compare: the captures did not append the marker within 3 minutes (lockstep %v, Debezium %v; logs in %s)",
				holds(lsRecs, marker), holds(dbzRecs, marker), w.LogDir)
		}
		sleepUntil(ctx, time.Now().Add(time.Second))
	}
	for _, m := range meters {
		m.sample()
	}
	commits, err := commitTimes(ctx, src, lsRecs, dbzRecs)
	if err != nil {
		return nil, err
	}
	out := &Comparison{Config: cfg}
	seen := map[uint64]bool{}
	for x, at := range commits {
		if x != marker && !at.Before(loadStart) {
			seen[x] = true
		}
	}
	out.Committed = len(seen)
	out.Lockstep = figures("lockstep", lsRecs, commits, seen, loadStart, loadStart.Add(cfg.Warmup), killAt, restartAt, meters["capture"])
	out.Debezium = figures("Debezium", dbzRecs, commits, seen, loadStart, loadStart.Add(cfg.Warmup), killAt, restartAt, meters[DebeziumService])
	out.Times = filepath.Join(w.LogDir, "compare-times.csv")
	if err := writeTimes(out.Times, loadStart, commits, seen, map[string][]appended{"lockstep": lsRecs, "debezium": dbzRecs}); err != nil {
		return nil, err
	}
	return out, nil
}

// writeTimes writes every workload record as capture, xid, commit and
// append time in ms since the load started.
func writeTimes(path string, loadStart time.Time, commits map[uint64]time.Time, workload map[uint64]bool, by map[string][]appended) error {
	var b strings.Builder
	b.WriteString("capture,xid,commit_ms,append_ms\n")
	for _, name := range []string{"lockstep", "debezium"} {
		for _, r := range by[name] {
			if workload[r.xid] {
				fmt.Fprintf(&b, "%s,%d,%.3f,%.3f\n", name, r.xid, float64(commits[r.xid].Sub(loadStart))/1e6, float64(r.at.Sub(loadStart))/1e6)
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
		var ev struct {
			Status     string `json:"status"`
			ID         string `json:"id"`
			EventCount int    `json:"event_count"`
		}
		v := r.Value
		var wrapped struct {
			Payload json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(v, &wrapped) == nil && len(wrapped.Payload) > 0 {
			v = wrapped.Payload // a converter with schemas
		}
		if err := json.Unmarshal(v, &ev); err != nil {
			return nil, fmt.Errorf("containers: compare: %s@%d: %w", r.Topic, r.Offset, err)
		}
		if ev.Status != "END" {
			continue
		}
		x, _, _ := strings.Cut(ev.ID, ":")
		xid, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("containers: compare: %s@%d: transaction id %q: %w", r.Topic, r.Offset, ev.ID, err)
		}
		out = append(out, appended{xid: xid, changes: ev.EventCount, at: r.Timestamp, appendTime: r.Attrs.TimestampType() == 1})
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

// figures measures one capture from its topic's records: recs in append
// order, workload the transactions the load committed; the steady
// latency counts those committed from warm on and appended before killAt
// (zero: the end).
func figures(name string, recs []appended, commits map[uint64]time.Time, workload map[uint64]bool, loadStart, warm, killAt, restartAt time.Time, m *cgroupMeter) CaptureFigures {
	f := CaptureFigures{Name: name, AppendTime: len(recs) > 0, Restart: -1}
	first := map[uint64]time.Time{}
	var lags, steady []time.Duration
	var last time.Time
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
		if !commits[r.xid].Before(warm) && (killAt.IsZero() || r.at.Before(killAt)) {
			steady = append(steady, r.at.Sub(commits[r.xid]))
		}
		if r.at.After(last) {
			last = r.at
		}
	}
	f.LatencyP50, f.LatencyP99 = percentiles(lags)
	f.SteadyP50, f.SteadyP99 = percentiles(steady)
	if last.After(loadStart) {
		f.Rate = float64(f.Changes) / last.Sub(loadStart).Seconds()
	}
	if !restartAt.IsZero() {
		// Every transaction committed before the restart appended by:
		f.Restart = 0
		for x := range workload {
			if !commits[x].Before(restartAt) {
				continue
			}
			at, ok := first[x]
			if !ok {
				f.Restart = -1
				break
			}
			f.Restart = max(f.Restart, at.Sub(restartAt))
		}
	}
	f.CPU, f.PeakRSS, f.Measured = m.figures()
	return f
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

// Table is the comparison as a Markdown table, with lockstep/Debezium per
// row.
func (c *Comparison) Table() string {
	l, d := c.Lockstep, c.Debezium
	var s strings.Builder
	latency := "commit -> Kafka append"
	if !l.AppendTime || !d.AppendTime {
		latency = "commit -> Kafka record timestamp (not LogAppendTime)"
	}
	fmt.Fprintf(&s, "pgbench -c %d for %v, %d transactions committed; Debezium poll %s, flush %s\n\n",
		c.Config.Clients, c.Config.Duration, c.Committed, msOr(c.Config.Debezium.Poll, "500 ms (stock)"), msOr(c.Config.Debezium.Flush, "60 s (stock)"))
	fmt.Fprintf(&s, "| measure | lockstep | Debezium | lockstep / Debezium |\n|---|---|---|---|\n")
	row := func(what, a, b string, ra, rb float64) {
		ratio := "-"
		if rb != 0 && ra >= 0 && rb > 0 {
			ratio = fmt.Sprintf("%.2f", ra/rb)
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s |\n", what, a, b, ratio)
	}
	row("transactions captured", strconv.Itoa(l.Txns), strconv.Itoa(d.Txns), float64(l.Txns), float64(d.Txns))
	row("changes/s (load start to last append)", fmt.Sprintf("%.0f", l.Rate), fmt.Sprintf("%.0f", d.Rate), l.Rate, d.Rate)
	when := fmt.Sprintf(", after %v warm-up", c.Config.Warmup)
	if c.Config.KillAt > 0 {
		when += ", appended before the kill"
	}
	row(latency+" p50"+when, millis(l.SteadyP50), millis(d.SteadyP50), float64(l.SteadyP50), float64(d.SteadyP50))
	row(latency+" p99"+when, millis(l.SteadyP99), millis(d.SteadyP99), float64(l.SteadyP99), float64(d.SteadyP99))
	if c.Config.KillAt > 0 {
		row(latency+" p50, whole load (kill included)", millis(l.LatencyP50), millis(d.LatencyP50), float64(l.LatencyP50), float64(d.LatencyP50))
		row(latency+" p99, whole load (kill included)", millis(l.LatencyP99), millis(d.LatencyP99), float64(l.LatencyP99), float64(d.LatencyP99))
	}
	if l.Measured && d.Measured && l.Changes > 0 && d.Changes > 0 {
		pl := (l.CPU / time.Duration(l.Changes)).Round(100 * time.Nanosecond)
		pd := (d.CPU / time.Duration(d.Changes)).Round(100 * time.Nanosecond)
		row("CPU per change (cgroup)", pl.String(), pd.String(), float64(pl), float64(pd))
		row("peak memory (cgroup)", mb(l.PeakRSS), mb(d.PeakRSS), float64(l.PeakRSS), float64(d.PeakRSS))
	} else {
		row("CPU per change, peak memory", "not measured (no readable cgroup)", "not measured", 0, 0)
	}
	if c.Config.KillAt > 0 {
		row("restart after kill -9 (until its topic held all committed before the start)", dur(l.Restart), dur(d.Restart), float64(l.Restart), float64(d.Restart))
		row("duplicates after the crash", strconv.Itoa(l.Duplicates), strconv.Itoa(d.Duplicates), float64(l.Duplicates), float64(d.Duplicates))
	}
	return s.String()
}

func millis(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func dur(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.Round(time.Millisecond).String()
}

func mb(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/(1<<20)) }

func msOr(d time.Duration, zero string) string {
	if d == 0 {
		return zero
	}
	return d.String()
}
