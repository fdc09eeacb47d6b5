package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// shrink prints the shrunk plan and a repro file; repro replays the file to
// the same hash; --json has faults, transactions, class, hash and seconds;
// a file whose hash the replay does not give is refused, exit 2.
func TestShrinkWritesAReproFileThatReplays(t *testing.T) {
	dir := t.TempDir()
	file, js, page := filepath.Join(dir, "shrunk.repro"), filepath.Join(dir, "shrunk.json"), filepath.Join(dir, "shrunk.html")
	code, out, errw := lockstep("shrink", "crash-appliers+commit-offset-first/pipeline/1", "--out", file, "--json", js, "--report", page)
	if code != 1 {
		t.Fatalf("shrink: exit %d, want 1 (a pipeline violation)\n%s\n%s", code, out, errw)
	}
	if !strings.Contains(errw, "shrink crash-appliers+commit-offset-first/pipeline/1: keep not-converged on ") || !strings.Contains(errw, "shrunk to ") {
		t.Fatalf("no progress on stderr:\n%s", errw)
	}
	hash := regexp.MustCompile(`trace hash ([0-9a-f]{16})`).FindStringSubmatch(out)
	if hash == nil || !strings.Contains(out, "repro file:\n") || !strings.Contains(out, "replay: lockstep repro "+file) {
		t.Fatalf("shrink output lacks the hash, repro file or replay line:\n%s", out)
	}
	var sum struct {
		Faults, Transactions int
		Class, Store, Hash   string
		Seconds              float64
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Class != "not-converged" || sum.Hash != hash[1] || sum.Faults > 3 || sum.Transactions > 20 || sum.Transactions < 1 || sum.Seconds <= 0 {
		t.Fatalf("JSON %+v; want not-converged, hash %s, at most 3 faults and 20 transactions", sum, hash[1])
	}
	html, err := os.ReadFile(page)
	if err != nil || !strings.Contains(out, "report: "+page) {
		t.Fatalf("--report: no page (%v) or no 'report:' line\n%s", err, out)
	}
	// html/template writes the token's + as &#43;.
	if !strings.Contains(string(html), "shrunk from crash-appliers&#43;commit-offset-first/pipeline/1: ") || !strings.Contains(string(html), "<svg") {
		t.Fatalf("the shrunk run's report lacks its timeline or how it was shrunk")
	}
	code, out, errw = lockstep("repro", file)
	if code != 1 || !strings.Contains(out, "trace hash "+hash[1]) || !strings.Contains(out, "repro: lockstep repro "+file) {
		t.Fatalf("repro FILE: exit %d, want 1 and hash %s\n%s\n%s", code, hash[1], out, errw)
	}
	code, out, errw = lockstep("repro", "--check-determinism", file)
	if code != 1 || !strings.Contains(out, "determinism: two runs, identical traces") {
		t.Fatalf("repro --check-determinism FILE: exit %d\n%s\n%s", code, out, errw)
	}
	text, _ := os.ReadFile(file)
	tampered := filepath.Join(dir, "tampered.repro")
	os.WriteFile(tampered, []byte(strings.Replace(string(text), "hash "+hash[1], "hash 0123456789abcdef", 1)), 0o644)
	code, _, errw = lockstep("repro", tampered)
	if code != 2 || !strings.Contains(errw, "is not the file's 0123456789abcdef") {
		t.Fatalf("a file whose hash the replay does not give: exit %d, stderr %q; want 2 naming both hashes", code, errw)
	}
	// Shrinking the shrunk file again finds nothing smaller to drop.
	code, out, _ = lockstep("shrink", file)
	if code != 1 || !strings.Contains(out, "trace hash "+hash[1]) {
		t.Fatalf("shrink of a shrunk file: exit %d, want 1 and the same run\n%s", code, out)
	}
}

func TestShrinkBadInputIsExit2(t *testing.T) {
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.txt")
	os.WriteFile(plan, []byte("@1s crash capture\nquiet @20s\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"shrink", "crash-capture/pipeline/1,txns=50"}, "lockstep shrink: crash-capture/pipeline/1,txns=50: the run violates no claimed property"},
		{[]string{"shrink", "steady/pipeline/1,world=containers"}, "lockstep shrink: a container shrink needs --out FILE"},
		{[]string{"shrink", "--class", "gone", "steady/pipeline/1"}, `lockstep shrink: unknown class "gone"`},
		{[]string{"shrink"}, "lockstep shrink: want exactly one repro token or repro file"},
		{[]string{"shrink", "--all-bugs", "steady/pipeline/1"}, "lockstep shrink: --all-bugs takes no token"},
		{[]string{"shrink", "--all-bugs", "--report", filepath.Join(dir, "x.html")}, "lockstep shrink: --all-bugs takes no token, --class, --store, --out or --report"},
		{[]string{"shrink", "steady/pipeline/1,world=containers", "--out", plan, "--report", filepath.Join(dir, "x.html")}, "lockstep shrink: --report: a container shrink keeps a plan"},
		{[]string{"repro", plan}, "lockstep repro: " + plan + " is not a repro file"},
		{[]string{"campaign", "--world", "containers", "--shrink"}, "lockstep campaign: --shrink needs the simulator"},
	} {
		code, _, errw := lockstep(c.args...)
		if code != 2 || !strings.HasPrefix(errw, c.want) || strings.Count(errw, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line starting %q", c.args, code, errw, c.want)
		}
	}
}

// campaign --shrink shrinks the first failing pipeline run of each scenario
// and class, and prints its repro file.
func TestCampaignShrinks(t *testing.T) {
	code, out, errw := lockstep("campaign", "--scenario", "crash-appliers+commit-offset-first", "--system", "pipeline", "--seeds", "2", "--shrink")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errw)
	}
	if !strings.Contains(out, "shrinking the first failing run of each scenario, system (not dual writes) and anomaly class") ||
		!strings.Contains(out, "shrunk crash-appliers+commit-offset-first/pipeline/1: not-converged on ") ||
		!strings.Contains(out, "  token crash-appliers+commit-offset-first/pipeline/1,") {
		t.Fatalf("no shrunk run of seed 1 in:\n%s", out)
	}
}

// A 2PC run that violates what 2PC claims is listed for replay and shrunk
// too, and fails the campaign. Both listing and shrink were missing: the
// campaign printed the 2pc column's count and no token.
func TestCampaignListsAndShrinksTwoPCViolations(t *testing.T) {
	// Which seeds fail moves with the simulator's timing: the test takes
	// the first listed and asks for its shrink.
	code, out, errw := lockstep("campaign", "--scenario", "crash-capture+heuristic-rollback", "--system", "2pc", "--seeds", "5", "--shrink")
	if code != 1 {
		t.Fatalf("exit %d, want 1 (2PC broke what it claims)\n%s\n%s", code, out, errw)
	}
	m := regexp.MustCompile(`2PC VIOLATED A CLAIMED PROPERTY in \d+ runs; replay with:\n  lockstep repro (crash-capture\+heuristic-rollback/2pc/\d+)\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no failing 2pc run listed:\n%s", out)
	}
	if !strings.Contains(out, "shrunk "+m[1]+": lost on ") || !strings.Contains(out, "  token "+m[1]+",txns=") {
		t.Fatalf("no shrunk run of %s in:\n%s", m[1], out)
	}
}

// A container shrink without Docker is the environment's failure: exit 2,
// one line, nothing on stdout.
func TestShrinkContainersWithoutDockerIsExit2(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent")
	code, out, errw := lockstep("shrink", "steady/pipeline/1,world=containers", "--out", filepath.Join(t.TempDir(), "p"))
	if code != 2 || out != "" || !strings.Contains(errw, "Docker is not available") || strings.Count(errw, "\n") != 1 {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and one line", code, out, errw)
	}
}

// The README's example repro file replays to the hash it records: an
// example of a file that replays must still replay after the code changes.
func TestREADMEReproFileReplays(t *testing.T) {
	readme := readFile(t, filepath.Join(repoRoot, "README.md"))
	m := regexp.MustCompile("(?s)```\n(token [^\n]*\nhash [0-9a-f]{16}\n.*?)```").FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README.md: no example repro file (a block starting `token ...` and `hash ...`)")
	}
	file := filepath.Join(t.TempDir(), "example.repro")
	if err := os.WriteFile(file, []byte(m[1]), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errw := lockstep("repro", file)
	if code != 1 {
		t.Fatalf("repro of the README's example file: exit %d, want 1 (it records a pipeline violation and its hash)\n%s%s", code, out, errw)
	}
}
