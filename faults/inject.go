package faults

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Target is what a world must do for faults to be injected into it: the
// primitive actions, nothing more. Each returns an error only when the world
// could not carry the action out.
type Target interface {
	Crash(node string) error
	Restart(node string) error
	Pause(node string) error
	Resume(node string) error
	// Partition drops messages between groups a and b (only a->b when
	// oneWay). Partitions stack until Heal.
	Partition(a, b []string, oneWay bool) error
	// Heal removes every partition, restores every link's latency and
	// loss to the defaults, and ends lost-ack and lost-append.
	Heal() error
	Delay(from, to string, min, max time.Duration) error
	Loss(from, to string, p float64) error
	// LostAck loses the log's acknowledgement of node's appends with
	// probability p, after the append took effect; LostAppend loses the
	// append request itself, before the log takes it. Both until Heal. A
	// world without a log does nothing.
	LostAck(node string, p float64) error
	LostAppend(node string, p float64) error
	ClockJump(node string, d time.Duration) error
	// LeaderFailover kills the log's current leader broker; the world picks
	// it and restarts it by itself later.
	LeaderFailover() error
	UncleanElection(enabled bool) error
	// SecondInstance starts a second instance of node's process beside
	// the first, for the rest of the run (see the kind SecondInstance).
	SecondInstance(node string) error
	// Retention deletes the log's records appended more than keep ago
	// (its start offset moves forward); SlotDrop drops the replication
	// slot of the source database node. Both happen once: nothing is left
	// in force.
	Retention(keep time.Duration) error
	SlotDrop(node string) error
}

// Apply validates f and dispatches it to t, with no bookkeeping. Errors name
// the fault: "faults: @1.5s crash capture: <the world's error>".
func Apply(t Target, f Fault) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("faults: %s: %w", f, err)
	}
	var err error
	switch f.Kind {
	case Crash:
		err = t.Crash(f.Node)
	case Restart:
		err = t.Restart(f.Node)
	case Pause:
		err = t.Pause(f.Node)
	case Resume:
		err = t.Resume(f.Node)
	case Partition:
		err = t.Partition(slices.Clone(f.A), slices.Clone(f.B), f.OneWay)
	case Heal:
		err = t.Heal()
	case Delay:
		err = t.Delay(f.From, f.To, f.Min, f.Max)
	case Loss:
		err = t.Loss(f.From, f.To, f.P)
	case LostAck:
		err = t.LostAck(f.Node, f.P)
	case LostAppend:
		err = t.LostAppend(f.Node, f.P)
	case ClockJump:
		err = t.ClockJump(f.Node, f.Jump)
	case LeaderFailover:
		err = t.LeaderFailover()
	case UncleanElection:
		err = t.UncleanElection(true)
	case SecondInstance:
		err = t.SecondInstance(f.Node)
	case Retention:
		err = t.Retention(f.Keep)
	case SlotDrop:
		err = t.SlotDrop(f.Node)
	}
	if err != nil {
		return fmt.Errorf("faults: %s: %w", f, err)
	}
	return nil
}

// State is what is in force after some faults: what HealAll has to undo.
// Clock jumps and leader failovers are not in it: a jumped clock stays where
// it is, and the world restarts a failed-over broker by itself.
type State struct {
	Crashed []string // in the order they crashed
	Paused  []string // in the order they paused; a crashed node is not paused
	Network bool     // some partition, delay, loss, lost-ack or lost-append is in force
	Unclean bool     // unclean leader election is on
}

// Clear reports whether nothing is in force.
func (s State) Clear() bool {
	return len(s.Crashed) == 0 && len(s.Paused) == 0 && !s.Network && !s.Unclean
}

func (s State) String() string {
	if s.Clear() {
		return "nothing in force"
	}
	var parts []string
	for _, n := range s.Crashed {
		parts = append(parts, "crashed "+n)
	}
	for _, n := range s.Paused {
		parts = append(parts, "paused "+n)
	}
	if s.Network {
		parts = append(parts, "network faults")
	}
	if s.Unclean {
		parts = append(parts, "unclean election")
	}
	return fmt.Sprint(parts)
}

// after returns the state once f has been applied. Crashing a paused node
// leaves it crashed only: its restart brings it back running.
func (s State) after(f Fault) State {
	s.Crashed, s.Paused = slices.Clone(s.Crashed), slices.Clone(s.Paused)
	switch f.Kind {
	case Crash:
		s.Paused = slices.DeleteFunc(s.Paused, func(n string) bool { return n == f.Node })
		if !slices.Contains(s.Crashed, f.Node) {
			s.Crashed = append(s.Crashed, f.Node)
		}
	case Restart:
		s.Crashed = slices.DeleteFunc(s.Crashed, func(n string) bool { return n == f.Node })
	case Pause:
		if !slices.Contains(s.Paused, f.Node) && !slices.Contains(s.Crashed, f.Node) {
			s.Paused = append(s.Paused, f.Node)
		}
	case Resume:
		s.Paused = slices.DeleteFunc(s.Paused, func(n string) bool { return n == f.Node })
	case Partition, Delay, Loss, LostAck, LostAppend:
		s.Network = true
	case Heal:
		s.Network = false
	case UncleanElection:
		s.Unclean = true
	}
	return s
}

// InForce is what the plan leaves in force at Quiet, assuming every fault
// was applied.
func (p Plan) InForce() State {
	var s State
	for _, f := range p.Faults {
		s = s.after(f)
	}
	return s
}

// HealAll undoes everything s says is in force, as a world does at Quiet:
// heal the network, turn unclean leader election off, restart the crashed
// nodes and resume the paused ones (each in the order they went down). It
// touches nothing else, carries on past errors and returns them joined.
// For a world that did not keep an Injector: HealAll(t, plan.InForce()).
func HealAll(t Target, s State) error {
	_, err := healAll(t, s)
	return err
}

// healAll returns what is still in force after trying to undo s.
func healAll(t Target, s State) (State, error) {
	var errs []error
	left := State{}
	undo := func(f Fault, call func() error) bool {
		if err := call(); err != nil {
			errs = append(errs, fmt.Errorf("faults: heal all: %s: %w", f.What(), err))
			return false
		}
		return true
	}
	if s.Network {
		left.Network = !undo(Fault{Kind: Heal}, t.Heal)
	}
	if s.Unclean {
		left.Unclean = !undo(Fault{Kind: UncleanElection}, func() error { return t.UncleanElection(false) })
	}
	for _, n := range s.Crashed {
		if !undo(Fault{Kind: Restart, Node: n}, func() error { return t.Restart(n) }) {
			left.Crashed = append(left.Crashed, n)
		}
	}
	for _, n := range s.Paused {
		if !undo(Fault{Kind: Resume, Node: n}, func() error { return t.Resume(n) }) {
			left.Paused = append(left.Paused, n)
		}
	}
	return left, errors.Join(errs...)
}

// Injector applies faults to a Target and remembers what is in force, so
// that HealAll undoes exactly that at Quiet. It is not safe for concurrent
// use: a world applies its faults from one place.
type Injector struct {
	t     Target
	state State
}

// NewInjector returns an injector over t with nothing in force.
func NewInjector(t Target) *Injector { return &Injector{t: t} }

// Apply dispatches f (see the package function Apply) and, when the world
// carried it out, records its effect.
func (in *Injector) Apply(f Fault) error {
	if err := Apply(in.t, f); err != nil {
		return err
	}
	in.state = in.state.after(f)
	return nil
}

// State returns what is in force now.
func (in *Injector) State() State {
	s := in.state
	s.Crashed, s.Paused = slices.Clone(s.Crashed), slices.Clone(s.Paused)
	return s
}

// HealAll undoes everything in force (see the package function HealAll).
// What the world failed to undo stays recorded, so a second call retries it.
func (in *Injector) HealAll() error {
	left, err := healAll(in.t, in.state)
	in.state = left
	return err
}
