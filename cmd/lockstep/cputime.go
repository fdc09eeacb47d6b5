package main

import (
	"syscall"
	"time"
)

// processCPU is the CPU time this process has used so far, user and system,
// on every thread: the simulation's goroutine and the garbage collector's
// workers alike. bench reports it beside wall time because on a shared
// machine wall time measures the neighbours as much as the code, while CPU
// time per seed only moves when the work does.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
