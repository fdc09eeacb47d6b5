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

// eventQueue is a binary min-heap of events by (at, tie, seq). Hand-written
// rather than container/heap to avoid boxing every event in an interface.
type eventQueue struct{ items []*event }

func (q *eventQueue) len() int { return len(q.items) }

func (q *eventQueue) peek() *event { return q.items[0] }

func (q *eventQueue) push(e *event) {
	q.items = append(q.items, e)
	i := len(q.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.items[i].before(q.items[p]) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

func (q *eventQueue) pop() *event {
	top := q.items[0]
	last := len(q.items) - 1
	q.items[0] = q.items[last]
	q.items[last] = nil
	q.items = q.items[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && q.items[l].before(q.items[m]) {
			m = l
		}
		if r < last && q.items[r].before(q.items[m]) {
			m = r
		}
		if m == i {
			break
		}
		q.items[i], q.items[m] = q.items[m], q.items[i]
		i = m
	}
	return top
}
