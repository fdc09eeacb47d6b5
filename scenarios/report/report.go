// Package report writes a run's HTML report and a campaign's index page:
// one self-contained file per run that opens offline (no script or style
// from elsewhere), with a timeline of every node's state and the fault
// windows over the run's time, each store's position and lag, the
// anomalies' witnesses marked where they happened, porcupine's
// visualisation of a key whose reads are not linearizable, the fault plan
// and the repro line.
//
// The charts are SVG written here with html/template: a report is a
// static document, so it needs no chart library, no script of its own and
// nothing to vendor, and tests can read what it draws. Only porcupine's
// page, embedded in an iframe, runs a script (its own, inline).
//
//	rep := report.FromOutcome(out)        // a simulated run
//	err := report.WriteFile("run.html", rep)
package report

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"lockstep/checker"
	"lockstep/model"
	"lockstep/scenarios"
)

// Run is everything a run's report shows. History and Report are
// required; the rest is printed when set.
type Run struct {
	Title   string // e.g. "steady / dualwrite / seed 10"
	World   string // "simulator" or "containers"
	History *model.History
	Report  *checker.Report
	// Plan is the fault plan as text (faults.Plan.String) and Mix its
	// fault mix.
	Plan, Mix string
	// Repro is the command that replays the run.
	Repro string
	// Hash is the trace hash (simulated runs).
	Hash string
	// Duration is the run's length on its clock: virtual time in the
	// simulator, wall time in containers (WallClock set).
	Duration  time.Duration
	WallClock bool
	// Stopped says why the pipeline refused input it cannot capture.
	Stopped string
	// Notes are lines printed under the title (e.g. how a run was shrunk).
	Notes []string
	// LinearizabilityTimeout bounds porcupine's search for the
	// visualisation (default 2s).
	LinearizabilityTimeout time.Duration
	_                      struct{}
}

// FromOutcome is a simulated run's report.
func FromOutcome(o *scenarios.Outcome) Run {
	return Run{
		Title:                  fmt.Sprintf("%s / %s / seed %d", o.Scenario, o.System, o.Seed),
		World:                  "simulator",
		History:                o.History,
		Report:                 o.Report,
		Plan:                   o.Plan.String(),
		Mix:                    o.Plan.Mix(),
		Repro:                  o.Repro(),
		Hash:                   fmt.Sprintf("%016x", o.Hash),
		Duration:               o.Virtual,
		Stopped:                o.Stopped,
		Notes:                  []string{costNote(o.Metrics)},
		LinearizabilityTimeout: o.Options.Checker.LinearizabilityTimeout,
	}
}

// costNote says what the run cost the application (scenarios.Metrics).
func costNote(m scenarios.Metrics) string {
	s := fmt.Sprintf("cost: %d transactions committed in the fault phase (%.1f/s); commit latency p50 %v, p99 %v; unavailable %v",
		m.Committed, m.Throughput, fmtDur(m.LatencyP50), fmtDur(m.LatencyP99), m.Unavailable)
	if m.InDoubt > 0 {
		s += fmt.Sprintf("; %d prepared transactions in doubt at the end", m.InDoubt)
	}
	return s
}

//go:embed templates
var templates embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"dur":  fmtDur,
	"join": strings.Join,
	"f":    func(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) },
	"add":  func(a, b float64) float64 { return a + b },
	"neg":  func(a float64) float64 { return -a },
	"anchorShift": func(anchor string) float64 {
		if anchor == "end" {
			return -3
		}
		return 3
	},
	"lw":    func() float64 { return labelWidth },
	"lh":    func() float64 { return laneHeight },
	"plotw": func() float64 { return chartWidth - labelWidth - rightMargin },
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	},
}).ParseFS(templates, "templates/*.html"))

// Write writes r's report as one HTML page.
func Write(w io.Writer, r Run) error {
	if r.History == nil || r.Report == nil {
		return fmt.Errorf("report: a run's report needs its history and its checker report")
	}
	v, err := newView(r)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, "run.html", v); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	_, err = w.Write(b.Bytes())
	return err
}

// WriteFile writes r's report to path.
func WriteFile(path string, r Run) error {
	var b bytes.Buffer
	if err := Write(&b, r); err != nil {
		return err
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// fmtDur prints a duration rounded to the millisecond.
func fmtDur(d time.Duration) string { return d.Round(time.Millisecond).String() }
