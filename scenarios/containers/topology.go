package containers

import (
	"fmt"
	"slices"
	"strings"

	"lockstep/faults"
	"lockstep/scenarios"
)

// Topology is the containers of a run of sys, with their roles, in a fixed
// order. It is known before anything starts, so a hand-written plan can be
// checked up front, and a seed's generated plan does not depend on the order
// the containers happened to finish starting in (which it did while the
// topology was read from the running world). Start and StartPipeline must
// start exactly these (checkTopology).
func Topology(sys scenarios.System) faults.Topology {
	t := faults.Topology{Nodes: []faults.Node{
		{Name: sourceNode, Role: faults.RoleDB},
		{Name: "pg-replica", Role: faults.RoleStore},
		{Name: "pg-search", Role: faults.RoleStore},
		{Name: "redis", Role: faults.RoleStore},
		{Name: "kafka1", Role: faults.RoleBroker},
		{Name: "kafka2", Role: faults.RoleBroker},
		{Name: "kafka3", Role: faults.RoleBroker},
	}}
	appliers := []faults.Node{
		{Name: "applier-replica", Role: faults.RoleApplier},
		{Name: "applier-cache", Role: faults.RoleApplier},
		{Name: "applier-search", Role: faults.RoleApplier},
	}
	switch sys {
	case scenarios.Pipeline:
		t.Nodes = append(append(t.Nodes, faults.Node{Name: "capture", Role: faults.RoleCapture}), appliers...)
	case scenarios.Debezium:
		// Kafka Connect is the capture; lockstep's appliers read its topics.
		t.Nodes = append(append(t.Nodes, faults.Node{Name: DebeziumService, Role: faults.RoleCapture}), appliers...)
	}
	if sys == scenarios.TwoPC {
		// In the capture's role, as in the simulator: the process every
		// transaction goes through.
		t.Nodes = append(t.Nodes, faults.Node{Name: scenarios.CoordinatorNode, Role: faults.RoleCapture})
	}
	return t
}

// CheckPlan says whether a hand-written plan can run in containers for sys:
// it is valid, every node it names is a container of the run (any of them:
// a hand-written plan is not limited to the scenario's roles) and it has no
// fault containers cannot make. Delay is not refused here although it needs
// tc netem: only a run can tell whether the kernel has it.
func CheckPlan(sys scenarios.System, p faults.Plan) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if sys == scenarios.Debezium {
		for i, f := range p.Faults {
			if err := debeziumFault(f.Kind); err != nil {
				return fmt.Errorf("fault %d (%s): %w", i, f, err)
			}
		}
	}
	if err := p.CheckNodes(Topology(sys)); err != nil {
		if sys == scenarios.DualWrite {
			return fmt.Errorf("%w; dual writes run no capture or appliers", err)
		}
		return err
	}
	for i, f := range p.Faults {
		if f.Kind == faults.ClockJump {
			return fmt.Errorf("fault %d (%s): containers share the host clock, so a clock cannot jump", i, f)
		}
	}
	return nil
}

// checkTopology says whether the world runs exactly the containers
// Topology names: a drift between the two is a harness bug.
func checkTopology(w *World, sys scenarios.System) error {
	var want, got []string
	for _, n := range Topology(sys).Nodes {
		want = append(want, n.Name)
	}
	for _, s := range w.Services() {
		got = append(got, s.Name)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		return fmt.Errorf("containers: the world runs %s but Topology names %s", strings.Join(got, ","), strings.Join(want, ","))
	}
	return nil
}

// sourceNode is the source database's container.
const sourceNode = "pg-source"
