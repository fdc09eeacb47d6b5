package containers

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// keptUpWithin is how soon after a load's end a capture's topic must hold
// everything committed before it for the capture to have kept up: two of
// stock Debezium's 500 ms polls and then some, less than a second of
// anyone's backlog at these rates.
const keptUpWithin = 2 * time.Second

// row is one measure of a table: its name and, for one capture, the figure
// as printed and as a number for the ratio (negative: no ratio).
type row struct {
	what string
	of   func(CaptureFigures) (string, float64)
}

// Table is the comparison as Markdown: the load's table with every
// capture's figures and lockstep / Debezium beside each Debezium column,
// then the maximum-rate load's.
func (c *Comparison) Table() string {
	var s strings.Builder
	cfg := c.Config
	fmt.Fprintf(&s, "pgbench TPC-B -c %d for %v: %d transactions committed, %.0f changes/s", cfg.Clients, cfg.Duration, c.Committed, c.Offered)
	if cfg.KillAt > 0 {
		fmt.Fprintf(&s, "; every capture killed -9 at %v, started again a second later", cfg.KillAt)
	}
	s.WriteString("\n\n")
	latency := c.latencyName()
	when := fmt.Sprintf(", after %v warm-up", cfg.Warmup)
	if cfg.KillAt > 0 {
		when += ", appended before the kill"
	}
	rows := []row{
		txnsRow,
		{"changes/s, load start to last append", rate},
		{latency + " p50" + when, func(f CaptureFigures) (string, float64) { return some(f.Steady, f.SteadyP50) }},
		{latency + " p99" + when, func(f CaptureFigures) (string, float64) { return some(f.Steady, f.SteadyP99) }},
		{"time between its topic's appends (one per produce batch) p50, same transactions", func(f CaptureFigures) (string, float64) { return some(f.Gaps, f.GapP50) }},
		{"time between its topic's appends p99, same", func(f CaptureFigures) (string, float64) { return some(f.Gaps, f.GapP99) }},
	}
	if cfg.KillAt > 0 {
		rows = append(rows,
			row{latency + " p50, whole load (kill included)", latencyP50},
			row{latency + " p99, whole load (kill included)", latencyP99})
	}
	rows = append(rows, slotLagRows...)
	rows = append(rows, row{"catch-up after the load's end (until its topic held all committed before it)", catchUp})
	if c.measured(c.Captures) {
		rows = append(rows, row{"CPU per change (cgroup, load start to caught up)", cpuPerChange},
			row{"peak memory (cgroup)", func(f CaptureFigures) (string, float64) { return mb(f.PeakRSS), float64(f.PeakRSS) }})
	} else {
		rows = append(rows, row{"CPU per change, peak memory", func(CaptureFigures) (string, float64) { return "not measured (no readable cgroup)", -1 }})
	}
	if cfg.KillAt > 0 {
		rows = append(rows,
			row{"restart after kill -9 (start until its topic held all committed before it)", func(f CaptureFigures) (string, float64) { return dur(f.Restart), float64(f.Restart) }},
			row{"duplicates after the crash", func(f CaptureFigures) (string, float64) { return strconv.Itoa(f.Duplicates), float64(f.Duplicates) }})
	}
	c.table(&s, c.Captures, rows)
	if m := c.MaxRate; m != nil {
		fmt.Fprintf(&s, "\nmaximum rate: pgbench -f max-rate.sql (%d changes per transaction: an account update, %d history rows in one insert) -c %d for %v, no kill: %d transactions committed, %.0f changes/s offered\n\n",
			maxRateBatch, maxRateBatch-1, cfg.MaxClients, cfg.MaxRate, m.Committed, m.Offered)
		rows := []row{
			txnsRow,
			{"changes/s, load start to last append", rate},
			{fmt.Sprintf("kept up (caught up within %v of the load's end)", keptUpWithin), func(f CaptureFigures) (string, float64) {
				if f.CatchUp >= 0 && f.CatchUp <= keptUpWithin {
					return "yes", -1
				}
				return "no", -1
			}},
			{"catch-up after the load's end", catchUp},
		}
		rows = append(rows, slotLagRows...)
		rows = append(rows, row{latency + " p50", latencyP50}, row{latency + " p99", latencyP99})
		if c.measured(m.Captures) {
			rows = append(rows, row{"CPU per change (cgroup, load start to caught up)", cpuPerChange})
		}
		c.table(&s, m.Captures, rows)
	}
	return s.String()
}

var txnsRow = row{"transactions captured", func(f CaptureFigures) (string, float64) { return strconv.Itoa(f.Txns), float64(f.Txns) }}

var slotLagRows = []row{
	{"slot lag p50 (WAL bytes behind confirmed_flush_lsn, sampled each second)", func(f CaptureFigures) (string, float64) { return lagBytes(f.SlotLag, f.SlotLag.P50) }},
	{"slot lag max (same)", func(f CaptureFigures) (string, float64) { return lagBytes(f.SlotLag, f.SlotLag.Max) }},
}

// some is a percentile of n figures, or "none" (and no ratio) if n is 0:
// a percentile of nothing is not 0 ms.
func some(n int, d time.Duration) (string, float64) {
	if n == 0 {
		return "none", -1
	}
	return millis(d), float64(d)
}

func rate(f CaptureFigures) (string, float64) { return fmt.Sprintf("%.0f", f.Rate), f.Rate }
func latencyP50(f CaptureFigures) (string, float64) {
	return millis(f.LatencyP50), float64(f.LatencyP50)
}
func latencyP99(f CaptureFigures) (string, float64) {
	return millis(f.LatencyP99), float64(f.LatencyP99)
}
func catchUp(f CaptureFigures) (string, float64) { return dur(f.CatchUp), float64(f.CatchUp) }

func cpuPerChange(f CaptureFigures) (string, float64) {
	if f.Changes == 0 {
		return "-", -1
	}
	per := f.CPU / time.Duration(f.Changes)
	if per >= time.Millisecond {
		per = per.Round(10 * time.Microsecond)
	} else {
		per = per.Round(100 * time.Nanosecond)
	}
	return per.String(), float64(per)
}

func lagBytes(l LagFigures, b int64) (string, float64) {
	switch {
	case l.Samples == 0:
		return "not sampled", -1
	case b < 1<<20:
		return fmt.Sprintf("%.0f kB", float64(b)/(1<<10)), float64(b)
	}
	return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)), float64(b)
}

// latencyName says whose clock the latency rows read: the broker's
// LogAppendTime unless some record carried its producer's.
func (c *Comparison) latencyName() string {
	all := append([]CaptureFigures{}, c.Captures...)
	if c.MaxRate != nil {
		all = append(all, c.MaxRate.Captures...)
	}
	for _, f := range all {
		if !f.AppendTime {
			return "commit -> Kafka record timestamp (not LogAppendTime)"
		}
	}
	return "commit -> Kafka append"
}

func (c *Comparison) measured(fs []CaptureFigures) bool {
	for _, f := range fs {
		if !f.Measured {
			return false
		}
	}
	return true
}

// table writes one Markdown table: a column per capture (lockstep first)
// and after each other capture's, lockstep's figure divided by its.
func (c *Comparison) table(s *strings.Builder, fs []CaptureFigures, rows []row) {
	if len(fs) == 0 {
		return
	}
	s.WriteString("| measure | lockstep |")
	for i, v := range c.Config.Debezium {
		if i+1 < len(fs) {
			fmt.Fprintf(s, " %s | lockstep / %s |", v.Label(), v.Name)
		}
	}
	s.WriteString("\n|---|---|" + strings.Repeat("---|---|", len(fs)-1) + "\n")
	for _, r := range rows {
		lt, lv := r.of(fs[0])
		fmt.Fprintf(s, "| %s | %s |", r.what, lt)
		for _, f := range fs[1:] {
			t, v := r.of(f)
			ratio := "-"
			if lv >= 0 && v > 0 {
				ratio = fmt.Sprintf("%.2f", lv/v)
			}
			fmt.Fprintf(s, " %s | %s |", t, ratio)
		}
		s.WriteString("\n")
	}
}

func millis(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func dur(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.Round(time.Millisecond).String()
}

func mb(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/(1<<20)) }

func msOr(d time.Duration, zero string) string {
	if d == 0 {
		return zero
	}
	return d.String()
}
