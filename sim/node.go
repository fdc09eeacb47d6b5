package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Node is a simulated process: it runs tasks, serves calls with its current
// state, owns a Disk, and can crash, restart, pause and resume.
type Node struct {
	w    *World
	id   int
	name string

	up, paused  bool
	incarnation int
	clockSkew   time.Duration

	disk *Disk
	boot func(n *Node) any
	// state is the volatile state of the current incarnation, built by boot
	// from the disk; calls are served against it.
	state any

	tasks    []*Task
	deferred []*event // events held back while paused
}

// AddNode adds a node and boots it. boot builds the node's volatile state from
// its disk and may start tasks with n.Go; it runs again at every restart.
func (w *World) AddNode(name string, boot func(n *Node) any) *Node {
	if _, dup := w.nodeByName[name]; dup {
		panic(fmt.Sprintf("sim: node %q added twice", name))
	}
	n := &Node{w: w, id: len(w.nodes) + 1, name: name, boot: boot, disk: newDisk()}
	w.nodes = append(w.nodes, n)
	w.nodeByName[name] = n
	w.trace.nodeName(n.id, name)
	n.start()
	return n
}

// Node returns a node by name.
func (w *World) Node(name string) (*Node, bool) {
	n, ok := w.nodeByName[name]
	return n, ok
}

// Nodes returns every node in the order they were added.
func (w *World) Nodes() []*Node { return append([]*Node(nil), w.nodes...) }

func (n *Node) start() {
	n.up = true
	n.incarnation++
	n.state = nil
	if n.boot != nil {
		n.state = n.boot(n)
	}
}

func (n *Node) Name() string       { return n.name }
func (n *Node) Up() bool           { return n.up }
func (n *Node) Paused() bool       { return n.paused }
func (n *Node) Incarnation() int   { return n.incarnation }
func (n *Node) Disk() *Disk        { return n.disk }
func (n *Node) World() *World      { return n.w }
func (n *Node) State() any         { return n.state }
func (n *Node) String() string     { return n.name }
func (n *Node) Rand() *rand.Rand   { return n.w.rng }
func (n *Node) Now() time.Duration { return n.w.now + n.clockSkew }

// Go starts a task on this node. Called from a task it is a yield point.
func (n *Node) Go(name string, fn func(ctx context.Context)) {
	if !n.up {
		return // a dead process starts nothing
	}
	n.w.spawn(n, name, fn)
	if n.w.cur != nil {
		n.w.sleep(0)
	}
}

// Crash stops the node: its tasks die at their current yield point, its
// volatile state is thrown away, and its disk keeps only what was synced plus
// a random prefix of what was not.
func (n *Node) Crash() {
	if !n.up {
		return
	}
	n.w.trace.add(n.w.now, TraceCrash, int32(n.id), 0)
	n.up, n.paused = false, false
	for _, e := range n.deferred {
		n.w.recycle(e) // what waited for the node is lost with it
	}
	n.deferred = nil
	for len(n.tasks) > 0 {
		n.w.kill(n.tasks[0])
	}
	n.state = nil
	n.disk.crash(n.w.rng)
}

// Restart boots a crashed node again from its disk alone.
func (n *Node) Restart() {
	if n.up {
		return
	}
	n.w.trace.add(n.w.now, TraceRestart, int32(n.id), 0)
	n.start()
}

// Pause freezes the node: its tasks do not run and messages to it wait, as in
// a stop-the-world pause. Callers elsewhere keep their own deadlines.
func (n *Node) Pause() {
	if !n.up || n.paused {
		return
	}
	n.w.trace.add(n.w.now, TracePause, int32(n.id), 0)
	n.paused = true
}

// Resume wakes a paused node; what waited is processed now, as a zombie
// that does not know time has passed. The held events keep their random
// ties, so they run in an order the seed draws, not the order they came in:
// requests that piled up behind a stalled process are not bound to be
// served in the order they were sent (this is how the simulator found a
// late snapshot request remaking the slot; see trust-slot-position).
func (n *Node) Resume() {
	if !n.paused {
		return
	}
	n.w.trace.add(n.w.now, TraceResume, int32(n.id), 0)
	n.paused = false
	held := n.deferred
	n.deferred = nil
	for _, e := range held {
		e.at = n.w.now
		n.w.seq++
		e.seq = n.w.seq
		e.order = e.order&^0xffffffff | uint64(uint32(n.w.seq))
		n.w.queue.push(e)
	}
}

// At schedules fn on this node at virtual time t: it waits while the node
// is paused and is dropped if the node crashed in between (it belonged to
// the incarnation that scheduled it). Servers use it for their own timers.
func (n *Node) At(t time.Duration, fn func()) {
	w := n.w
	if t < w.now {
		t = w.now
	}
	e := w.newEvent(t, evFunc)
	e.fn, e.node, e.park, e.tag = fn, n, uint64(n.incarnation), int64(-1000-n.id)
	w.queue.push(e)
}

// JumpClock moves the node's wall clock (what Env.Now returns) by d.
func (n *Node) JumpClock(d time.Duration) {
	n.w.trace.add(n.w.now, TraceClockJump, int32(n.id), int64(d))
	n.clockSkew += d
}

func (n *Node) removeTask(t *Task) {
	for i, x := range n.tasks {
		if x == t {
			n.tasks = append(n.tasks[:i], n.tasks[i+1:]...)
			return
		}
	}
}
