package report

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"lockstep/checker"
	"lockstep/model"
)

// Geometry of the charts, in SVG user units (the page scales them).
const (
	chartWidth  = 1100.0
	labelWidth  = 170.0 // lane labels, left of the plot
	rightMargin = 20.0
	axisHeight  = 24.0 // tick labels above the lanes
	laneHeight  = 18.0
	laneGap     = 5.0
	plotHeight  = 200.0 // the position and lag charts

	maxRows    = 300 // anomalies listed in the table
	maxMarkers = 400 // anomaly markers drawn
	maxPorc    = 3   // keys visualised with porcupine
)

// Colours, also used by the legend.
var (
	stateColour = map[model.NodeState]string{
		model.NodeCrashed: "#d62728",
		model.NodePaused:  "#ff7f0e",
		model.NodeCutOff:  "#9467bd",
	}
	storeColours = []string{"#1f77b4", "#2ca02c", "#e377c2", "#8c564b", "#17becf"}
)

// view is what run.html renders.
type view struct {
	Run       Run
	Verdict   string
	TimeKind  string // "virtual time" or "wall time"
	Counts    []classCount
	Timeline  timelineSVG
	Positions *chartSVG
	Lag       *chartSVG
	NoChart   string // why there is no position chart
	Rows      []anomalyRow
	More      int // anomalies past the table's end
	Faults    []faultRow
	Porc      []porcView
	States    []legendItem
	Stores    []legendItem
}

type classCount struct {
	Class            checker.Class
	Property         model.Property
	Total, Violating int
}

type legendItem struct{ Name, Colour string }

type faultRow struct {
	Start, End string
	What       string
}

type anomalyRow struct {
	ID        string
	Violation bool
	A         checker.Anomaly
	At        string
	Versions  string
	Key       string // "" for a store-wide anomaly
	Got, Want string
	Position  string
}

type porcView struct {
	Store  string
	Key    model.Key
	Result porcupine.CheckResult
	Page   string // porcupine's whole HTML page, for an iframe's srcdoc
	Err    string
}

// axis maps run time to x.
type axis struct{ end time.Duration }

func (a axis) x(t time.Duration) float64 {
	if a.end <= 0 {
		return labelWidth
	}
	f := float64(max(0, min(t, a.end))) / float64(a.end)
	return labelWidth + f*(chartWidth-labelWidth-rightMargin)
}

type tick struct {
	X     float64
	Label string
}

// ticks are about ten round time marks over the run.
func (a axis) ticks() []tick {
	if a.end <= 0 {
		return nil
	}
	raw := float64(a.end) / 10
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ts []tick
	for t := 0.0; t <= float64(a.end)+1; t += step {
		d := time.Duration(t)
		ts = append(ts, tick{X: a.x(d), Label: fmtDur(d)})
	}
	return ts
}

func newView(r Run) (*view, error) {
	h, rep := r.History, r.Report
	end := r.Duration
	for _, f := range h.Final {
		end = max(end, f.At)
	}
	ax := axis{end: end}
	r.Duration = end // a container run's length is when its last store was read
	v := &view{Run: r, Verdict: string(rep.Verdict), TimeKind: "virtual time"}
	if r.WallClock {
		v.TimeKind = "wall time"
	}
	for _, c := range checker.Classes {
		if n := rep.Counts[c]; n > 0 {
			cc := classCount{Class: c, Property: c.Property(), Total: n}
			for _, a := range rep.Anomalies {
				if a.Class == c && a.Violation {
					cc.Violating++
				}
			}
			v.Counts = append(v.Counts, cc)
		}
	}
	for _, s := range []model.NodeState{model.NodeCrashed, model.NodePaused, model.NodeCutOff} {
		v.States = append(v.States, legendItem{string(s), stateColour[s]})
	}
	for i, s := range h.Stores {
		v.Stores = append(v.Stores, legendItem{s.Name, storeColours[i%len(storeColours)]})
	}
	for _, f := range h.Faults {
		e := f.End
		if e == 0 {
			e = h.QuietAt
		}
		v.Faults = append(v.Faults, faultRow{Start: fmtDur(f.Start), End: fmtDur(e), What: f.What})
	}
	order := witnessOrder(rep.Anomalies)
	for i, ai := range order {
		if i == maxRows {
			v.More = len(order) - maxRows
			break
		}
		v.Rows = append(v.Rows, newRow(ai, rep.Anomalies[ai]))
	}
	v.Timeline = newTimeline(ax, h, rep)
	v.Positions, v.Lag, v.NoChart = newCharts(ax, h, rep)
	v.Porc = visualise(r)
	return v, nil
}

// witnessOrder lists anomalies claimed violations first, then the rest,
// each group in the report's order.
func witnessOrder(as []checker.Anomaly) []int {
	var order []int
	for _, claimed := range []bool{true, false} {
		for i, a := range as {
			if a.Violation == claimed {
				order = append(order, i)
			}
		}
	}
	return order
}

func anchor(i int) string { return fmt.Sprintf("anomaly-%d", i) }

func newRow(i int, a checker.Anomaly) anomalyRow {
	row := anomalyRow{ID: anchor(i), Violation: a.Violation, A: a, Versions: versions(a.Witness.Versions)}
	if a.Key != (model.Key{}) {
		row.Key = a.Key.String()
	}
	if a.Witness.Timed {
		row.At = fmtDur(a.Witness.At)
	}
	if d := a.Witness.Got; d != nil {
		row.Got = "lsn=" + d.LSN.String()
	}
	if d := a.Witness.Want; d != nil {
		row.Want = "lsn=" + d.LSN.String()
		if row.Got == "" {
			row.Got = "missing"
		}
	}
	if p := a.Witness.Position; p != nil {
		row.Position = p.String()
	}
	return row
}

func versions(ls []model.LSN) string {
	s := make([]string, len(ls))
	for i, l := range ls {
		s[i] = l.String()
	}
	return strings.Join(s, " → ")
}

// timelineSVG is the node-state and fault chart.
type timelineSVG struct {
	Width, Height float64
	Ticks         []tick
	Lanes         []lane
	Windows       []window
	Marks         []vline
	Markers       []marker
	NoNodes       bool // the run recorded no node states
}

type lane struct {
	Y     float64
	Label string
	Spans []rect
}

type rect struct {
	X, Y, W float64
	Colour  string
	Title   string
}

type window struct {
	X, W  float64
	Title string
}

type vline struct {
	X      float64
	Label  string
	Anchor string // the label's text-anchor
}

type marker struct {
	X, Y      float64
	Violation bool
	Href      string
	Title     string
}

func newTimeline(ax axis, h *model.History, rep *checker.Report) timelineSVG {
	t := timelineSVG{Width: chartWidth, Ticks: ax.ticks()}
	y := axisHeight
	// addLane returns the lane's index: t.Lanes grows, so no pointer
	// into it would stay valid.
	addLane := func(label string) int {
		t.Lanes = append(t.Lanes, lane{Y: y, Label: label})
		y += laneHeight + laneGap
		return len(t.Lanes) - 1
	}
	tl := h.Timeline
	if tl == nil || len(tl.Nodes) == 0 {
		t.NoNodes = true
	} else {
		byNode := map[string]int{}
		for _, n := range tl.Nodes {
			byNode[n] = addLane(n)
		}
		for _, s := range tl.Spans {
			li, ok := byNode[s.Node]
			if !ok {
				li = addLane(s.Node)
				byNode[s.Node] = li
			}
			l := &t.Lanes[li]
			x0, x1 := ax.x(s.Start), ax.x(s.End)
			title := fmt.Sprintf("%s %s %s–%s", s.Node, s.State, fmtDur(s.Start), fmtDur(s.End))
			if s.Detail != "" {
				title += " (" + s.Detail + ")"
			}
			l.Spans = append(l.Spans, rect{X: x0, Y: l.Y, W: max(x1-x0, 1.5), Colour: stateColour[s.State], Title: title})
		}
	}
	// One lane per store for its anomalies, so they never hide a node's
	// state.
	var names []string
	for _, s := range h.Stores {
		names = append(names, s.Name)
	}
	for _, a := range rep.Anomalies {
		if !slices.Contains(names, a.Store) {
			names = append(names, a.Store)
		}
	}
	storeLane := map[string]float64{}
	for _, n := range names {
		storeLane[n] = t.Lanes[addLane("anomalies: "+n)].Y
	}
	t.Height = y + 4
	for _, f := range h.Faults {
		e := f.End
		if e == 0 {
			e = h.QuietAt
		}
		x0, x1 := ax.x(f.Start), ax.x(e)
		t.Windows = append(t.Windows, window{X: x0, W: max(x1-x0, 2), Title: fmt.Sprintf("%s, %s–%s", f.What, fmtDur(f.Start), fmtDur(e))})
	}
	mark := func(at time.Duration, label string) {
		x, anchor := ax.x(at), "start"
		if x > chartWidth-rightMargin-60 {
			anchor = "end" // keep the label inside the chart
		}
		t.Marks = append(t.Marks, vline{X: x, Label: label, Anchor: anchor})
	}
	mark(h.QuietAt, "quiet")
	if h.Deadline > h.QuietAt && h.Deadline <= ax.end {
		mark(h.Deadline, "deadline")
	}
	t.Markers = markers(ax, rep, func(a checker.Anomaly) (float64, bool) {
		y, ok := storeLane[a.Store]
		return y + laneHeight/2, ok
	})
	return t
}

// markers draws timed anomalies at (time, yOf), one marker per store and
// pixel with every anomaly there in its title, violations first.
func markers(ax axis, rep *checker.Report, yOf func(checker.Anomaly) (float64, bool)) []marker {
	type spot struct {
		store string
		px    int
	}
	at := map[spot]int{}
	var ms []marker
	var lines [][]string
	for rank, i := range witnessOrder(rep.Anomalies) {
		a := rep.Anomalies[i]
		if !a.Witness.Timed {
			continue
		}
		y, ok := yOf(a)
		if !ok {
			continue
		}
		x := ax.x(a.Witness.At)
		s := spot{a.Store, int(x)}
		j, seen := at[s]
		if !seen {
			if len(ms) == maxMarkers {
				continue
			}
			j = len(ms)
			at[s] = j
			m := marker{X: x, Y: y, Violation: a.Violation}
			if rank < maxRows { // listed in the table: link to its row
				m.Href = "#" + anchor(i)
			}
			ms = append(ms, m)
			lines = append(lines, nil)
		}
		if len(lines[j]) < 8 {
			lines[j] = append(lines[j], describe(a))
		} else if len(lines[j]) == 8 {
			lines[j] = append(lines[j], "…")
		}
	}
	for j := range ms {
		ms[j].Title = strings.Join(lines[j], "\n")
	}
	return ms
}

// describe is an anomaly's witness in one line: what, where, which key,
// the versions the store showed and its position.
func describe(a checker.Anomaly) string {
	var b strings.Builder
	mark := "unclaimed"
	if a.Violation {
		mark = "VIOLATION"
	}
	fmt.Fprintf(&b, "%s %s %s", mark, a.Class, a.Store)
	if a.Key != (model.Key{}) {
		fmt.Fprintf(&b, " %s", a.Key)
	}
	fmt.Fprintf(&b, " at %s", fmtDur(a.Witness.At))
	if len(a.Witness.Versions) > 0 {
		fmt.Fprintf(&b, "; versions %s", versions(a.Witness.Versions))
	}
	if p := a.Witness.Position; p != nil {
		fmt.Fprintf(&b, "; position %s", p)
	}
	fmt.Fprintf(&b, "; %s", a.Witness.Detail)
	return b.String()
}

// chartSVG is a line chart over the run's time.
type chartSVG struct {
	Width, Height float64
	Ticks         []tick
	YTicks        []tick // X is the y coordinate here
	YLabel        string
	Series        []series
	Windows       []window
	Markers       []marker
	Top, Bottom   float64
	scale         int // the value at Top
}

type series struct {
	Name, Colour string
	Width        float64  // stroke width: wider for earlier stores, so equal lines stay visible
	Lines        []string // polyline point lists; a gap between them
	Dash         bool
}

// newCharts draws each store's position (as committed transactions
// applied) and its lag behind the source, from the timeline's samples.
func newCharts(ax axis, h *model.History, rep *checker.Report) (*chartSVG, *chartSVG, string) {
	tl := h.Timeline
	if tl == nil || len(tl.Positions) == 0 {
		return nil, nil, "this run recorded no store positions"
	}
	any := false
	for _, p := range tl.Positions {
		for _, s := range p.Stores {
			any = any || s.Has
		}
	}
	if !any {
		return nil, nil, "no store kept a position (dual writes' stores do not): there is no position or lag to draw"
	}
	// index is how many committed transactions a position has passed.
	commits := make([]model.LSN, len(h.Committed))
	for i, t := range h.Committed {
		commits[i] = t.CommitLSN
	}
	index := func(l model.LSN) int {
		return sort.Search(len(commits), func(i int) bool { return commits[i] > l })
	}
	n := len(h.Stores)
	src := make([]int, len(tl.Positions))
	pos := make([][]int, n) // -1: no position
	for s := range pos {
		pos[s] = make([]int, len(tl.Positions))
	}
	maxLag := 1
	for i, p := range tl.Positions {
		src[i] = index(p.Source)
		for s := 0; s < n && s < len(p.Stores); s++ {
			sp := p.Stores[s]
			pos[s][i] = -1
			if sp.Up && sp.Has {
				pos[s][i] = index(sp.LSN)
				maxLag = max(maxLag, src[i]-pos[s][i])
			}
		}
	}
	times := make([]time.Duration, len(tl.Positions))
	for i, p := range tl.Positions {
		times[i] = p.At
	}
	posChart := newChart(ax, h, "transactions applied", max(1, len(commits)))
	lagChart := newChart(ax, h, "transactions behind the source", maxLag)
	posChart.Series = append(posChart.Series, series{Name: "source (committed)", Colour: "#333", Dash: true, Width: 1.4,
		Lines: posChart.lines(ax, times, src)})
	for s, st := range h.Stores {
		c := storeColours[s%len(storeColours)]
		w := 1.6 + 1.6*float64(n-1-s)
		posChart.Series = append(posChart.Series, series{Name: st.Name, Colour: c, Width: w, Lines: posChart.lines(ax, times, pos[s])})
		lag := make([]int, len(times))
		for i := range lag {
			lag[i] = -1
			if pos[s][i] >= 0 {
				lag[i] = max(0, src[i]-pos[s][i])
			}
		}
		lagChart.Series = append(lagChart.Series, series{Name: st.Name, Colour: c, Width: w, Lines: lagChart.lines(ax, times, lag)})
	}
	// Witnesses that carry a store position are marked at it.
	posChart.Markers = markers(ax, rep, func(a checker.Anomaly) (float64, bool) {
		if a.Witness.Position == nil {
			return 0, false
		}
		return posChart.y(index(a.Witness.Position.LSN)), true
	})
	return posChart, lagChart, ""
}

func newChart(ax axis, h *model.History, label string, top int) *chartSVG {
	c := &chartSVG{Width: chartWidth, Height: axisHeight + plotHeight + 18, Ticks: ax.ticks(), YLabel: label,
		Top: axisHeight, Bottom: axisHeight + plotHeight}
	c.YTicks = []tick{{X: c.Bottom, Label: "0"}, {X: c.y2(top/2, top), Label: fmt.Sprint(top / 2)}, {X: c.Top, Label: fmt.Sprint(top)}}
	c.scale = top
	for _, f := range h.Faults {
		e := f.End
		if e == 0 {
			e = h.QuietAt
		}
		x0, x1 := ax.x(f.Start), ax.x(e)
		c.Windows = append(c.Windows, window{X: x0, W: max(x1-x0, 2), Title: f.What})
	}
	return c
}

func (c *chartSVG) y2(v, top int) float64 {
	return c.Bottom - float64(v)/float64(max(top, 1))*(c.Bottom-c.Top)
}

func (c *chartSVG) y(v int) float64 { return c.y2(v, c.scale) }

// lines turns step samples into polylines, broken where a value is -1.
func (c *chartSVG) lines(ax axis, times []time.Duration, vals []int) []string {
	var out []string
	var b strings.Builder
	prev := -1
	flush := func() {
		if b.Len() > 0 {
			out = append(out, b.String())
			b.Reset()
		}
	}
	for i, v := range vals {
		x := ax.x(times[i])
		switch {
		case v < 0:
			flush()
		case prev < 0:
			fmt.Fprintf(&b, "%.1f,%.1f", x, c.y(v))
		default:
			fmt.Fprintf(&b, " %.1f,%.1f %.1f,%.1f", x, c.y(prev), x, c.y(v))
		}
		prev = v
	}
	flush()
	return out
}

// visualise runs porcupine's visualisation for the first keys the checker
// found non-linearizable (one per store, at most maxPorc).
func visualise(r Run) []porcView {
	timeout := r.LinearizabilityTimeout
	if timeout == 0 {
		timeout = checker.DefaultLinearizabilityTimeout
	}
	var out []porcView
	seen := map[string]bool{}
	for _, a := range r.Report.Anomalies {
		if a.Class != checker.Nonlinearizable || a.Key == (model.Key{}) || seen[a.Store] || len(out) == maxPorc {
			continue
		}
		seen[a.Store] = true
		var b bytes.Buffer
		pv := porcView{Store: a.Store, Key: a.Key}
		res, err := checker.VisualizeKey(&b, r.History, a.Store, a.Key, max(timeout, 0))
		pv.Result = res
		if err != nil {
			pv.Err = err.Error()
		} else {
			pv.Page = b.String()
		}
		out = append(out, pv)
	}
	return out
}
