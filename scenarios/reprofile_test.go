package scenarios

import (
	"strings"
	"testing"
	"time"

	"lockstep/checker"
	"lockstep/faults"
)

// The seed's own plan, given explicitly, gives the seed's own run: the plan
// is drawn from a stream of its own, so nothing else moves. A smaller plan
// gives another run, and the run follows it.
func TestExplicitPlanReplaysTheSeedsRun(t *testing.T) {
	for _, name := range []string{"swarm", "source-stall", "crash-capture"} {
		sc := ByName(name)
		for _, sys := range Systems {
			drawn, err := Run(sc, sys, 3, Options{Txns: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(drawn.Plan.Faults) == 0 {
				t.Fatalf("%s: seed 3 drew no faults; pick a seed that does", drawn.Repro())
			}
			plan := drawn.Plan
			given, err := Run(sc, sys, 3, Options{Txns: 100, Plan: &plan})
			if err != nil {
				t.Fatal(err)
			}
			if given.Hash != drawn.Hash {
				t.Fatalf("%s: hash %016x with the plan given, %016x drawn", drawn.Repro(), given.Hash, drawn.Hash)
			}
			none := faults.Plan{Quiet: plan.Quiet}
			bare, err := Run(sc, sys, 3, Options{Txns: 100, Plan: &none})
			if err != nil {
				t.Fatal(err)
			}
			if bare.Hash == drawn.Hash || len(bare.History.Faults) != len(sc.QuietRestart) {
				t.Fatalf("%s: an empty plan gave hash %016x and %d fault windows; want another run with none", drawn.Repro(), bare.Hash, len(bare.History.Faults))
			}
		}
	}
}

func TestExplicitPlanIsChecked(t *testing.T) {
	sc := ByName("crash-capture")
	for plan, want := range map[string]string{
		"quiet @10s": "the plan's quiet @10s is not the fault phase's end @20s",
		"@3s crash capture\n@1s restart capture\nquiet @20s": "comes before the previous fault",
	} {
		p := faults.Plan{Quiet: 10 * time.Second}
		if plan != "quiet @10s" {
			p = faults.Plan{Quiet: 20 * time.Second, Faults: []faults.Fault{
				{At: 3 * time.Second, Kind: faults.Crash, Node: "capture"}, {At: time.Second, Kind: faults.Restart, Node: "capture"}}}
		}
		_, err := Run(sc, Pipeline, 1, Options{Txns: 10, Plan: &p})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("plan %q: error %v, want one containing %q", plan, err, want)
		}
	}
	if _, err := Run(sc, Pipeline, 1, Options{Txns: 10, Keys: 1}); err == nil || !strings.Contains(err.Error(), "1 keys: want at least 2") {
		t.Errorf("1 key: error %v", err)
	}
}

// A repro file prints and parses back to the same value, and replaying it
// gives the hash it records.
func TestReproFileRoundTripAndReplay(t *testing.T) {
	plan, err := faults.Parse("@1.5s crash capture\n@2.5s restart capture\nquiet @5s\n")
	if err != nil {
		t.Fatal(err)
	}
	f := ReproFile{Repro: Repro{Scenario: "crash-capture+confirm-before-ack", System: Pipeline, Seed: 1, Txns: 20, Clients: 1, Quiet: 5 * time.Second, Keys: 2},
		Plan: plan}
	out, err := Run(ByName("crash-capture"), Pipeline, 1, f.Options())
	if err != nil {
		t.Fatal(err)
	}
	f.Hash, f.Class, f.Store = out.Hash, checker.NotConverged, ReplicaStore
	text := f.String()
	if !LooksLikeReproFile(text) || LooksLikeReproFile(plan.String()) {
		t.Fatalf("LooksLikeReproFile: wrong on\n%s", text)
	}
	got, err := ParseReproFile(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if got.String() != text || got.Repro != f.Repro || got.Hash != f.Hash || got.Class != f.Class || got.Store != f.Store {
		t.Fatalf("round trip:\n%s\nbecame\n%s", text, got)
	}
	again, err := Run(ByName("crash-capture"), Pipeline, 1, got.Options())
	if err != nil {
		t.Fatal(err)
	}
	if again.Hash != f.Hash {
		t.Fatalf("replay of the file gave hash %016x, the file says %016x", again.Hash, f.Hash)
	}
}

func TestParseReproFileErrors(t *testing.T) {
	const tok = "token steady/pipeline/1\n"
	for text, want := range map[string]string{
		"":                               "no 'token' line",
		tok:                              "no 'plan' line",
		tok + tok + "plan\nquiet @20s\n": "line 2: second token line (first on line 1)",
		"plan\nquiet @20s\n":             "line 1: plan before the token line",
		"token steady/pipeline\nplan\nquiet @20s\n":                    "line 1: malformed repro token",
		"token steady/pipeline/1,world=containers\nplan\nquiet @20s\n": "simulated runs only",
		tok + "hash xyz\nplan\nquiet @20s\n":                           "line 2: expected 'hash HEX'",
		tok + "anomaly lost\nplan\nquiet @20s\n":                       "line 2: expected 'anomaly CLASS STORE'",
		tok + "anomaly gone replica\nplan\nquiet @20s\n":               "line 2: expected 'anomaly CLASS STORE'",
		tok + "seed 4\nplan\nquiet @20s\n":                             `line 2: unexpected "seed"`,
		tok + "# a comment\nplan\n@1s crash\nquiet @20s\n":             "repro file line 4: crash needs a node",
		tok + "plan\n@1s crash capture\n":                              "no 'quiet @<time>' line",
	} {
		_, err := ParseReproFile(text)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseReproFile(%q) = %v; want an error containing %q", text, err, want)
		}
	}
}
