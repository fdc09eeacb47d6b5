package faults

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Kind names a kind of fault. Its value is the word used in a plan's text.
type Kind string

const (
	// Crash kills a node's process and throws its volatile state away.
	Crash Kind = "crash"
	// Restart boots a crashed node again from its durable state.
	Restart Kind = "restart"
	// Pause stops a node the world over (SIGSTOP, a long GC): it keeps its
	// state and wakes up later as a possible zombie.
	Pause Kind = "pause"
	// Resume wakes a paused node.
	Resume Kind = "resume"
	// Partition cuts every link between the nodes of group A and those of
	// group B; when OneWay, only messages from A to B are dropped.
	// Partitions stack until the next Heal.
	Partition Kind = "partition"
	// Heal removes every partition, restores every link's latency and loss
	// to the world's defaults and ends lost-ack and lost-append. It does not
	// restart or resume nodes.
	Heal Kind = "heal"
	// Delay makes the link From->To slow: each message takes Min..Max.
	Delay Kind = "delay"
	// Loss makes the link From->To drop each message with probability P, so
	// calls time out with ambiguous results.
	Loss Kind = "loss"
	// ClockJump moves a node's clock by Jump, which may be negative.
	ClockJump Kind = "clock-jump"
	// LeaderFailover kills the broker currently leading the log. The world
	// picks the node and restarts it by itself later (see
	// GenConfig.FailoverDowntime).
	LeaderFailover Kind = "leader-failover"
	// UncleanElection enables unclean leader election on the log until the
	// quiet phase: a lagging replica may become leader, and acknowledged
	// records may be lost.
	UncleanElection Kind = "unclean-election"
	// LostAck makes the log lose the acknowledgement of each append of
	// Node's (a producer: the capture) with probability P, after the append
	// took effect, until the next Heal. The producer sees a timeout; its
	// retry, in the same session, is deduplicated by the log.
	LostAck Kind = "lost-ack"
	// LostAppend makes the log lose each append request of Node's with
	// probability P before any broker takes it: the append did not happen,
	// though to the producer it looks exactly like LostAck, a timeout.
	// Until the next Heal.
	LostAppend Kind = "lost-append"
	// SecondInstance starts a second instance of Node's process (a capture
	// or a sink applier), configured as the first: the same slot, log and
	// store, the same consumer group. It is what an orchestrator does when
	// it takes a process that stopped answering (paused, cut off) for dead
	// and starts a replacement, while the first lives on and may wake up
	// as a zombie. The second instance runs until the run ends; a node has
	// at most one.
	SecondInstance Kind = "second-instance"
	// Retention makes the log delete every record appended more than Keep
	// ago, as Kafka's time-based retention deletes old segments: the log's
	// start offset moves forward, and a consumer asking for an offset
	// before it gets OFFSET_OUT_OF_RANGE. A store behind it, or one
	// rebuilding from the log, must not skip what was deleted.
	Retention Kind = "retention"
	// SlotDrop drops the source database Node's replication slot (an
	// operator, or max_slot_wal_keep_size, did): the WAL the slot held is
	// gone for the capture, which must take a new snapshot.
	SlotDrop Kind = "slot-drop"
)

// Kinds lists every kind in a fixed order, the order used wherever a set of
// kinds is printed.
var Kinds = []Kind{Crash, Restart, Pause, Resume, Partition, Heal, Delay, Loss, ClockJump, LeaderFailover, UncleanElection, LostAck, LostAppend, SecondInstance, Retention, SlotDrop}

// DefaultKinds are the kinds Generate starts by default: every kind that
// begins a fault, except UncleanElection, which loses acknowledged data and so
// must be asked for (GenConfig.Unclean); SecondInstance, which a scenario
// asks for by name (it leaves a process running twice for the rest of the
// run); and Retention and SlotDrop, which only scenarios about them ask for
// (each forces a new snapshot that every store reloads, which would drown the
// other faults' effects). Restart, Resume and Heal are not
// started on their own: the generator emits them to end crashes, pauses and
// network faults.
var DefaultKinds = []Kind{Crash, Pause, Partition, Delay, Loss, ClockJump, LeaderFailover, LostAck, LostAppend}

// Known reports whether k is one of Kinds.
func (k Kind) Known() bool { return kindIndex(k) >= 0 }

// undo reports whether k only ends another fault (restart, resume, heal).
func (k Kind) undo() bool { return k == Restart || k == Resume || k == Heal }

func kindIndex(k Kind) int {
	for i, x := range Kinds {
		if x == k {
			return i
		}
	}
	return -1
}

// Fault is one fault at one instant of a run: plain data, comparable only
// field by field. Which fields a kind uses:
//
//	crash, restart, pause, resume,
//	second-instance                 Node
//	partition                       A, B, OneWay
//	heal, leader-failover,
//	unclean-election                (none)
//	delay                           From, To, Min, Max
//	loss                            From, To, P
//	clock-jump                      Node, Jump
//	lost-ack, lost-append           Node, P
//	retention                       Keep
//	slot-drop                       Node
//
// Fields a kind does not use must be zero (Validate says so), so a valid
// fault has exactly one text form.
type Fault struct {
	At   time.Duration // since the run started
	Kind Kind

	Node string // crash, restart, pause, resume, clock-jump, lost-ack, lost-append, second-instance

	A, B   []string // partition: the two groups, disjoint and non-empty
	OneWay bool     // partition: drop only A->B messages

	From, To string        // delay, loss: the directed link
	Min, Max time.Duration // delay: each message takes Min..Max
	P        float64       // loss, lost-ack, lost-append: drop probability, in (0, 1]

	Jump time.Duration // clock-jump: how far the clock moves, non-zero

	Keep time.Duration // retention: records younger than this stay, positive
}

// String is the fault's line in a plan's text, e.g. "@1.5s crash capture".
func (f Fault) String() string { return "@" + f.At.String() + " " + f.What() }

// What is the fault without its time, e.g. "crash capture" or
// "delay app->db 20ms..80ms": the description used in fault windows.
func (f Fault) What() string {
	switch f.Kind {
	case Crash, Restart, Pause, Resume, SecondInstance:
		return string(f.Kind) + " " + f.Node
	case Partition:
		sep := " | "
		if f.OneWay {
			sep = " -> "
		}
		return string(f.Kind) + " " + strings.Join(f.A, ",") + sep + strings.Join(f.B, ",")
	case Delay:
		return fmt.Sprintf("%s %s->%s %s..%s", f.Kind, f.From, f.To, f.Min, f.Max)
	case Loss:
		return fmt.Sprintf("%s %s->%s %s", f.Kind, f.From, f.To, strconv.FormatFloat(f.P, 'g', -1, 64))
	case ClockJump:
		return string(f.Kind) + " " + f.Node + " " + signed(f.Jump)
	case LostAck, LostAppend:
		return fmt.Sprintf("%s %s %s", f.Kind, f.Node, strconv.FormatFloat(f.P, 'g', -1, 64))
	case Retention:
		return string(f.Kind) + " " + f.Keep.String()
	case SlotDrop:
		return string(f.Kind) + " " + f.Node
	}
	return string(f.Kind)
}

// signed prints a duration with an explicit sign: "+2s", "-150ms".
func signed(d time.Duration) string {
	if d >= 0 {
		return "+" + d.String()
	}
	return d.String()
}

// Validate says what is wrong with a fault, if anything (the first problem
// found, in one line): an unknown kind, a missing or malformed node name, a
// field the kind does not use, a bad probability or latency range.
func (f Fault) Validate() error {
	if f.At < 0 {
		return fmt.Errorf("negative time %s", f.At)
	}
	if !f.Kind.Known() {
		return fmt.Errorf("unknown fault kind %q", string(f.Kind))
	}
	// Which fields the kind uses, to reject the others.
	var node, groups, link, lat, prob, jump, keep bool
	switch f.Kind {
	case Crash, Restart, Pause, Resume, SecondInstance:
		node = true
	case Partition:
		groups = true
	case Delay:
		link, lat = true, true
	case Loss:
		link, prob = true, true
	case ClockJump:
		node, jump = true, true
	case LostAck, LostAppend:
		node, prob = true, true
	case Retention:
		keep = true
	case SlotDrop:
		node = true
	}
	var errs []error
	if node {
		if err := checkName(f.Node); err != nil {
			errs = append(errs, fmt.Errorf("%s needs a node: %w", f.Kind, err))
		}
	} else if f.Node != "" {
		errs = append(errs, fmt.Errorf("%s takes no node (got %q)", f.Kind, f.Node))
	}
	if groups {
		if err := checkGroups(f.A, f.B); err != nil {
			errs = append(errs, err)
		}
	} else if len(f.A) > 0 || len(f.B) > 0 || f.OneWay {
		errs = append(errs, fmt.Errorf("%s takes no partition groups", f.Kind))
	}
	if link {
		if err := checkName(f.From); err != nil {
			errs = append(errs, fmt.Errorf("%s needs a link from->to: from: %w", f.Kind, err))
		}
		if err := checkName(f.To); err != nil {
			errs = append(errs, fmt.Errorf("%s needs a link from->to: to: %w", f.Kind, err))
		}
		if f.From == f.To && f.From != "" {
			errs = append(errs, fmt.Errorf("%s link %s->%s goes nowhere: from and to must differ", f.Kind, f.From, f.To))
		}
	} else if f.From != "" || f.To != "" {
		errs = append(errs, fmt.Errorf("%s takes no link", f.Kind))
	}
	if lat {
		if f.Min < 0 || f.Max < f.Min || f.Max == 0 {
			errs = append(errs, fmt.Errorf("delay range %s..%s: want 0 <= min <= max, max > 0", f.Min, f.Max))
		}
	} else if f.Min != 0 || f.Max != 0 {
		errs = append(errs, fmt.Errorf("%s takes no latency range", f.Kind))
	}
	if prob {
		if !(f.P > 0 && f.P <= 1) || math.IsNaN(f.P) {
			errs = append(errs, fmt.Errorf("%s probability %v: want 0 < p <= 1", f.Kind, f.P))
		}
	} else if f.P != 0 {
		errs = append(errs, fmt.Errorf("%s takes no probability", f.Kind))
	}
	if jump {
		if f.Jump == 0 {
			errs = append(errs, errors.New("clock-jump needs a non-zero jump such as +2s or -500ms"))
		}
	} else if f.Jump != 0 {
		errs = append(errs, fmt.Errorf("%s takes no clock jump", f.Kind))
	}
	if keep {
		if f.Keep <= 0 {
			errs = append(errs, errors.New("retention needs a positive age to keep, such as 3s"))
		}
	} else if f.Keep != 0 {
		errs = append(errs, fmt.Errorf("%s takes no retention age", f.Kind))
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// checkName accepts node names made of letters, digits and "_.-". Names
// never hold spaces, ',', '|', '>' or '#', so a plan's text stays unambiguous.
func checkName(s string) error {
	if s == "" {
		return errors.New("empty node name")
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
		default:
			return fmt.Errorf("node name %q: want letters, digits and _.- only", s)
		}
	}
	return nil
}

func checkGroups(a, b []string) error {
	if len(a) == 0 || len(b) == 0 {
		return errors.New("partition needs two non-empty groups, as in 'a,b | c' or 'a -> b'")
	}
	seen := map[string]string{}
	for _, g := range []struct {
		name  string
		nodes []string
	}{{"A", a}, {"B", b}} {
		for _, n := range g.nodes {
			if err := checkName(n); err != nil {
				return fmt.Errorf("partition group %s: %w", g.name, err)
			}
			if prev, ok := seen[n]; ok {
				if prev == g.name {
					return fmt.Errorf("partition: %s listed twice in group %s", n, g.name)
				}
				return fmt.Errorf("partition: %s is in both groups", n)
			}
			seen[n] = g.name
		}
	}
	return nil
}
