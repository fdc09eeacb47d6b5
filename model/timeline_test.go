package model

import (
	"reflect"
	"testing"
	"time"
)

func TestTimelineNoteKeepsSpansOfEachState(t *testing.T) {
	var tl Timeline
	s := time.Second
	tl.Note("capture", 0, NodeUp, "")
	tl.Note("capture", 1*s, NodeCrashed, "")
	tl.Note("capture", 2*s, NodeCrashed, "") // repeated: no new span
	tl.Note("db", 2*s, NodeCutOff, "from broker1")
	tl.Note("db", 3*s, NodeCutOff, "from broker1,broker2") // new detail: new span
	tl.Note("capture", 4*s, NodeUp, "")
	tl.Note("db", 4*s, NodePaused, "")
	tl.Finish(9 * s)
	want := []NodeSpan{
		{Node: "capture", State: NodeCrashed, Start: 1 * s, End: 4 * s},
		{Node: "db", State: NodeCutOff, Detail: "from broker1", Start: 2 * s, End: 3 * s},
		{Node: "db", State: NodeCutOff, Detail: "from broker1,broker2", Start: 3 * s, End: 4 * s},
		{Node: "db", State: NodePaused, Start: 4 * s, End: 9 * s},
	}
	if !reflect.DeepEqual(tl.Spans, want) {
		t.Fatalf("spans:\n got %+v\nwant %+v", tl.Spans, want)
	}
}

func TestTimelineSampleKeepsChangesAndTheEnd(t *testing.T) {
	var tl Timeline
	up := func(l LSN) []StorePosition { return []StorePosition{{Up: true, Has: true, LSN: l}} }
	tl.Sample(0, 10, up(5))
	tl.Sample(50*time.Millisecond, 10, up(5)) // unchanged: dropped
	tl.Sample(100*time.Millisecond, 12, up(5))
	tl.Sample(150*time.Millisecond, 12, []StorePosition{{}}) // down
	tl.Finish(time.Second)
	var at []time.Duration
	for _, p := range tl.Positions {
		at = append(at, p.At)
	}
	want := []time.Duration{0, 100 * time.Millisecond, 150 * time.Millisecond, time.Second}
	if !reflect.DeepEqual(at, want) {
		t.Fatalf("sample times %v, want %v", at, want)
	}
	if last := tl.Positions[3]; last.Source != 12 || last.Stores[0].Up {
		t.Fatalf("the end repeats the last sample, got %+v", last)
	}
}
