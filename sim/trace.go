package sim

import (
	"fmt"
	"time"
)

// TraceKind is what a trace event records.
type TraceKind uint8

const (
	TraceWake TraceKind = iota + 1
	TraceSpawn
	TraceExit
	TraceDeliver
	TraceDrop
	TraceLost
	TraceFunc
	TraceCrash
	TraceRestart
	TracePause
	TraceResume
	TraceClockJump
	TraceLink
	TraceBlock
	TraceHeal
)

var traceKindNames = [...]string{"?", "wake", "spawn", "exit", "deliver", "drop", "lost", "func", "crash", "restart", "pause", "resume", "clock-jump", "link", "block", "heal"}

func (k TraceKind) String() string {
	if int(k) < len(traceKindNames) {
		return traceKindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// TraceEvent is one scheduling decision or message, kept compact: a kind, a
// subject (task or node id) and one argument.
type TraceEvent struct {
	At      time.Duration
	Kind    TraceKind
	Subject int32
	Arg     int64
}

// Trace is a run's record: a running FNV-1a hash over every event, and the
// events themselves when kept.
type Trace struct {
	keep      bool
	hash      uint64
	n         uint64
	Events    []TraceEvent
	taskNames map[int32]string
	nodeNames map[int32]string
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func (tr *Trace) add(at time.Duration, k TraceKind, subject int32, arg int64) {
	h := tr.hash
	for _, x := range [4]uint64{uint64(at), uint64(k), uint64(subject), uint64(arg)} {
		h ^= x
		h *= fnvPrime
	}
	tr.hash = h
	tr.n++
	if tr.keep {
		tr.Events = append(tr.Events, TraceEvent{At: at, Kind: k, Subject: subject, Arg: arg})
	}
}

// Mix folds a value computed outside the kernel (a store's final state, a
// verdict) into the hash, so the hash covers what the run produced too.
func (tr *Trace) Mix(x uint64) {
	tr.hash ^= x
	tr.hash *= fnvPrime
}

// Hash is the trace hash so far.
func (tr *Trace) Hash() uint64 { return tr.hash }

// Len is the number of events recorded so far.
func (tr *Trace) Len() uint64 { return tr.n }

func (tr *Trace) names(id int, name string) {
	if tr.keep {
		if tr.taskNames == nil {
			tr.taskNames = map[int32]string{}
		}
		tr.taskNames[int32(id)] = name
	}
}

func (tr *Trace) nodeName(id int, name string) {
	if tr.nodeNames == nil {
		tr.nodeNames = map[int32]string{}
	}
	tr.nodeNames[int32(id)] = name
}

// Describe renders an event with task and node names.
func (tr *Trace) Describe(e TraceEvent) string {
	switch e.Kind {
	case TraceWake, TraceExit:
		return fmt.Sprintf("%v %s task %s", e.At, e.Kind, tr.taskNames[e.Subject])
	case TraceSpawn:
		return fmt.Sprintf("%v spawn task %s on %s", e.At, tr.taskNames[e.Subject], tr.nodeNames[int32(e.Arg)])
	case TraceDeliver, TraceDrop, TraceLost:
		return fmt.Sprintf("%v %s message %s -> %s", e.At, e.Kind, tr.nodeNames[int32(e.Arg)], tr.nodeNames[e.Subject])
	case TraceLink, TraceBlock:
		return fmt.Sprintf("%v %s %s -> %s", e.At, e.Kind, tr.nodeNames[e.Subject], tr.nodeNames[int32(e.Arg)])
	case TraceFunc:
		return fmt.Sprintf("%v callback tag=%d", e.At, e.Arg)
	case TraceHeal:
		return fmt.Sprintf("%v heal", e.At)
	default:
		return fmt.Sprintf("%v %s %s arg=%d", e.At, e.Kind, tr.nodeNames[e.Subject], e.Arg)
	}
}

// CheckDeterminism runs the same seed twice with full traces and returns an
// error naming the first event where the two runs differ, or nil. run must
// build a fresh world from cfg and return its Result.
func CheckDeterminism(seed uint64, run func(cfg Config) (Result, error)) error {
	cfg := Config{Seed: seed, KeepTrace: true}
	a, errA := run(cfg)
	b, errB := run(cfg)
	if (errA == nil) != (errB == nil) || (errA != nil && errA.Error() != errB.Error()) {
		return fmt.Errorf("seed %d: runs ended differently: %v vs %v", seed, errA, errB)
	}
	if a.Hash == b.Hash {
		return nil
	}
	ea, eb := a.Trace.Events, b.Trace.Events
	for i := 0; i < len(ea) && i < len(eb); i++ {
		if ea[i] != eb[i] {
			return fmt.Errorf("seed %d: trace hashes differ (%016x vs %016x); first difference at event %d: %s vs %s",
				seed, a.Hash, b.Hash, i, a.Trace.Describe(ea[i]), b.Trace.Describe(eb[i]))
		}
	}
	return fmt.Errorf("seed %d: trace hashes differ (%016x vs %016x); one run has %d events, the other %d",
		seed, a.Hash, b.Hash, len(ea), len(eb))
}
