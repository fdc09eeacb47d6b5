package containers

import (
	"testing"
	"time"

	"lockstep/faults"
	"lockstep/scenarios"
)

// A container run takes a scenario's own size and fault timing, as the
// simulator does (before, long-haul ran 300 transactions over 30 s there,
// its faults anywhere in the phase): 100,000 transactions from 24 clients
// over a 200 s fault phase, the faults in its last quarter. Flags still
// win over the size.
func TestContainerRunTakesTheScenariosSizeAndLateFaults(t *testing.T) {
	sc, err := Lookup("long-haul")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Scenario: sc, System: scenarios.Pipeline}
	cfg.defaults()
	if cfg.Txns != 100_000 || cfg.Clients != 24 || cfg.Faults != 200*time.Second || cfg.Settle != 60*time.Second {
		t.Errorf("long-haul in containers: %d txns, %d clients, %v of faults, %v to settle; want 100000, 24, 200s, 60s", cfg.Txns, cfg.Clients, cfg.Faults, cfg.Settle)
	}
	small := Config{Scenario: sc, System: scenarios.Pipeline, Txns: 50, Faults: 20 * time.Second}
	small.defaults()
	if small.Txns != 50 || small.Clients != 24 || small.Faults != 20*time.Second {
		t.Errorf("with --txns 50 and a 20s fault phase: %d txns, %d clients, %v; want 50, 24, 20s", small.Txns, small.Clients, small.Faults)
	}
	drawn := 0
	for seed := uint64(1); seed <= 10; seed++ {
		cfg.Seed = seed
		p := seedPlan(cfg, (&run{cfg: cfg}).topology())
		if p.Quiet != cfg.Faults {
			t.Fatalf("seed %d: the plan's fault phase ends at %v, want %v", seed, p.Quiet, cfg.Faults)
		}
		for _, f := range p.Faults {
			if f.At < cfg.Faults*3/4 {
				t.Errorf("seed %d: %s at %v, before the last quarter of the fault phase (from %v)", seed, f.Kind, f.At, cfg.Faults*3/4)
			}
			drawn++
		}
	}
	if drawn == 0 {
		t.Fatal("no faults drawn in 10 seeds of long-haul")
	}
	// Other scenarios keep the container world's own sizes and draw over
	// the whole phase.
	other, err := Lookup("crash-capture")
	if err != nil {
		t.Fatal(err)
	}
	oc := Config{Scenario: other, System: scenarios.Pipeline, Seed: 1}
	oc.defaults()
	early := false
	for _, f := range seedPlan(oc, (&run{cfg: oc}).topology()).Faults {
		early = early || f.At < oc.Faults*3/4 && f.Kind != faults.Heal
	}
	if oc.Txns != 300 || oc.Faults != 30*time.Second || !early {
		t.Errorf("crash-capture in containers: %d txns, %v of faults, a fault before the last quarter: %v; want 300, 30s, true", oc.Txns, oc.Faults, early)
	}
}

// The observer reads small stores whole every second and thins its reads of
// large ones, so a ten-minute pgbench soak keeps a bounded number of
// documents in the history.
func TestSnapshotsOfLargeStoresAreThinned(t *testing.T) {
	if got := snapshotEvery(0); got != time.Second {
		t.Errorf("an empty store: every %v, want 1s", got)
	}
	if got := snapshotEvery(9_999); got != time.Second {
		t.Errorf("a store of 9,999 documents: every %v, want 1s", got)
	}
	kept := 0
	for at := time.Duration(0); at < 10*time.Minute; at += snapshotEvery(160_000) {
		kept += 160_000
	}
	if kept > 10_000_000 {
		t.Errorf("a ten-minute soak of 160k documents keeps %d documents in its snapshots, want at most 10 million", kept)
	}
}
