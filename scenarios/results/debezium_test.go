package results

import (
	"regexp"
	"strings"
	"testing"

	"lockstep/checker"
	"lockstep/scenarios"
)

// A campaign of --system debezium prints Debezium's own table, and a
// violation of what Debezium claims fails the campaign (exit 1) and is
// listed to replay, in the table and in JUnit; one that held passes.
func TestDebeziumCampaign(t *testing.T) {
	held := &checker.Report{Counts: map[checker.Class]int{checker.Duplicate: 3}, Anomalies: []checker.Anomaly{
		{Class: checker.Duplicate, Store: "search", Witness: checker.Witness{Detail: "revs=2 want 1"}}}}
	broke := &checker.Report{Verdict: checker.Fail, Counts: map[checker.Class]int{checker.Lost: 1}, Anomalies: []checker.Anomaly{
		{Class: checker.Lost, Store: "cache", Violation: true, Witness: checker.Witness{Detail: "has nothing want v=1"}}}}
	for _, c := range []struct {
		rep  *checker.Report
		exit int
		line string
	}{
		{held, 0, "debezium: no claimed property violated in the runs judged."},
		{broke, 1, "DEBEZIUM VIOLATED A CLAIMED PROPERTY in 1 runs; replay with:\n  lockstep repro crash-capture/debezium/1,world=containers\n"},
	} {
		f := New(WorldContainers, Config{Scenarios: []string{"crash-capture"}, Systems: []scenarios.System{scenarios.Debezium}, FirstSeed: 1, Seeds: 1})
		f.Add("crash-capture", scenarios.Debezium, Judged("crash-capture/debezium/1,world=containers", "quiet @30s", c.rep, ""))
		f.Finish()
		var b strings.Builder
		if err := f.WriteTable(&b); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if f.ExitCode != c.exit || !strings.Contains(out, c.line) {
			t.Errorf("exit %d, want %d; want %q in:\n%s", f.ExitCode, c.exit, c.line, out)
		}
		if strings.Contains(out, "pipeline violating") || strings.Contains(out, "pipeline: no claimed") {
			t.Errorf("a campaign of Debezium alone printed the pipeline's table or verdict:\n%s", out)
		}
		if !regexp.MustCompile(`scenario +debezium violating +debezium anomalies\ncrash-capture +\d/1 \(\d+%\) +(duplicate 3|lost 1)\n`).MatchString(out) {
			t.Errorf("no Debezium row:\n%s", out)
		}
		j, err := f.JUnit()
		if err != nil {
			t.Fatal(err)
		}
		if failed := strings.Contains(string(j), "<failure"); failed != (c.exit == 1) {
			t.Errorf("JUnit has a failure: %v, want %v:\n%s", failed, c.exit == 1, j)
		}
	}
}
