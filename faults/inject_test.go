package faults

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// recorder is a Target that writes down each call, and fails the calls
// named in fail.
type recorder struct {
	calls []string
	fail  map[string]error
}

var errWorld = errors.New("world says no")

func (r *recorder) do(call string) error {
	r.calls = append(r.calls, call)
	return r.fail[call]
}

func (r *recorder) Crash(n string) error   { return r.do("crash " + n) }
func (r *recorder) Restart(n string) error { return r.do("restart " + n) }
func (r *recorder) Pause(n string) error   { return r.do("pause " + n) }
func (r *recorder) Resume(n string) error  { return r.do("resume " + n) }
func (r *recorder) Partition(a, b []string, oneWay bool) error {
	return r.do(fmt.Sprintf("partition %v %v oneWay=%t", a, b, oneWay))
}
func (r *recorder) Heal() error { return r.do("heal") }
func (r *recorder) Delay(from, to string, min, max time.Duration) error {
	return r.do(fmt.Sprintf("delay %s %s %s %s", from, to, min, max))
}
func (r *recorder) Loss(from, to string, p float64) error {
	return r.do(fmt.Sprintf("loss %s %s %v", from, to, p))
}
func (r *recorder) LostAck(n string, p float64) error {
	return r.do(fmt.Sprintf("lost-ack %s %v", n, p))
}
func (r *recorder) LostAppend(n string, p float64) error {
	return r.do(fmt.Sprintf("lost-append %s %v", n, p))
}
func (r *recorder) ClockJump(n string, d time.Duration) error {
	return r.do(fmt.Sprintf("clock-jump %s %s", n, d))
}
func (r *recorder) LeaderFailover() error { return r.do("leader-failover") }
func (r *recorder) UncleanElection(on bool) error {
	return r.do(fmt.Sprintf("unclean-election %t", on))
}

func (r *recorder) SecondInstance(n string) error { return r.do("second-instance " + n) }
func (r *recorder) Retention(keep time.Duration) error {
	return r.do(fmt.Sprintf("retention %s", keep))
}
func (r *recorder) SlotDrop(n string) error { return r.do("slot-drop " + n) }

func (r *recorder) take() []string {
	c := r.calls
	r.calls = nil
	return c
}

func mustParse(t *testing.T, text string) Plan {
	t.Helper()
	p, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplyDispatches(t *testing.T) {
	p := mustParse(t, example)
	r := &recorder{}
	for _, f := range p.Faults {
		if err := Apply(r, f); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"crash capture",
		"restart capture",
		"partition [capture db] [broker1 broker2] oneWay=false",
		"partition [app1] [db] oneWay=true",
		"delay applier-cache cache 20ms 80ms",
		"loss capture broker1 0.3",
		"clock-jump applier-search 2s",
		"leader-failover",
		"unclean-election true",
		"lost-ack capture 0.9",
		"lost-append capture 1",
		"heal",
		"second-instance applier-search",
	}
	if !reflect.DeepEqual(r.calls, want) {
		t.Fatalf("calls:\n got %q\nwant %q", r.calls, want)
	}
}

func TestApplyErrors(t *testing.T) {
	r := &recorder{fail: map[string]error{"crash capture": errWorld}}
	err := Apply(r, Fault{At: 1500 * time.Millisecond, Kind: Crash, Node: "capture"})
	if !errors.Is(err, errWorld) || err.Error() != "faults: @1.5s crash capture: world says no" {
		t.Errorf("Apply error = %v", err)
	}
	r.take()
	if err := Apply(r, Fault{Kind: Crash}); err == nil || !strings.Contains(err.Error(), "crash needs a node") {
		t.Errorf("invalid fault: %v", err)
	}
	if len(r.calls) != 0 {
		t.Errorf("an invalid fault reached the world: %q", r.calls)
	}
}

func TestInjectorHealAllUndoesWhatIsInForce(t *testing.T) {
	p := mustParse(t, `
@1s crash a
@2s crash b
@3s restart a
@4s pause c
@5s pause d
@6s resume d
@7s partition a | b
@8s heal
@9s clock-jump c +1s
@10s leader-failover
@11s pause e
@12s crash e
quiet @20s`)
	r := &recorder{}
	in := NewInjector(r)
	for _, f := range p.Faults {
		if err := in.Apply(f); err != nil {
			t.Fatal(err)
		}
	}
	r.take()
	want := State{Crashed: []string{"b", "e"}, Paused: []string{"c"}}
	if got := in.State(); !reflect.DeepEqual(got, want) {
		t.Fatalf("State = %+v, want %+v", got, want)
	}
	if got := p.InForce(); !reflect.DeepEqual(got, want) {
		t.Fatalf("InForce = %+v, want %+v", got, want)
	}
	// The network was healed and unclean election never enabled: neither
	// is touched; the crashed and paused nodes are brought back.
	if err := in.HealAll(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"restart b", "restart e", "resume c"}; !reflect.DeepEqual(r.take(), want) {
		t.Fatalf("HealAll calls: want %q", want)
	}
	if !in.State().Clear() {
		t.Fatalf("after HealAll: %s", in.State())
	}
	if err := in.HealAll(); err != nil || len(r.take()) != 0 {
		t.Fatalf("second HealAll did something: %v", err)
	}

	// Network faults and unclean election in force.
	for _, f := range mustParse(t, "@1s delay a->b 1ms..2ms\n@2s loss b->a 0.5\n@3s unclean-election\nquiet @9s").Faults {
		if err := in.Apply(f); err != nil {
			t.Fatal(err)
		}
	}
	r.take()
	if err := in.HealAll(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"heal", "unclean-election false"}; !reflect.DeepEqual(r.take(), want) {
		t.Fatalf("HealAll calls: want %q", want)
	}
	// A lost-ack or lost-append left in force is the network's: HealAll
	// heals it.
	for _, f := range mustParse(t, "@1s lost-append capture 0.7\nquiet @9s").Faults {
		if err := in.Apply(f); err != nil {
			t.Fatal(err)
		}
	}
	r.take()
	if !in.State().Network {
		t.Fatalf("State after lost-append = %+v, want the network faulted", in.State())
	}
	if err := in.HealAll(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"heal"}; !reflect.DeepEqual(r.take(), want) {
		t.Fatalf("HealAll calls: want %q", want)
	}
}

func TestInjectorFailures(t *testing.T) {
	r := &recorder{fail: map[string]error{"crash a": errWorld}}
	in := NewInjector(r)
	// A crash the world refused is not recorded.
	if err := in.Apply(Fault{At: time.Second, Kind: Crash, Node: "a"}); !errors.Is(err, errWorld) {
		t.Fatalf("Apply = %v", err)
	}
	if !in.State().Clear() {
		t.Fatalf("a failed crash was recorded: %s", in.State())
	}
	for _, f := range []Fault{{Kind: Crash, Node: "b"}, {Kind: Crash, Node: "c"}, {Kind: Partition, A: []string{"b"}, B: []string{"c"}}} {
		if err := in.Apply(f); err != nil {
			t.Fatal(err)
		}
	}
	r.take()
	// HealAll carries on past a failure and keeps what it could not undo.
	r.fail = map[string]error{"restart b": errWorld}
	err := in.HealAll()
	if !errors.Is(err, errWorld) || !strings.Contains(err.Error(), "restart b") {
		t.Fatalf("HealAll = %v", err)
	}
	if want := []string{"heal", "restart b", "restart c"}; !reflect.DeepEqual(r.take(), want) {
		t.Fatalf("HealAll calls: want %q", want)
	}
	if want := (State{Crashed: []string{"b"}}); !reflect.DeepEqual(in.State(), want) {
		t.Fatalf("State after a failed HealAll = %+v, want %+v", in.State(), want)
	}
	r.fail = nil
	if err := in.HealAll(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"restart b"}; !reflect.DeepEqual(r.take(), want) {
		t.Fatalf("retried HealAll calls: want %q", want)
	}
}

func TestHealAllFromPlan(t *testing.T) {
	// A world without an Injector undoes what the plan leaves in force.
	p := mustParse(t, "@1s crash a\n@2s pause b\n@3s partition a -> b\n@4s unclean-election\n@5s crash b\nquiet @9s")
	r := &recorder{}
	if err := HealAll(r, p.InForce()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"heal", "unclean-election false", "restart a", "restart b"}; !reflect.DeepEqual(r.calls, want) {
		t.Fatalf("calls %q, want %q", r.calls, want)
	}
}

func TestGeneratedPlanThroughInjector(t *testing.T) {
	// Generated plans leave only unclean election for HealAll.
	for seed := range uint64(50) {
		p := Generate(seeded(seed), pipelineTopo, GenConfig{Unclean: true})
		r := &recorder{}
		in := NewInjector(r)
		for _, f := range p.Faults {
			if err := in.Apply(f); err != nil {
				t.Fatal(err)
			}
		}
		r.take()
		if err := in.HealAll(); err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, f := range p.Faults {
			if f.Kind == UncleanElection {
				want = []string{"unclean-election false"}
			}
		}
		if got := r.take(); !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d: HealAll calls %q, want %q", seed, got, want)
		}
	}
}
