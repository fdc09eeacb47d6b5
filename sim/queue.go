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

	id uint32 // the event's index in the queue's byID, for life

	queued bool // in the heap
	dead   bool // in the heap but stale: compact may take it out
}

// queued is an event's place in the queue: its ordering key copied out of
// the event, and the event's id. The heap holds no pointers, so moving an
// entry costs no write barrier while the garbage collector runs, the
// collector never scans the heap, and comparing two entries reads neither
// event.
type queued struct {
	at    time.Duration
	order uint64
	id    uint32
}

func (a queued) before(b queued) bool {
	return a.at < b.at || a.at == b.at && a.order < b.order
}

// eventQueue is a binary min-heap of events by (at, tie, seq), over ids
// into byID, which holds every event the world ever made (they are
// recycled, so it stays as long as the most events ever pending at once).
// Hand-written rather than container/heap to avoid boxing every event in
// an interface.
type eventQueue struct {
	heap []queued
	byID []*event
	// dead is how many entries of the heap are known stale (event.dead):
	// when they are a third of it, compact takes them out.
	dead int
}

// newEvent makes an event the queue can hold; the world recycles them.
func (q *eventQueue) newEvent() *event {
	e := &event{id: uint32(len(q.byID))}
	q.byID = append(q.byID, e)
	return e
}

func (q *eventQueue) len() int { return len(q.heap) }

// peekAt is when the next event is due.
func (q *eventQueue) peekAt() time.Duration { return q.heap[0].at }

func (q *eventQueue) push(e *event) {
	e.queued = true
	x := queued{at: e.at, order: e.order, id: e.id}
	q.heap = append(q.heap, x)
	// Sift up a hole rather than swapping: one write per level.
	i := len(q.heap) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !x.before(q.heap[p]) {
			break
		}
		q.heap[i] = q.heap[p]
		i = p
	}
	q.heap[i] = x
}

func (q *eventQueue) pop() *event {
	top := q.heap[0]
	last := len(q.heap) - 1
	x := q.heap[last]
	h := q.heap[:last]
	q.heap = h
	if last > 0 {
		// Move the hole at the root down to a leaf along the smaller
		// children, then sift the last entry up from there: it came from
		// the bottom, so it rarely climbs far, and each level on the way
		// down costs one comparison instead of two.
		i := 0
		for {
			m := 2*i + 1
			if m >= last {
				break
			}
			if r := m + 1; r < last && h[r].before(h[m]) {
				m = r
			}
			h[i] = h[m]
			i = m
		}
		for i > 0 {
			p := (i - 1) / 2
			if !x.before(h[p]) {
				break
			}
			h[i] = h[p]
			i = p
		}
		h[i] = x
	}
	e := q.byID[top.id]
	e.queued = false
	if e.dead {
		q.dead--
	}
	return e
}

// kill marks e, which is in the heap, stale, and reports whether stale
// entries are now a third of a heap worth compacting (measured: better
// than a half, a quarter or a sixth, all better than leaving them to be
// popped).
func (q *eventQueue) kill(e *event) bool {
	e.dead = true
	q.dead++
	return q.dead >= 16 && 3*q.dead >= len(q.heap)
}

// compact takes every dead entry out of the heap, handing its event to
// drop, and heapifies what is left. Entries keep their keys, so the order
// in which the rest comes out is unchanged.
func (q *eventQueue) compact(drop func(*event)) {
	h := q.heap[:0]
	for _, x := range q.heap {
		if e := q.byID[x.id]; e.dead {
			e.queued = false
			drop(e)
		} else {
			h = append(h, x)
		}
	}
	clear(q.heap[len(h):])
	q.heap, q.dead = h, 0
	for i := len(h)/2 - 1; i >= 0; i-- {
		x := h[i]
		j := i
		for {
			m := 2*j + 1
			if m >= len(h) {
				break
			}
			if r := m + 1; r < len(h) && h[r].before(h[m]) {
				m = r
			}
			if !h[m].before(x) {
				break
			}
			h[j] = h[m]
			j = m
		}
		h[j] = x
	}
}
