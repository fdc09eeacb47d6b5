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
	w := nw.w
	c := nw.Link(from, to)
	if nw.blocked(from, to) || (c.Loss > 0 && w.rng.Float64() < c.Loss) {
		w.stats.Dropped++
		w.trace.add(w.now, TraceLost, int32(to.id), int64(from.id))
		return
	}
	lat := c.Min
	if c.Max > c.Min {
		lat += time.Duration(w.rng.Int64N(int64(c.Max - c.Min + 1)))
	}
	e := w.newEvent(w.now+lat, evDeliver)
	e.node, e.from, e.fn = to, from, fn
	w.queue.push(e)
}

// CallAsync is Call for a handler that answers later: it gets a reply
// function to call once, now or from a later event on the same node (a
// long poll that waits for data). A reply from a node that crashed or
// restarted since the request arrived is dropped, as its connection died.
func CallAsync[S any, R any](ctx context.Context, from, to *Node, timeout time.Duration, handler func(s S, reply func(R, error))) (R, error) {
	var zero R
	w := from.w
	t := w.current("CallAsync")
	if t.node != from {
		panic(fmt.Sprintf("sim: task %s called from node %s", t.name, from.name))
	}
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	park := t.park
	w.net.Send(from, to, func() {
		s, ok := to.state.(S)
		if !ok {
			return
		}
		inc, replied := to.incarnation, false
		handler(s, func(r R, err error) {
			if replied || !to.up || to.incarnation != inc {
				return
			}
			replied = true
			w.net.Send(to, from, func() {
				if t.done || t.park != park {
					return
				}
				w.wakeAt(t, w.now, callResult[R]{val: r, err: err})
			})
		})
	})
	w.wakeAt(t, w.now+timeout, nil)
	v := t.parkCurrent()
	if res, ok := v.(callResult[R]); ok {
		return res.val, res.err
	}
	return zero, pipeline.ErrTimeout
}

type callResult[R any] struct {
	val R
	err error
}

// Call sends a request from the running task on node from to node to, runs
// handler there against to's current state (of type S) and parks the caller
// until the answer is back or timeout passes. A timeout returns
// pipeline.ErrTimeout and is ambiguous: the handler may or may not have run.
// A node whose state is not an S ignores the request (the caller times out).
func Call[S any, R any](ctx context.Context, from, to *Node, timeout time.Duration, handler func(S) (R, error)) (R, error) {
	return CallAsync(ctx, from, to, timeout, func(s S, reply func(R, error)) { reply(handler(s)) })
}
