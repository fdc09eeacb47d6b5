package containers

import (
	"os"
	"path/filepath"
	"testing"
)

// readInt reads both cgroup file shapes, and refuses what is neither.
func TestReadInt(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	one := write("usage", "1034931884\n")
	stat := write("cpu.stat", "usage_usec 250\nuser_usec 200\nsystem_usec 50\n")
	bad := write("bad", "max\n")
	for _, c := range []struct {
		path, key string
		want      int64
		ok        bool
	}{
		{one, "", 1034931884, true},
		{stat, "usage_usec", 250, true},
		{stat, "system_usec", 50, true},
		{stat, "nr_periods", 0, false},
		{bad, "", 0, false},
		{filepath.Join(dir, "missing"), "", 0, false},
	} {
		if got, ok := readInt(c.path, c.key); got != c.want || ok != c.ok {
			t.Errorf("readInt(%s, %q) = %d, %v; want %d, %v", filepath.Base(c.path), c.key, got, ok, c.want, c.ok)
		}
	}
}
