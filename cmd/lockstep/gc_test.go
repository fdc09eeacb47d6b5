package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/bytedance/gopkg/util/gctuner"
)

func TestSimulatingCommandsTuneTheCollector(t *testing.T) {
	if _, err := memoryOf(); err != nil {
		t.Skipf("skipping: the machine's memory is unknown here (%v)", err)
	}
	old := debug.SetGCPercent(100)
	t.Cleanup(func() {
		gctuner.Tuning(0) // stops the tuner
		debug.SetGCPercent(old)
	})
	unsetenv(t, "GOGC")
	if got := tuneGCForSimulation(); !strings.Contains(got, "tuned between 100 and 1600") {
		t.Fatalf("policy %q, want the tuner", got)
	}
	// A test binary's live heap is a few MB, far under a quarter of any
	// machine's memory: after a collection the tuner allows the most.
	for i := 0; i < 20 && gcPercent() != simMaxGCPercent; i++ {
		runtime.GC()
		runtime.Gosched() // the tuner runs in the finalizer goroutine
	}
	if p := gcPercent(); p != simMaxGCPercent {
		t.Fatalf("GOGC %d after collections with a small heap, want %d", p, simMaxGCPercent)
	}
}

func TestUsersGOGCWins(t *testing.T) {
	t.Setenv("GOGC", "150")
	old := debug.SetGCPercent(150)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	if got := tuneGCForSimulation(); got != "GOGC=150 from the environment" {
		t.Fatalf("policy %q with GOGC=150", got)
	}
	runtime.GC()
	if p := gcPercent(); p != 150 {
		t.Fatalf("GOGC %d, want the environment's 150", p)
	}
}

func TestOnlySimulatingCommandsAreTuned(t *testing.T) {
	for _, c := range []*command{captureCmd, applyCmd, mergeCmd, listCmd} {
		if c.simulates {
			t.Errorf("%s does not simulate: it must keep Go's defaults", c.name)
		}
	}
	for _, c := range []*command{runCmd, campaignCmd, reproCmd, benchCmd, shrinkCmd} {
		if !c.simulates {
			t.Errorf("%s simulates: it should tune the collector for throughput", c.name)
		}
	}
}

// unsetenv removes key for the test and puts it back after.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	if v, ok := os.LookupEnv(key); ok {
		t.Cleanup(func() { os.Setenv(key, v) })
	}
	os.Unsetenv(key)
}
