package containers

import (
	"slices"
	"strings"
	"time"

	"lockstep/model"
)

// nodeState is what the target did to a container, for the timeline.
type nodeState struct {
	crashed, paused bool
	cutFrom         map[string]bool
}

// Follow makes t note every container state it causes (a kill, a pause, a
// partition, and their ends, a failed-over leader's too) in tl, at since's
// time. The containers are not asked: the timeline says what the target
// did, when it had done it.
func (t *Target) Follow(tl *model.Timeline, since func() time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tl, t.since, t.states = tl, since, map[string]*nodeState{}
}

// noteLocked updates name's state with change and records it; t.mu held.
func (t *Target) noteLocked(name string, change func(*nodeState)) {
	if t.tl == nil {
		return
	}
	s := t.states[name]
	if s == nil {
		s = &nodeState{cutFrom: map[string]bool{}}
		t.states[name] = s
	}
	change(s)
	state, detail := model.NodeUp, ""
	switch {
	case s.crashed:
		state = model.NodeCrashed
	case s.paused:
		state = model.NodePaused
	case len(s.cutFrom) > 0:
		from := make([]string, 0, len(s.cutFrom))
		for n := range s.cutFrom {
			from = append(from, n)
		}
		slices.Sort(from)
		state, detail = model.NodeCutOff, "from "+strings.Join(from, ",")
	}
	t.tl.Note(name, t.since(), state, detail)
}

func (t *Target) note(name string, change func(*nodeState)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.noteLocked(name, change)
}

// noteCut records a partition between a and b.
func (t *Target) noteCut(a, b []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			t.noteLocked(x, func(s *nodeState) { s.cutFrom[y] = true })
			t.noteLocked(y, func(s *nodeState) { s.cutFrom[x] = true })
		}
	}
}

// noteHealed records that no partition is left.
func (t *Target) noteHealed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := make([]string, 0, len(t.states))
	for n := range t.states {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		t.noteLocked(n, func(s *nodeState) { clear(s.cutFrom) })
	}
}
