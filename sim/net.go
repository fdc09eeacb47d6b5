package sim

import (
	"context"
	"fmt"
	"time"

	"lockstep/pipeline"
)

// LinkConfig is how a directed link behaves: latency drawn uniformly from
// [Min, Max], and each message lost with probability Loss.
type LinkConfig struct {
	Min, Max time.Duration
	Loss     float64
}

// Network carries messages between nodes. Links are directed: a one-way
// partition blocks a->b and leaves b->a open. A message is dropped when its
// link is blocked at send or at delivery time, when it is lost, or when its
// destination is down on arrival.
type Network struct {
	w       *World
	def     LinkConfig
	links   map[[2]int]LinkConfig
	blocks  map[[2]int]bool
	nblocks int
}

func newNetwork(w *World, def LinkConfig) *Network {
	return &Network{w: w, def: def, links: map[[2]int]LinkConfig{}, blocks: map[[2]int]bool{}}
}

// SetLink overrides the behaviour of the directed link from -> to.
func (nw *Network) SetLink(from, to *Node, c LinkConfig) {
	nw.w.trace.add(nw.w.now, TraceLink, int32(from.id), int64(to.id))
	nw.links[[2]int{from.id, to.id}] = c
}

// Link returns the behaviour of from -> to.
func (nw *Network) Link(from, to *Node) LinkConfig {
	if len(nw.links) == 0 { // every message asks; links are rarely set
		return nw.def
	}
	if c, ok := nw.links[[2]int{from.id, to.id}]; ok {
		return c
	}
	return nw.def
}

// Partition cuts every link from a node of a to a node of b, and back unless
// oneWay.
func (nw *Network) Partition(a, b []*Node, oneWay bool) {
	for _, x := range a {
		for _, y := range b {
			nw.block(x, y)
			if !oneWay {
				nw.block(y, x)
			}
		}
	}
}

func (nw *Network) block(x, y *Node) {
	k := [2]int{x.id, y.id}
	if !nw.blocks[k] {
		nw.blocks[k] = true
		nw.nblocks++
		nw.w.trace.add(nw.w.now, TraceBlock, int32(x.id), int64(y.id))
	}
}

// Heal removes every partition and restores every link to the default.
func (nw *Network) Heal() {
	nw.w.trace.add(nw.w.now, TraceHeal, 0, 0)
	clear(nw.blocks)
	clear(nw.links)
	nw.nblocks = 0
}

// Blocked reports whether a partition cuts from -> to right now.
func (nw *Network) Blocked(from, to *Node) bool { return nw.blocked(from, to) }

func (nw *Network) blocked(from, to *Node) bool {
	return nw.nblocks > 0 && nw.blocks[[2]int{from.id, to.id}]
}

// Send schedules fn to run at node to, after the link's latency, unless the
// message is dropped. fn runs against whatever incarnation of to is up then.
func (nw *Network) Send(from, to *Node, fn func()) {
	if e := nw.message(from, to); e != nil {
		e.fn = fn
		nw.w.queue.push(e)
	}
}

// send is Send for a message that is a deliverer, so that a call's request
// and answer need no closure each.
func (nw *Network) send(from, to *Node, d deliverer) {
	if e := nw.message(from, to); e != nil {
		e.d = d
		nw.w.queue.push(e)
	}
}

// message draws the fate of a message from -> to: nil when it is dropped,
// else its delivery event, not yet queued.
func (nw *Network) message(from, to *Node) *event {
	w := nw.w
	c := nw.Link(from, to)
	if nw.blocked(from, to) || (c.Loss > 0 && w.rng.Float64() < c.Loss) {
		w.stats.Dropped++
		w.trace.add(w.now, TraceLost, int32(to.id), int64(from.id))
		return nil
	}
	lat := c.Min
	if c.Max > c.Min {
		lat += time.Duration(w.rng.Int64N(int64(c.Max - c.Min + 1)))
	}
	e := w.newEvent(w.now+lat, evDeliver)
	e.node, e.from = to, from
	return e
}

// deliverer is a message that runs itself when it arrives.
type deliverer interface{ deliver() }

// CallAsync is Call for a handler that answers later: it gets a reply
// function to call once, now or from a later event on the same node (a
// long poll that waits for data). A reply from a node that crashed or
// restarted since the request arrived is dropped, as its connection died.
func CallAsync[S any, R any](ctx context.Context, from, to *Node, timeout time.Duration, handler func(s S, reply func(R, error))) (R, error) {
	return start(ctx, &call[S, R]{from: from, to: to, async: handler}, timeout)
}

// Call sends a request from the running task on node from to node to, runs
// handler there against to's current state (of type S) and parks the caller
// until the answer is back or timeout passes. A timeout returns
// pipeline.ErrTimeout and is ambiguous: the handler may or may not have run.
// A node whose state is not an S ignores the request (the caller times out).
func Call[S any, R any](ctx context.Context, from, to *Node, timeout time.Duration, handler func(S) (R, error)) (R, error) {
	return start(ctx, &call[S, R]{from: from, to: to, sync: handler}, timeout)
}

// call is one request and its answer: both messages deliver it, the
// request to the handler at to, the answer back to the parked caller (one
// allocation per call, where closures took six).
type call[S any, R any] struct {
	from, to *Node
	sync     func(S) (R, error)
	async    func(S, func(R, error))

	t        *Task
	park     uint64 // the caller's park the answer is for
	inc      int    // to's incarnation that took the request
	replied  bool
	answered bool // the answer is on its way (the request was delivered)
	val      R
	err      error
}

func start[S any, R any](ctx context.Context, c *call[S, R], timeout time.Duration) (R, error) {
	w := c.from.w
	t := w.current("Call")
	if t.node != c.from {
		panic(fmt.Sprintf("sim: task %s called from node %s", t.name, c.from.name))
	}
	if err := ctx.Err(); err != nil {
		var zero R
		return zero, err
	}
	c.t, c.park = t, t.park
	w.net.send(c.from, c.to, c)
	w.wakeAt(t, w.now+timeout, nil)
	if v := t.parkCurrent(); v == deliverer(c) {
		return c.val, c.err
	}
	var zero R
	return zero, pipeline.ErrTimeout
}

func (c *call[S, R]) deliver() {
	w := c.from.w
	if c.answered { // the answer reaches the caller
		if !c.t.done && c.t.park == c.park {
			w.wakeAt(c.t, w.now, deliverer(c))
		}
		return
	}
	s, ok := c.to.state.(S)
	if !ok {
		return
	}
	c.inc = c.to.incarnation
	if c.sync != nil {
		c.reply(c.sync(s))
		return
	}
	c.async(s, c.reply)
}

// reply sends the answer once, unless to crashed or restarted since it took
// the request (its connection died with it).
func (c *call[S, R]) reply(r R, err error) {
	if c.replied || !c.to.up || c.to.incarnation != c.inc {
		return
	}
	c.replied, c.answered = true, true
	c.val, c.err = r, err
	c.from.w.net.send(c.to, c.from, c)
}
