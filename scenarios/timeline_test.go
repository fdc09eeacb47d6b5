package scenarios

import (
	"testing"

	"lockstep/faults"
	"lockstep/model"
)

// The timeline places every crash and pause of the plan at the plan's own
// times, and its last position sample has every store at the final source
// position the run converged on.
func TestTimelineFollowsThePlan(t *testing.T) {
	sc, err := Resolve("swarm")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for seed := uint64(1); seed <= 6 && checked < 3; seed++ {
		out, err := Run(sc, Pipeline, seed, smallRun)
		if err != nil {
			t.Fatal(err)
		}
		tl := out.History.Timeline
		if tl == nil || len(tl.Nodes) == 0 || len(tl.Positions) < 2 {
			t.Fatalf("seed %d: no timeline recorded: %+v", seed, tl)
		}
		for i, f := range out.Plan.Faults {
			if f.Kind != faults.Crash && f.Kind != faults.Pause {
				continue
			}
			checked++
			state := map[faults.Kind]model.NodeState{faults.Crash: model.NodeCrashed, faults.Pause: model.NodePaused}[f.Kind]
			var got *model.NodeSpan
			for j := range tl.Spans {
				if s := &tl.Spans[j]; s.Node == f.Node && s.State == state && s.Start == f.At {
					got = s
				}
			}
			if got == nil {
				t.Fatalf("seed %d: fault %d (%s) has no %s span starting at %v in %+v", seed, i, f, state, f.At, tl.Spans)
			}
			if got.End <= got.Start || got.End > out.Virtual {
				t.Fatalf("seed %d: span %+v does not end inside the run (%v)", seed, got, out.Virtual)
			}
		}
		last := tl.Positions[len(tl.Positions)-1]
		final := out.History.Committed[len(out.History.Committed)-1].CommitLSN
		if last.At != out.Virtual || last.Source != final {
			t.Fatalf("seed %d: last sample %+v, want at %v with source %s", seed, last, out.Virtual, final)
		}
		for i, p := range last.Stores {
			if !p.Up || !p.Has || p.LSN != final {
				t.Fatalf("seed %d: store %s ends at %+v, want %s (it converged)", seed, out.History.Stores[i].Name, p, final)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no seed drew a crash or a pause: the test checked nothing")
	}
}
