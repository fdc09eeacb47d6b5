//go:build unix

package shrink

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time this process has used, user and system: what a
// shrink costs on a machine whose other work stretches its wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
