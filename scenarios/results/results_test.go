package results

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	junit "github.com/joshdk/go-junit"

	"lockstep/checker"
	"lockstep/scenarios"
)

func campaignConfig(t *testing.T, names string, seeds int) scenarios.CampaignConfig {
	t.Helper()
	scs, err := scenarios.Lookup(names)
	if err != nil {
		t.Fatal(err)
	}
	return scenarios.CampaignConfig{Scenarios: scs, Systems: scenarios.Systems, Seeds: seeds, FirstSeed: 1, Parallel: 2,
		Options: scenarios.Options{Txns: 40}}
}

// withoutTiming is a file's JSON with every "timing" object removed: what
// must be the same from one run of a simulated campaign to the next.
func withoutTiming(t *testing.T, f *File) string {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var strip func(any)
	strip = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			delete(x, "timing")
			for _, y := range x {
				strip(y)
			}
		case []any:
			for _, y := range x {
				strip(y)
			}
		}
	}
	strip(v)
	out, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// The merge of a campaign's shards, through their JSON files, is the
// unsharded campaign's file apart from timing: the same runs, trace
// hashes, plans, anomalies, failing seeds and verdict.
func TestMergedShardsEqualTheCampaign(t *testing.T) {
	cfg := campaignConfig(t, "steady+skip-snapshot,crash-capture", 7)
	whole, _ := RunCampaign(cfg)
	if whole.Verdict != Violated || whole.ExitCode != 1 {
		t.Fatalf("skip-snapshot should fail: verdict %s", whole.Verdict)
	}
	dir := t.TempDir()
	var shards []*File
	for i := 3; i >= 1; i-- { // in any order
		sh := cfg
		sh.Shard = scenarios.Shard{Index: i, Count: 3}
		f, _ := RunCampaign(sh)
		path := filepath.Join(dir, fmt.Sprintf("shard-%d.json", i))
		if err := f.Write(path); err != nil {
			t.Fatal(err)
		}
		back, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		shards = append(shards, back)
	}
	merged, err := Merge(shards)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := withoutTiming(t, merged), withoutTiming(t, whole); got != want {
		t.Errorf("merged shards differ from the campaign:\n%s\nwant\n%s", got, want)
	}
	c := merged.Cell("steady+skip-snapshot", scenarios.Pipeline)
	if !slices.IsSorted(c.FailingSeeds) || len(c.FailingSeeds) != 7 {
		t.Errorf("failing seeds %v: want all 7, in numeric order", c.FailingSeeds)
	}
	for _, r := range c.Runs {
		if len(r.Hash) != 16 || r.Plan == "" || len(r.Violations) == 0 || !strings.HasPrefix(r.Token, "steady+skip-snapshot/pipeline/") {
			t.Errorf("run %+v lacks a hash, plan, witness or token", r)
		}
	}
	// Missing shards make the merge unjudged unless a violation decides it.
	part, err := Merge(shards[:1])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(part.MissingShards, []int{1, 2}) {
		t.Errorf("missing shards %v, want [1 2]", part.MissingShards)
	}
}

func TestMergeRefusesWhatIsNotOneCampaign(t *testing.T) {
	mk := func(shard string, seeds int) *File {
		f := New(WorldSim, Config{Scenarios: []string{"steady"}, Systems: scenarios.Systems, FirstSeed: 1, Seeds: seeds, Shard: shard})
		f.Finish()
		return f
	}
	for name, files := range map[string][]*File{
		"a shard twice":       {mk("1/2", 4), mk("1/2", 4)},
		"other seeds":         {mk("1/2", 4), mk("2/2", 5)},
		"other shard count":   {mk("1/2", 4), mk("2/3", 4)},
		"a whole and a shard": {mk("", 4), mk("2/2", 4)},
		"nothing":             nil,
	} {
		if _, err := Merge(files); err == nil {
			t.Errorf("%s: merged", name)
		}
	}
	held := mk("1/2", 4)
	m, err := Merge([]*File{held})
	if err != nil || m.Verdict != Unjudged || m.ExitCode != 2 {
		t.Errorf("half a campaign that held: verdict %s exit %d (%v), want unjudged, 2", m.Verdict, m.ExitCode, err)
	}
}

func TestReadRefusesAnotherSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.json")
	f := New(WorldSim, Config{})
	f.Schema = "lockstep.campaign/v0"
	if err := f.Write(path); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), Schema) {
		t.Errorf("read a v0 file: %v", err)
	}
}

// checkJUnitSchema checks a document against the rules of the Jenkins
// xUnit plugin's junit-10.xsd, the schema CI systems read JUnit by:
// which element may hold which, the required attributes, and the time
// format. (The schema is restated here rather than vendored.)
func checkJUnitSchema(t *testing.T, doc []byte) {
	t.Helper()
	for _, e := range junitSchemaErrors(doc) {
		t.Error(e)
	}
}

func junitSchemaErrors(doc []byte) []string {
	var errs []string
	reruns := []string{"rerunFailure", "rerunError", "flakyFailure", "flakyError"}
	children := map[string][]string{
		"":           {"testsuites"},
		"testsuites": {"testsuite"},
		"testsuite":  {"testsuite", "properties", "testcase", "system-out", "system-err"},
		"properties": {"property"},
		"testcase":   append([]string{"skipped", "error", "failure", "system-out", "system-err"}, reruns...),
	}
	required := map[string][]string{
		"testsuite": {"name", "tests", "failures", "errors"},
		"testcase":  {"name"},
		"property":  {"name", "value"},
	}
	timeRE := regexp.MustCompile(`^(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?$`)
	dec := xml.NewDecoder(bytes.NewReader(doc))
	stack := []string{""}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return append(errs, fmt.Sprintf("not XML: %v", err))
		}
		switch e := tok.(type) {
		case xml.StartElement:
			parent, name := stack[len(stack)-1], e.Name.Local
			if !slices.Contains(children[parent], name) {
				errs = append(errs, fmt.Sprintf("<%s> may not hold <%s>", parent, name))
			}
			attrs := map[string]string{}
			for _, a := range e.Attr {
				attrs[a.Name.Local] = a.Value
			}
			for _, a := range required[name] {
				if _, ok := attrs[a]; !ok {
					errs = append(errs, fmt.Sprintf("<%s> lacks required attribute %s", name, a))
				}
			}
			if tm, ok := attrs["time"]; ok && (name == "testsuite" || name == "testsuites") && !timeRE.MatchString(tm) {
				errs = append(errs, fmt.Sprintf("<%s time=%q> is not a SUREFIRE_TIME", name, tm))
			}
			stack = append(stack, name)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	return errs
}

// JUnit: one testcase per scenario and system; a pipeline that violated a
// claim fails with its repro lines and witnesses; dual writes' expected
// violations pass; the document has the common JUnit schema's shape and a
// JUnit reader counts the same.
func TestJUnit(t *testing.T) {
	cfg := campaignConfig(t, "steady+skip-snapshot,crash-capture", 3)
	f, _ := RunCampaign(cfg)
	// A run that could not complete is an error, never a failure.
	f.Add("crash-capture", scenarios.DualWrite, Run{Seed: 9, Token: "crash-capture/dualwrite/9,txns=40", Verdict: Error, Error: "the harness broke"})
	f.Finish()
	doc, err := f.JUnit()
	if err != nil {
		t.Fatal(err)
	}
	checkJUnitSchema(t, doc)
	var root junitSuites
	if err := xml.Unmarshal(doc, &root); err != nil {
		t.Fatal(err)
	}
	if root.Tests != 4 || root.Failures != 1 || root.Errors != 1 || len(root.Suites) != 2 {
		t.Fatalf("tests %d failures %d errors %d suites %d, want 4, 1, 1, 2", root.Tests, root.Failures, root.Errors, len(root.Suites))
	}
	suites, err := junit.Ingest(doc)
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]junit.Test{}
	for _, s := range suites {
		for _, tc := range s.Tests {
			status[tc.Classname+" "+tc.Name] = tc
		}
	}
	want := map[string]junit.Status{
		"lockstep.sim.steady+skip-snapshot pipeline":  junit.StatusFailed,
		"lockstep.sim.steady+skip-snapshot dualwrite": junit.StatusPassed,
		"lockstep.sim.crash-capture pipeline":         junit.StatusPassed,
		"lockstep.sim.crash-capture dualwrite":        junit.StatusError,
	}
	if len(status) != len(want) {
		t.Errorf("%d testcases, want %d", len(status), len(want))
	}
	for k, st := range want {
		if status[k].Status != st {
			t.Errorf("%s: %s, want %s", k, status[k].Status, st)
		}
	}
	failed := status["lockstep.sim.steady+skip-snapshot pipeline"]
	run := f.Cell("steady+skip-snapshot", scenarios.Pipeline).Runs[0]
	body := failed.Error.(junit.Error).Body
	for _, s := range []string{"lockstep repro " + run.Token, run.Violations[0]} {
		if !strings.Contains(failed.Message+body, s) {
			t.Errorf("the failure does not carry %q:\n%s\n%s", s, failed.Message, body)
		}
	}
	if !strings.Contains(status["lockstep.sim.crash-capture dualwrite"].Message, "could not complete") {
		t.Errorf("harness error not said: %q", status["lockstep.sim.crash-capture dualwrite"].Message)
	}
}

// The schema check itself fails on what the schema forbids.
func TestCheckJUnitSchemaCatches(t *testing.T) {
	for _, doc := range []string{
		`<testsuites><testcase name="x"/></testsuites>`,
		`<testsuites><testsuite name="s" tests="1" failures="0"/></testsuites>`,
		`<testsuites><testsuite name="s" tests="1" failures="0" errors="0" time="1s"/></testsuites>`,
		`<testsuites><testsuite name="s" tests="1" failures="0" errors="0"><testcase><failure/></testcase></testsuite></testsuites>`,
	} {
		if len(junitSchemaErrors([]byte(doc))) == 0 {
			t.Errorf("accepted %s", doc)
		}
	}
}

// The table is the same for both worlds: a container campaign prints the
// simulator's table, not Go maps.
func TestContainerTableIsTheSimulatorsTable(t *testing.T) {
	f := New(WorldContainers, Config{Scenarios: []string{"partitions"}, Systems: scenarios.Systems, FirstSeed: 1, Seeds: 1})
	rep := &checker.Report{Counts: map[checker.Class]int{checker.Lost: 2}, Anomalies: []checker.Anomaly{
		{Class: checker.Lost, Store: "cache", Violation: true, Witness: checker.Witness{Detail: "has nothing want v=1"}},
		{Class: checker.Lost, Store: "cache", Violation: true, Witness: checker.Witness{Detail: "has nothing want v=2"}},
	}}
	f.Add("partitions", scenarios.Pipeline, Judged("partitions/pipeline/1,world=containers", "quiet @30s", &checker.Report{Counts: map[checker.Class]int{}}, ""))
	dw := Judged("partitions/dualwrite/1,world=containers", "quiet @30s", rep, "")
	dw.LogDir = "/tmp/logs/x"
	f.Add("partitions", scenarios.DualWrite, dw)
	f.Finish()
	var b strings.Builder
	if err := f.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !regexp.MustCompile(`scenario +pipeline violating +dual writes violating +dual-write anomalies\npartitions +0/1 \(0%\) +1/1 \(100%\) +lost 2\n`).MatchString(out) {
		t.Errorf("no table row:\n%s", out)
	}
	for _, s := range []string{"pipeline: no claimed property violated in any run.",
		"see a dual-write divergence: lockstep repro partitions/dualwrite/1,world=containers"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "map[") {
		t.Errorf("a Go map in the table:\n%s", out)
	}
}

// A shard that holds none of a campaign's seeds writes testcases that are
// skipped, not passed.
func TestJUnitOfAnEmptyShard(t *testing.T) {
	cfg := campaignConfig(t, "steady", 2)
	cfg.Shard = scenarios.Shard{Index: 3, Count: 3}
	f, _ := RunCampaign(cfg)
	doc, err := f.JUnit()
	if err != nil {
		t.Fatal(err)
	}
	checkJUnitSchema(t, doc)
	suites, err := junit.Ingest(doc)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range suites {
		for _, tc := range s.Tests {
			n++
			if tc.Status != junit.StatusSkipped {
				t.Errorf("%s %s: %s, want skipped", tc.Classname, tc.Name, tc.Status)
			}
		}
	}
	if n != 2 || f.Verdict != Held {
		t.Errorf("%d testcases, verdict %s: want 2, held", n, f.Verdict)
	}
}
