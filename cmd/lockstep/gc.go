package main

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// Simulated runs allocate small, short-lived objects by the million while a
// world holds a few megabytes, so at Go's default pacing the collector's
// fixed cost per cycle is a third of a seed's CPU time. The simulating
// commands therefore trade memory for CPU: they collect when the heap has
// grown to 17 times the live data (GOGC 1600: 13% fewer instructions per
// swarm seed than GOGC 400, 23% fewer than 100), under a soft memory limit
// of a quarter of the machine's or container's memory, which brings the
// collector back as often as needed when a large run (long-haul holds
// gigabytes) would otherwise grow the heap that far. Without a known limit
// they keep the older GOGC 400. GOGC, GOMEMLIMIT and AUTOMEMLIMIT override;
// the pipeline's own long-running services (capture, apply) keep Go's
// defaults.
const (
	simGCPercent     = 1600
	simUnlimitedGC   = 400
	simMemLimitRatio = 0.25
)

// tuneGCForSimulation applies the policy above.
func tuneGCForSimulation() {
	limit, err := memlimit.Set(
		memlimit.WithRatio(simMemLimitRatio),
		memlimit.WithProvider(memlimit.ApplyFallback(memlimit.FromCgroup, memlimit.FromSystem)),
	)
	if os.Getenv("GOGC") != "" {
		return
	}
	if err != nil || limit <= 0 || limit == math.MaxInt64 {
		debug.SetGCPercent(simUnlimitedGC)
		return
	}
	debug.SetGCPercent(simGCPercent)
}

// gcPolicy describes the collector's settings in force, for bench's output.
func gcPolicy() string {
	percent := debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	limit := debug.SetMemoryLimit(-1)
	if limit == math.MaxInt64 {
		return fmt.Sprintf("GOGC %d, no memory limit", percent)
	}
	return fmt.Sprintf("GOGC %d, soft memory limit %.1f GiB", percent, float64(limit)/(1<<30))
}
