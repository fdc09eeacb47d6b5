package sim

import "time"

type eventKind uint8

const (
	evWake    eventKind = iota + 1 // resume a parked task
	evDeliver                      // a message arrives at a node
	evFunc                         // a harness callback (faults, sampling)
)

type event struct {
	at time.Duration
	// order breaks ties between events due at the same time: the seeded
	// random tie in the high 32 bits, the creation sequence in the low 32
	// (so equal ties fall back to creation order).
	order uint64
	seq   uint64
	kind  eventKind

	task *Task  // evWake
	park uint64 // evWake: the park this wake belongs to; stale when the task moved on
	val  any    // evWake: value handed to the woken task

	node *Node     // evDeliver: destination; evFunc: optional owner
	from *Node     // evDeliver: sender, for tracing and partitions
	fn   func()    // evDeliver, evFunc
	d    deliverer // evDeliver: a message that runs itself instead of fn
	tag  int64     // evFunc: a caller-chosen number folded into the trace
}

func (a *event) before(b *event) bool {
	return a.at < b.at || a.at == b.at && a.order < b.order
}

// eventQueue is a min-heap of events by (at, order), four children per
// node: half as deep as a binary heap. Each slot holds its event's sort
// key, so sifting compares without following pointers. Hand-written rather
// than container/heap to avoid boxing every event in an interface.
type eventQueue struct{ items []queued }

type queued struct {
	at    time.Duration
	order uint64
	e     *event
}

func (a queued) before(b queued) bool {
	return a.at < b.at || a.at == b.at && a.order < b.order
}

func (q *eventQueue) len() int { return len(q.items) }

func (q *eventQueue) peek() *event { return q.items[0].e }

func (q *eventQueue) push(e *event) {
	x := queued{e.at, e.order, e}
	q.items = append(q.items, x)
	items := q.items
	i := len(items) - 1
	for i > 0 {
		p := (i - 1) / 4
		if !x.before(items[p]) {
			break
		}
		items[i] = items[p]
		i = p
	}
	items[i] = x
}

func (q *eventQueue) pop() *event {
	items := q.items
	top := items[0].e
	last := len(items) - 1
	x := items[last]
	items[last] = queued{}
	items = items[:last]
	q.items = items
	if last == 0 {
		return top
	}
	i := 0
	for {
		first := 4*i + 1
		if first >= last {
			break
		}
		m := first
		for c := first + 1; c < first+4 && c < last; c++ {
			if items[c].before(items[m]) {
				m = c
			}
		}
		if !items[m].before(x) {
			break
		}
		items[i] = items[m]
		i = m
	}
	items[i] = x
	return top
}
