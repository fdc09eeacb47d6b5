package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"lockstep/checker"
	"lockstep/scenarios"
	"lockstep/scenarios/results"
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
		{[]string{"repro", "--txns", "50", "steady/pipeline/1"}, `lockstep repro: --txns shapes the run, so it rides in the token`},
		{[]string{"repro", "--world", "containers", "steady/pipeline/1"}, `lockstep repro: --world shapes the run, so it rides in the token`},
		{[]string{"repro", "steady/pipeline/1,txns=0"}, `lockstep repro: malformed repro token "steady/pipeline/1,txns=0": txns=0: want a positive whole number`},
		{[]string{"repro", "steady/pipeline/1,speed=9"}, `lockstep repro: malformed repro token "steady/pipeline/1,speed=9": speed=9: unknown parameter`},
		{[]string{"repro", "steady/pipeline/1,plan=/tmp/p"}, `lockstep repro: malformed repro token "steady/pipeline/1,plan=/tmp/p": plan needs world=containers`},
		{[]string{"repro", "steady/pipeline/1", "steady/pipeline/2"}, `lockstep repro: want exactly one repro token`},
		{[]string{"repro", "--logs", "/tmp", "steady/pipeline/1"}, `lockstep repro: --logs needs a token with world=containers`},
		{[]string{"repro", "--check-determinism", "steady/pipeline/1,world=containers"}, `lockstep repro: --check-determinism needs the simulator`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--plan", "/nonexistent"}, `lockstep run: --plan needs --world containers`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--bench"}, `lockstep run: --bench needs --world containers`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--logs", "/tmp"}, `lockstep run: --logs needs --world containers`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--world", "moon"}, `lockstep run: unknown world "moon"`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--world", "containers", "--check-determinism"}, `lockstep run: --check-determinism needs the simulator`},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "extra"}, `lockstep run: unexpected argument "extra"`},
		{[]string{"run", "--scenario", "steady", "extra", "--seed", "1"}, `lockstep run: unexpected argument "extra"`},
		{[]string{"repro", "steady/pipeline/1", "--txns", "50"}, `lockstep repro: --txns shapes the run, so it rides in the token`},
		{[]string{"repro", "steady/pipeline/1", "--bogus"}, "lockstep repro: flag provided but not defined: -bogus"},
		{[]string{"repro", "--", "steady/pipeline/1", "--log"}, `lockstep repro: want exactly one repro token`},
		{[]string{"help", "nosuch"}, `lockstep help: unknown command "nosuch"`},
		{[]string{"help", "run", "repro"}, `lockstep help: want one command, not 2`},
		{[]string{"bench", "--seeds", "0"}, `lockstep bench: invalid value "0" for flag -seeds: want a positive whole number`},
		{[]string{"repro", "steady-pipeline-1"}, `lockstep repro: malformed repro token "steady-pipeline-1"`},
		{[]string{"frobnicate"}, `lockstep: unknown command "frobnicate"`},
		{[]string{"run", "--bogus"}, "lockstep run: flag provided but not defined: -bogus"},
		{[]string{"campaign", "--world", "containers", "--report", "/tmp/x"}, "lockstep campaign: --report needs the simulator for a campaign"},
		{[]string{"run", "--scenario", "steady", "--seed", "1", "--txns", "20", "--report", "/nonexistent/dir/r.html"}, "lockstep run: cannot write open /nonexistent/dir/r.html"},
		// Output files are checked before a run: a container run, a shrink
		// or every bug's shrink would take minutes first.
		{[]string{"run", "--world", "containers", "--scenario", "steady", "--seed", "1", "--json", "/nonexistent/dir/j.json"}, "lockstep run: cannot write open /nonexistent/dir/j.json"},
		{[]string{"repro", "steady/pipeline/1,world=containers", "--report", "/nonexistent/dir/r.html"}, "lockstep repro: cannot write open /nonexistent/dir/r.html"},
		{[]string{"shrink", "steady/pipeline/1,world=containers", "--out", "/nonexistent/dir/p"}, "lockstep shrink: cannot write open /nonexistent/dir/p"},
		{[]string{"shrink", "--all-bugs", "--json", "/nonexistent/dir/b.json"}, "lockstep shrink: cannot write open /nonexistent/dir/b.json"},
		{[]string{"campaign", "--shard", "0/3"}, `lockstep campaign: --shard: malformed shard "0/3": want i/N with 1 <= i <= N, e.g. 2/8`},
		{[]string{"campaign", "--shard", "4/3"}, `lockstep campaign: --shard: malformed shard "4/3"`},
		{[]string{"campaign", "--shard", "half"}, `lockstep campaign: --shard: malformed shard "half"`},
		{[]string{"campaign", "--duration", "-1m"}, "lockstep campaign: --duration -1m0s: want a positive duration such as 20m"},
		{[]string{"campaign", "--duration", "0s"}, "lockstep campaign: --duration 0s: want a positive duration"},
		{[]string{"campaign", "--duration", "soon"}, `lockstep campaign: invalid value "soon" for flag -duration`},
		{[]string{"campaign", "--logs", "/tmp/x"}, "lockstep campaign: --logs needs --world containers"},
		{[]string{"campaign", "--scenario", "steady", "--seeds", "1", "--json", "/nonexistent/dir/c.json"}, "lockstep campaign: cannot write open /nonexistent/dir/c.json"},
		{[]string{"campaign", "--scenario", "steady", "--seeds", "1", "--junit", "/nonexistent/dir/c.xml"}, "lockstep campaign: cannot write open /nonexistent/dir/c.xml"},
		{[]string{"merge"}, "lockstep merge: want the shards' JSON files"},
		{[]string{"merge", "/nonexistent.json"}, "lockstep merge: open /nonexistent.json"},
		{[]string{"merge", "main_test.go"}, "lockstep merge: main_test.go: not campaign JSON"},
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

// Flags may stand after a command's token as well as before it, up to a
// "--"; the run they give is the same.
func TestFlagsMayFollowTheToken(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	v := fs.Bool("v", false, "")
	n := fs.Int("n", 0, "")
	pos, err := parseInterspersed(fs, []string{"a", "-v", "b", "-n", "3", "c", "--", "-n", "4", "d"})
	if err != nil || !*v || *n != 3 || !reflect.DeepEqual(pos, []string{"a", "b", "c", "-n", "4", "d"}) {
		t.Fatalf("parseInterspersed: %q, -v %v, -n %d, %v; want [a b c -n 4 d], true, 3", pos, *v, *n, err)
	}
	dir := t.TempDir()
	before, after := filepath.Join(dir, "before.json"), filepath.Join(dir, "after.json")
	const token = "steady/pipeline/1,txns=20"
	code, out1, errw := lockstep("repro", "--json", before, token)
	if code != 0 {
		t.Fatalf("repro --json FILE TOKEN: exit %d\n%s%s", code, out1, errw)
	}
	code, out2, errw := lockstep("repro", token, "--json", after, "--check-determinism")
	if code != 0 || !strings.Contains(out2, "determinism: two runs, identical traces") {
		t.Fatalf("repro TOKEN --json FILE --check-determinism: exit %d\n%s%s", code, out2, errw)
	}
	h1, h2 := hashRE.FindStringSubmatch(out1), hashRE.FindStringSubmatch(out2)
	a, errA := os.ReadFile(before)
	b, errB := os.ReadFile(after)
	if h1 == nil || h2 == nil || h1[1] != h2[1] || errA != nil || errB != nil || len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("flags before and after the token: hashes %v, %v; JSON %v, %v (%d and %d bytes, equal %v)", h1, h2, errA, errB, len(a), len(b), bytes.Equal(a, b))
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
	for _, want := range []string{"FAIL:", "faults (", "repro: lockstep repro crash-capture/dualwrite/" + seed + ",txns=200\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	m := hashRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no trace hash in:\n%s", out)
	}
	_, again, _ := lockstep("repro", "crash-capture/dualwrite/"+seed+",txns=200")
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
	sum, err := results.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Cells) != 4 {
		t.Fatalf("%d cells, want 4 (2 scenarios x 2 systems)", len(sum.Cells))
	}
	for _, c := range sum.Cells {
		if c.Seeds != 3 || len(c.Runs) != 3 || c.Timing.SeedsPerSecond <= 0 {
			t.Fatalf("cell %s/%s: %d seeds, %d runs, rate %v: want 3 seeds and a rate", c.Scenario, c.System, c.Seeds, len(c.Runs), c.Timing.SeedsPerSecond)
		}
		if c.System == "pipeline" && c.Violating != 0 {
			t.Fatalf("pipeline violated in %s", c.Scenario)
		}
	}
}

func TestBrokenPipelineExits1AndReproKeepsTheBug(t *testing.T) {
	code, out, _ := lockstep("run", "--scenario", "steady", "--bug", "skip-snapshot", "--seed", "1", "--txns", "100")
	if code != 1 {
		t.Fatalf("a pipeline with a known bug: exit %d, want 1\n%s", code, out)
	}
	if !strings.Contains(out, "repro: lockstep repro steady+skip-snapshot/pipeline/1,txns=100\n") {
		t.Fatalf("the repro line must carry the bug and the transactions:\n%s", out)
	}
	code, again, _ := lockstep("repro", "steady+skip-snapshot/pipeline/1,txns=100")
	if code != 1 || hashRE.FindString(again) != hashRE.FindString(out) {
		t.Fatalf("repro of a bug run: exit %d, hash %q vs %q", code, hashRE.FindString(again), hashRE.FindString(out))
	}
	code, _, errw := lockstep("run", "--scenario", "steady", "--bug", "telepathy", "--seed", "1")
	if code != 2 || !strings.Contains(errw, `unknown bug "telepathy"`) {
		t.Fatalf("unknown bug: exit %d, %q", code, errw)
	}
}

// 'lockstep help CMD' prints what 'lockstep CMD -h' does, flags included
// (it used to print the long help alone).
func TestHelp(t *testing.T) {
	code, out, _ := lockstep("help")
	if code != 0 || !strings.Contains(out, "campaign") || !strings.Contains(out, "repro") {
		t.Fatalf("help: exit %d\n%s", code, out)
	}
	for _, c := range commands {
		code, help, _ := lockstep("help", c.name)
		_, dashH, _ := lockstep(c.name, "-h")
		if code != 0 || help != dashH {
			t.Errorf("help %s: exit %d, and it differs from %s -h:\n%s\n---\n%s", c.name, code, c.name, help, dashH)
		}
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.flags(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(help, "  -"+f.Name+" ") && !strings.Contains(help, "  -"+f.Name+"\n") {
				t.Errorf("help %s lacks flag -%s:\n%s", c.name, f.Name, help)
			}
		})
	}
}

var reproRE = regexp.MustCompile(`(?m)^repro: lockstep repro (\S+)$`)

// runFlagRole says what each of run's flags does to a run: shaping flags
// must ride in the repro token, sim-only ones must not change the run,
// containers-only ones must be refused by the simulator. A flag added to run
// without a line here fails TestReproReplaysEveryRunShapingFlag.
var runFlagRole = map[string]string{
	"scenario": "shapes", "system": "shapes", "seed": "shapes", "txns": "shapes", "bug": "shapes",
	"json": "output", "log": "output", "check-determinism": "output", "report": "output",
	"world": "containers", "plan": "containers", "bench": "containers", "logs": "containers",
}

// Every flag of run that shapes a simulated run changes the trace hash, and
// the repro line run prints replays it with the same hash. The old token
// (scenario/system/seed) dropped --txns: its replay ran 1,000 transactions.
// Flags that only print change nothing; containers-only flags are refused
// (they were ignored: --plan /nonexistent exited 0); the container token is
// TestContainerReproToken's.
func TestReproReplaysEveryRunShapingFlag(t *testing.T) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	runCmd.flags(fs)
	var shapes []string
	fs.VisitAll(func(f *flag.Flag) {
		switch runFlagRole[f.Name] {
		case "shapes":
			shapes = append(shapes, f.Name)
		case "":
			t.Errorf("run has flag --%s that runFlagRole does not classify: say whether it shapes a run", f.Name)
		}
	})
	base := map[string]string{"scenario": "crash-capture", "system": "pipeline", "seed": "3", "txns": "80"}
	other := map[string]string{"scenario": "partitions", "system": "dualwrite", "seed": "4", "txns": "90", "bug": "confirm-before-ack"}
	args := func(m map[string]string, extra ...string) []string {
		a := []string{"run"}
		for _, k := range []string{"scenario", "system", "seed", "txns", "bug"} {
			if v, ok := m[k]; ok {
				a = append(a, "--"+k, v)
			}
		}
		return append(a, extra...)
	}
	hashOf := func(a []string) (string, string) {
		t.Helper()
		code, out, errw := lockstep(a...)
		h, r := hashRE.FindStringSubmatch(out), reproRE.FindStringSubmatch(out)
		if code == 2 || h == nil || r == nil {
			t.Fatalf("%v: exit %d, no hash or repro line:\n%s%s", a, code, out, errw)
		}
		return h[1], r[1]
	}
	baseHash, _ := hashOf(args(base))
	for _, name := range shapes {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		m[name] = other[name]
		if other[name] == "" {
			t.Fatalf("no other value for --%s", name)
		}
		hash, token := hashOf(args(m))
		if hash == baseHash {
			t.Errorf("--%s %s: same hash as without it, so the test proves nothing for it", name, m[name])
		}
		code, again, errw := lockstep("repro", token)
		if h := hashRE.FindStringSubmatch(again); code == 2 || h == nil || h[1] != hash {
			t.Errorf("--%s %s: repro %s: exit %d, hash %v, want %s\n%s", name, m[name], token, code, h, hash, errw)
		}
	}
	// The default --txns stays out of the token and replays too.
	m := map[string]string{"scenario": "steady", "seed": "1"}
	hash, token := hashOf(args(m))
	if token != "steady/pipeline/1" {
		t.Errorf("default run: token %q, want steady/pipeline/1", token)
	}
	if _, again, _ := lockstep("repro", token); hashRE.FindString(again) != "trace hash "+hash {
		t.Errorf("default run: repro printed %q, want %s", hashRE.FindString(again), hash)
	}
	for name, extra := range map[string][]string{
		"json":              {"--json", filepath.Join(t.TempDir(), "r.json")},
		"log":               {"--log"},
		"check-determinism": {"--check-determinism"},
		"report":            {"--report", filepath.Join(t.TempDir(), "r.html")},
	} {
		if h, _ := hashOf(args(base, extra...)); h != baseHash {
			t.Errorf("--%s changed the run: hash %s, want %s", name, h, baseHash)
		}
	}
	for name, extra := range map[string][]string{
		"plan":  {"--plan", "/nonexistent"},
		"bench": {"--bench"},
		"logs":  {"--logs", t.TempDir()},
	} {
		code, out, errw := lockstep(args(base, extra...)...)
		if code != 2 || out != "" || !strings.HasPrefix(errw, "lockstep run: --"+name+" needs --world containers") || strings.Count(errw, "\n") != 1 {
			t.Errorf("--%s in the simulator: exit %d, stderr %q; want 2 and one line refusing it", name, code, errw)
		}
	}
}

// A campaign lists its failing runs by tokens that carry --txns, and each
// replays the run that failed. Campaigns used to list scenario/system/seed.
func TestCampaignTokensReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "summary.json")
	code, out, errw := lockstep("campaign", "--scenario", "crash-capture", "--system", "dualwrite", "--seeds", "4", "--txns", "120", "--json", path)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errw)
	}
	sum, err := results.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	var failing []string
	for _, r := range sum.RunsWhere(scenarios.DualWrite, results.Violated) {
		failing = append(failing, r.Token)
	}
	if len(sum.Cells) != 1 || len(failing) == 0 {
		t.Fatalf("want dual writes failing in some of 4 crash-capture seeds: %+v", sum)
	}
	if first := failing[0]; !strings.Contains(out, "see a dual-write divergence: lockstep repro "+first+"\n") {
		t.Errorf("the summary does not print the first failing token %s:\n%s", first, out)
	}
	for _, token := range failing {
		if !strings.HasSuffix(token, ",txns=120") {
			t.Errorf("token %q: want it to end in ,txns=120", token)
		}
		_, again, _ := lockstep("repro", token)
		seed := strings.TrimSuffix(strings.TrimPrefix(token, "crash-capture/dualwrite/"), ",txns=120")
		_, direct, _ := lockstep("run", "--scenario", "crash-capture", "--system", "dualwrite", "--seed", seed, "--txns", "120")
		if !strings.Contains(again, "FAIL:") || hashRE.FindString(again) != hashRE.FindString(direct) {
			t.Errorf("repro %s: want the failing run (hash %q), got %q:\n%s", token, hashRE.FindString(direct), hashRE.FindString(again), again)
		}
	}
}

// A container run's token carries the world, --txns, --bench and --plan
// (as the file's absolute path and checksum), and what it parses back to is
// the same container run as the flags: no Docker needed to check that. A
// plan file changed since the run, a plan naming a container the run lacks
// and a missing file are refused, with one line and exit 2, before Docker
// is asked anything.
func TestContainerReproToken(t *testing.T) {
	dir := t.TempDir()
	plan := filepath.Join(dir, "my plan,1.txt")
	if err := os.WriteFile(plan, []byte("@2s crash capture\n@5s restart capture\nquiet @12s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	rf := runFlags{world: "containers", txns: 50, bench: true, plan: "my plan,1.txt", bugs: "skip-snapshot"}
	r, err := rf.repro("crash-capture", "pipeline", "7")
	if err != nil {
		t.Fatal(err)
	}
	token := r.String()
	if want := "crash-capture+skip-snapshot/pipeline/7,world=containers,txns=50,bench=true,plan=" + strings.ReplaceAll(dir, " ", "%20") + "/my%20plan%2C1.txt,plansum="; !strings.HasPrefix(token, want) {
		t.Fatalf("token %q, want it to start %q", token, want)
	}
	parsed, err := scenarios.ParseRepro(token)
	if err != nil {
		t.Fatal(err)
	}
	fromFlags, err := containerConfig(r)
	if err != nil {
		t.Fatal(err)
	}
	fromToken, err := containerConfig(parsed)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromFlags, fromToken) || fromToken.Plan == nil || len(fromToken.Plan.Faults) != 2 || fromToken.Txns != 50 || !fromToken.Bench || fromToken.Scenario.Name != "crash-capture+skip-snapshot" {
		t.Fatalf("the token names another run:\nflags %+v\ntoken %+v", fromFlags, fromToken)
	}
	// Without a plan, bench runs fault-free; a plain token stays plain.
	r2, err := (&runFlags{world: "containers"}).repro("steady", "dualwrite", "0x10")
	if err != nil || r2.String() != "steady/dualwrite/16,world=containers" {
		t.Fatalf("plain container token: %q, %v", r2.String(), err)
	}

	t.Setenv("DOCKER_HOST", "unix:///nonexistent") // any Docker call fails: the refusals must come first
	if err := os.WriteFile(plan, []byte("@2s crash capture\n@6s restart capture\nquiet @12s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("@2s crash capturer\n@6s restart capturer\nquiet @12s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"repro", token}, "lockstep repro: plan file " + filepath.Join(dir, "my plan,1.txt") + " changed since the run"},
		{[]string{"run", "--world", "containers", "--scenario", "steady", "--seed", "1", "--plan", bad}, "lockstep run: " + bad + ": fault 0 (@2s crash capturer): unknown node capturer"},
		{[]string{"run", "--world", "containers", "--scenario", "steady", "--system", "dualwrite", "--seed", "1", "--plan", plan}, "lockstep run: " + plan + ": fault 0 (@2s crash capture): unknown node capture"},
		{[]string{"run", "--world", "containers", "--scenario", "steady", "--seed", "1", "--plan", "missing.txt"}, "lockstep run: read the fault plan: open " + filepath.Join(dir, "missing.txt")},
		{[]string{"run", "--world", "containers", "--scenario", "clock-jump", "--seed", "1"}, "lockstep run: scenario clock-jump draws clock jumps"},
	} {
		code, out, errw := lockstep(c.args...)
		if code != 2 || out != "" || !strings.HasPrefix(errw, c.want) || strings.Count(errw, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and one line starting %q", c.args, code, out, errw, c.want)
		}
	}
}

// Docker that cannot be reached is the environment's failure, not the
// pipeline's: exit 2 with one line saying what to do.
func TestNoDockerIsExit2(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent")
	for _, args := range [][]string{
		{"run", "--world", "containers", "--scenario", "steady", "--seed", "1"},
		{"repro", "steady/pipeline/1,world=containers"},
		{"campaign", "--world", "containers", "--scenario", "steady", "--seeds", "1"},
		{"bench", "--world", "containers", "--compare", "debezium"},
	} {
		code, out, errw := lockstep(args...)
		if code != 2 || out != "" || !strings.Contains(errw, "Docker is not available: cannot reach the daemon (start dockerd)") || strings.Count(errw, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and one line", args, code, out, errw)
		}
	}
}

// A failure of the harness itself is exit 2 with one line, never 1, which
// says the pipeline broke a claim: here a replay that does not give the
// trace hash its repro file records (a run that passed). An unwritable
// output file is refused before the run (TestBadInputIsOneLineAndExit2).
func TestHarnessErrorIsExit2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wrong-hash.repro")
	text := "token steady/pipeline/1,txns=20\nhash 0123456789abcdef\nplan\nquiet @20s\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errw := lockstep("repro", path)
	if !strings.Contains(out, "PASS:") {
		t.Fatalf("the run itself must pass:\n%s%s", out, errw)
	}
	if code != 2 || !strings.HasPrefix(errw, "lockstep repro: "+path+": the replay's trace hash") || strings.Count(errw, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q: want 2 and one line about the hash", code, errw)
	}
}

// Only the pipeline's verdict decides the exit (dual writes' and 2PC's are
// shown, as the README says), and inconclusive is not a pass.
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
		{scenarios.TwoPC, fail, false, errViolation},
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

// run --report and repro --report of the same run write the same page
// (a report holds nothing but the run), and the exit code is the run's.
func TestReportOfRunAndRepro(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "run.html"), filepath.Join(dir, "repro.html")
	code, out, errw := lockstep("run", "--scenario", "crash-capture", "--bug", "confirm-before-ack", "--seed", "1", "--report", a)
	if code != 1 || !strings.Contains(out, "report: "+a) {
		t.Fatalf("run: exit %d, want 1 and the report's path:\n%s%s", code, out, errw)
	}
	code, _, errw = lockstep("repro", "--report", b, "crash-capture+confirm-before-ack/pipeline/1")
	if code != 1 {
		t.Fatalf("repro: exit %d, want 1: %s", code, errw)
	}
	pa, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pa, pb) {
		t.Error("run and repro of one run wrote different reports")
	}
	if !bytes.Contains(pa, []byte(`<svg id="timeline"`)) || !bytes.Contains(pa, []byte("not-converged")) {
		t.Error("the report lacks its timeline or the run's anomaly")
	}
}

// campaign --report DIR writes an index that lists every failing run and
// links the reports it wrote.
func TestCampaignReport(t *testing.T) {
	dir := t.TempDir()
	js := filepath.Join(dir, "sum.json")
	code, out, errw := lockstep("campaign", "--scenario", "crash-capture", "--seeds", "3", "--txns", "200", "--json", js,
		"--report", dir, "--report-runs", "1")
	if code != 0 {
		t.Fatalf("exit %d:\n%s%s", code, out, errw)
	}
	sum, err := results.Read(js)
	if err != nil {
		t.Fatal(err)
	}
	index, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	failing := 0
	for _, sys := range scenarios.Systems {
		for _, r := range sum.RunsWhere(sys, results.Violated) {
			failing++
			if !bytes.Contains(index, []byte("lockstep repro "+r.Token)) {
				t.Errorf("index does not list %s", r.Token)
			}
		}
	}
	if failing == 0 {
		t.Fatal("no failing run in the campaign: the test checks nothing")
	}
	reports, _ := filepath.Glob(filepath.Join(dir, "runs", "*.html"))
	if len(reports) != 1 {
		t.Errorf("want 1 report (--report-runs 1, one failing cell), got %v", reports)
	}
}
