package checker

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"lockstep/model"
)

// Class names a kind of anomaly. Each class judges exactly one property
// (see Class.Property).
type Class string

const (
	// Lost: a final store is missing a key the source holds, holds an older
	// version of it, still holds a committed value of a key the source
	// deleted, or (search) counts fewer revs than the source made: a change
	// the store passed without reflecting it. A store that keeps a position
	// has passed the changes at or before it; one behind the source that
	// misses only later changes is late (NotConverged), not lossy.
	Lost Class = "lost"
	// Phantom: a store showed a document (key, LSN, value) that is not the
	// projection of any committed version of that key.
	Phantom Class = "phantom"
	// Backwards: a read returned an older version of a key than a read of
	// the same store that had returned before it was called.
	Backwards Class = "backwards"
	// Duplicate: a search document counts more applied changes (revs) than
	// the source made up to its version: a change was applied twice.
	Duplicate Class = "duplicate"
	// Torn: a replica snapshot is not the source state after any commit, or
	// not the state at the position the replica claims.
	Torn Class = "torn"
	// Divergent: a final document carries the source's version but another
	// value.
	Divergent Class = "divergent"
	// NotConverged: a store that tracks its position did not reach the final
	// source position by the deadline, or its final snapshot is behind it.
	// The witness counts the keys it had not caught up on (late changes).
	NotConverged Class = "not-converged"
	// Nonlinearizable: porcupine found no order of a store's reads, within
	// their real-time intervals, in which each key's version never goes back.
	Nonlinearizable Class = "nonlinearizable"
	// LogDataLoss: the log lost acknowledged records (store "log").
	LogDataLoss Class = "log-data-loss"
)

// Classes lists every class in report order.
var Classes = []Class{Lost, Phantom, Backwards, Duplicate, Torn, Divergent, NotConverged, Nonlinearizable, LogDataLoss}

var classProperty = map[Class]model.Property{
	Lost:            model.NoLoss,
	Phantom:         model.NoPhantom,
	Backwards:       model.PerKeyOrder,
	Duplicate:       model.ExactlyOnce,
	Torn:            model.Atomicity,
	Divergent:       model.Convergence,
	NotConverged:    model.Convergence,
	Nonlinearizable: model.PerKeyOrder,
	LogDataLoss:     model.NoLoss,
}

// Property is the property an anomaly of this class violates.
func (c Class) Property() model.Property { return classProperty[c] }

func (c Class) rank() int {
	for i, x := range Classes {
		if x == c {
			return i
		}
	}
	return len(Classes)
}

// LogStore is the store name of anomalies that belong to the log itself.
const LogStore = "log"

// Source says where a witness was observed.
type Source string

const (
	FromRead     Source = "read"
	FromSnapshot Source = "snapshot"
	FromFinal    Source = "final"
	FromReads    Source = "reads" // the whole set of a store's reads (porcupine)
	// FromPositions: the store's own record of its saved position's writes.
	FromPositions Source = "positions"
	FromRun       Source = "run" // run-wide facts: convergence times, log losses
)

// Witness is the evidence for one anomaly.
type Witness struct {
	Source Source `json:"source"`
	// At is the virtual time of the observation: a read's return, a
	// snapshot's time, the deadline. Timed is false when the history says
	// nothing about when (log losses).
	At    time.Duration `json:"at"`
	Timed bool          `json:"timed"`
	// Fault is the fault window At fell in (History.FaultAt).
	Fault string `json:"fault,omitempty"`
	// Got is what the store showed, Want what the truth says it should have
	// shown; nil when absent.
	Got  *model.Doc `json:"got,omitempty"`
	Want *model.Doc `json:"want,omitempty"`
	// Versions are the LSNs the store showed for the key over the run, in
	// time order, repeats collapsed (reads, snapshots, final).
	Versions []model.LSN `json:"versions,omitempty"`
	// Position is the store's own position with the observation, if any.
	Position *model.Position `json:"position,omitempty"`
	// Seen counts the observations that showed the same thing (phantom and
	// duplicate are reported once per distinct document, at the earliest).
	Seen   int    `json:"seen,omitempty"`
	Detail string `json:"detail"`
	_      struct{}
}

// Anomaly is one thing the checker found wrong.
type Anomaly struct {
	Class    Class          `json:"class"`
	Property model.Property `json:"property"`
	Store    string         `json:"store"`
	Key      model.Key      `json:"key"` // zero for store-wide anomalies
	// Violation is true when the store claims Property (for log-data-loss:
	// when any store claims no-loss). Unclaimed anomalies are only counted.
	Violation bool    `json:"violation"`
	Witness   Witness `json:"witness"`
	_         struct{}
}

// String is the anomaly on one line, e.g.
//
//	lost replica accounts/7: has lsn=0/1A0 want lsn=0/2F0 (at 12.5s, during crash capture)
func (a Anomaly) String() string {
	var b strings.Builder
	b.WriteString(string(a.Class))
	b.WriteByte(' ')
	b.WriteString(a.Store)
	if a.Key != (model.Key{}) {
		b.WriteByte(' ')
		b.WriteString(a.Key.String())
	}
	b.WriteString(": ")
	b.WriteString(a.Witness.Detail)
	if a.Witness.Timed {
		fmt.Fprintf(&b, " (at %s, %s)", a.Witness.At, during(a.Witness.Fault))
	}
	return b.String()
}

func during(fault string) string {
	if fault == "" || fault == "no fault" {
		return "no fault"
	}
	return "during " + fault
}

// Verdict is the run's three-way outcome, like porcupine's.
type Verdict string

const (
	// Pass: no claimed property was violated and every check completed.
	Pass Verdict = "pass"
	// Fail: some claimed property was violated.
	Fail Verdict = "fail"
	// Inconclusive: nothing claimed was violated, but a check of a claimed
	// property did not finish (porcupine timed out) or the history itself
	// is defective (see Report.Problems). Never a pass.
	Inconclusive Verdict = "inconclusive"
)

// Linearizability is porcupine's result for one store's reads.
type Linearizability struct {
	Store string `json:"store"`
	// Result is Ok, Illegal, or Unknown (timed out: not a pass, not a
	// violation).
	Result porcupine.CheckResult `json:"result"`
	Reads  int                   `json:"reads"` // found reads checked
	Keys   int                   `json:"keys"`  // partitions
	// Claimed is whether the store claims per-key order.
	Claimed bool `json:"claimed"`
	_       struct{}
}

// Report is the checker's verdict on one History.
type Report struct {
	Scenario  string `json:"scenario"`
	System    string `json:"system"`
	Seed      uint64 `json:"seed"`
	Committed int    `json:"committed"` // committed transactions in the truth
	Stores    int    `json:"stores"`
	Reads     int    `json:"reads"`
	Snapshots int    `json:"snapshots"` // during the run, not counting Final

	Verdict Verdict `json:"verdict"`
	// Anomalies are sorted by class (in Classes order), store, key, time
	// and detail.
	Anomalies []Anomaly `json:"anomalies"`
	// Counts is the number of anomalies per class, claimed or not.
	Counts map[Class]int `json:"counts"`
	// Linearizability has one entry per declared store, by store name
	// (Ok with no reads means there was nothing to check).
	Linearizability []Linearizability `json:"linearizability"`
	// Unknown lists the stores whose linearizability check timed out.
	Unknown []string `json:"unknown,omitempty"`
	// Problems are defects of the history itself (a store with no final
	// snapshot, a read of an undeclared store, ...): what they touch was
	// not judged.
	Problems []string `json:"problems,omitempty"`

	witnesses int
	_         struct{}
}

// Violations returns the anomalies of claimed properties.
func (r *Report) Violations() []Anomaly {
	var v []Anomaly
	for _, a := range r.Anomalies {
		if a.Violation {
			v = append(v, a)
		}
	}
	return v
}

// OK reports whether no claimed property was violated. An Unknown
// linearizability result does not make OK false; see Verdict for the
// three-way outcome.
func (r *Report) OK() bool {
	for _, a := range r.Anomalies {
		if a.Violation {
			return false
		}
	}
	return true
}

// String is Render's output.
func (r *Report) String() string {
	var b strings.Builder
	_ = r.Render(&b)
	return b.String()
}

// Render writes a short human summary: the verdict line, anomaly counts by
// class, linearizability results, problems, then the first witnesses
// (claimed violations first).
func (r *Report) Render(w io.Writer) error {
	var b strings.Builder
	v := len(r.Violations())
	fmt.Fprintf(&b, "%s: %d claimed violations, %d anomalies", strings.ToUpper(string(r.Verdict)), v, len(r.Anomalies))
	if r.Scenario != "" || r.System != "" {
		fmt.Fprintf(&b, " (scenario %q, system %q, seed %d)", r.Scenario, r.System, r.Seed)
	}
	b.WriteByte('\n')
	fmt.Fprintf(&b, "  checked %d committed txns, %d stores, %d reads, %d snapshots\n", r.Committed, r.Stores, r.Reads, r.Snapshots)
	for _, c := range Classes {
		n := r.Counts[c]
		if n == 0 {
			continue
		}
		claimed := 0
		for _, a := range r.Anomalies {
			if a.Class == c && a.Violation {
				claimed++
			}
		}
		fmt.Fprintf(&b, "  %-16s %5d  (%d claimed, property %s)\n", c, n, claimed, c.Property())
	}
	if len(r.Linearizability) > 0 {
		b.WriteString("  linearizability:")
		for _, l := range r.Linearizability {
			fmt.Fprintf(&b, " %s=%s", l.Store, l.Result)
		}
		if len(r.Unknown) > 0 {
			fmt.Fprintf(&b, " (%d unknown: timed out, not a pass)", len(r.Unknown))
		}
		b.WriteByte('\n')
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  problem: %s\n", p)
	}
	n := r.witnesses
	if n == 0 {
		n = DefaultWitnesses // a report decoded from JSON
	}
	if n < 0 || n > len(r.Anomalies) {
		n = len(r.Anomalies)
	}
	if n > 0 {
		fmt.Fprintf(&b, "  first %d of %d witnesses:\n", n, len(r.Anomalies))
		for _, i := range r.witnessOrder()[:n] {
			a := r.Anomalies[i]
			mark := "VIOLATION"
			if !a.Violation {
				mark = "unclaimed"
			}
			fmt.Fprintf(&b, "    %s %s\n", mark, a)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// witnessOrder is the order Render shows anomalies in: the first claimed
// violation of each class (an overview), the other claimed violations,
// then the unclaimed anomalies; each group in report order.
func (r *Report) witnessOrder() []int {
	order := make([]int, 0, len(r.Anomalies))
	taken := make([]bool, len(r.Anomalies))
	seen := map[Class]bool{}
	for i, a := range r.Anomalies {
		if a.Violation && !seen[a.Class] {
			seen[a.Class], taken[i] = true, true
			order = append(order, i)
		}
	}
	for _, claimed := range []bool{true, false} {
		for i, a := range r.Anomalies {
			if !taken[i] && a.Violation == claimed {
				order = append(order, i)
			}
		}
	}
	return order
}
