package sim

import (
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"pgregory.net/rapid"
)

// TestDiskReadsEveryWriteAndCrashKeepsAPrefix checks Disk against a plain
// model: reads see every write since boot; a crash keeps what was synced
// plus the first n unsynced writes, for the n the crash drew.
func TestDiskReadsEveryWriteAndCrashKeepsAPrefix(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d := newDisk()
		durable := map[string]int{}
		var unsynced []diskWrite
		view := func() map[string]int {
			m := map[string]int{}
			for k, v := range durable {
				m[k] = v
			}
			for _, wr := range unsynced {
				if wr.del {
					delete(m, wr.key)
				} else {
					m[wr.key] = wr.val.(int)
				}
			}
			return m
		}
		apply := func(ws []diskWrite) {
			for _, wr := range ws {
				if wr.del {
					delete(durable, wr.key)
				} else {
					durable[wr.key] = wr.val.(int)
				}
			}
		}
		seed := rapid.Uint64().Draw(t, "seed")
		for i := range rapid.IntRange(1, 60).Draw(t, "steps") {
			key := rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "key")
			switch rapid.IntRange(0, 4).Draw(t, "op") {
			case 0, 1:
				d.Put(key, i)
				unsynced = append(unsynced, diskWrite{key: key, val: i})
			case 2:
				d.Delete(key)
				unsynced = append(unsynced, diskWrite{key: key, del: true})
			case 3:
				d.Sync()
				apply(unsynced)
				unsynced = nil
			default:
				// The crash draws from its own generator: replay the draw.
				n := 0
				if len(unsynced) > 0 {
					n = rand.New(rand.NewPCG(seed, uint64(i))).IntN(len(unsynced) + 1)
				}
				d.crash(rand.New(rand.NewPCG(seed, uint64(i))))
				apply(unsynced[:n])
				unsynced = nil
			}
			want := view()
			for _, k := range []string{"a", "b", "c"} {
				v, ok := d.Get(k)
				w, wok := want[k]
				if ok != wok || (ok && v.(int) != w) {
					t.Fatalf("step %d: Get(%q) = %v, %v; want %v, %v", i, k, v, ok, w, wok)
				}
			}
			var keys []string
			for k := range want {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if got := d.Keys(); !slices.Equal(got, keys) {
				t.Fatalf("step %d: Keys() = %v, want %v", i, got, keys)
			}
			if d.Unsynced() != len(unsynced) {
				t.Fatalf("step %d: Unsynced() = %d, want %d", i, d.Unsynced(), len(unsynced))
			}
		}
	})
}
