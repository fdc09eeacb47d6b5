package report

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lockstep/internal/needs"
	"lockstep/scenarios"
)

// chromium finds a Chromium or Chrome binary, or says what is missing.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	needs.Missing(t, "no Chromium to render the report in (apt-get install -y chromium; .ci/run installs it)")
	return ""
}

// browse opens path in headless Chromium, runs the actions and returns
// every console error, uncaught exception and browser-log error (a
// resource that failed to load among them) seen while the page loaded and
// ran, its iframes' scripts included.
func browse(t *testing.T, path, waitFor string, then func(ctx context.Context) error) []string {
	t.Helper()
	exe := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1200, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cctx, stopConsole := context.WithCancel(ctx)
	messages := chromedp.Console(cctx)
	var problems []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				problems = append(problems, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m))
			}
		}
	}()
	err := chromedp.Do(ctx, chromedp.Navigate("file://"+path), chromedp.WaitVisible(waitFor))
	if err == nil {
		err = then(ctx)
	}
	// Let late scripts (porcupine's render in its iframe) report.
	time.Sleep(300 * time.Millisecond)
	stopConsole()
	<-done
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return problems
}

// A real browser renders a failing run's report with no console error:
// the timeline, both position charts and their markers have a size on
// screen, and porcupine's page inside its iframe has drawn its reads.
func TestReportRendersInChromium(t *testing.T) {
	chromium(t)
	dir := t.TempDir()
	pipe := filepath.Join(dir, "pipeline.html")
	out := failingPipelineRun(t)
	if err := WriteFile(pipe, FromOutcome(out)); err != nil {
		t.Fatal(err)
	}
	type rendered struct {
		Timeline, Positions, Lag float64
		Spans, Markers, Rows     int
	}
	var got rendered
	eval := func(ctx context.Context) error {
		var err error
		got, err = chromedp.Run(ctx, chromedp.Evaluate[rendered](`({
		Timeline: document.querySelector('#timeline').getBoundingClientRect().height,
		Positions: document.querySelector('#positions').getBoundingClientRect().height,
		Lag: document.querySelector('#lag').getBoundingClientRect().height,
		Spans: [...document.querySelectorAll('#timeline rect.span')].filter(r => r.getBoundingClientRect().width > 0).length,
		Markers: document.querySelectorAll('circle.marker').length,
		Rows: document.querySelectorAll('#anomalies tr[id]').length,
	})`))
		return err
	}
	problems := browse(t, pipe, "#timeline", eval)
	if len(problems) > 0 {
		t.Errorf("console errors in %s:\n%s", pipe, strings.Join(problems, "\n"))
	}
	if got.Timeline < 100 || got.Positions < 100 || got.Lag < 100 {
		t.Errorf("charts not laid out: %+v", got)
	}
	if got.Spans != len(out.History.Timeline.Spans) || got.Rows != len(out.Report.Anomalies) || got.Markers == 0 {
		t.Errorf("rendered %+v; want %d spans, %d rows and some markers", got, len(out.History.Timeline.Spans), len(out.Report.Anomalies))
	}

	dual := filepath.Join(dir, "dualwrite.html")
	out = nonlinearizableDualWrites(t)
	if err := WriteFile(dual, FromOutcome(out)); err != nil {
		t.Fatal(err)
	}
	var ops int
	problems = browse(t, dual, "iframe.porcupine", func(ctx context.Context) error {
		var err error
		ops, err = chromedp.Run(ctx, chromedp.Poll[int](`(() => { const d = document.querySelector('iframe.porcupine').contentDocument;
			const n = d && d.querySelectorAll('#canvas svg rect').length; return n > 0 ? n : null })()`,
			chromedp.WithPollingTimeout(20*time.Second)))
		return err
	})
	if len(problems) > 0 {
		t.Errorf("console errors in %s:\n%s", dual, strings.Join(problems, "\n"))
	}
	if ops == 0 {
		t.Error("porcupine drew nothing in its iframe")
	}

	// A campaign's index, and a run report it links to.
	sc, err := scenarios.Resolve("crash-capture")
	if err != nil {
		t.Fatal(err)
	}
	cfg := scenarios.CampaignConfig{Scenarios: []*scenarios.Scenario{sc}, Systems: scenarios.Systems, Seeds: 2, FirstSeed: 1,
		Options: scenarios.Options{Txns: 200}}
	camp := filepath.Join(dir, "campaign")
	if err := WriteCampaign(camp, cfg, scenarios.Campaign(cfg), CampaignOptions{PerCell: 1}); err != nil {
		t.Fatal(err)
	}
	var linked string
	problems = browse(t, filepath.Join(camp, "index.html"), "#systems", func(ctx context.Context) error {
		var err error
		linked, err = chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('#runs a') || {}).href || ''`))
		return err
	})
	if len(problems) > 0 {
		t.Errorf("console errors in the index:\n%s", strings.Join(problems, "\n"))
	}
	if !strings.HasPrefix(linked, "file://") {
		t.Fatalf("the index links no run report (%q)", linked)
	}
	if problems := browse(t, strings.TrimPrefix(linked, "file://"), "#timeline", func(context.Context) error { return nil }); len(problems) > 0 {
		t.Errorf("console errors in %s:\n%s", linked, strings.Join(problems, "\n"))
	}
}
