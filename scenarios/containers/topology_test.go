package containers

import (
	"context"
	"strings"
	"testing"

	"lockstep/faults"
	"lockstep/scenarios"
)

// A hand-written plan is checked against the run's containers before
// anything starts: Run refuses a misspelt node, a node dual writes do not
// run and a clock jump without touching Docker (the test runs, and passes
// in the same few milliseconds, with no daemon at all).
func TestPlanCheckedBeforeStart(t *testing.T) {
	cases := []struct {
		sys  scenarios.System
		text string
		want string
	}{
		{scenarios.Pipeline, "@1s crash capturer\n@2s restart capturer\nquiet @5s", "unknown node capturer (want one of: pg-source, pg-replica, pg-search, redis, kafka1, kafka2, kafka3, capture,"},
		{scenarios.DualWrite, "@1s crash capture\n@2s restart capture\nquiet @5s", "unknown node capture (want one of: pg-source, pg-replica, pg-search, redis, kafka1, kafka2, kafka3); dual writes run no capture or appliers"},
		{scenarios.Pipeline, "@1s clock-jump capture +2s\nquiet @5s", "containers share the host clock"},
	}
	for _, c := range cases {
		p, err := faults.Parse(c.text)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Run(context.Background(), Config{Scenario: scenarios.ByName("steady"), System: c.sys, Seed: 1, Plan: &p})
		if err == nil || !strings.HasPrefix(err.Error(), "containers: fault plan: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %q: %v; want an error containing %q", c.sys, c.text, err, c.want)
		}
	}
	good, err := faults.Parse("@1s crash capture\n@2s restart capture\n@3s loss applier-cache->redis 0.2\n@4s heal\nquiet @5s")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckPlan(scenarios.Pipeline, good); err != nil {
		t.Fatalf("a plan over the run's containers: %v", err)
	}
}

// --system debezium runs Kafka Connect as the capture node, named
// "debezium", beside lockstep's three appliers; a plan may crash and pause
// it, but not start a second worker.
func TestDebeziumTopology(t *testing.T) {
	var names []string
	for _, n := range Topology(scenarios.Debezium).Nodes {
		names = append(names, n.Name+":"+string(n.Role))
	}
	want := "pg-source:db pg-replica:store pg-search:store redis:store kafka1:broker kafka2:broker kafka3:broker debezium:capture applier-replica:applier applier-cache:applier applier-search:applier"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("Topology(debezium) = %s\nwant %s", got, want)
	}
	ok, err := faults.Parse("@1s crash debezium\n@2s restart debezium\n@3s pause debezium\n@4s resume debezium\n@5s leader-failover\nquiet @8s")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckPlan(scenarios.Debezium, ok); err != nil {
		t.Fatalf("crash, pause and failover: %v", err)
	}
	for _, text := range []string{"@1s second-instance debezium\nquiet @5s", "@1s crash capture\n@2s restart capture\nquiet @5s"} {
		p, err := faults.Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckPlan(scenarios.Debezium, p); err == nil {
			t.Errorf("%q: accepted for debezium", text)
		}
	}
}
