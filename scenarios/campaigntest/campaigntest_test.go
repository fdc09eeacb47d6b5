package campaigntest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"lockstep/scenarios"
)

// fakeT records what Run reports, so that a failing campaign can be
// checked without failing this test.
type fakeT struct {
	errors, logs []string
}

func (f *fakeT) Helper()      {}
func (f *fakeT) Name() string { return "TestFake/sub" }
func (f *fakeT) Errorf(format string, a ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, a...))
}
func (f *fakeT) Logf(format string, a ...any) { f.logs = append(f.logs, fmt.Sprintf(format, a...)) }
func (f *fakeT) has(list []string, s string) bool {
	return slices.ContainsFunc(list, func(m string) bool { return strings.Contains(m, s) })
}

// The failfile cycle, with a bug switch that fails every seed of steady
// (skip-snapshot: the stores never get the snapshot): a failing run is a
// test error with its repro line and a failfile; the next Run replays the
// failfiles before anything else and stops when one still fails; a
// failfile whose run passes again is reported and the campaign goes on.
func TestFailfilesAreWrittenReplayedFirstAndReported(t *testing.T) {
	dir := t.TempDir()
	small := scenarios.Options{Txns: 20}

	// 1. A campaign of the broken pipeline: both seeds fail.
	ft := &fakeT{}
	res := Run(ft, Config{Scenarios: "steady+skip-snapshot", Seeds: 2, Options: small, Dir: dir})
	want := []string{"steady+skip-snapshot/pipeline/1,txns=20", "steady+skip-snapshot/pipeline/2,txns=20"}
	if res.Runs != 2 || !slices.Equal(res.Failing, want) {
		t.Fatalf("runs %d, failing %q; want 2 runs, failing %q", res.Runs, res.Failing, want)
	}
	for _, tok := range want {
		if !ft.has(ft.errors, "pipeline violated a claimed property: lockstep repro "+tok+"\nnot-converged") {
			t.Errorf("no error with the repro line of %s and its witnesses; errors: %q", tok, ft.errors)
		}
		f, err := readFailfile(filepath.Join(dir, fileName(tok)+".fail"))
		if err != nil {
			t.Fatal(err)
		}
		if f.token.String() != tok || f.hash == 0 {
			t.Errorf("failfile of %s holds token %s, hash %x", tok, f.token, f.hash)
		}
	}

	// 2. The fixed pipeline's campaign replays the failfiles first: the
	// bug is still in their tokens, so they fail and the campaign does
	// not start.
	ft = &fakeT{}
	res = Run(ft, Config{Scenarios: "steady", Seeds: 3, Options: small, Dir: dir})
	if !slices.Equal(res.Replayed, want) || !slices.Equal(res.StillFailing, want) || res.Runs != 0 || res.Stopped != "failfiles" {
		t.Fatalf("replayed %q, still failing %q, runs %d, stopped %q; want both replayed and failing, no campaign", res.Replayed, res.StillFailing, res.Runs, res.Stopped)
	}
	if !ft.has(ft.errors, "still fails: pipeline violated a claimed property: lockstep repro "+want[0]) {
		t.Errorf("errors %q: want the failfile's repro line", ft.errors)
	}

	// 3. A failfile whose run passes now (as after a fix): reported as
	// passing again, kept, and the campaign runs after it.
	for _, tok := range want {
		if err := os.Remove(filepath.Join(dir, fileName(tok)+".fail")); err != nil {
			t.Fatal(err)
		}
	}
	fixed := "steady/pipeline/1,txns=20"
	if err := writeFailfile(dir, fixed, nil, "pipeline violated a claimed property"); err != nil {
		t.Fatal(err)
	}
	ft = &fakeT{}
	res = Run(ft, Config{Scenarios: "steady", Seeds: 3, Options: small, Dir: dir})
	if len(ft.errors) != 0 || !slices.Equal(res.PassingAgain, []string{fixed}) || res.Runs != 3 || res.Stopped != "" {
		t.Fatalf("errors %q, passing again %q, runs %d, stopped %q; want the failfile passing and 3 runs", ft.errors, res.PassingAgain, res.Runs, res.Stopped)
	}
	if !ft.has(ft.logs, "passes again") {
		t.Errorf("logs %q: want the failfile reported as passing again", ft.logs)
	}
	if _, err := os.Stat(filepath.Join(dir, fileName(fixed)+".fail")); err != nil {
		t.Errorf("the passing failfile was not kept: %v", err)
	}
}

// Without Dir, failfiles go to testdata/lockstep/<test name>, the test
// name made one file name.
func TestFailfileDirIsTheTestsOwn(t *testing.T) {
	t.Chdir(t.TempDir())
	ft := &fakeT{}
	Run(ft, Config{Scenarios: "steady+skip-snapshot", Seeds: 1, Options: scenarios.Options{Txns: 5}})
	p := filepath.Join("testdata", "lockstep", "TestFake_sub", "steady+skip-snapshot_pipeline_1,txns=5.fail")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no failfile at %s: %v (errors %q)", p, err, ft.errors)
	}
}

func TestReadFailfileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"notoken":    "# nothing\nhash 00000000000000ff\n",
		"badtoken":   "token steady-pipeline-1\n",
		"containers": "token steady/pipeline/1,world=containers\n",
		"badhash":    "token steady/pipeline/1\nhash xyz\n",
	} {
		p := filepath.Join(dir, name+".fail")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readFailfile(p); err == nil {
			t.Errorf("%s: read without error", name)
		}
	}
	// A broken failfile fails the test and stops the campaign, never
	// skipped in silence.
	ft := &fakeT{}
	res := Run(ft, Config{Scenarios: "steady", Seeds: 1, Options: scenarios.Options{Txns: 5}, Dir: dir})
	if len(ft.errors) != 4 || res.Runs != 0 {
		t.Errorf("errors %q, runs %d: want one error per broken failfile and no campaign", ft.errors, res.Runs)
	}
}

// Runs go seed by seed over the scenarios; long-haul (SeedEvery 50) runs
// its own seeds 1, 2, ... at steps 0, 50, ..., as many as the CLI would.
func TestOrder(t *testing.T) {
	scs, err := scenarios.Lookup("steady,long-haul")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for j := range order(scs, 10, 101) {
		got = append(got, fmt.Sprintf("%s/%d", j.sc.Name, j.seed))
	}
	if got[0] != "steady/10" || got[1] != "long-haul/10" || got[2] != "steady/11" || got[52] != "long-haul/11" {
		t.Errorf("order starts %q", got[:4])
	}
	n := 0
	for _, g := range got {
		if strings.HasPrefix(g, "long-haul/") {
			n++
		}
	}
	if want := scenarios.ByName("long-haul").CampaignSeeds(101); n != want || len(got) != 101+want {
		t.Errorf("%d runs, %d of long-haul; want %d of long-haul, as the CLI", len(got), n, want)
	}
}

// A duration bounds a campaign without seeds: runs stop starting once it
// has passed, and the result says so.
func TestDurationStopsTheCampaign(t *testing.T) {
	ft := &fakeT{}
	start := time.Now()
	res := Run(ft, Config{Scenarios: "steady", Duration: 300 * time.Millisecond, Options: scenarios.Options{Txns: 5}, Dir: t.TempDir(), Parallel: 1})
	if res.Stopped != "duration" || res.Runs < 2 || len(ft.errors) != 0 {
		t.Fatalf("stopped %q after %d runs, errors %q; want a few runs stopped by the duration", res.Stopped, res.Runs, ft.errors)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("a 300ms campaign took %v", el)
	}
	if !ft.has(ft.logs, "stopped after -lockstep.duration 300ms") {
		t.Errorf("logs %q: want the stop explained", ft.logs)
	}
}

// The test's own deadline (-timeout) stops a campaign a minute early.
type deadlineT struct {
	fakeT
	at time.Time
}

func (d *deadlineT) Deadline() (time.Time, bool) { return d.at, true }

func TestDeadlineStopsTheCampaign(t *testing.T) {
	ft := &deadlineT{at: time.Now().Add(deadlineMargin + 200*time.Millisecond)}
	res := Run(ft, Config{Scenarios: "steady", Options: scenarios.Options{Txns: 5}, Dir: t.TempDir(), Duration: time.Hour, Parallel: 1})
	if res.Stopped != "deadline" || !ft.has(ft.logs, "-timeout 0") {
		t.Fatalf("stopped %q, logs %q: want a stop at the deadline that says how to go on", res.Stopped, ft.logs)
	}
}

func TestFromFlags(t *testing.T) {
	quick := Config{Seeds: 1, Options: scenarios.Options{Txns: 100}, Dir: "d"}
	parse := func(args ...string) (Config, error) {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		f := register(fs)
		fs.Bool("v", false, "")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f.config(fs, quick)
	}
	cases := []struct {
		args []string
		want Config
		err  string
	}{
		{nil, quick, ""},
		{[]string{"-v"}, quick, ""},
		{[]string{"-lockstep.seeds=10000"}, Config{Seeds: 10000, Dir: "d"}, ""},
		{[]string{"-lockstep.seed=0x10"}, Config{FirstSeed: 16, Dir: "d"}, ""},
		{[]string{"-lockstep.duration=20m", "-lockstep.scenario=partitions", "-lockstep.txns=50"},
			Config{Scenarios: "partitions", Duration: 20 * time.Minute, Options: scenarios.Options{Txns: 50}, Dir: "d"}, ""},
		{[]string{"-lockstep.seed=x"}, Config{}, "-lockstep.seed=x: want a decimal or 0x-hex number"},
		{[]string{"-lockstep.seeds=-1"}, Config{}, "-lockstep.seeds=-1: want a positive number"},
	}
	for _, c := range cases {
		got, err := parse(c.args...)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%q: error %v, want %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%q: %+v, %v; want %+v", c.args, got, err, c.want)
		}
	}
}
