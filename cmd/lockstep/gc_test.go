package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/bytedance/gopkg/util/gctuner"
)

// recordTuner replaces startTuner for a test and records its threshold.
func recordTuner(t *testing.T) *uint64 {
	t.Helper()
	var got uint64
	start, minP, maxP := startTuner, gctuner.GetMinGCPercent(), gctuner.GetMaxGCPercent()
	startTuner = func(threshold uint64) { got = threshold }
	t.Cleanup(func() {
		startTuner = start
		gctuner.SetMinGCPercent(minP)
		gctuner.SetMaxGCPercent(maxP)
	})
	return &got
}

func TestSimulatingCommandsTuneTheCollector(t *testing.T) {
	mem, err := memoryOf()
	if err != nil {
		t.Skipf("skipping: the machine's memory is unknown here (%v)", err)
	}
	threshold := recordTuner(t)
	unsetenv(t, "GOGC")
	if got := tuneGCForSimulation(); !strings.Contains(got, "tuned between 100 and 1600") {
		t.Fatalf("policy %q, want the tuner", got)
	}
	if *threshold != mem/4 {
		t.Fatalf("tuner started at %d bytes, want a quarter of %d", *threshold, mem)
	}
	if lo, hi := gctuner.GetMinGCPercent(), gctuner.GetMaxGCPercent(); lo != 100 || hi != 1600 {
		t.Fatalf("tuner bounds %d..%d, want 100..1600 (never below Go's default)", lo, hi)
	}
}

func TestUsersGOGCWins(t *testing.T) {
	threshold := recordTuner(t)
	t.Setenv("GOGC", "150")
	if got := tuneGCForSimulation(); got != "GOGC=150 from the environment" {
		t.Fatalf("policy %q with GOGC=150", got)
	}
	if *threshold != 0 {
		t.Fatalf("the tuner started (at %d bytes) although GOGC is set", *threshold)
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

// The tuner does what the policy counts on: with a small live heap and a
// threshold far above it, GOGC goes to the maximum.
func TestTheTunerRaisesGOGCForASmallHeap(t *testing.T) {
	if _, err := memoryOf(); err != nil {
		t.Skipf("skipping: the machine's memory is unknown here (%v)", err)
	}
	if os.Getenv("LOCKSTEP_GC_TUNER_TEST") == "" {
		// gctuner cannot be stopped cleanly inside a test binary (a
		// collection's callback in flight sets GOGC after Tuning(0)), so
		// this runs in a child process.
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		out, err := runChild(exe, "-test.run=^TestTheTunerRaisesGOGCForASmallHeap$", "LOCKSTEP_GC_TUNER_TEST=1")
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	unsetenv(t, "GOGC")
	tuneGCForSimulation()
	for i := 0; i < 50 && gcPercent() != simMaxGCPercent; i++ {
		collect()
	}
	if p := gcPercent(); p != simMaxGCPercent {
		t.Fatalf("GOGC %d after collections with a small heap, want %d", p, simMaxGCPercent)
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

func runChild(exe, arg, env string) ([]byte, error) {
	cmd := exec.Command(exe, arg)
	cmd.Env = append(os.Environ(), env)
	return cmd.CombinedOutput()
}

// collect runs a collection and lets the finalizer goroutine, where the
// tuner runs, have the processor.
func collect() {
	runtime.GC()
	runtime.Gosched()
}
