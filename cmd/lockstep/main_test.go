package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"lockstep/checker"
	"lockstep/scenarios"
)

// lockstep runs the CLI in-process and returns exit code, stdout, stderr.
func lockstep(args ...string) (int, string, string) {
	var out, errw bytes.Buffer
	code := run(args, &out, &errw)
	return code, out.String(), errw.String()
}

func TestBadInputIsOneLineAndExit2(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--scenario", "steady", "--seed", "x1"}, `lockstep run: malformed seed "x1": want a decimal or 0x-hex number`},
		{[]string{"run", "--scenario", "nope", "--seed", "1"}, `lockstep run: unknown scenario "nope"`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--system", "kafka"}, `lockstep run: unknown system "kafka"`},
		{[]string{"run", "--seed", "1"}, "lockstep run: --scenario and --seed are required"},
		{[]string{"campaign", "--scenario", "steady,bogus"}, `lockstep campaign: unknown scenario "bogus"`},
		{[]string{"campaign", "--seeds", "0"}, `lockstep campaign: invalid value "0" for flag -seeds: want a positive whole number`},
		{[]string{"campaign", "--seeds", "-3"}, `lockstep campaign: invalid value "-3" for flag -seeds: want a positive whole number`},
		{[]string{"campaign", "--txns", "-1"}, `lockstep campaign: invalid value "-1" for flag -txns: want a positive whole number`},
		{[]string{"campaign", "--parallel", "0"}, `lockstep campaign: invalid value "0" for flag -parallel: want a positive whole number`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--txns", "-5"}, `lockstep run: invalid value "-5" for flag -txns: want a positive whole number`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--txns", "0"}, `lockstep run: invalid value "0" for flag -txns: want a positive whole number`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--txns", "many"}, `lockstep run: invalid value "many" for flag -txns: want a positive whole number`},
		{[]string{"repro", "--txns", "-5", "steady/pipeline/1"}, `lockstep repro: invalid value "-5" for flag -txns: want a positive whole number`},
		{[]string{"bench", "--seeds", "0"}, `lockstep bench: invalid value "0" for flag -seeds: want a positive whole number`},
		{[]string{"repro", "steady-pipeline-1"}, `lockstep repro: malformed repro token "steady-pipeline-1"`},
		{[]string{"frobnicate"}, `lockstep: unknown command "frobnicate"`},
		{[]string{"run", "--bogus"}, "lockstep run: flag provided but not defined: -bogus"},
	}
	for _, c := range cases {
		code, _, errw := lockstep(c.args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", c.args, code)
		}
		if !strings.HasPrefix(errw, c.want) || strings.Count(errw, "\n") != 1 {
			t.Errorf("%v: stderr %q, want one line starting %q", c.args, errw, c.want)
		}
	}
}

var hashRE = regexp.MustCompile(`trace hash ([0-9a-f]{16})`)

func TestRunPrintsVerdictHashAndReproThatReplays(t *testing.T) {
	// The first seed whose dual writes fail (TestDualWritesAreCaught: one
	// within 10), so the test does not hang on one seed's fate.
	var code int
	var out, seed string
	for s := 1; s <= 10 && !strings.Contains(out, "FAIL:"); s++ {
		seed = strconv.Itoa(s)
		code, out, _ = lockstep("run", "--scenario", "crash-capture", "--system", "dualwrite", "--seed", seed, "--txns", "200")
		if code != 0 {
			t.Fatalf("dual writes failing is the expected finding, not a failure: exit %d\n%s", code, out)
		}
	}
	for _, want := range []string{"FAIL:", "faults (", "repro: lockstep repro crash-capture/dualwrite/" + seed} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	m := hashRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no trace hash in:\n%s", out)
	}
	_, again, _ := lockstep("repro", "--txns", "200", "crash-capture/dualwrite/"+seed)
	if m2 := hashRE.FindStringSubmatch(again); m2 == nil || m2[1] != m[1] {
		t.Fatalf("repro printed another hash: %v vs %s", m2, m[1])
	}
}

func TestRunPipelinePassesAndChecksDeterminism(t *testing.T) {
	code, out, errw := lockstep("run", "--scenario", "swarm", "--seed", "0x2a", "--txns", "200", "--check-determinism")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errw)
	}
	if !strings.Contains(out, "determinism: two runs, identical traces") || !strings.Contains(out, "PASS:") {
		t.Fatalf("output:\n%s", out)
	}
}

func TestCampaignTableAndJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "summary.json")
	code, out, _ := lockstep("campaign", "--scenario", "steady,crash-appliers", "--seeds", "3", "--txns", "150", "--json", path)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, want := range []string{"scenario", "pipeline violating", "dual writes violating", "crash-appliers", "0/3 (0%)", "anomalies by class", "seeds/s per core", "pipeline: no claimed property violated"} {
		if !strings.Contains(out, want) {
			t.Fatalf("summary lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		Cells []struct {
			Scenario  string         `json:"scenario"`
			System    string         `json:"system"`
			Seeds     int            `json:"seeds"`
			Violating int            `json:"seeds_violating"`
			Anomalies map[string]int `json:"anomalies_by_class"`
			Rate      float64        `json:"seeds_per_second"`
		} `json:"cells"`
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum.Cells) != 4 {
		t.Fatalf("%d cells, want 4 (2 scenarios x 2 systems)", len(sum.Cells))
	}
	for _, c := range sum.Cells {
		if c.Seeds != 3 || c.Rate <= 0 {
			t.Fatalf("cell %+v: want 3 seeds and a rate", c)
		}
		if c.System == "pipeline" && c.Violating != 0 {
			t.Fatalf("pipeline violated in %+v", c)
		}
	}
}

func TestBrokenPipelineExits1AndReproKeepsTheBug(t *testing.T) {
	code, out, _ := lockstep("run", "--scenario", "steady", "--bug", "skip-snapshot", "--seed", "1", "--txns", "100")
	if code != 1 {
		t.Fatalf("a pipeline with a known bug: exit %d, want 1\n%s", code, out)
	}
	if !strings.Contains(out, "repro: lockstep repro steady+skip-snapshot/pipeline/1") {
		t.Fatalf("the repro line must carry the bug:\n%s", out)
	}
	code, again, _ := lockstep("repro", "--txns", "100", "steady+skip-snapshot/pipeline/1")
	if code != 1 || hashRE.FindString(again) != hashRE.FindString(out) {
		t.Fatalf("repro of a bug run: exit %d, hash %q vs %q", code, hashRE.FindString(again), hashRE.FindString(out))
	}
	code, _, errw := lockstep("run", "--scenario", "steady", "--bug", "telepathy", "--seed", "1")
	if code != 2 || !strings.Contains(errw, `unknown bug "telepathy"`) {
		t.Fatalf("unknown bug: exit %d, %q", code, errw)
	}
}

func TestHelp(t *testing.T) {
	code, out, _ := lockstep("help")
	if code != 0 || !strings.Contains(out, "campaign") || !strings.Contains(out, "repro") {
		t.Fatalf("help: exit %d\n%s", code, out)
	}
	code, out, _ = lockstep("campaign", "-h")
	if code != 0 || !strings.Contains(out, "--seeds") && !strings.Contains(out, "-seeds") {
		t.Fatalf("campaign -h: exit %d\n%s", code, out)
	}
}

// A failure of the harness itself (here: the report cannot be written) is
// exit 2 with one line, never 1, which says the pipeline broke a claim.
func TestHarnessErrorIsExit2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "report.json")
	code, out, errw := lockstep("run", "--scenario", "steady", "--seed", "1", "--txns", "20", "--json", path)
	if !strings.Contains(out, "PASS:") {
		t.Fatalf("the run itself must pass:\n%s", out)
	}
	if code != 2 || !strings.HasPrefix(errw, "lockstep run: write "+path) || strings.Count(errw, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q: want 2 and one line about the write", code, errw)
	}
}

// Only the pipeline's verdict decides the exit, and inconclusive is not a
// pass.
func TestJudge(t *testing.T) {
	fail := &checker.Report{Verdict: checker.Fail, Anomalies: []checker.Anomaly{{Class: checker.Lost, Violation: true}}}
	cases := []struct {
		sys     scenarios.System
		rep     *checker.Report
		refused bool
		want    error
	}{
		{scenarios.Pipeline, &checker.Report{Verdict: checker.Pass}, false, nil},
		{scenarios.Pipeline, fail, false, errViolation},
		{scenarios.Pipeline, &checker.Report{Verdict: checker.Inconclusive}, false, errInconclusive},
		{scenarios.Pipeline, &checker.Report{Verdict: checker.Pass}, true, errRefused},
		{scenarios.Pipeline, fail, true, errViolation},
		{scenarios.DualWrite, fail, false, nil},
		{scenarios.DualWrite, &checker.Report{Verdict: checker.Inconclusive}, false, nil},
	}
	for _, c := range cases {
		if got := judge(c.sys, c.rep, c.refused); got != c.want {
			t.Errorf("%s %s refused=%v: %v, want %v", c.sys, c.rep.Verdict, c.refused, got, c.want)
		}
	}
}

// A table without a key or FULL identity created mid-run: the capture
// stops, and the run says so in one line and exits 2, neither a pass nor a
// violation; with the old rule (keyless-wedge) the same seed is a
// violation: the stores never catch up.
func TestKeylessTableStopsTheRun(t *testing.T) {
	code, out, errw := lockstep("run", "--scenario", "keyless-table", "--seed", "1", "--txns", "300")
	stopped := regexp.MustCompile(`(?m)^STOPPED: the pipeline refused input it cannot capture.*a change to raw_events in xid \d+ cannot be captured.*--exclude-tables raw_events.*$`)
	if code != 2 || !strings.Contains(out, "PASS:") || !stopped.MatchString(out) {
		t.Fatalf("exit %d; want 2 with a PASS of the judged history and one STOPPED line naming raw_events\n%s%s", code, out, errw)
	}
	code, out, errw = lockstep("run", "--scenario", "keyless-table", "--seed", "1", "--txns", "300", "--bug", "keyless-wedge")
	if code != 1 || !strings.Contains(out, "not-converged") || strings.Contains(out, "STOPPED") {
		t.Fatalf("keyless-wedge: exit %d; want 1, not-converged, no STOPPED line\n%s%s", code, out, errw)
	}
}

// steady/pipeline/2 with one transaction: a client sleeps past the deadline
// after it, yet every store reached the source's last commit at once. It
// used to be reported not-converged on every store.
func TestOneTransactionConverges(t *testing.T) {
	code, out, errw := lockstep("run", "--scenario", "steady", "--seed", "2", "--txns", "1")
	if code != 0 || !strings.Contains(out, "PASS:") || strings.Contains(out, "not-converged") {
		t.Fatalf("exit %d\n%s%s", code, out, errw)
	}
	for _, store := range []string{"replica", "cache", "search"} {
		if !regexp.MustCompile(`(?m)^  ` + store + ` +converged at \d+ms$`).MatchString(out) {
			t.Fatalf("%s: want converged within the first second:\n%s", store, out)
		}
	}
}
