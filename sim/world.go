package sim

import (
	"context"
	"fmt"
	"iter"
	"math/rand/v2"
	"runtime/debug"
	"sort"
	"time"
)

// Config fixes a world. The seed decides every random choice.
type Config struct {
	Seed uint64
	// KeepTrace keeps every trace event (not only the hash), so that two runs
	// can be compared event by event. It costs memory; CheckDeterminism sets it.
	KeepTrace bool
	// Epoch is what Now returns at virtual time zero (default 2026-01-01 UTC).
	Epoch time.Time
	// Net is the default link behaviour (default 1ms..5ms, no loss).
	Net LinkConfig
	// Tie breaks events due at the same virtual time with the PRNG rather
	// than by creation order, to explore more interleavings (default on;
	// set NoRandomTies to order ties by creation).
	NoRandomTies bool
}

// World is one simulated run. It is not safe for concurrent use: exactly one
// task or callback runs at a time, by construction.
type World struct {
	cfg   Config
	now   time.Duration
	seq   uint64
	queue eventQueue
	free  []*event
	rng   *rand.Rand
	trace Trace

	nodes      []*Node
	nodeByName map[string]*Node
	net        *Network

	tasks    map[int]*Task // live tasks by id (iterate via sorted ids only)
	nextTask int
	cur      *Task

	stats    Stats
	panicked error
}

// Stats counts what a run did.
type Stats struct {
	Events   uint64 // events processed
	Switches uint64 // task resumptions
	Messages uint64 // messages delivered
	Dropped  uint64 // messages lost, partitioned or sent to a down node
	Tasks    uint64 // tasks started
}

// New builds an empty world.
func New(cfg Config) *World {
	if cfg.Epoch.IsZero() {
		cfg.Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if cfg.Net.Max == 0 {
		cfg.Net = LinkConfig{Min: time.Millisecond, Max: 5 * time.Millisecond}
	}
	w := &World{
		cfg:        cfg,
		rng:        rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		nodeByName: map[string]*Node{},
		tasks:      map[int]*Task{},
	}
	w.trace.keep = cfg.KeepTrace
	w.trace.hash = fnvOffset
	w.net = newNetwork(w, cfg.Net)
	return w
}

// Seed is the world's seed.
func (w *World) Seed() uint64 { return w.cfg.Seed }

// Now is the virtual time since the run started.
func (w *World) Now() time.Duration { return w.now }

// Rand is the world's single PRNG. Use it only from tasks and callbacks.
func (w *World) Rand() *rand.Rand { return w.rng }

// Net is the simulated network.
func (w *World) Net() *Network { return w.net }

// Stats reports what the run did so far.
func (w *World) Stats() Stats { return w.stats }

// Trace is the run's trace so far.
func (w *World) Trace() *Trace { return &w.trace }

func (w *World) newEvent(at time.Duration, kind eventKind) *event {
	var e *event
	if n := len(w.free); n > 0 {
		e = w.free[n-1]
		w.free = w.free[:n-1]
	} else {
		e = w.queue.newEvent()
	}
	w.seq++
	e.at, e.kind, e.seq, e.dead = at, kind, w.seq, false
	e.order = uint64(uint32(w.seq))
	if !w.cfg.NoRandomTies {
		e.order |= uint64(w.rng.Uint32()) << 32
	}
	return e
}

func (w *World) recycle(e *event) {
	// Drop references so recycled events keep nothing alive; scalar fields
	// are overwritten by newEvent.
	e.task, e.val, e.node, e.from, e.fn, e.d = nil, nil, nil, nil, nil, nil
	w.free = append(w.free, e)
}

// At schedules a harness callback at virtual time t (or now, if t is past).
// Callbacks run between tasks and must not block; tag is folded into the
// trace so that two runs that schedule different work differ in their hash.
func (w *World) At(t time.Duration, tag int64, fn func()) {
	if t < w.now {
		t = w.now
	}
	e := w.newEvent(t, evFunc)
	e.fn, e.tag = fn, tag
	w.queue.push(e)
}

// Run processes events in order until the queue is empty or the next event
// is later than until. It returns the first task panic, wrapped with the
// task's name, and stops there.
func (w *World) Run(until time.Duration) error {
	for w.queue.len() > 0 && w.panicked == nil {
		if w.queue.peekAt() > until {
			w.now = until
			return nil
		}
		e := w.queue.pop()
		w.now = e.at
		w.dispatch(e)
	}
	if w.panicked == nil && w.now < until && w.queue.len() == 0 {
		w.now = until
	}
	return w.panicked
}

// Idle reports whether nothing is left to do.
func (w *World) Idle() bool { return w.queue.len() == 0 }

func (w *World) dispatch(e *event) {
	w.stats.Events++
	switch e.kind {
	case evWake:
		t := e.task
		if t.done || e.park != t.park {
			w.recycle(e)
			return // stale: the task already woke for another reason
		}
		if t.node.paused {
			t.node.deferred = append(t.node.deferred, e)
			return
		}
		w.trace.add(e.at, TraceWake, int32(t.id), 0)
		t.park++ // consume: any other wake for this park is now stale
		t.wakeVal = e.val
		w.recycle(e)
		w.dropWakes(t)
		w.resume(t)
	case evDeliver:
		n := e.node
		if n.paused {
			n.deferred = append(n.deferred, e)
			return
		}
		if !n.up || w.net.blocked(e.from, n) {
			w.stats.Dropped++
			w.trace.add(e.at, TraceDrop, int32(n.id), int64(e.from.id))
			w.recycle(e)
			return
		}
		w.stats.Messages++
		w.trace.add(e.at, TraceDeliver, int32(n.id), int64(e.from.id))
		fn, d := e.fn, e.d
		w.recycle(e)
		if d != nil {
			d.deliver()
		} else {
			fn()
		}
	case evFunc:
		if n := e.node; n != nil {
			if n.paused {
				n.deferred = append(n.deferred, e)
				return
			}
			if !n.up || uint64(n.incarnation) != e.park {
				w.recycle(e)
				return
			}
		}
		w.trace.add(e.at, TraceFunc, 0, e.tag)
		fn := e.fn
		w.recycle(e)
		fn()
	}
}

// Task is one simulated thread of control, pinned to a node.
type Task struct {
	w    *World
	id   int
	name string
	node *Node

	next  func() (struct{}, bool)
	stop  func()
	yield func(struct{}) bool

	park    uint64 // increments at every park; wakes carry the park they are for
	wakeVal any
	killed  bool
	done    bool

	// wakes are the wakes made for the task since it last woke: once one
	// fires (or the task ends) the others are stale, and dropWakes has the
	// queue drop them.
	wakes []*event
}

// errKilled unwinds a task's stack when its node crashes.
type killedPanic struct{}

func (w *World) spawn(n *Node, name string, fn func(ctx context.Context)) *Task {
	w.nextTask++
	t := &Task{w: w, id: w.nextTask, name: n.name + "/" + name, node: n}
	w.trace.names(t.id, t.name)
	t.next, t.stop = iter.Pull(func(yield func(struct{}) bool) {
		t.yield = yield
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(killedPanic); !ok && w.panicked == nil {
					w.panicked = fmt.Errorf("sim: task %s panicked at %v: %v\n%s", t.name, w.now, r, debug.Stack())
				}
			}
		}()
		fn(context.Background())
	})
	w.tasks[t.id] = t
	n.tasks = append(n.tasks, t)
	w.stats.Tasks++
	w.trace.add(w.now, TraceSpawn, int32(t.id), int64(n.id))
	w.wakeAt(t, w.now, nil)
	return t
}

// wakeAt schedules t to resume at time at for its current park.
func (w *World) wakeAt(t *Task, at time.Duration, val any) {
	e := w.newEvent(at, evWake)
	e.task, e.park, e.val = t, t.park, val
	w.queue.push(e)
	t.wakes = append(t.wakes, e)
}

// dropWakes marks t's stale wakes in the queue dead: those for a park it
// has left, or any once it ended. Once dead entries are a third of the
// queue, they are taken out all at once (eventQueue.compact), so that
// they neither deepen the heap nor get popped for nothing (a call's
// timeout, most often: they were over half the queue). The list may name
// events recycled since (fired, or lost in a crash) and made again for
// something else, so each is checked to be still queued and still a
// stale wake of t; a stale wake held back by a paused node is discarded
// when it comes (dispatch), as before. Only events that could never do
// anything are dropped: the run is unchanged, but for Stats.Events, which
// no longer counts those compacted away.
func (w *World) dropWakes(t *Task) {
	full := false
	for i, e := range t.wakes {
		if e.queued && !e.dead && e.kind == evWake && e.task == t && (t.done || e.park != t.park) {
			full = w.queue.kill(e) || full
		}
		t.wakes[i] = nil
	}
	t.wakes = t.wakes[:0]
	if full {
		w.queue.compact(w.recycle)
	}
}

func (w *World) resume(t *Task) {
	w.cur = t
	w.stats.Switches++
	_, alive := t.next()
	w.cur = nil
	if !alive {
		w.finish(t)
	}
}

func (w *World) finish(t *Task) {
	if t.done {
		return
	}
	t.done = true
	w.dropWakes(t)
	delete(w.tasks, t.id)
	t.node.removeTask(t)
	w.trace.add(w.now, TraceExit, int32(t.id), 0)
}

// kill stops a task at its current yield point, running its deferred calls.
func (w *World) kill(t *Task) {
	if t.done {
		return
	}
	t.killed = true
	if t == w.cur {
		return // it unwinds at its next yield point
	}
	prev := w.cur
	w.cur = t
	t.stop()
	w.cur = prev
	w.finish(t)
}

// parkCurrent suspends the running task until a wake for this park fires.
func (t *Task) parkCurrent() any {
	if t.killed {
		panic(killedPanic{})
	}
	if !t.yield(struct{}{}) || t.killed {
		panic(killedPanic{})
	}
	v := t.wakeVal
	t.wakeVal = nil
	return v
}

// current returns the running task, or panics with a message that names the
// rule: blocking calls are only for code running inside a task.
func (w *World) current(op string) *Task {
	if w.cur == nil {
		panic(fmt.Sprintf("sim: %s called outside a task (from a callback or another goroutine)", op))
	}
	return w.cur
}

// sleep parks the current task for d of virtual time.
func (w *World) sleep(d time.Duration) {
	t := w.current("Sleep")
	if d < 0 {
		d = 0
	}
	w.wakeAt(t, w.now+d, nil)
	t.parkCurrent()
}

// Result is what a finished run leaves: its trace hash, counters and every
// task that had not ended. Leaked tasks are never dropped silently.
type Result struct {
	Seed    uint64
	Hash    uint64
	End     time.Duration
	Stats   Stats
	Blocked []string // parked when nothing was left that could wake them: a deadlock
	Running []string // still had work pending when the run stopped at its deadline
	Trace   *Trace
}

// Stop ends the run: it kills every remaining task (in id order) and reports
// which were still running and which were blocked for good.
func (w *World) Stop() Result {
	ids := make([]int, 0, len(w.tasks))
	for id := range w.tasks {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	res := Result{Seed: w.cfg.Seed, End: w.now, Stats: w.stats, Trace: &w.trace}
	idle := w.Idle()
	for _, id := range ids {
		t := w.tasks[id]
		if !idle || t.node.paused {
			res.Running = append(res.Running, t.name)
		} else {
			res.Blocked = append(res.Blocked, t.name)
		}
		w.kill(t)
	}
	res.Hash = w.trace.hash
	return res
}
