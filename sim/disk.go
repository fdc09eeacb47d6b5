package sim

import (
	"math/rand/v2"
	"sort"
)

// Disk is a node's durable storage: a key -> value map with an explicit Sync.
// Reads see every write; a crash keeps what was synced plus a random prefix of
// the unsynced writes (as a page cache flushes in order), the rest is lost.
// Values must be treated as immutable once written.
type Disk struct {
	durable map[string]any
	// pending are the writes since the last Sync, in order. What the
	// running process sees is durable overlaid with pending; only a boot
	// reads it, so it is worked out then rather than kept in a second map
	// on every write.
	pending []diskWrite
	syncs   uint64
}

type diskWrite struct {
	key string
	val any
	del bool
}

func newDisk() *Disk { return &Disk{durable: map[string]any{}} }

// Get reads a key as the running process sees it.
func (d *Disk) Get(key string) (any, bool) {
	for i := len(d.pending) - 1; i >= 0; i-- {
		if wr := d.pending[i]; wr.key == key {
			return wr.val, !wr.del
		}
	}
	v, ok := d.durable[key]
	return v, ok
}

// Put writes a key; it is durable only after Sync.
func (d *Disk) Put(key string, val any) {
	d.pending = append(d.pending, diskWrite{key: key, val: val})
}

// Delete removes a key; durable only after Sync.
func (d *Disk) Delete(key string) {
	d.pending = append(d.pending, diskWrite{key: key, del: true})
}

// Sync makes every write so far durable.
func (d *Disk) Sync() {
	d.flush(len(d.pending))
	d.syncs++
}

// Unsynced is the number of writes a crash could lose.
func (d *Disk) Unsynced() int { return len(d.pending) }

// Keys lists the visible keys in order.
func (d *Disk) Keys() []string {
	visible := make(map[string]bool, len(d.durable)+len(d.pending))
	for k := range d.durable {
		visible[k] = true
	}
	for _, wr := range d.pending {
		visible[wr.key] = !wr.del
	}
	keys := make([]string, 0, len(visible))
	for k, ok := range visible {
		if ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func (d *Disk) flush(n int) {
	for _, wr := range d.pending[:n] {
		if wr.del {
			delete(d.durable, wr.key)
		} else {
			d.durable[wr.key] = wr.val
		}
	}
	d.pending = d.pending[:0]
}

func (d *Disk) crash(rng *rand.Rand) {
	if len(d.pending) > 0 {
		d.flush(rng.IntN(len(d.pending) + 1))
	}
}
