package scenarios

import (
	"fmt"
	"time"

	"lockstep/sim"
	"lockstep/sim/services"
)

// simTarget applies faults to the simulated world (faults.Target).
type simTarget struct{ x *world }

func (t *simTarget) node(name string) (*sim.Node, error) {
	n, ok := t.x.w.Node(name)
	if !ok {
		return nil, fmt.Errorf("no node %q in this world", name)
	}
	return n, nil
}

func (t *simTarget) nodes(names []string) ([]*sim.Node, error) {
	var out []*sim.Node
	for _, name := range names {
		n, err := t.node(name)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (t *simTarget) each(name string, fn func(*sim.Node)) error {
	n, err := t.node(name)
	if err == nil {
		fn(n)
	}
	return err
}

func (t *simTarget) Crash(name string) error   { return t.each(name, (*sim.Node).Crash) }
func (t *simTarget) Restart(name string) error { return t.each(name, (*sim.Node).Restart) }
func (t *simTarget) Pause(name string) error   { return t.each(name, (*sim.Node).Pause) }
func (t *simTarget) Resume(name string) error  { return t.each(name, (*sim.Node).Resume) }

func (t *simTarget) Partition(a, b []string, oneWay bool) error {
	na, err := t.nodes(a)
	if err != nil {
		return err
	}
	nb, err := t.nodes(b)
	if err != nil {
		return err
	}
	t.x.w.Net().Partition(na, nb, oneWay)
	return nil
}

func (t *simTarget) Heal() error {
	t.x.w.Net().Heal()
	if t.x.cluster != nil {
		t.x.cluster.HealAppends()
	}
	return nil
}

// LostAck and LostAppend are the log's: its brokers lose the answers to, or
// the requests of, node's appends. A world without a log (dual writes) has
// nothing to lose.
func (t *simTarget) LostAck(node string, p float64) error {
	return t.appends(node, func(c *services.Cluster) { c.LoseAcks(node, p) })
}

func (t *simTarget) LostAppend(node string, p float64) error {
	return t.appends(node, func(c *services.Cluster) { c.LoseAppends(node, p) })
}

func (t *simTarget) appends(node string, set func(*services.Cluster)) error {
	if _, err := t.node(node); err != nil {
		return err
	}
	if t.x.cluster != nil {
		set(t.x.cluster)
	}
	return nil
}

func (t *simTarget) Delay(from, to string, min, max time.Duration) error {
	return t.link(from, to, func(c *sim.LinkConfig) { c.Min, c.Max = min, max })
}

func (t *simTarget) Loss(from, to string, p float64) error {
	return t.link(from, to, func(c *sim.LinkConfig) { c.Loss = p })
}

// link changes one directed link's behaviour, keeping what the change does
// not touch (a lossy link that is then slowed stays lossy).
func (t *simTarget) link(from, to string, change func(*sim.LinkConfig)) error {
	f, err := t.node(from)
	if err != nil {
		return err
	}
	g, err := t.node(to)
	if err != nil {
		return err
	}
	c := t.x.w.Net().Link(f, g)
	change(&c)
	t.x.w.Net().SetLink(f, g, c)
	return nil
}

func (t *simTarget) ClockJump(name string, d time.Duration) error {
	return t.each(name, func(n *sim.Node) { n.JumpClock(d) })
}

// failoverDowntime is how long a failed-over leader stays down; under the
// generator's FailoverDowntime (3s) so broker limits hold.
const failoverDowntime = 2 * time.Second

func (t *simTarget) LeaderFailover() error {
	if t.x.cluster == nil {
		return nil // no log in this system: nothing to fail over
	}
	leader := t.x.cluster.Leader()
	if leader == nil {
		return nil
	}
	leader.Crash()
	w := t.x.w
	w.At(w.Now()+failoverDowntime, -3, leader.Restart)
	return nil
}

func (t *simTarget) UncleanElection(on bool) error {
	if t.x.cluster != nil {
		t.x.cluster.SetUnclean(on)
	}
	return nil
}

func (t *simTarget) SecondInstance(name string) error { return t.x.startSecond(name) }

// Retention deletes the log's old records. A world without a log (dual
// writes) has nothing to delete.
func (t *simTarget) Retention(keep time.Duration) error {
	if t.x.cluster != nil {
		t.x.cluster.Retain(keep)
	}
	return nil
}

// SlotDrop drops the source database's replication slot. The database must
// be up: a slot is dropped by a session on it.
func (t *simTarget) SlotDrop(name string) error {
	n, err := t.node(name)
	if err != nil {
		return err
	}
	db, ok := n.State().(*services.SourceDB)
	if !ok || !n.Up() {
		return fmt.Errorf("slot-drop: %s is not a running source database", name)
	}
	db.DropSlot()
	return nil
}

// healEverything is the quiet phase's safety net: whatever is still down or
// paused comes back, so convergence can be judged.
func (t *simTarget) healEverything() {
	_ = t.Heal()
	for _, n := range t.x.w.Nodes() {
		if !n.Up() {
			n.Restart()
		}
		if n.Paused() {
			n.Resume()
		}
	}
}
