// Package shrink minimises a failing simulated run: it keeps the run's seed,
// scenario, system and bugs, and looks for a smaller fault plan and a smaller
// workload under which the checker still finds the same anomaly class on the
// same store. Every candidate is one simulated run (tens of milliseconds),
// so a shrink is a few hundred runs at most.
//
// The steps, each kept only when the run still fails the same way:
//
//  1. drop faults, by delta debugging over the plan's lines (ddmin); a
//     restart, resume or heal whose fault is gone goes with it;
//  2. round fault times to 100 ms, shorten windows (move each restart,
//     resume and heal as early as it still fails) and move faults earlier;
//  3. halve the workload: transactions, then clients, then keys, each by a
//     binary search for the smallest size that still fails;
//  4. steps 1 and 2 once more, on the smaller workload;
//  5. as a last resort, when the workload stays large, retime: the faults
//     at other times with a small workload, and failing that the
//     observer's reads at other times (Options.ObserverDelay).
//
// The same input gives the same output: runs are deterministic and the
// search takes no random choice. A budget of runs (and, as a safety net, of
// wall time, which can make two shrinks differ) bounds it; whatever it
// stopped at still fails.
package shrink

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"lockstep/checker"
	"lockstep/faults"
	"lockstep/model"
	"lockstep/scenarios"
	"lockstep/scenarios/workload"
)

// Config bounds a shrink and says what to keep failing.
type Config struct {
	// MaxRuns is the most candidate runs to try (default 1000).
	MaxRuns int
	// Timeout stops the search after this much wall time (0: none). A
	// shrink stopped by it may differ from one run to the next; one
	// stopped by MaxRuns does not.
	Timeout time.Duration
	// Class and Store are the anomaly to keep: a violation of that class
	// on that store. Empty: the first violation of the original run (in
	// the report's order); Store alone empty: any store.
	Class checker.Class
	Store string
	// Progress, when set, gets one line per step that made the run
	// smaller, and one at the end.
	Progress io.Writer
	_        struct{}
}

// ErrNoViolation is returned when the run to shrink violates no claimed
// property (or not the one Config names): there is nothing to keep failing.
var ErrNoViolation = errors.New("the run violates no claimed property of the kind asked for: nothing to shrink")

// Size is what shrinking makes smaller.
type Size struct {
	Faults  int `json:"faults"`  // lines of the fault plan (restarts, resumes and heals included)
	Txns    int `json:"txns"`    // application transactions the workload issues
	Clients int `json:"clients"` // application clients
	Keys    int `json:"keys"`    // the workload's key space
	// FaultPhase is how long the workload runs and faults may happen.
	FaultPhase time.Duration `json:"fault_phase_ns"`
}

func (s Size) String() string {
	return fmt.Sprintf("%d faults, %d txns, %d clients, %d keys, %v fault phase", s.Faults, s.Txns, s.Clients, s.Keys, s.FaultPhase)
}

// Result is a finished shrink.
type Result struct {
	Scenario *scenarios.Scenario
	System   scenarios.System
	Seed     uint64
	// Options are the shrunk run's: Txns, Clients and Keys set, Plan the
	// shrunk plan.
	Options  scenarios.Options
	Class    checker.Class
	Store    string
	Original Size
	Shrunk   Size
	// Outcome is the shrunk run; its Hash is what the repro file records.
	Outcome *scenarios.Outcome
	Runs    int           // candidate runs, the original's included
	Elapsed time.Duration // wall time of the whole shrink
	// Stopped says which budget ended the search early ("" when every
	// step ran to its end).
	Stopped string
	_       struct{}
}

// Plan is the shrunk fault plan.
func (r *Result) Plan() faults.Plan { return *r.Options.Plan }

// File is the repro file that replays the shrunk run, hash included.
func (r *Result) File() scenarios.ReproFile {
	return scenarios.ReproFile{Repro: r.Outcome.Token(), Plan: r.Plan(), Hash: r.Outcome.Hash, Class: r.Class, Store: r.Store}
}

// Summary is the result as --json writes it.
type Summary struct {
	Scenario string        `json:"scenario"`
	System   string        `json:"system"`
	Seed     uint64        `json:"seed"`
	Class    checker.Class `json:"class"`
	Store    string        `json:"store"`
	Original Size          `json:"original"`
	Shrunk   Size          `json:"shrunk"`
	// Faults and Transactions repeat Shrunk's, for a reader that wants
	// only those.
	Faults       int     `json:"faults"`
	Transactions int     `json:"transactions"`
	Committed    int     `json:"committed"` // transactions the shrunk run committed (the initial load included)
	Hash         string  `json:"hash"`
	Seconds      float64 `json:"seconds"`
	Runs         int     `json:"runs"`
	Stopped      string  `json:"stopped,omitempty"`
	Plan         string  `json:"plan"`
	ReproFile    string  `json:"repro_file"`
	_            struct{}
}

// Summary is r for --json.
func (r *Result) Summary() Summary {
	return Summary{
		Scenario: r.Scenario.Name, System: string(r.System), Seed: r.Seed, Class: r.Class, Store: r.Store,
		Original: r.Original, Shrunk: r.Shrunk, Faults: r.Shrunk.Faults, Transactions: r.Shrunk.Txns,
		Committed: len(r.Outcome.History.Committed), Hash: fmt.Sprintf("%016x", r.Outcome.Hash),
		Seconds: r.Elapsed.Seconds(), Runs: r.Runs, Stopped: r.Stopped,
		Plan: r.Plan().String(), ReproFile: r.File().String(),
	}
}

// Shrink minimises the run of sc, sys and seed under opts (opts.Plan, when
// set, is the plan to start from; otherwise the seed's own). It fails with
// ErrNoViolation when that run has nothing to keep failing, and with the
// runner's error when the original run cannot complete.
func Shrink(sc *scenarios.Scenario, sys scenarios.System, seed uint64, opts scenarios.Options, cfg Config) (*Result, error) {
	if cfg.MaxRuns <= 0 {
		cfg.MaxRuns = 1000
	}
	s := &shrinker{sc: sc, sys: sys, seed: seed, cfg: cfg, start: time.Now(), base: opts}
	st, err := s.initial(opts)
	if err != nil {
		return nil, err
	}
	orig := st.size()
	s.say("shrink %s: keep %s on %s; start at %s", s.best.Token(), s.class, s.store, orig)

	retimed := false
	for round := 1; round <= maxRounds && s.stopped == ""; round++ {
		before := st.size()
		st = s.dropFaults(st)
		st = s.compress(st)
		st = s.shrinkInt(st, "txns", 1, func(st *state) *int { return &st.txns })
		st = s.shrinkInt(st, "clients", 1, func(st *state) *int { return &st.clients })
		st = s.shrinkInt(st, "keys", workload.MinKeys, func(st *state) *int { return &st.keys })
		st = s.roundTimes(st)
		st = s.shortenWindows(st)
		st = s.moveEarlier(st)
		if st.size() != before && round < maxRounds {
			continue
		}
		// The last resort, once: the workload is still large because the
		// faults need it to be; move them to where a small one fails.
		if retimed || st.txns <= scan {
			break
		}
		retimed = true
		if r := s.retime(st); r != st {
			st = s.shrinkInt(r, "txns", 1, func(st *state) *int { return &st.txns })
			round = maxRounds - 1 // one more round on the small workload
			continue
		}
		break
	}
	res := &Result{
		Scenario: sc, System: sys, Seed: seed, Options: s.options(st), Class: s.class, Store: s.store,
		Original: orig, Shrunk: st.size(), Outcome: s.best, Runs: s.runs, Elapsed: time.Since(s.start), Stopped: s.stopped,
	}
	note := ""
	if s.stopped != "" {
		note = " (stopped early: " + s.stopped + ")"
	}
	s.say("shrunk to %s in %d runs, %.1fs%s", res.Shrunk, res.Runs, res.Elapsed.Seconds(), note)
	return res, nil
}

// state is one candidate: a plan and a workload size.
type state struct {
	faults              []faults.Fault
	quiet               time.Duration
	txns, clients, keys int
	// observe is the observer's delay (scenarios.Options.ObserverDelay):
	// not a size, but where retimeObserver put the observer's reads.
	observe time.Duration
}

func (st *state) size() Size {
	return Size{Faults: len(st.faults), Txns: st.txns, Clients: st.clients, Keys: st.keys, FaultPhase: st.quiet}
}

func (st *state) with(fs []faults.Fault) *state {
	c := *st
	c.faults = normalize(fs)
	return &c
}

type shrinker struct {
	sc    *scenarios.Scenario
	sys   scenarios.System
	seed  uint64
	cfg   Config
	base  scenarios.Options
	start time.Time

	class   checker.Class
	store   string
	best    *scenarios.Outcome // the last run that failed as wanted
	runs    int
	stopped string
	// held: candidates run that did not fail as wanted, so that a step
	// trying one again (retime's finer grids repeat some of the coarser
	// grid's times) does not spend a run on it.
	held map[string]bool
}

// key identifies a candidate: everything options() sets from it.
func (st *state) key() string {
	return fmt.Sprintf("%v|%v|%d|%d|%d|%v", faults.Plan{Faults: st.faults, Quiet: st.quiet}, st.quiet, st.txns, st.clients, st.keys, st.observe)
}

func (s *shrinker) say(format string, args ...any) {
	if s.cfg.Progress != nil {
		fmt.Fprintf(s.cfg.Progress, format+"\n", args...)
	}
}

// initial runs the starting point and picks the anomaly to keep.
func (s *shrinker) initial(opts scenarios.Options) (*state, error) {
	out, err := scenarios.Run(s.sc, s.sys, s.seed, opts)
	s.runs++
	if err != nil {
		return nil, err
	}
	for _, a := range out.Report.Violations() {
		if (s.cfg.Class == "" || a.Class == s.cfg.Class) && (s.cfg.Store == "" || a.Store == s.cfg.Store) {
			s.class, s.store = a.Class, a.Store
			break
		}
	}
	if s.class == "" {
		return nil, fmt.Errorf("%s: %w", out.Token(), ErrNoViolation)
	}
	s.best = out
	wl, err := workload.NewSized(s.sc.Workload, out.Options.Keys)
	if err != nil {
		return nil, err
	}
	return &state{faults: slices.Clone(out.Plan.Faults), quiet: out.Plan.Quiet,
		txns: out.Options.Txns, clients: out.Options.Clients, keys: workload.Keys(wl), observe: out.Options.ObserverDelay}, nil
}

func (s *shrinker) options(st *state) scenarios.Options {
	o := s.base
	o.Txns, o.Clients, o.Keys, o.Quiet, o.ObserverDelay = st.txns, st.clients, st.keys, st.quiet, st.observe
	o.Plan = &faults.Plan{Faults: st.faults, Quiet: st.quiet}
	return o
}

// fails runs a candidate and says whether it still violates the kept class
// on the kept store. Past the budget it runs nothing and says no, so every
// step ends with what it had.
func (s *shrinker) fails(st *state) bool {
	switch {
	case s.stopped != "":
		return false
	case s.runs >= s.cfg.MaxRuns:
		s.stopped = fmt.Sprintf("the budget of %d runs", s.cfg.MaxRuns)
		return false
	case s.cfg.Timeout > 0 && time.Since(s.start) > s.cfg.Timeout:
		s.stopped = fmt.Sprintf("the time budget of %v", s.cfg.Timeout)
		return false
	}
	key := st.key()
	if s.held[key] {
		return false // run before, deterministically the same
	}
	s.runs++
	out, err := scenarios.Run(s.sc, s.sys, s.seed, s.options(st))
	if err != nil {
		// A candidate the harness cannot finish is no evidence either way:
		// it is not kept.
		return false
	}
	for _, a := range out.Report.Violations() {
		if a.Class == s.class && a.Store == s.store {
			s.best = out
			return true
		}
	}
	if s.held == nil {
		s.held = map[string]bool{}
	}
	s.held[key] = true
	return false
}

// dropFaults is ddmin over the plan's lines, then one line at a time.
func (s *shrinker) dropFaults(st *state) *state {
	best := st
	ddmin(st.faults, true, func(fs []faults.Fault) bool {
		c := st.with(fs)
		if s.fails(c) {
			best = c
			return true
		}
		return false
	}, s.say)
	return best
}

// ddmin is delta debugging over a plan's lines: the empty plan, then
// halves, then complements, then finer splits, keeping any subset that
// still fails; with oneByOne, then each remaining line on its own. fails
// gets candidates already normalized, each smaller than the last kept, and
// says whether that one still fails; the last it said yes to is the result.
func ddmin(all []faults.Fault, oneByOne bool, fails func([]faults.Fault) bool, say func(string, ...any)) []faults.Fault {
	cur := normalize(all)
	try := func(fs []faults.Fault, how string) bool {
		c := normalize(fs)
		if len(c) >= len(cur) || !fails(c) {
			return false
		}
		say("  faults %d -> %d (%s)", len(cur), len(c), how)
		cur = c
		return true
	}
	if len(cur) == 0 || try(nil, "none") {
		return cur
	}
	n := 2
	for len(cur) >= 2 {
		chunks := split(cur, n)
		reduced := false
		for i := range chunks {
			if try(chunks[i], fmt.Sprintf("a %d-way split", n)) {
				n, reduced = 2, true
				break
			}
		}
		if !reduced && n > 2 {
			for i := range chunks {
				if try(complement(chunks, i), fmt.Sprintf("all but 1/%d", n)) {
					n, reduced = max(n-1, 2), true
					break
				}
			}
		}
		if !reduced {
			if n >= len(cur) {
				break
			}
			n = min(2*n, len(cur))
		}
	}
	for i := 0; oneByOne && i < len(cur); {
		f := cur[i]
		if !try(slices.Delete(slices.Clone(cur), i, i+1), "without "+f.String()) {
			i++
		}
	}
	return cur
}

func split(fs []faults.Fault, n int) [][]faults.Fault {
	var out [][]faults.Fault
	for i := 0; i < n; i++ {
		lo, hi := i*len(fs)/n, (i+1)*len(fs)/n
		if lo < hi {
			out = append(out, fs[lo:hi])
		}
	}
	return out
}

func complement(chunks [][]faults.Fault, skip int) []faults.Fault {
	var out []faults.Fault
	for i, c := range chunks {
		if i != skip {
			out = append(out, c...)
		}
	}
	return out
}

// grain is the resolution of shortened windows and moved faults: a hundredth
// of the fault phase, on a round grid (100 ms for the default 20 s), as
// times on a grid read better and are as good a repro.
func grain(quiet time.Duration) time.Duration {
	for _, g := range []time.Duration{100 * time.Millisecond, 10 * time.Millisecond} {
		if g <= quiet/100 {
			return g
		}
	}
	return time.Millisecond
}

// compress halves the fault phase, the transactions and every fault time
// together, as long as the run still fails: the same run in less time, at
// the same rate of transactions, so a fault that needed a transaction in
// flight still finds one. The steps after it then have fewer transactions
// to drop.
func (s *shrinker) compress(st *state) *state {
	for st.txns > 1 && st.quiet >= 2*time.Millisecond && s.stopped == "" {
		c := *st
		c.quiet = (st.quiet / 2).Round(time.Millisecond)
		c.txns = (st.txns + 1) / 2
		c.faults = slices.Clone(st.faults)
		for i := range c.faults {
			c.faults[i].At = (c.faults[i].At / 2).Round(time.Millisecond)
			if c.faults[i].At >= c.quiet {
				c.faults[i].At = c.quiet - time.Millisecond
			}
		}
		c.faults = normalize(sortByTime(c.faults))
		if !s.fails(&c) {
			break
		}
		s.say("  compressed: fault phase %v -> %v, txns %d -> %d", st.quiet, c.quiet, st.txns, c.txns)
		st = &c
	}
	return st
}

// roundTimes tries every fault time rounded to the grain, in one run.
func (s *shrinker) roundTimes(st *state) *state {
	fs := slices.Clone(st.faults)
	changed := false
	for i := range fs {
		if r := fs[i].At.Round(grain(st.quiet)); r != fs[i].At && r < st.quiet {
			fs[i].At, changed = r, true
		}
	}
	if !changed {
		return st
	}
	if c := st.with(sortByTime(fs)); s.fails(c) {
		s.say("  fault times rounded to %v", grain(st.quiet))
		return c
	}
	return st
}

// shortenWindows moves each restart, resume and heal as early as the run
// still fails, by a binary search on the grain between the fault it ends
// and where it is.
func (s *shrinker) shortenWindows(st *state) *state {
	return s.moveEach(st, func(st *state, i int) (time.Duration, bool) {
		return openedAt(st.faults, i) + grain(st.quiet), undo(st.faults[i].Kind)
	}, func(fs []faults.Fault, i int, t time.Duration) { fs[i].At = t })
}

// moveEarlier moves each fault that starts a window, with the restart or
// resume that ends it, as early as the run still fails.
func (s *shrinker) moveEarlier(st *state) *state {
	return s.moveEach(st, func(st *state, i int) (time.Duration, bool) {
		return 0, !undo(st.faults[i].Kind) && st.faults[i].At >= grain(st.quiet)
	}, func(fs []faults.Fault, i int, t time.Duration) {
		if closer := closerOf(fs, i); closer >= 0 {
			fs[closer].At -= fs[i].At - t
		}
		fs[i].At = t
	})
}

// moveEach moves each fault that pick accepts (pick also says how early it
// may go) as early as the run still fails, by a binary search on the grain
// (search); move sets fault i of a copy of the plan to time t, and whatever
// goes with it. A fault once moved is not tried again; after each move the
// plan is looked at afresh, as the order may have changed.
func (s *shrinker) moveEach(st *state, pick func(st *state, i int) (lo time.Duration, ok bool), move func(fs []faults.Fault, i int, t time.Duration)) *state {
	done := map[string]bool{}
	for i := 0; i < len(st.faults) && s.stopped == ""; i++ {
		f := st.faults[i]
		lo, ok := pick(st, i)
		if !ok || done[f.String()] {
			continue
		}
		done[f.String()] = true
		moved := st
		s.search(lo, f.At, grain(st.quiet), func(t time.Duration) bool {
			fs := slices.Clone(st.faults)
			move(fs, i, t)
			c := st.with(sortByTime(fs))
			if len(c.faults) == len(st.faults) && s.fails(c) {
				moved = c
				return true
			}
			return false
		})
		if moved != st {
			g := find(moved.faults, f)
			s.say("  %s moved to @%v (was @%v)", f.What(), g.At, f.At)
			done[g.String()] = true
			st = moved
			i = -1 // look again, skipping what is done
		}
	}
	return st
}

// search finds, on the grain, a time in [lo, hi) as low as it can for
// which ok holds, assuming ok(hi) does: a binary search (the runs are not
// monotonic in time, so it finds a low time, not the lowest).
func (s *shrinker) search(lo, hi, grain time.Duration, ok func(time.Duration) bool) {
	lo = lo.Round(grain)
	for hi-lo >= grain && s.stopped == "" {
		mid := (lo + (hi-lo)/2).Round(grain)
		if mid >= hi {
			mid = hi - grain
		}
		if mid < lo {
			return
		}
		if ok(mid) {
			hi = mid
		} else {
			lo = mid + grain
		}
	}
}

// maxRounds bounds the rounds of every step: a round that made nothing
// smaller ends the search earlier.
const maxRounds = 3

// scan is how many of the smallest sizes shrinkInt tries one by one.
const scan = 20

// grid is how many start times retime tries for each fault.
const grid = 50

// retime looks for a small workload that fails with the same faults at
// other times. A fault that needs a transaction in flight (a crash between
// a confirm and the append it ran ahead of) finds one at almost any time
// in a run of a thousand transactions, and at few times in a run of
// twenty: shrinking the workload with the faults fixed loses it. So, with
// scan transactions, for a fault phase of the same length and shorter ones
// (retimePhases: denser, and cheaper to run), each fault that starts a
// window is tried at grid times across the phase, its window moving with
// it and the other faults scaled to the phase; a plan without faults is
// tried at the phase's length halved again and again. Only for plans of at
// most three such faults, where that is a few hundred runs of a few
// milliseconds.
//
// A race between two writers needs traffic denser still: one applier's
// batch lands after its second instance's newer one only when newer
// records reached the second while the batch was in flight, which twenty transactions spread
// over the thousand's phase never give; so the phases go down to a
// hundredth.
//
// When no such time fails, retimeObserver moves the observer instead.
func (s *shrinker) retime(st *state) *state {
	if r := s.retimeFaults(st); r != st {
		return r
	}
	return s.retimeObserver(st)
}

// retimeFaults is retime's search over fault times and phases.
func (s *shrinker) retimeFaults(st *state) *state {
	var openers []int
	for i, f := range st.faults {
		if !undo(f.Kind) {
			openers = append(openers, i)
		}
	}
	if len(openers) > 3 {
		return st
	}
	if len(openers) == 0 {
		// Nothing to move: only the phase's length, halved down to a
		// tenth of a second.
		for q := st.quiet; q >= 100*time.Millisecond && s.stopped == ""; q = (q / 2).Round(time.Millisecond) {
			c := &state{faults: st.faults, quiet: q, txns: scan, clients: st.clients, keys: st.keys, observe: st.observe}
			if s.fails(c) {
				s.say("  retimed for %d txns: fault phase %v -> %v", scan, st.quiet, q)
				return c
			}
		}
		return st
	}
	for _, div := range retimePhases {
		q := (st.quiet / div).Round(time.Millisecond)
		if q < 100*time.Millisecond {
			break
		}
		if c := s.retimeAt(st, openers, q, q); c != nil {
			return c
		}
	}
	// The phase kept, the faults tried at ever finer times early in it: a
	// shorter phase also ends a crash that has no restart sooner (the
	// quiet phase restarts it), and a fault that must outlast a timeout
	// (a participant giving up on its decision) then no longer does.
	for _, div := range retimePhases[1:] {
		span := (st.quiet / div).Round(time.Millisecond)
		if span < 100*time.Millisecond {
			break
		}
		if c := s.retimeAt(st, openers, st.quiet, span); c != nil {
			return c
		}
	}
	return st
}

// retimeObserver looks for a small workload that fails with the faults
// where they are and the observer's reads moved (Options.ObserverDelay),
// for anomalies that only a read at the right moment shows: a whole read
// of the replica tears only when a rebuild commits between its snapshot
// and its rows, a window of about a millisecond every half second or so.
// Fewer transactions move the rebuild and the reads alike, and moving a
// fault does not move a rebuild that comes at the capture's next look at
// the log (once a second): a thousand transactions keep the rebuild in
// the window by chance, twenty rarely do. So, with scan transactions, the
// observer is delayed by each millisecond of one period of its whole
// reads (the median gap between the last failing run's whole reads), in
// an order that halves the gaps left (the period's middle, its quarters,
// ...), so a wide window is found in few runs and a narrow one within
// one run per millisecond.
func (s *shrinker) retimeObserver(st *state) *state {
	period := wholeReadPeriod(s.best.History.Snapshots)
	if period < 2*time.Millisecond {
		return st
	}
	for _, d := range coverOrder(int(period / time.Millisecond)) {
		if s.stopped != "" {
			break
		}
		c := *st
		c.txns, c.observe = scan, time.Duration(d)*time.Millisecond
		if s.fails(&c) {
			s.say("  retimed for %d txns: observer delayed %v", scan, c.observe)
			return &c
		}
	}
	return st
}

// wholeReadPeriod is the median gap between whole reads of the same store
// in snaps (0 with fewer than two).
func wholeReadPeriod(snaps []model.Snapshot) time.Duration {
	last := map[string]time.Duration{}
	var gaps []time.Duration
	for _, sn := range snaps {
		if at, ok := last[sn.Store]; ok {
			gaps = append(gaps, sn.At-at)
		}
		last[sn.Store] = sn.At
	}
	if len(gaps) == 0 {
		return 0
	}
	slices.Sort(gaps)
	return gaps[len(gaps)/2]
}

// coverOrder is 0 to n-1 in an order whose every prefix spreads evenly
// over the range: bit-reversed counting over the next power of two, the
// numbers past n skipped (0, n/2, n/4, 3n/4, ...).
func coverOrder(n int) []int {
	bits := 0
	for 1<<bits < n {
		bits++
	}
	out := make([]int, 0, n)
	for i := 0; i < 1<<bits; i++ {
		r := 0
		for b := 0; b < bits; b++ {
			if i&(1<<b) != 0 {
				r |= 1 << (bits - 1 - b)
			}
		}
		if r < n {
			out = append(out, r)
		}
	}
	return out
}

// retimePhases are the fault phases retime tries, as fractions of the
// run's: the same length first, then ever denser.
var retimePhases = []time.Duration{1, 4, 10, 40, 100}

// retimeAt tries, with scan transactions over a fault phase of q, each of
// st's faults at openers at grid times across the phase's first span (the
// other faults scaled to q), and returns the first candidate that fails,
// or nil.
func (s *shrinker) retimeAt(st *state, openers []int, q, span time.Duration) *state {
	base := slices.Clone(st.faults)
	for i := range base {
		base[i].At = (base[i].At * q / st.quiet).Round(time.Millisecond)
	}
	for _, oi := range openers {
		closer := closerOf(base, oi)
		for k := 1; k < grid && s.stopped == ""; k++ {
			fs := slices.Clone(base)
			at := (span * time.Duration(k) / grid).Round(grain(span))
			if closer >= 0 {
				fs[closer].At = min(fs[closer].At-fs[oi].At+at, q-time.Millisecond)
			}
			fs[oi].At = at
			c := &state{faults: normalize(sortByTime(fs)), quiet: q, txns: scan, clients: st.clients, keys: st.keys, observe: st.observe}
			if len(c.faults) == len(st.faults) && s.fails(c) {
				s.say("  retimed for %d txns: fault phase %v -> %v, %s @%v", scan, st.quiet, q, fs[oi].What(), at)
				return c
			}
		}
	}
	return nil
}

// shrinkInt shrinks one workload size: first the smallest sizes one by one
// (a run's draws all come from one PRNG, so whether a size still fails is
// far from monotonic, and a small size that fails is what a reader wants),
// then a binary search over [least, now] for a small size that fails.
func (s *shrinker) shrinkInt(st *state, name string, least int, field func(*state) *int) *state {
	lo, hi := least, *field(st)
	best := st
	for v := least; v < min(least+scan, hi) && s.stopped == ""; v++ {
		c := *st
		*field(&c) = v
		if s.fails(&c) {
			best, hi = &c, v
			break
		}
		lo = v + 1
	}
	for lo < hi && s.stopped == "" {
		mid := lo + (hi-lo)/2
		c := *best
		*field(&c) = mid
		if s.fails(&c) {
			best, hi = &c, mid
		} else {
			lo = mid + 1
		}
	}
	if best != st {
		s.say("  %s %d -> %d", name, *field(st), *field(best))
	}
	return best
}

func undo(k faults.Kind) bool { return k == faults.Restart || k == faults.Resume || k == faults.Heal }

func network(k faults.Kind) bool {
	switch k {
	case faults.Partition, faults.Delay, faults.Loss, faults.LostAck, faults.LostAppend:
		return true
	}
	return false
}

// normalize drops the restarts, resumes and heals that end nothing: a
// restart of a node not crashed, a resume of one not paused, a heal with no
// network fault in force. Such lines do nothing in a run and only make a
// plan longer.
func normalize(fs []faults.Fault) []faults.Fault {
	crashed, paused := map[string]bool{}, map[string]bool{}
	net := false
	var out []faults.Fault
	for _, f := range fs {
		switch f.Kind {
		case faults.Crash:
			crashed[f.Node] = true
		case faults.Pause:
			paused[f.Node] = true
		case faults.Restart:
			if !crashed[f.Node] {
				continue
			}
			crashed[f.Node] = false
		case faults.Resume:
			if !paused[f.Node] {
				continue
			}
			paused[f.Node] = false
		case faults.Heal:
			if !net {
				continue
			}
			net = false
		default:
			if network(f.Kind) {
				net = true
			}
		}
		out = append(out, f)
	}
	return out
}

// openedAt is when the window that the restart, resume or heal at i ends
// was opened: the crash or pause of its node, or the last network fault
// since the previous heal.
func openedAt(fs []faults.Fault, i int) time.Duration {
	c := fs[i]
	for j := i - 1; j >= 0; j-- {
		f := fs[j]
		switch {
		case c.Kind == faults.Restart && f.Kind == faults.Crash && f.Node == c.Node,
			c.Kind == faults.Resume && f.Kind == faults.Pause && f.Node == c.Node,
			c.Kind == faults.Heal && network(f.Kind):
			return f.At
		}
	}
	return 0
}

// closerOf is the index of the restart or resume that ends the crash or
// pause at i, or -1 (heals are shared by every network fault before them,
// so a moved network fault leaves its heal where it is).
func closerOf(fs []faults.Fault, i int) int {
	f := fs[i]
	want := faults.Restart
	switch f.Kind {
	case faults.Crash:
	case faults.Pause:
		want = faults.Resume
	default:
		return -1
	}
	for j := i + 1; j < len(fs); j++ {
		if fs[j].Kind == want && fs[j].Node == f.Node {
			return j
		}
	}
	return -1
}

// sortByTime orders faults by time, keeping the order of equal times.
func sortByTime(fs []faults.Fault) []faults.Fault {
	slices.SortStableFunc(fs, func(a, b faults.Fault) int { return int(a.At - b.At) })
	return fs
}

// find is the fault in fs with f's text apart from its time (the moved one).
func find(fs []faults.Fault, f faults.Fault) faults.Fault {
	for _, g := range fs {
		if g.What() == f.What() {
			return g
		}
	}
	return f
}
