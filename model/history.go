package model

import (
	"sort"
	"time"
)

// Property is a guarantee a system under test may claim; the checker judges
// each claimed property and only counts the unclaimed ones.
type Property string

const (
	Convergence Property = "convergence"   // each store = projection(source) after the quiet phase
	NoLoss      Property = "no-loss"       // every committed change reflected or superseded
	NoPhantom   Property = "no-phantom"    // no store shows a value never committed
	PerKeyOrder Property = "per-key-order" // a key's version in a store never goes backwards
	ExactlyOnce Property = "exactly-once"  // non-idempotent effects counted once per change
	Atomicity   Property = "atomicity"     // every replica snapshot = source state after some commit
)

// AllProperties lists every property in a fixed order.
var AllProperties = []Property{Convergence, NoLoss, NoPhantom, PerKeyOrder, ExactlyOnce, Atomicity}

// Claims is the set of properties a system claims, per store.
type Claims map[Property]bool

// StoreSpec names a store in a run and what is claimed of it.
type StoreSpec struct {
	Name   string
	Kind   StoreKind
	Claims Claims
}

// Read is one sampled read of one key from one store during the run. Call and
// Return are virtual (or wall) times since the run started.
type Read struct {
	Store  string
	Key    Key
	Call   time.Duration
	Return time.Duration
	Found  bool
	Doc    Doc
	Client int
}

// Snapshot is a whole store read at one instant (atomically, where the store
// allows it). Position is the store's own applied position, when it keeps one.
type Snapshot struct {
	Store       string
	At          time.Duration
	HasPosition bool
	Position    Position
	Docs        Docs
	// RevsFrom, for a search index, is the commit LSN from which it counts
	// its documents' revisions: the snapshot it was last loaded from (0:
	// the first commit). A snapshot cannot say how often a row was written
	// before it, so a row it holds counts one revision there.
	RevsFrom LSN
}

// FaultWindow is when a fault was in force, for witnesses.
type FaultWindow struct {
	Start, End time.Duration // End 0: until the quiet phase
	What       string
}

// History is everything a run recorded, the checker's only input. Ground
// truth is Committed, in commit order; Aborted holds transactions that never
// committed, whose values must never be seen.
type History struct {
	Scenario string
	System   string
	Seed     uint64

	Committed []Txn
	Aborted   []Txn
	Stores    []StoreSpec

	Reads     []Read     // sampled per-key reads, in the order they returned
	Snapshots []Snapshot // sampled whole-store reads during the run
	Final     []Snapshot // one per store, after the quiet phase
	Faults    []FaultWindow

	QuietAt  time.Duration // faults healed and workload stopped
	Deadline time.Duration // stores must have converged by then
	// ConvergedAt is since when each store has held the final source
	// position without falling behind again (the simulator samples it
	// every 50ms), absent when it did not hold it at the end.
	ConvergedAt map[string]time.Duration
	// LogLosses counts acknowledged log records that the log later lost
	// (unclean leader election): the pipeline cannot survive it, but the
	// report must say it happened.
	LogLosses int
	// Timeline is each node's state and each store's position over the
	// run, for the HTML report; nil when the world recorded none. The
	// checker does not read it.
	Timeline *Timeline
	// Positions is every change of each store's saved position, as the
	// store made it, in time order: what shows a second writer writing
	// over a newer one. The simulator records it; nil elsewhere.
	Positions []PositionWrite
}

// PositionWrite is one change of a store's saved position: a write that
// set it, or the store losing it (it restarted empty).
type PositionWrite struct {
	Store    string
	At       time.Duration
	Position Position
	Lost     bool // the store holds no position any more
}

// Truth replays Committed and returns the final source state.
func (h *History) Truth() *State {
	s := NewState()
	for _, t := range h.Committed {
		s.Apply(t)
	}
	return s
}

// Store returns the spec of a store by name.
func (h *History) Store(name string) (StoreSpec, bool) {
	for _, s := range h.Stores {
		if s.Name == name {
			return s, true
		}
	}
	return StoreSpec{}, false
}

// FaultAt describes the fault windows open at t, for witnesses.
func (h *History) FaultAt(t time.Duration) string {
	var open []string
	for _, f := range h.Faults {
		end := f.End
		if end == 0 {
			end = h.QuietAt
		}
		if f.Start <= t && t <= end {
			open = append(open, f.What)
		}
	}
	sort.Strings(open)
	if len(open) == 0 {
		return "no fault"
	}
	s := open[0]
	for _, o := range open[1:] {
		s += "; " + o
	}
	return s
}
