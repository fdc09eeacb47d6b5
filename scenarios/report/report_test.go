package report

import (
	"bytes"
	"fmt"
	"html"
	"regexp"
	"strings"
	"testing"
	"time"

	"lockstep/checker"
	"lockstep/model"
	"lockstep/scenarios"
)

func simulate(t *testing.T, scenario string, sys scenarios.System, seed uint64, opts scenarios.Options) *scenarios.Outcome {
	t.Helper()
	sc, err := scenarios.Resolve(scenario)
	if err != nil {
		t.Fatal(err)
	}
	out, err := scenarios.Run(sc, sys, seed, opts)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// firstSeed is the first run of seeds 1 to 30 that want accepts. Tests
// search instead of pinning a seed: which seeds show an anomaly moves
// whenever the simulated services' timing does.
func firstSeed(t *testing.T, scenario string, sys scenarios.System, opts scenarios.Options, what string, want func(*scenarios.Outcome) bool) *scenarios.Outcome {
	t.Helper()
	for seed := uint64(1); seed <= 30; seed++ {
		if out := simulate(t, scenario, sys, seed, opts); want(out) {
			return out
		}
	}
	t.Fatalf("no seed of 1-30 of %s/%s %s: the test would check nothing", scenario, sys, what)
	return nil
}

// failingPipelineRun is a pipeline run that breaks a claimed property.
func failingPipelineRun(t *testing.T) *scenarios.Outcome {
	t.Helper()
	return firstSeed(t, "crash-capture+confirm-before-ack", scenarios.Pipeline, scenarios.Options{}, "fails",
		func(o *scenarios.Outcome) bool { return !o.Report.OK() })
}

// nonlinearizableDualWrites is a dual-write run with a non-linearizable key.
func nonlinearizableDualWrites(t *testing.T) *scenarios.Outcome {
	t.Helper()
	return firstSeed(t, "cache-restart", scenarios.DualWrite, scenarios.Options{Txns: 300}, "has a non-linearizable key",
		func(o *scenarios.Outcome) bool {
			for _, a := range o.Report.Anomalies {
				if a.Class == checker.Nonlinearizable && a.Key != (model.Key{}) {
					return true
				}
			}
			return false
		})
}

func render(t *testing.T, r Run) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// selfContained fails on anything the page would load from elsewhere.
func selfContained(t *testing.T, page string) {
	t.Helper()
	for _, re := range []string{`(?i)\ssrc\s*=`, `(?i)<link\b`, `(?i)@import`, `(?i)href\s*=\s*"(https?:)?//`, `(?i)url\(`} {
		if m := regexp.MustCompile(re).FindString(page); m != "" {
			t.Errorf("the page loads something from elsewhere: %q", m)
		}
	}
}

// A failing run's report draws every node-state span and every timed
// anomaly's marker, lists each anomaly with a link target, and carries the
// plan and the repro line; nothing in it comes from elsewhere.
func TestRunReport(t *testing.T) {
	out := failingPipelineRun(t)
	page := render(t, FromOutcome(out))
	selfContained(t, page)
	tl := out.History.Timeline
	if n := strings.Count(page, `class="span"`); n != len(tl.Spans) || n == 0 {
		t.Errorf("%d node-state spans drawn, the timeline has %d", n, len(tl.Spans))
	}
	crashes := 0
	for _, s := range tl.Spans {
		if s.Node == "capture" && s.State == model.NodeCrashed {
			crashes++
			want := fmt.Sprintf("capture crashed %s–%s", fmtDur(s.Start), fmtDur(s.End))
			if !strings.Contains(html.UnescapeString(page), want) {
				t.Errorf("no span titled %q", want)
			}
		}
	}
	if crashes == 0 {
		t.Error("the capture never crashed in this run: the test checks less than it says")
	}
	for i := range out.Report.Anomalies {
		if !strings.Contains(page, `id="`+anchor(i)+`"`) || !strings.Contains(page, `href="#`+anchor(i)+`"`) {
			t.Errorf("anomaly %d has no row or no marker linking to it", i)
		}
	}
	if strings.Count(page, `class="mv marker"`) == 0 {
		t.Error("no claimed violation marked")
	}
	text := html.UnescapeString(page)
	for _, want := range []string{out.Repro(), fmt.Sprintf("%016x", out.Hash), `<svg id="positions"`, `<svg id="lag"`, "not-converged"} {
		if !strings.Contains(text, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out.Plan.String()), "\n") {
		if !strings.Contains(text, line) {
			t.Errorf("the plan line %q is missing", line)
		}
	}
}

// Dual writes keep no positions: the page says so instead of drawing
// empty charts. A key the checker found non-linearizable gets porcupine's
// page in an iframe, and porcupine finds it Illegal there too.
func TestDualWriteReportWithPorcupine(t *testing.T) {
	out := nonlinearizableDualWrites(t)
	var bad *checker.Anomaly
	for i, a := range out.Report.Anomalies {
		if a.Class == checker.Nonlinearizable && a.Key != (model.Key{}) {
			bad = &out.Report.Anomalies[i]
			break
		}
	}
	if bad == nil {
		t.Fatal("cache-restart/dualwrite/12,txns=300 was expected to have a non-linearizable key")
	}
	page := render(t, FromOutcome(out))
	selfContained(t, page)
	if !strings.Contains(page, `id="nochart"`) || strings.Contains(page, `<svg id="positions"`) {
		t.Error("dual writes: want the no-position note and no position chart")
	}
	if !strings.Contains(page, `<iframe class="porcupine"`) || !strings.Contains(page, "srcdoc=") {
		t.Fatal("no porcupine iframe")
	}
	if want := fmt.Sprintf("%s <code>%s</code>: Illegal", bad.Store, bad.Key); !strings.Contains(html.UnescapeString(page), want) {
		t.Errorf("the page lacks %q", want)
	}
}

// The geometry is exact on a hand-made history: a span from 5s to 10s of
// a 20s run starts a quarter of the way along the plot and is a quarter
// of it wide; the fault window is shaded over the same stretch.
func TestTimelineGeometry(t *testing.T) {
	s := time.Second
	h := &model.History{
		Stores:  []model.StoreSpec{{Name: "replica", Kind: model.Replica}},
		Faults:  []model.FaultWindow{{Start: 5 * s, End: 10 * s, What: "crash capture"}},
		QuietAt: 15 * s, Deadline: 20 * s,
		Final:    []model.Snapshot{{Store: "replica", At: 20 * s}},
		Timeline: &model.Timeline{Nodes: []string{"capture"}},
	}
	h.Timeline.Note("capture", 5*s, model.NodeCrashed, "")
	h.Timeline.Note("capture", 10*s, model.NodeUp, "")
	h.Timeline.Finish(20 * s)
	page := render(t, Run{Title: "t", History: h, Report: checker.Check(h, checker.Options{}), Duration: 20 * s})
	plot := chartWidth - labelWidth - rightMargin
	x, w := labelWidth+plot/4, plot/4
	span := fmt.Sprintf(`<rect class="span" x="%.1f" y="%.1f" width="%.1f"`, x, axisHeight, w)
	if !strings.Contains(page, span) {
		t.Errorf("want %s in the page", span)
	}
	win := fmt.Sprintf(`<rect class="win" x="%.1f" y="18" width="%.1f"`, x, w)
	if !strings.Contains(page, win) {
		t.Errorf("want %s in the page", win)
	}
	if err := Write(&bytes.Buffer{}, Run{History: h}); err == nil {
		t.Error("a run without a checker report: want an error")
	}
}
