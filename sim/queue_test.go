package sim

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The queue pops by (at, order) whatever was killed and compacted away in
// between, and never pops a dead event: dropping stale wakes must not
// change the order of the rest.
func TestQueueCompactKeepsOrderAndDropsOnlyDead(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		var q eventQueue
		var live []queued
		var dropped, compactions int
		for i := 0; i < 300; i++ {
			e := q.newEvent()
			e.at, e.order, e.dead = time.Duration(rng.IntN(50)), rng.Uint64(), false
			q.push(e)
			live = append(live, queued{at: e.at, order: e.order, id: e.id})
			if rng.IntN(2) == 0 { // kill a random live entry
				k := rng.IntN(len(live))
				victim := q.byID[live[k].id]
				live = slices.Delete(live, k, k+1)
				if q.kill(victim) {
					compactions++
					q.compact(func(e *event) {
						if !e.dead {
							t.Fatalf("compact dropped a live event")
						}
						dropped++
					})
				}
			}
		}
		if q.dead != len(q.heap)-len(live) {
			t.Fatalf("round %d: %d dead counted, %d in the heap beyond the %d live", round, q.dead, len(q.heap)-len(live), len(live))
		}
		slices.SortFunc(live, func(a, b queued) int {
			if a.before(b) {
				return -1
			}
			return 1
		})
		var got []queued
		for q.len() > 0 {
			e := q.pop()
			if e.queued {
				t.Fatalf("popped event still marked queued")
			}
			if !e.dead {
				got = append(got, queued{at: e.at, order: e.order, id: e.id})
			}
		}
		if !slices.Equal(got, live) {
			t.Fatalf("round %d: live events came out in another order", round)
		}
		if q.dead != 0 {
			t.Fatalf("round %d: %d dead left counted in an empty heap", round, q.dead)
		}
		if round == 0 && (compactions == 0 || dropped == 0) {
			t.Fatalf("no compaction happened (%d, %d dropped): the test tests nothing", compactions, dropped)
		}
	}
}
