package containers

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// containerUsage is the CPU time a container used since it last started
// and the most memory it held, read from its cgroup on the host (cgroup v1
// with Docker's cgroupfs driver, or v2 with systemd's), so the figures are
// the kernel's, whatever runs inside (a JVM, a static Go binary). ok is
// false where neither layout is readable.
func containerUsage(id string) (cpu time.Duration, peak int64, ok bool) {
	v1 := func(ctrl, file string) (int64, bool) {
		return readInt(filepath.Join("/sys/fs/cgroup", ctrl, "docker", id, file), "")
	}
	if ns, ok := v1("cpuacct", "cpuacct.usage"); ok {
		peak, _ := v1("memory", "memory.max_usage_in_bytes")
		return time.Duration(ns), peak, true
	}
	dir := filepath.Join("/sys/fs/cgroup/system.slice", "docker-"+id+".scope")
	if us, ok := readInt(filepath.Join(dir, "cpu.stat"), "usage_usec"); ok {
		peak, ok := readInt(filepath.Join(dir, "memory.peak"), "")
		if !ok { // kernels before 6.x have no memory.peak
			peak, _ = readInt(filepath.Join(dir, "memory.current"), "")
		}
		return time.Duration(us) * time.Microsecond, peak, true
	}
	return 0, 0, false
}

// readInt reads a cgroup file holding one number, or the number after key
// in a file of "key value" lines.
func readInt(path, key string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		switch {
		case key == "" && len(f) == 1:
		case key != "" && len(f) == 2 && f[0] == key:
			f = f[1:]
		default:
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		return n, err == nil
	}
	return 0, false
}
