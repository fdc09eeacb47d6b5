package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"lockstep/faults"
	"lockstep/scenarios"
	"lockstep/scenarios/containers"
	"lockstep/scenarios/results"
)

// timingRE matches what differs between two runs of one campaign in its
// table, JSON and JUnit: the speed line, wall times, timestamps, workers.
var timingRE = regexp.MustCompile(`(?m)^\d+ runs in .*$|"(wall_ns|virtual_ns|simulation_ns|seeds_per_second|parallel|started)": [^,\n]*|(time|timestamp)="[^"]*"`)

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Three shards of a campaign, merged, give the unsharded campaign's
// table, JSON and JUnit (apart from timing) and its exit code, 1 here: the
// pipeline runs with a known bug.
func TestMergeOfShardsIsTheCampaign(t *testing.T) {
	dir := t.TempDir()
	args := []string{"campaign", "--scenario", "steady+skip-snapshot,crash-capture", "--seeds", "5", "--txns", "40"}
	at := func(name string) string { return filepath.Join(dir, name) }
	code, whole, errw := lockstep(append(args, "--json", at("whole.json"), "--junit", at("whole.xml"))...)
	if code != 1 {
		t.Fatalf("campaign with skip-snapshot: exit %d, want 1\n%s%s", code, whole, errw)
	}
	var shards []string
	for i := 1; i <= 3; i++ {
		p := at("shard" + string(rune('0'+i)) + ".json")
		code, _, errw := lockstep(append(args, "--shard", string(rune('0'+i))+"/3", "--json", p)...)
		if code != 1 {
			t.Fatalf("shard %d/3: exit %d, want 1\n%s", i, code, errw)
		}
		shards = append(shards, p)
	}
	code, merged, errw := lockstep(append([]string{"merge", "--json", at("merged.json"), "--junit", at("merged.xml")}, shards...)...)
	if code != 1 {
		t.Fatalf("merge: exit %d, want 1\n%s%s", code, merged, errw)
	}
	if a, b := timingRE.ReplaceAllString(merged, "T"), timingRE.ReplaceAllString(whole, "T"); a != b {
		t.Errorf("merged table differs:\n%s\nwant\n%s", a, b)
	}
	for _, ext := range []string{".json", ".xml"} {
		a := timingRE.ReplaceAllString(readText(t, at("merged"+ext)), "T")
		b := timingRE.ReplaceAllString(readText(t, at("whole"+ext)), "T")
		if a != b {
			t.Errorf("merged %s differs from the campaign's:\n%s\nwant\n%s", ext, a, b)
		}
	}
	if !strings.Contains(readText(t, at("whole.xml")), "lockstep repro steady+skip-snapshot/pipeline/1,txns=40") {
		t.Error("the JUnit failure lacks the first failing run's repro line")
	}
	// Two of three shards: named as missing, and not a pass even where
	// nothing failed.
	code, out, _ := lockstep("merge", shards[0], shards[2])
	if code != 1 || !strings.Contains(out, "shards missing from the merge: 2") {
		t.Errorf("merge of shards 1 and 3: exit %d\n%s", code, out)
	}
	code, _, errw = lockstep("merge", shards[0], shards[0])
	if code != 2 || !strings.Contains(errw, "lockstep merge: shard 1/3 given twice") {
		t.Errorf("a shard twice: exit %d, %q", code, errw)
	}
}

// --duration alone runs seeds until the time is up, then reports what ran.
func TestCampaignDurationAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	code, out, errw := lockstep("campaign", "--scenario", "steady", "--system", "pipeline", "--txns", "20", "--duration", "1s", "--json", path)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errw)
	}
	f, err := results.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	c := f.Cell("steady", scenarios.Pipeline)
	if f.Config.Seeds != 0 || f.Config.Duration != "1s" || !f.Timing.StoppedByDuration || c.Seeds < 2 {
		t.Fatalf("config %+v, timing %+v, %d seeds: want no seed limit, 1s, stopped by it, seeds run", f.Config, f.Timing, c.Seeds)
	}
	for i, r := range c.Runs {
		if r.Seed != uint64(i+1) {
			t.Fatalf("run %d has seed %d: the seeds must be 1, 2, 3, ... with none skipped", i, r.Seed)
		}
	}
	if !strings.Contains(out, "time up (--duration 1s)") || !regexp.MustCompile(`\[\d+ runs, seeds up to \d+\] pipeline violations 0, dual-write violations 0; about \d+s left`).MatchString(errw) {
		t.Errorf("no time-up line or progress line:\n%s\n%s", out, errw)
	}
}

// Progress lines say runs done of all, seeds, failures so far and the
// time left.
func TestCampaignProgressLine(t *testing.T) {
	_, _, errw := lockstep("campaign", "--scenario", "steady", "--seeds", "3", "--txns", "20")
	if !regexp.MustCompile(`\[6/6 runs, seeds up to 3 of 3\] pipeline violations 0, dual-write violations \d+; about 0s left\n`).MatchString(errw) {
		t.Errorf("progress:\n%s", errw)
	}
}

// A container run's log folder stays only when the run did not hold, or
// when --logs asked for it; the line printed says which.
func TestContainerLogsKeptOnlyWhenFailedOrAsked(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	for _, c := range []struct {
		verdict string
		keep    bool
	}{{results.Held, false}, {results.Violated, true}, {results.Inconclusive, true}} {
		l, err := newRunLogs("", "")
		if err != nil {
			t.Fatal(err)
		}
		kept, err := l.settle(c.verdict)
		_, statErr := os.Stat(l.dir)
		if err != nil || kept != c.keep || (statErr == nil) != c.keep {
			t.Errorf("%s: kept %v (folder there: %v, %v), want %v", c.verdict, kept, statErr == nil, err, c.keep)
		}
		if line := l.line(kept); kept != strings.Contains(line, l.dir) {
			t.Errorf("%s: line %q", c.verdict, line)
		}
	}
	base := t.TempDir()
	l, err := newRunLogs(base, "steady_pipeline_1")
	if err != nil {
		t.Fatal(err)
	}
	if kept, _ := l.settle(results.Held); !kept || l.dir != filepath.Join(base, "steady_pipeline_1") {
		t.Errorf("--logs: kept %v in %s", kept, l.dir)
	}
	if _, err := os.Stat(l.dir); err != nil {
		t.Errorf("--logs folder removed: %v", err)
	}
}

// A run with a plan says how long the plan's fault phase is, not the
// default's: a soak's is ten minutes.
func TestFaultPhaseOfAPlannedRun(t *testing.T) {
	soak := faults.Plan{Quiet: 10 * time.Minute}
	if got := faultPhaseOf(containers.Config{Plan: &soak, Faults: 30 * time.Second}); got != 10*time.Minute {
		t.Errorf("with a plan: %v, want 10m0s", got)
	}
	if got := faultPhaseOf(containers.Config{Faults: 45 * time.Second}); got != 45*time.Second {
		t.Errorf("without one: %v, want 45s", got)
	}
	if got := phaseText("faults", time.Minute, faultPhaseOf(containers.Config{Plan: &soak})); got != "faults and workload (1m0s of 10m0s)" {
		t.Errorf("phase text %q", got)
	}
}

func TestPhaseText(t *testing.T) {
	for phase, want := range map[string]string{
		"starting": "starting the containers and the pipeline (12s, about 30s)",
		"faults":   "faults and workload (12s of 30s)",
		"quiet":    "quiet: faults healed, waiting for the stores to converge (12s)",
		"checking": "checking the stores (12s)",
	} {
		if got := phaseText(phase, 12*time.Second+300*time.Millisecond, 0); got != want {
			t.Errorf("%s: %q, want %q", phase, got, want)
		}
	}
}

// A campaign empties its output files before its first run, so one that
// fails or is stopped leaves no earlier campaign's results looking current.
func TestCampaignEmptiesItsOutputsFirst(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old.json")
	if err := os.WriteFile(old, []byte(`{"schema":"lockstep.campaign/v1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (campaignOutputs{json: old, junit: filepath.Join(dir, "new.xml")}).check(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(old); err != nil || len(b) != 0 {
		t.Fatalf("the earlier JSON is %q (%v), want emptied", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new.xml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("check left a file it created: %v", err)
	}
}

// A Debezium campaign's progress line counts Debezium's violations, not
// the pipeline's and dual writes' runs that never happened.
func TestProgressLineOfDebezium(t *testing.T) {
	p := newProgress(0)
	p.note(scenarios.Debezium, 1, true)
	p.note(scenarios.Debezium, 2, false)
	line := p.line(2, 4, scenarios.CampaignConfig{Seeds: 2, FirstSeed: 1}, "")
	if !strings.HasPrefix(line, "[2/4 runs, seeds up to 2 of 2] debezium violations 1;") || strings.Contains(line, "pipeline") {
		t.Fatalf("progress line %q", line)
	}
	p.note(scenarios.Pipeline, 1, false)
	if line := p.line(3, 4, scenarios.CampaignConfig{}, ""); !strings.Contains(line, "pipeline violations 0, dual-write violations 0, debezium violations 1") {
		t.Fatalf("progress line %q with a pipeline run too", line)
	}
}
