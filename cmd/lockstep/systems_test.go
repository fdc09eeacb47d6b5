package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// campaign --system all prints the three systems side by side with their
// cost, and writes each cell's metrics to the JSON.
func TestCampaignAllSystemsSideBySide(t *testing.T) {
	path := filepath.Join(t.TempDir(), "summary.json")
	code, out, _ := lockstep("campaign", "--scenario", "steady,crash-capture", "--seeds", "2", "--txns", "100", "--system", "all", "--json", path)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	header := regexp.MustCompile(`(?m)^scenario +dualwrite violating +txn/s +p99 ms +unavail s +2pc violating +txn/s +p99 ms +unavail s +pipeline violating .*$`)
	if !header.MatchString(out) {
		t.Fatalf("no side-by-side table of the three systems:\n%s", out)
	}
	row := regexp.MustCompile(`(?m)^crash-capture +\d+/2 \(\d+%\) +[\d.]+ +\d+ +[\d.]+ +0/2 \(0%\) +[\d.]+ +\d+ +[\d.]+ +0/2 \(0%\) +[\d.]+ +\d+ +[\d.]+$`)
	if !row.MatchString(out) {
		t.Fatalf("no crash-capture row with every system's figures:\n%s", out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		Cells []struct {
			System  string `json:"system"`
			Metrics struct {
				Throughput float64 `json:"throughput_tps"`
				P50        float64 `json:"commit_latency_p50_ms"`
				P99        float64 `json:"commit_latency_p99_ms"`
			} `json:"metrics"`
		} `json:"cells"`
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum.Cells) != 6 {
		t.Fatalf("%d cells, want 6 (2 scenarios x 3 systems)", len(sum.Cells))
	}
	for _, c := range sum.Cells {
		if m := c.Metrics; m.Throughput <= 0 || m.P50 <= 0 || m.P99 < m.P50 {
			t.Errorf("%s: metrics %+v", c.System, m)
		}
	}
}

// A 2pc run prints its cost; heuristic-rollback in containers (a
// participant's bug PostgreSQL cannot have), and a bug of the other
// system, are bad input.
func TestTwoPCRunAndRefusals(t *testing.T) {
	code, out, _ := lockstep("run", "--scenario", "steady", "--system", "2pc", "--seed", "1", "--txns", "50")
	if code != 0 || !regexp.MustCompile(`(?m)^cost: \d+ txns committed in the fault phase \([\d.]+/s\), commit latency p50 \S+ p99 \S+, unavailable \S+$`).MatchString(out) {
		t.Fatalf("exit %d, want 0 and a cost line:\n%s", code, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--world", "containers", "--scenario", "steady", "--system", "2pc", "--seed", "1", "--bug", "heuristic-rollback"}, "lockstep run: bug heuristic-rollback: PostgreSQL takes no heuristic decisions"},
		{[]string{"run", "--scenario", "steady", "--system", "pipeline", "--seed", "1", "--bug", "forget-in-doubt"}, "lockstep run: scenario steady+forget-in-doubt: two-phase commit's bugs need --system 2pc"},
	} {
		code, _, errw := lockstep(c.args...)
		if code != 2 || !strings.HasPrefix(errw, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errw, c.want)
		}
	}
}

// Two-phase commit promises what it claims, as the pipeline does: a 2pc
// run that violates a claim exits 1 (run and campaign), where dual writes'
// violations are the expected finding and exit 0.
func TestTwoPCViolationExitsOne(t *testing.T) {
	// Which seeds a switch fails moves with the simulator's timing: the
	// campaign finds one, and run must exit 1 on it too.
	code, out, _ := lockstep("campaign", "--scenario", "crash-capture+commit-before-prepared", "--system", "2pc", "--seeds", "8")
	m := regexp.MustCompile(`2PC VIOLATED A CLAIMED PROPERTY in \d+ runs; replay with:\n  lockstep repro crash-capture\+commit-before-prepared/2pc/(\d+)\n`).FindStringSubmatch(out)
	if code != 1 || m == nil {
		t.Fatalf("campaign: exit %d, want 1 and a run listed:\n%s", code, out)
	}
	code, out, _ = lockstep("run", "--scenario", "crash-capture", "--system", "2pc", "--seed", m[1], "--bug", "commit-before-prepared")
	if code != 1 || !strings.Contains(out, "lost") {
		t.Fatalf("run of seed %s: exit %d, want 1 and a lost change:\n%s", m[1], code, out)
	}
	if code, out, _ := lockstep("run", "--scenario", "cache-restart", "--system", "dualwrite", "--seed", "1"); code != 0 || !strings.Contains(out, "VIOLATED") && !strings.Contains(out, "violat") {
		t.Fatalf("dual writes: exit %d, want 0 with their violations shown:\n%s", code, out)
	}
}

// run --json carries the run's metrics next to the checker's report, as a
// campaign's JSON carries each run's.
func TestRunJSONHasMetrics(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.json")
	if code, out, errw := lockstep("run", "--scenario", "crash-capture", "--system", "2pc", "--seed", "1", "--txns", "60", "--json", path); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errw)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var run struct {
		Verdict string `json:"verdict"`
		System  string `json:"system"`
		Metrics *struct {
			Committed   int     `json:"committed"`
			Throughput  float64 `json:"throughput_tps"`
			P50         int64   `json:"commit_latency_p50_ns"`
			P99         int64   `json:"commit_latency_p99_ns"`
			Unavailable *int64  `json:"unavailable_ns"`
		} `json:"metrics"`
	}
	if err := json.Unmarshal(b, &run); err != nil {
		t.Fatal(err)
	}
	if run.Verdict == "" || run.System != "2pc" {
		t.Fatalf("the report's fields are not at the top level: %s", b)
	}
	if m := run.Metrics; m == nil || m.Committed == 0 || m.Throughput <= 0 || m.P50 <= 0 || m.P99 < m.P50 || m.Unavailable == nil {
		t.Fatalf("metrics %+v in %s", run.Metrics, b)
	}
}
