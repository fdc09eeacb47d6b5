package containers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"lockstep/faults"
	"lockstep/model"
	"lockstep/scenarios"
)

// Bench is the end-to-end measurement of a container run: how fast the
// source committed, how fast each store kept up, and how long a committed
// change took to reach each store.
type Bench struct {
	Duration     time.Duration      // the workload's run time
	Txns         int                // committed source transactions during it
	Changes      int                // their row changes
	SourceRate   float64            // changes per second committed
	StoreRate    map[string]float64 // changes per second applied, start to caught up
	Ratio        map[string]float64 // StoreRate / SourceRate
	LagP50       map[string]time.Duration
	LagP99       map[string]time.Duration
	CaughtUpLate map[string]time.Duration // how long after the workload stopped the store caught up
	LagMax       map[string]time.Duration
	// Restarts is, for each process the plan brought back (a restart or
	// resume, a failed-over leader), how long until every store held what
	// the source had committed at that moment.
	Restarts []Recovery
	// Capture is the capture's container ("capture", or Debezium's
	// Connect worker); CaptureCPU the CPU time it used from the workload's
	// start until the last store caught up and CapturePeak the most memory it held
	// since it started, both from its cgroup (CaptureMeasured false where
	// the host's cgroups could not be read, or the capture restarted).
	Capture         string
	CaptureCPU      time.Duration
	CapturePeak     int64
	CaptureMeasured bool
}

// Recovery is how long the pipeline took to catch up after one fault.
type Recovery struct {
	What     string        // the fault, as the plan says it ("crash capture")
	At       time.Duration // when it ended: the restart, resume or failover
	CaughtUp time.Duration // from At until the slowest store held the source's position at At; -1 if never
}

// String is the report's table.
func (b *Bench) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "source: %d txns, %d changes in %v: %.0f changes/s\n", b.Txns, b.Changes, b.Duration.Round(time.Millisecond), b.SourceRate)
	names := make([]string, 0, len(b.StoreRate))
	for n := range b.StoreRate {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&s, "  %-8s %.0f changes/s (ratio %.3f), lag p50 %v p99 %v max %v, caught up %v after the workload\n",
			n, b.StoreRate[n], b.Ratio[n], b.LagP50[n].Round(time.Millisecond), b.LagP99[n].Round(time.Millisecond),
			b.LagMax[n].Round(time.Millisecond), b.CaughtUpLate[n].Round(time.Millisecond))
	}
	if b.CaptureMeasured && b.Changes > 0 {
		fmt.Fprintf(&s, "capture (%s): CPU %v, %v per change; peak memory %.0f MB\n", b.Capture, b.CaptureCPU.Round(time.Millisecond),
			(b.CaptureCPU / time.Duration(b.Changes)).Round(100*time.Nanosecond), float64(b.CapturePeak)/(1<<20))
	}
	if len(b.Restarts) > 0 {
		fmt.Fprintf(&s, "recovery after each fault (until every store held what the source had committed then):\n")
		var worst time.Duration
		for _, r := range b.Restarts {
			took := "never"
			if r.CaughtUp >= 0 {
				took = r.CaughtUp.Round(time.Millisecond).String()
				worst = max(worst, r.CaughtUp)
			}
			fmt.Fprintf(&s, "  @%-9v %-28s %s\n", r.At.Round(time.Millisecond), r.What, took)
		}
		fmt.Fprintf(&s, "  worst %v over %d faults\n", worst.Round(time.Millisecond), len(b.Restarts))
	}
	return s.String()
}

// benchProbe samples the source's WAL position and each store's position
// every 20ms. A store position p seen at time t means every transaction
// ending at or before p had arrived by t; it committed no later than the
// first sample in which the source's WAL position reached p. Lag is the
// difference, accurate to the sampling period.
type benchProbe struct {
	r       *run
	mu      sync.Mutex
	source  []lsnAt
	stores  map[string][]lsnAt
	started time.Duration
	// capture is the capture's container, and cpu0 its CPU time when the
	// workload started (measured: readable then).
	capture  *Service
	cpu0     time.Duration
	measured bool
	cpu      []cpuAt // the capture's CPU time, sampled with the positions
	// from is the source's WAL position when the workload started: the
	// transactions before it (pgbench's initial load of 100,000 rows, a
	// workload's initial rows) are not the workload's.
	from model.LSN
}

type lsnAt struct {
	at  time.Duration
	lsn model.LSN
}

type cpuAt struct {
	at  time.Duration
	cpu time.Duration
}

func newBenchProbe(ctx context.Context, r *run) *benchProbe {
	b := &benchProbe{r: r, stores: map[string][]lsnAt{}}
	for _, n := range Topology(r.cfg.System).Nodes {
		if n.Role == faults.RoleCapture {
			b.capture, _ = r.w.Service(n.Name)
		}
	}
	if b.capture != nil {
		b.cpu0, _, b.measured = containerUsage(b.capture.ID)
	}
	b.from, _ = r.sourceLSN(ctx) // 0 when unknown: every sample counts
	return b
}

func (b *benchProbe) sample(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if l, err := b.r.sourceLSN(ctx); err == nil {
			b.mu.Lock()
			b.source = append(b.source, lsnAt{b.r.since(), l})
			b.mu.Unlock()
		}
		if b.measured {
			if cpu, _, ok := containerUsage(b.capture.ID); ok {
				b.mu.Lock()
				b.cpu = append(b.cpu, cpuAt{b.r.since(), cpu})
				b.mu.Unlock()
			}
		}
		for _, s := range b.r.stores {
			if pos, ok, err := s.store.Position(ctx); err == nil && ok {
				b.mu.Lock()
				b.stores[s.name] = append(b.stores[s.name], lsnAt{b.r.since(), pos.LSN})
				b.mu.Unlock()
			}
		}
	}
}

// committedBy is the first time the source's WAL position reached lsn.
func (b *benchProbe) committedBy(lsn model.LSN) (time.Duration, bool) {
	i := sort.Search(len(b.source), func(i int) bool { return b.source[i].lsn >= lsn })
	if i == len(b.source) {
		return 0, false
	}
	return b.source[i].at, true
}

func (b *benchProbe) result(h *model.History) *Bench {
	b.mu.Lock()
	defer b.mu.Unlock()
	res := &Bench{Duration: h.QuietAt, StoreRate: map[string]float64{}, Ratio: map[string]float64{},
		LagP50: map[string]time.Duration{}, LagP99: map[string]time.Duration{}, CaughtUpLate: map[string]time.Duration{}, LagMax: map[string]time.Duration{}}
	for _, t := range h.Committed {
		if t.CommitLSN <= b.from {
			continue // before the workload: the stores had it when it started
		}
		res.Txns++
		res.Changes += len(t.Changes)
	}
	res.SourceRate = float64(res.Changes) / h.QuietAt.Seconds()
	for name, samples := range b.stores {
		var lags []time.Duration
		var prev model.LSN
		for _, s := range samples {
			if s.lsn == prev {
				continue
			}
			prev = s.lsn
			if at, ok := b.committedBy(s.lsn); ok && s.at >= at {
				lags = append(lags, s.at-at)
			}
		}
		if n := len(lags); n > 0 {
			res.LagP50[name], res.LagP99[name] = percentiles(lags) // sorts lags
			res.LagMax[name] = lags[n-1]
		}
		// When the store first held the last commit, from the probe's own
		// samples (the harness's convergence check runs later, after it has
		// read the truth).
		end := h.QuietAt
		if n := len(h.Committed); n > 0 {
			last := h.Committed[n-1].CommitLSN
			if i := sort.Search(len(samples), func(i int) bool { return samples[i].lsn >= last }); i < len(samples) && samples[i].at > end {
				end = samples[i].at
			}
		}
		res.CaughtUpLate[name] = end - h.QuietAt
		res.StoreRate[name] = float64(res.Changes) / end.Seconds()
		if res.SourceRate > 0 {
			res.Ratio[name] = res.StoreRate[name] / res.SourceRate
		}
	}
	if b.capture != nil && b.measured {
		// The CPU the capture used until the last store caught up: after
		// that it only waits, and its idle polling would be charged to
		// the changes (more per change the slower the workload ran).
		caughtUp := h.QuietAt
		for _, late := range res.CaughtUpLate {
			caughtUp = max(caughtUp, h.QuietAt+late)
		}
		i := sort.Search(len(b.cpu), func(i int) bool { return b.cpu[i].at > caughtUp })
		_, peak, ok := containerUsage(b.capture.ID)
		res.Capture = b.capture.Name
		// A restarted container's cgroup starts from nothing again.
		res.CaptureMeasured = ok && i > 0 && b.cpu[i-1].cpu >= b.cpu0 && len(h.Faults) == 0
		if i > 0 {
			res.CaptureCPU = b.cpu[i-1].cpu - b.cpu0
		}
		res.CapturePeak = peak
	}
	for _, f := range h.Faults {
		verb, _, _ := strings.Cut(f.What, " ")
		at := f.End
		switch verb {
		case "crash", "pause":
		case "leader-failover", "slot-drop", "retention":
			at = f.Start
		default:
			continue
		}
		res.Restarts = append(res.Restarts, Recovery{What: f.What, At: at, CaughtUp: b.recovery(at)})
	}
	return res
}

// recovery is how long after at every store held the source's WAL position
// at at (the last sample at or before it), or -1 when one never did.
func (b *benchProbe) recovery(at time.Duration) time.Duration {
	i := sort.Search(len(b.source), func(i int) bool { return b.source[i].at > at })
	if i == 0 {
		return 0
	}
	want := b.source[i-1].lsn
	var worst time.Duration
	for _, samples := range b.stores {
		j := sort.Search(len(samples), func(j int) bool { return samples[j].at >= at })
		for ; j < len(samples) && samples[j].lsn < want; j++ {
		}
		if j == len(samples) {
			return -1
		}
		worst = max(worst, samples[j].at-at)
	}
	return worst
}

// Pgbench is the container-only scenario whose workload no one here wrote:
// pgbench's TPC-B-like script drives the source while the capture is killed
// and a log leader fails over.
var Pgbench = &scenarios.Scenario{
	Name: "pgbench", Summary: "pgbench's TPC-B-like script drives the source; capture kill -9 and log leader failover",
	Workload: "pgbench",
	Kinds:    []faults.Kind{faults.Crash, faults.LeaderFailover},
	Roles:    []faults.Role{faults.RoleCapture, faults.RoleBroker},
}
