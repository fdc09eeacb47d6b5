package main

import (
	"fmt"
	"os"
	"runtime/metrics"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/bytedance/gopkg/util/gctuner"
)

// Simulated runs allocate small, short-lived objects by the million while a
// world holds a few megabytes, so at Go's default pacing the collector's
// fixed cost per cycle is a third of a seed's CPU time. The simulating
// commands therefore trade memory the machine has for CPU: after every
// collection gctuner sets GOGC so that the next one comes when the heap
// reaches a quarter of the machine's (or container's) memory, between
// Go's default of 100 and 1600. A swarm seed's few megabytes run at 1600
// (13% fewer instructions than GOGC 400, 23% fewer than 100); a long-haul
// run holding gigabytes gets less, and never less than Go's default, so no
// run collects more often than it would without this. GOGC set in the
// environment turns it off; the pipeline's own long-running services
// (capture, apply) keep Go's defaults.
const (
	simMinGCPercent = 100
	simMaxGCPercent = 1600
	simHeapShare    = 4 // the heap may grow to 1/simHeapShare of memory
)

// memoryOf is the memory the process may use: its cgroup's limit, else the
// machine's.
var memoryOf = memlimit.ApplyFallback(memlimit.FromCgroup, memlimit.FromSystem)

// startTuner starts gctuner for the process's life (a variable for tests:
// a tuner stopped in one test can still set GOGC once in the next).
var startTuner = gctuner.Tuning

// tuneGCForSimulation applies the policy above unless GOGC is set, and
// says what it did, for bench's output.
func tuneGCForSimulation() string {
	if v := os.Getenv("GOGC"); v != "" {
		return "GOGC=" + v + " from the environment"
	}
	mem, err := memoryOf()
	if err != nil || mem == 0 {
		return fmt.Sprintf("Go's default pacing: the machine's memory is unknown (%v)", err)
	}
	threshold := mem / simHeapShare
	gctuner.SetMinGCPercent(simMinGCPercent)
	gctuner.SetMaxGCPercent(simMaxGCPercent)
	startTuner(threshold)
	return fmt.Sprintf("GOGC tuned between %d and %d so the heap stays under %.1f GiB, a quarter of memory (GOGC set turns it off)",
		simMinGCPercent, simMaxGCPercent, float64(threshold)/(1<<30))
}

// gcPercent is the GOGC in force, read without changing it.
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}
