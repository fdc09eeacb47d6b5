package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"lockstep/faults"
	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
	"lockstep/sim"
	"lockstep/sim/services"
)

// CoordinatorNode is the 2PC coordinator's node. Fault plans treat it as
// they treat the capture (faults.RoleCapture): it is the process every
// transaction goes through, so the scenarios that crash, pause or cut off
// the capture do that to the coordinator.
const CoordinatorNode = "coordinator"

// twoPCClaims is what two-phase commit claims of a store. The replica and
// the search index are participants: no committed change lost, no value
// that never committed, no version going backwards, and every change
// counted once in the search index. Each transaction is atomic in each of
// them, but their commits are not ordered as the source's are (two
// transactions on different rows may commit in one order on the source
// and in the other on the replica), so the replica's states need not be
// states the source went through: atomicity, as the checker judges it
// (every state a prefix of the source's), is not claimed. The cache is no
// participant and claims nothing: it is written after the decision, in no
// order, and with the columns the transaction wrote only (an unchanged
// out-of-line value is not in its changes), so a cache that lost the row
// shows a row the source never held; the checker counts what that costs.
// Convergence needs a store position, which none of them keeps: a store
// that missed a change is judged by its final content (lost).
func twoPCClaims(kind model.StoreKind) model.Claims {
	c := model.Claims{}
	if kind == model.Cache {
		return c
	}
	c[model.NoPhantom], c[model.NoLoss], c[model.PerKeyOrder], c[model.Convergence] = true, true, true, true
	if kind == model.Search {
		c[model.ExactlyOnce] = true
	}
	return c
}

// parseBugs sets the bugs named in bugs ("a+b"), each either the
// pipeline's or two-phase commit's.
func parseBugs(sc *Scenario, bugs string) error {
	var rest []string
	for _, name := range strings.Split(bugs, "+") {
		if set, ok := twopc.BugNames[name]; ok {
			set(&sc.TwoPCBugs)
			continue
		}
		if _, ok := pipeline.BugNames[name]; !ok {
			_, err := pipeline.ParseBugs(name)
			return fmt.Errorf("%w, or of two-phase commit: %s", err, strings.Join(twopc.BugList(), ", "))
		}
		rest = append(rest, name)
	}
	b, err := pipeline.ParseBugs(strings.Join(rest, ","))
	sc.Bugs = b
	return err
}

// checkBugs refuses bugs of one system in a run of another: they would
// change nothing, and the run would pass as if the bug were caught.
func (sc *Scenario) checkBugs(sys System) error {
	switch {
	case sys == TwoPC && sc.Bugs.Any():
		return fmt.Errorf("scenario %s: the pipeline's bugs do nothing to the 2pc system", sc.Name)
	case sys != TwoPC && sc.TwoPCBugs.Any():
		return fmt.Errorf("scenario %s: two-phase commit's bugs need --system 2pc", sc.Name)
	}
	return nil
}

// heuristicAfter is how long a store waits for a decision before the
// HeuristicRollback bug rolls the transaction back.
const heuristicAfter = 1500 * time.Millisecond

// buildTwoPC adds the coordinator node: each incarnation a coordinator
// with a fresh ID, its decision log on its own disk.
func (x *world) buildTwoPC() {
	bugs := x.sc.TwoPCBugs
	x.w.AddNode(CoordinatorNode, services.BootCoordinator(func(n *sim.Node) *twopc.Coordinator {
		c := &twopc.Coordinator{
			Env:    n.Env(),
			ID:     fmt.Sprintf("%s#%d", n.Name(), n.Incarnation()),
			Source: &services.SourceParticipant{From: n, DB: x.db},
			Log:    services.DiskDecisionLog{N: n},
			Bugs:   bugs,
			Logger: x.logger.With("node", n.Name()),
		}
		for i, s := range storeKinds {
			if s.kind == model.Cache {
				c.Cache = &services.StoreClient{From: n, To: x.stores[i], StoreKind: s.kind}
				continue
			}
			p := &services.StoreParticipant{From: n, To: x.stores[i], StoreKind: s.kind}
			if bugs.HeuristicRollback {
				p.HeuristicAfter = heuristicAfter
			}
			c.Stores = append(c.Stores, p)
		}
		return c
	}))
	x.roles = append(x.roles, faults.Node{Name: CoordinatorNode, Role: faults.RoleCapture})
}

// do2PC runs one application operation through the coordinator, retrying
// as the other systems' clients do: after a timeout (its outcome unknown)
// and after a lock timeout (it certainly did not commit).
func (x *world) do2PC(ctx context.Context, n *sim.Node, op pipeline.TxnFunc) error {
	coord, _ := x.w.Node(CoordinatorNode)
	c := &services.CoordinatorClient{From: n, To: coord}
	err := c.Do(ctx, op)
	for retry := 0; retry < 2 && retryable2PC(err); retry++ {
		err = c.Do(ctx, op)
	}
	return err
}

func retryable2PC(err error) bool {
	return errors.Is(err, pipeline.ErrTimeout) || errors.Is(err, twopc.ErrLockTimeout)
}

// preparedLeft counts the prepared transactions the participants that are
// up still hold: at the end of a run, transactions left in doubt.
func (x *world) preparedLeft() int {
	n := 0
	for _, node := range append([]*sim.Node{x.db}, x.stores...) {
		n += len(services.PreparedOn(node))
	}
	return n
}

// inDoubt reports whether a 2PC participant still holds a prepared
// transaction, or the coordinator an unfinished decision (false while one
// of them is down: the quiet phase restarts it).
func (x *world) inDoubt() bool {
	if x.preparedLeft() > 0 {
		return true
	}
	coord, _ := x.w.Node(CoordinatorNode)
	ds, _ := services.DiskDecisionLog{N: coord}.Decisions(context.Background())
	return coord.Up() && len(ds) > 0
}
