package faults

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Check says whether the plan keeps the promises Generate makes for topo and
// cfg (with cfg's defaults filled in):
//
//   - the plan is valid (Validate) and every node it names is a
//     non-observer node of topo, every link one topo allows, and the node
//     of a lost-ack or lost-append is a capture (the log's producer), that of
//     a second-instance a capture or an applier, with at most one per node;
//   - it starts only kinds cfg allows, and only kinds in Swarm when it has one;
//   - a node is crashed or paused only when up; restarted only when crashed;
//     resumed only when paused;
//   - at no instant are more than cfg.MaxDownBrokers brokers crashed, paused
//     or within cfg.FailoverDowntime of a leader-failover, and every such
//     downtime ends by Quiet;
//   - unclean-election occurs at most once;
//   - by Quiet every crash has been restarted, every pause resumed and every
//     partition, delay, loss, lost-ack and lost-append healed.
//
// A hand-written plan need not pass Check to be run (the world undoes what
// is left at Quiet), but one that does is as gentle as a generated one.
func (p Plan) Check(topo Topology, cfg GenConfig) error {
	cfg = cfg.withDefaults()
	if err := p.Validate(); err != nil {
		return err
	}
	for _, k := range p.Swarm {
		if !cfg.allowed(k) {
			return fmt.Errorf("swarm kind %s is not allowed by the config", k)
		}
	}
	links := topo.links()
	crashed, paused := map[string]bool{}, map[string]bool{}
	var failovers []time.Duration
	net, unclean := false, false
	seconds := map[string]bool{}
	for i, f := range p.Faults {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("fault %d (%s): %s", i, f, fmt.Sprintf(format, args...))
		}
		if !f.Kind.undo() {
			if !cfg.allowed(f.Kind) {
				return fail("kind %s is not allowed by the config", f.Kind)
			}
			if p.Swarm != nil && !slices.Contains(p.Swarm, f.Kind) {
				return fail("kind %s is not in the plan's swarm %s", f.Kind, p.Mix())
			}
		}
		for _, n := range nodesOf(f) {
			r, ok := topo.role(n)
			if !ok {
				return fail("unknown node %s", n)
			}
			if r == RoleObserver {
				return fail("%s is an observer, which is never faulted", n)
			}
		}
		if f.Kind == LostAck || f.Kind == LostAppend {
			if r, _ := topo.role(f.Node); r != RoleCapture {
				return fail("%s is not a capture (its role is %s): only the capture appends to the log", f.Node, r)
			}
		}
		if f.Kind == SecondInstance {
			if r, _ := topo.role(f.Node); r != RoleCapture && r != RoleApplier {
				return fail("%s is not a capture or an applier (its role is %s): only pipeline processes have a second instance", f.Node, r)
			}
			if seconds[f.Node] {
				return fail("%s has a second instance already", f.Node)
			}
			seconds[f.Node] = true
		}
		if f.Kind == SlotDrop {
			if r, _ := topo.role(f.Node); r != RoleDB {
				return fail("%s is not a source database (its role is %s): only the source has a replication slot", f.Node, r)
			}
			if crashed[f.Node] || paused[f.Node] {
				return fail("%s is down: it cannot drop its slot", f.Node)
			}
		}
		if f.Kind == Delay || f.Kind == Loss {
			if !slices.Contains(links, Link{From: f.From, To: f.To}) {
				return fail("link %s->%s is not one the topology allows", f.From, f.To)
			}
		}
		switch f.Kind {
		case Crash, Pause:
			if crashed[f.Node] || paused[f.Node] {
				return fail("%s is already down", f.Node)
			}
			if f.Kind == Crash {
				crashed[f.Node] = true
			} else {
				paused[f.Node] = true
			}
		case Restart:
			if !crashed[f.Node] {
				return fail("%s is not crashed", f.Node)
			}
			delete(crashed, f.Node)
		case Resume:
			if !paused[f.Node] {
				return fail("%s is not paused", f.Node)
			}
			delete(paused, f.Node)
		case Partition, Delay, Loss, LostAck, LostAppend:
			net = true
		case Heal:
			net = false
		case LeaderFailover:
			end := f.At + cfg.FailoverDowntime
			if end > p.Quiet {
				return fail("its downtime of %s runs past quiet @%s", cfg.FailoverDowntime, p.Quiet)
			}
			failovers = append(failovers, end)
		case UncleanElection:
			if unclean {
				return fail("unclean-election twice")
			}
			unclean = true
		}
		if f.Kind == Crash || f.Kind == Pause || f.Kind == LeaderFailover {
			down := 0
			for _, b := range topo.Brokers() {
				if crashed[b] || paused[b] {
					down++
				}
			}
			for _, end := range failovers {
				if end > f.At {
					down++
				}
			}
			if down > cfg.MaxDownBrokers {
				return fail("%d brokers down at once, more than the %d allowed", down, cfg.MaxDownBrokers)
			}
		}
	}
	var errs []error
	for _, n := range sortedKeys(crashed) {
		errs = append(errs, fmt.Errorf("%s is still crashed at quiet", n))
	}
	for _, n := range sortedKeys(paused) {
		errs = append(errs, fmt.Errorf("%s is still paused at quiet", n))
	}
	if net {
		errs = append(errs, errors.New("network faults are still in force at quiet: no heal after the last one"))
	}
	return errors.Join(errs...)
}

// nodesOf lists the nodes a fault names.
func nodesOf(f Fault) []string {
	var ns []string
	if f.Node != "" {
		ns = append(ns, f.Node)
	}
	ns = append(ns, f.A...)
	ns = append(ns, f.B...)
	if f.From != "" {
		ns = append(ns, f.From, f.To)
	}
	return ns
}

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// CheckNodes says whether every node p names is a node of topo that may be
// faulted (not an observer): what a world needs before it runs a
// hand-written plan, so that a misspelt node is refused before anything
// starts rather than when the fault comes due. The error names the first
// such fault and the nodes there are.
func (p Plan) CheckNodes(topo Topology) error {
	for i, f := range p.Faults {
		for _, n := range nodesOf(f) {
			r, ok := topo.role(n)
			switch {
			case !ok:
				return fmt.Errorf("fault %d (%s): unknown node %s (want one of: %s)", i, f, n, strings.Join(topo.Faultable(), ", "))
			case r == RoleObserver:
				return fmt.Errorf("fault %d (%s): %s is an observer, which is never faulted", i, f, n)
			}
		}
	}
	return nil
}
