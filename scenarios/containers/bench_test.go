package containers

import (
	"strings"
	"testing"
	"time"

	"lockstep/model"
)

// Recovery after a fault is timed from the restart to the first sample in
// which every store held the source's position at the restart; a store
// that never got there says so.
func TestBenchRecovery(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	b := &benchProbe{
		source: []lsnAt{{ms(0), 10}, {ms(100), 20}, {ms(200), 30}, {ms(300), 40}},
		stores: map[string][]lsnAt{
			"replica": {{ms(0), 10}, {ms(150), 20}, {ms(250), 30}, {ms(350), 40}},
			"cache":   {{ms(0), 10}, {ms(120), 20}, {ms(400), 30}, {ms(500), 40}},
		},
	}
	h := &model.History{QuietAt: ms(300), Committed: []model.Txn{{CommitLSN: 40}}, Faults: []model.FaultWindow{
		{Start: ms(50), End: ms(110), What: "crash capture"},
		{Start: ms(220), End: ms(220), What: "leader-failover"},
		{Start: ms(20), End: ms(300), What: "partition capture | kafka1"},
	}}
	res := b.result(h)
	want := []Recovery{{What: "crash capture", At: ms(110), CaughtUp: ms(40)}, {What: "leader-failover", At: ms(220), CaughtUp: ms(180)}}
	if len(res.Restarts) != len(want) {
		t.Fatalf("recoveries %+v, want %+v", res.Restarts, want)
	}
	for i := range want {
		if res.Restarts[i] != want[i] {
			t.Errorf("recovery %d: %+v, want %+v", i, res.Restarts[i], want[i])
		}
	}
	if res.LagMax["cache"] != ms(200) {
		t.Errorf("cache's worst lag %v, want 200ms (lsn 30 committed at 200ms, held at 400ms)", res.LagMax["cache"])
	}
	b.stores["cache"] = b.stores["cache"][:2]
	if got := b.recovery(ms(220)); got != -1 {
		t.Errorf("a store that never caught up recovered in %v", got)
	}
	if s := res.String(); !strings.Contains(s, "worst 180ms over 2 faults") {
		t.Errorf("report lacks the worst recovery:\n%s", s)
	}
}
