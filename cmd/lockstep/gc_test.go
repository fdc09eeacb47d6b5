package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// restoreGC puts the collector's settings back after a test changed them.
func restoreGC(t *testing.T) {
	percent := debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	})
}

func currentGC() (int, int64) {
	percent := debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	return percent, debug.SetMemoryLimit(-1)
}

func TestSimulatingCommandsTuneTheCollector(t *testing.T) {
	restoreGC(t)
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("AUTOMEMLIMIT", "")
	debug.SetGCPercent(100)
	debug.SetMemoryLimit(math.MaxInt64)
	tuneGCForSimulation()
	percent, limit := currentGC()
	if limit == math.MaxInt64 {
		// No memory size known (not Linux?): the older, bounded setting.
		if percent != simUnlimitedGC {
			t.Fatalf("GC percent %d without a memory limit, want %d", percent, simUnlimitedGC)
		}
		return
	}
	if percent != simGCPercent {
		t.Fatalf("GC percent %d, want %d", percent, simGCPercent)
	}
	if limit <= 0 {
		t.Fatalf("soft memory limit %d, want a quarter of the machine's", limit)
	}
}

func TestUsersGCSettingsWin(t *testing.T) {
	restoreGC(t)
	t.Setenv("GOGC", "150")
	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetGCPercent(150)
	debug.SetMemoryLimit(1 << 30)
	tuneGCForSimulation()
	if percent, limit := currentGC(); percent != 150 || limit != 1<<30 {
		t.Fatalf("GOGC=150 GOMEMLIMIT=1GiB became GC percent %d, limit %d", percent, limit)
	}
}

func TestServicesKeepGoDefaults(t *testing.T) {
	for _, c := range []*command{captureCmd, applyCmd} {
		if c.simulates {
			t.Errorf("%s is a long-running service: it must not trade memory for CPU", c.name)
		}
	}
	for _, c := range []*command{runCmd, campaignCmd, reproCmd, benchCmd, shrinkCmd} {
		if !c.simulates {
			t.Errorf("%s simulates: it should tune the collector for throughput", c.name)
		}
	}
}
