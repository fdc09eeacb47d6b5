package model

import "time"

// NodeState is what a node of a run was doing, as the report's timeline
// draws it. Up is the default: a Timeline records only the spans a node
// spent in another state.
type NodeState string

const (
	NodeUp      NodeState = "up"
	NodeCrashed NodeState = "crashed" // killed, not yet restarted
	NodePaused  NodeState = "paused"  // stopped the world, wakes as a zombie
	NodeCutOff  NodeState = "cut off" // a partition blocks some of its links
)

// NodeSpan is a time a node spent in one state other than up. End is the
// time it left it (the run's end when it never did). Detail says more, e.g.
// whom a partition cut the node off from.
type NodeSpan struct {
	Node       string
	State      NodeState
	Detail     string
	Start, End time.Duration
}

// StorePosition is where one store stood at a sample: Up is false while it
// was down, Has false when it keeps no position (dual writes' stores, a
// cache restarted empty).
type StorePosition struct {
	Up, Has bool
	LSN     LSN
}

// PositionSample is the source's last commit and each store's position at
// one time; Stores follows History.Stores' order.
type PositionSample struct {
	At     time.Duration
	Source LSN
	Stores []StorePosition
}

// Timeline is what a run recorded over time for its report: every node's
// state and every store's position. It is informational: the checker does
// not read it, and recording it changes nothing in the run.
type Timeline struct {
	// Nodes names every node that could be faulted, in the world's order.
	Nodes []string
	// Spans are the times nodes were not simply up, in the order they
	// began (ties by node order).
	Spans []NodeSpan
	// Positions are samples taken whenever something in them changed (and
	// at the end), in time order.
	Positions []PositionSample

	open map[string]int // node -> index in Spans of its open span
}

// Note records that node is in state (with detail) from at on. A note
// that repeats the node's current state and detail changes nothing.
func (t *Timeline) Note(node string, at time.Duration, state NodeState, detail string) {
	if t.open == nil {
		t.open = map[string]int{}
	}
	if i, ok := t.open[node]; ok {
		if s := t.Spans[i]; s.State == state && s.Detail == detail {
			return
		}
		t.Spans[i].End = at
		delete(t.open, node)
	}
	if state == NodeUp || state == "" {
		return
	}
	t.open[node] = len(t.Spans)
	t.Spans = append(t.Spans, NodeSpan{Node: node, State: state, Detail: detail, Start: at})
}

// Sample records the positions at at, unless they equal the last sample's.
func (t *Timeline) Sample(at time.Duration, source LSN, stores []StorePosition) {
	if n := len(t.Positions); n > 0 {
		last := t.Positions[n-1]
		if last.Source == source && equalPositions(last.Stores, stores) {
			return
		}
	}
	t.Positions = append(t.Positions, PositionSample{At: at, Source: source, Stores: append([]StorePosition(nil), stores...)})
}

func equalPositions(a, b []StorePosition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Finish closes every open span at end and repeats the last position
// sample there, so a chart's lines reach the end of the run.
func (t *Timeline) Finish(end time.Duration) {
	for _, i := range t.open {
		t.Spans[i].End = end
	}
	t.open = nil
	if n := len(t.Positions); n > 0 && t.Positions[n-1].At < end {
		last := t.Positions[n-1]
		last.At = end
		t.Positions = append(t.Positions, last)
	}
}
