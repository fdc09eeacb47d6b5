package scenarios

import (
	"errors"
	"slices"
	"time"

	"lockstep/sim/services"
)

// Metrics are what a system cost the application in one run, measured on
// the run's clock over the fault phase, for every system alike.
type Metrics struct {
	// Committed is the application transactions the source committed
	// during the fault phase, and Throughput those per second of it.
	Committed  int     `json:"committed"`
	Throughput float64 `json:"throughput_tps"`
	// LatencyP50 and LatencyP99 are percentiles of the time an operation
	// that committed took, as the application waited for it: from its
	// first attempt to the answer, retries included (the pipeline: the
	// source's commit; dual writes: the source and every store; 2PC: the
	// coordinator's whole protocol).
	LatencyP50 time.Duration `json:"commit_latency_p50_ns"`
	LatencyP99 time.Duration `json:"commit_latency_p99_ns"`
	// Unavailable is how many whole seconds of the fault phase had an
	// application operation waiting or failing in them and not one
	// answered (committed, or rolled back by the application itself).
	Unavailable time.Duration `json:"unavailable_ns"`
	// InDoubt is, for two-phase commit, the prepared transactions the
	// participants still held at the end of the run: in doubt for good,
	// holding their locks.
	InDoubt int `json:"in_doubt_at_end,omitempty"`
}

// op is one application operation: from its first attempt to its answer.
type op struct {
	start, end time.Duration
	err        error
	ended      bool
}

// answered says the system answered: it committed, or the application's
// own transaction rolled back (an overdraft), which is no unavailability.
func (o *op) answered() bool {
	return o.ended && (o.err == nil || errors.Is(o.err, services.ErrAborted))
}

// opLog is a run's application operations, in the order they started.
type opLog struct{ ops []*op }

// errUnwound is the outcome of an operation whose client crashed in it,
// until the operation says otherwise.
var errUnwound = errors.New("the client crashed in the operation")

func (l *opLog) begin(at time.Duration) *op {
	o := &op{start: at, err: errUnwound}
	l.ops = append(l.ops, o)
	return o
}

func (l *opLog) end(o *op, at time.Duration) { o.end, o.ended = at, true }

// unavailableWindow is the slice of the fault phase unavailability counts.
const unavailableWindow = time.Second

// metrics works out the run's Metrics from its operations and the
// committed count at the end of the fault phase.
func (x *world) metrics() Metrics {
	m := Metrics{Committed: max(x.atQuiet, 0)}
	if q := x.opts.Quiet; q > 0 {
		m.Throughput = float64(m.Committed) / q.Seconds()
	}
	var latencies []time.Duration
	for _, o := range x.ops.ops {
		if o.ended && o.err == nil {
			latencies = append(latencies, o.end-o.start)
		}
	}
	slices.Sort(latencies)
	m.LatencyP50, m.LatencyP99 = Percentile(latencies, 0.50), Percentile(latencies, 0.99)
	m.Unavailable = unavailable(x.ops.ops, x.opts.Quiet, x.hist.Deadline)
	if x.sys == TwoPC {
		m.InDoubt = x.preparedLeft()
	}
	return m
}

// unavailable counts the windows of [0, quiet) in which some operation was
// waiting or failed and none was answered. An operation still waiting at
// the end waits until then.
func unavailable(ops []*op, quiet, end time.Duration) time.Duration {
	n := int((quiet + unavailableWindow - 1) / unavailableWindow)
	tried, answered := make([]bool, n), make([]bool, n)
	for _, o := range ops {
		stop := end
		if o.ended {
			stop = o.end
		}
		for i := int(o.start / unavailableWindow); i < n && time.Duration(i)*unavailableWindow <= stop; i++ {
			tried[i] = true
		}
		if o.answered() {
			if i := int(o.end / unavailableWindow); i < n {
				answered[i] = true
			}
		}
	}
	var d time.Duration
	for i := range n {
		if tried[i] && !answered[i] {
			d += unavailableWindow
		}
	}
	return d
}

// Percentile is the p-th percentile (0 < p <= 1) of sorted durations,
// nearest rank; 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// CellMetrics are a campaign cell's Metrics over its runs: the mean per
// run of each figure (a run that committed nothing has no latency and
// counts only for the others), so that cells of shards merge as runs do.
type CellMetrics struct {
	Throughput  float64 `json:"throughput_tps"`
	LatencyP50  float64 `json:"commit_latency_p50_ms"`
	LatencyP99  float64 `json:"commit_latency_p99_ms"`
	Unavailable float64 `json:"unavailable_seconds"`
	// InDoubt is the prepared transactions left at the end of every run
	// together (two-phase commit).
	InDoubt int `json:"in_doubt_at_end,omitempty"`

	runs, latencyRuns   int
	tps, down, p50, p99 float64
}

// Add counts one run's metrics.
func (c *CellMetrics) Add(m Metrics) {
	c.runs++
	c.tps += m.Throughput
	c.down += m.Unavailable.Seconds()
	c.InDoubt += m.InDoubt
	if m.LatencyP50 > 0 {
		c.latencyRuns++
		c.p50 += float64(m.LatencyP50) / float64(time.Millisecond)
		c.p99 += float64(m.LatencyP99) / float64(time.Millisecond)
	}
}

// Finish works out the cell's figures from the runs added.
func (c *CellMetrics) Finish() {
	if c.runs > 0 {
		c.Throughput = c.tps / float64(c.runs)
		c.Unavailable = c.down / float64(c.runs)
	}
	if c.latencyRuns > 0 {
		c.LatencyP50, c.LatencyP99 = c.p50/float64(c.latencyRuns), c.p99/float64(c.latencyRuns)
	}
}
