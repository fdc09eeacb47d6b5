package containers

import (
	"testing"
	"time"

	"lockstep/scenarios"
)

// Two-phase commit against real PostgreSQL participants, its coordinator
// killed (-9) mid-load while it is cut off from the search index, so that
// every transaction it is working on hangs prepared on the source and the
// replica: the participants hold transactions in doubt while it is down,
// and once it is back its recovery resolves them all (pg_prepared_xacts
// empty on every participant, its decision log empty), and the stores
// hold every claim 2PC makes of them.
func TestTwoPCCoordinatorKillInContainers(t *testing.T) {
	requireDocker(t)
	out := runScenario(t, "crash-capture", scenarios.TwoPC, plan(t, `
@5s partition coordinator | pg-search
@9s crash coordinator
@12s heal
@13s restart coordinator
quiet @22s`), false)
	d := out.InDoubt
	if d == nil {
		t.Fatal("a 2pc run without its in-doubt record")
	}
	t.Logf("%s", d)
	var down int
	for _, s := range d.Samples {
		if s.At >= 9*time.Second && s.At < 13*time.Second {
			down = max(down, s.Prepared)
		}
	}
	resolved := time.Duration(-1)
	for _, s := range d.Samples {
		if s.At >= 13*time.Second && s.Prepared == 0 {
			resolved = s.At - 13*time.Second
			break
		}
	}
	t.Logf("in doubt while the coordinator was down: up to %d prepared; none %v after its restart", down, resolved)
	if down == 0 {
		t.Fatalf("no transaction in doubt while the coordinator was down (samples %v): the kill did not catch one prepared", d.Samples)
	}
	if d.AtEnd != 0 || d.Decisions != 0 || d.ResolvedAt < 0 {
		t.Fatalf("left in doubt after the coordinator's restart: %d prepared, %d decisions in its log", d.AtEnd, d.Decisions)
	}
	if out.Violated() {
		t.Fatalf("2pc violated a claimed property:\n%s\nlogs: %s", out.Report, out.LogDir)
	}
	for _, st := range out.History.Stores {
		if st.Name != scenarios.CacheStore && len(st.Claims) == 0 {
			t.Errorf("%s claims nothing: 2pc's participants claim no loss and no phantom", st.Name)
		}
	}
}
