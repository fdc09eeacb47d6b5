package checker

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"lockstep/model"
)

func mustParse(t *testing.T, text string) *model.History {
	t.Helper()
	h, err := parseHistory(text)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustParseFile(t *testing.T, name string) *model.History {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	input, _, _ := strings.Cut(string(raw), "----\n")
	return mustParse(t, input)
}

// stubPorcupine makes every porcupine call return res and records the
// timeouts it was given.
func stubPorcupine(t *testing.T, res porcupine.CheckResult) *[]time.Duration {
	t.Helper()
	old := checkOperations
	var mu sync.Mutex // Check runs the stores' checks concurrently
	var timeouts []time.Duration
	checkOperations = func(_ porcupine.Model, _ []porcupine.Operation, timeout time.Duration) porcupine.CheckResult {
		mu.Lock()
		defer mu.Unlock()
		timeouts = append(timeouts, timeout)
		return res
	}
	t.Cleanup(func() { checkOperations = old })
	return &timeouts
}

func classesOf(r *Report) []Class {
	var cs []Class
	for _, a := range r.Anomalies {
		cs = append(cs, a.Class)
	}
	return cs
}

func TestClassesMapToProperties(t *testing.T) {
	want := map[Class]model.Property{
		Lost:            model.NoLoss,
		Phantom:         model.NoPhantom,
		Backwards:       model.PerKeyOrder,
		Duplicate:       model.ExactlyOnce,
		Torn:            model.Atomicity,
		Divergent:       model.Convergence,
		NotConverged:    model.Convergence,
		Nonlinearizable: model.PerKeyOrder,
		LogDataLoss:     model.NoLoss,
	}
	if len(Classes) != len(want) {
		t.Fatalf("Classes has %d entries, want %d", len(Classes), len(want))
	}
	for _, c := range Classes {
		if c.Property() != want[c] {
			t.Errorf("%s: property %s, want %s", c, c.Property(), want[c])
		}
	}
}

func TestAnomalyString(t *testing.T) {
	h := &model.History{Faults: []model.FaultWindow{{Start: 10 * time.Second, End: 15 * time.Second, What: "crash capture"}}}
	a := Anomaly{Class: Lost, Store: "replica", Key: model.Key{Table: "accounts", PK: "7"},
		Witness: Witness{Timed: true, At: 12500 * time.Millisecond, Fault: h.FaultAt(12500 * time.Millisecond), Detail: "has lsn=0/1A0 want lsn=0/2F0"}}
	if got, want := a.String(), "lost replica accounts/7: has lsn=0/1A0 want lsn=0/2F0 (at 12.5s, during crash capture)"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	a.Witness.At, a.Witness.Fault = 20*time.Second, h.FaultAt(20*time.Second)
	if got, want := a.String(), "lost replica accounts/7: has lsn=0/1A0 want lsn=0/2F0 (at 20s, no fault)"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	logLoss := Anomaly{Class: LogDataLoss, Store: LogStore, Witness: Witness{Detail: "2 records lost"}}
	if got, want := logLoss.String(), "log-data-loss log: 2 records lost"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// The same anomaly in a store that claims the property and one that does
// not: one violation, both counted.
func TestUnclaimedIsCountedNotViolation(t *testing.T) {
	h := mustParse(t, `
store strict cache claims=all
store lax cache claims=convergence,per-key-order
txn 1 0/10 insert k/1 "v=1"
txn 2 0/20 update k/1 "v=2"
final strict at=5s truth
  k/1 lsn=0/10 "v=1"
final lax at=5s truth
  k/1 lsn=0/10 "v=1"
`)
	rep := Check(h, Options{})
	if rep.Counts[Lost] != 2 || len(rep.Anomalies) != 2 {
		t.Fatalf("counts %v, anomalies %v", rep.Counts, classesOf(rep))
	}
	v := rep.Violations()
	if len(v) != 1 || v[0].Store != "strict" || v[0].Class != Lost || v[0].Property != model.NoLoss {
		t.Fatalf("violations %v", v)
	}
	if rep.OK() || rep.Verdict != Fail {
		t.Fatalf("verdict %s", rep.Verdict)
	}

	// Only the lax store: counted, and the run passes.
	h.Stores, h.Final = h.Stores[1:], h.Final[1:]
	rep = Check(h, Options{})
	if rep.Counts[Lost] != 1 || len(rep.Violations()) != 0 || !rep.OK() || rep.Verdict != Pass {
		t.Fatalf("unclaimed lost must be counted, not failed:\n%s", rep)
	}
}

func TestLogDataLossViolationIffAnyStoreClaimsNoLoss(t *testing.T) {
	for _, tc := range []struct {
		claims    string
		violation bool
	}{
		{"all", true},
		{"no-loss", true},
		{"none", false},
		{"convergence,atomicity", false},
	} {
		h := mustParse(t, `
store a cache claims=none
store b cache claims=`+tc.claims+`
txn 1 0/10 insert k/1 "v=1"
loglosses 3
final a at=1s truth
final b at=1s truth
`)
		rep := Check(h, Options{})
		if len(rep.Anomalies) != 1 {
			t.Fatalf("%s: %v", tc.claims, classesOf(rep))
		}
		a := rep.Anomalies[0]
		if a.Class != LogDataLoss || a.Store != LogStore || a.Property != model.NoLoss || a.Violation != tc.violation {
			t.Errorf("%s: %+v", tc.claims, a)
		}
		if !strings.Contains(a.String(), "3 acknowledged log record(s) lost") {
			t.Errorf("%s: %s", tc.claims, a)
		}
	}
}

const twoReadsOfOneKey = `
store cache cache claims=all
store lax cache claims=none
txn 1 0/10 insert k/1 "v=1"
read cache k/1 1s 2s lsn=0/10 "v=1"
read cache k/1 3s 4s lsn=0/10 "v=1"
read lax k/1 1s 2s lsn=0/10 "v=1"
read lax k/1 3s 4s lsn=0/10 "v=1"
final cache at=5s truth
final lax at=5s truth
`

// A linearizability check that timed out is reported, is not a pass, and
// is not a violation either.
func TestUnknownIsNeitherPassNorViolation(t *testing.T) {
	stubPorcupine(t, porcupine.Unknown)
	rep := Check(mustParse(t, twoReadsOfOneKey), Options{})
	if len(rep.Anomalies) != 0 || !rep.OK() {
		t.Fatalf("unknown must not be a violation:\n%s", rep)
	}
	if rep.Verdict != Inconclusive {
		t.Fatalf("verdict %s, want %s: unknown is never a pass", rep.Verdict, Inconclusive)
	}
	if !reflect.DeepEqual(rep.Unknown, []string{"cache", "lax"}) {
		t.Fatalf("unknown %v", rep.Unknown)
	}
	for _, l := range rep.Linearizability {
		if l.Result != porcupine.Unknown || l.Reads != 2 || l.Keys != 1 {
			t.Fatalf("%+v", l)
		}
	}
	if !strings.Contains(rep.String(), "2 unknown: timed out, not a pass") {
		t.Fatalf("render must say so:\n%s", rep)
	}

	// Unknown on a store that does not claim per-key order: listed, but
	// the verdict does not depend on it.
	h := mustParse(t, twoReadsOfOneKey)
	h.Stores[0].Claims[model.PerKeyOrder] = false
	rep = Check(h, Options{})
	if rep.Verdict != Pass || len(rep.Unknown) != 2 {
		t.Fatalf("verdict %s, unknown %v", rep.Verdict, rep.Unknown)
	}
}

func TestLinearizabilityTimeoutDefaults(t *testing.T) {
	for _, tc := range []struct{ opt, want time.Duration }{
		{0, 2 * time.Second},
		{-1, 0}, // porcupine's "no limit"
		{250 * time.Millisecond, 250 * time.Millisecond},
	} {
		timeouts := stubPorcupine(t, porcupine.Ok)
		Check(mustParse(t, twoReadsOfOneKey), Options{LinearizabilityTimeout: tc.opt})
		if len(*timeouts) != 2 || (*timeouts)[0] != tc.want {
			t.Errorf("option %s: porcupine got %v, want %s", tc.opt, *timeouts, tc.want)
		}
	}
}

// A defective history makes no claim it cannot back: what it touches is
// listed in Problems and the verdict is inconclusive, never pass.
func TestProblemsMakeVerdictInconclusive(t *testing.T) {
	for _, tc := range []struct {
		name, history, problem string
	}{
		{"no final snapshot", `
store cache cache claims=all
txn 1 0/10 insert k/1 "v=1"`, `store "cache" has no final snapshot`},
		{"read of an undeclared store", `
store cache cache claims=all
txn 1 0/10 insert k/1 "v=1"
read ghost k/1 1s 2s lsn=0/10 "v=1"
final cache at=3s truth`, `read of undeclared store "ghost"`},
		{"read returns before its call", `
store cache cache claims=all
txn 1 0/10 insert k/1 "v=1"
read cache k/1 2s 1s lsn=0/10 "v=1"
final cache at=3s truth`, `returns (1s) before its call (2s)`},
		{"store declared twice", `
store cache cache claims=all
store cache cache claims=all
txn 1 0/10 insert k/1 "v=1"
final cache at=3s truth`, `declared twice`},
		{"two finals", `
store cache cache claims=all
txn 1 0/10 insert k/1 "v=1"
final cache at=3s truth
final cache at=4s truth`, `more than one final snapshot`},
		{"LSNs out of order", `
store cache cache claims=all
txn 1 0/20 insert k/1 "v=1"
txn 2 0/10 update k/1 "v=2"
final cache at=4s truth`, `do not strictly increase`},
		{"no deadline", `
store replica replica claims=all
txn 1 0/10 insert k/1 "v=1"
converged replica 0s
final replica at=4s pos=0/10 truth`, `no deadline`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Check(mustParse(t, tc.history), Options{})
			if rep.Verdict != Inconclusive || len(rep.Anomalies) != 0 {
				t.Fatalf("verdict %s:\n%s", rep.Verdict, rep)
			}
			if !strings.Contains(strings.Join(rep.Problems, "\n"), tc.problem) {
				t.Fatalf("problems %q, want %q", rep.Problems, tc.problem)
			}
		})
	}
	// A store of unknown kind is a problem too, and is not judged.
	h := mustParse(t, `txn 1 0/10 insert k/1 "v=1"`)
	h.Stores = []model.StoreSpec{{Name: "odd", Kind: 9, Claims: model.Claims{model.NoLoss: true}}}
	h.Final = []model.Snapshot{{Store: "odd"}}
	rep := Check(h, Options{})
	if rep.Verdict != Inconclusive || len(rep.Anomalies) != 0 || !strings.Contains(strings.Join(rep.Problems, "\n"), "unknown kind") {
		t.Fatalf("%s", rep)
	}
}

func TestEmptyHistoryPasses(t *testing.T) {
	rep := Check(&model.History{}, Options{})
	if rep.Verdict != Pass || len(rep.Anomalies) != 0 || len(rep.Problems) != 0 {
		t.Fatalf("%s", rep)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
}

func TestCheckDoesNotMutateHistory(t *testing.T) {
	for _, name := range []string{"unclaimed-ok.txt", "torn-bad.txt", "phantom-aborted-bad.txt"} {
		h := mustParseFile(t, name)
		before := mustParseFile(t, name)
		Check(h, Options{})
		if !reflect.DeepEqual(h, before) {
			t.Errorf("%s: Check changed its input", name)
		}
	}
}

// brokenHistory is the benchmark's history with every kind of anomaly
// injected, for tests about the report as a whole.
func brokenHistory() *model.History {
	h := benchHistory(3)
	h.Stores[1].Claims = model.Claims{} // a store that claims nothing
	n := 0
	for _, s := range h.Final {
		for _, k := range model.SortedKeys(s.Docs) {
			d := s.Docs[k]
			switch n++; n % 97 {
			case 0:
				delete(s.Docs, k)
			case 1:
				d.Value += " tampered"
				s.Docs[k] = d
			case 2:
				d.Revs++
				s.Docs[k] = d
			}
		}
	}
	for i := range h.Reads {
		if i%211 == 0 {
			h.Reads[i].Doc.LSN += 1
		}
	}
	// A read that goes back: repeat an early read of a key much later,
	// after a later version of it was read.
	for i := len(h.Reads) - 1; i > 0; i-- {
		r := h.Reads[i]
		for j := 0; j < i; j++ {
			if e := h.Reads[j]; e.Store == r.Store && e.Key == r.Key && e.Doc.LSN < r.Doc.LSN {
				e.Call, e.Return = r.Return+time.Second, r.Return+2*time.Second
				h.Reads = append(h.Reads, e)
				i = 0
				break
			}
		}
	}
	// Not converged by the deadline: no time recorded, and its final
	// snapshot came after.
	delete(h.ConvergedAt, h.Stores[2].Name)
	h.Final[2].At = h.Deadline + time.Second
	h.LogLosses = 1
	return h
}

// The report does not depend on the order of the history's slices or on
// map iteration: shuffling reads, snapshots, stores and finals gives the
// same JSON and the same rendering.
func TestReportIndependentOfInputOrder(t *testing.T) {
	h := brokenHistory()
	// Make every read's return time distinct, so that "earliest" is
	// never a tie broken by input order.
	for i := range h.Reads {
		h.Reads[i].Return += time.Duration(i) * time.Nanosecond
	}
	rep := Check(h, Options{Witnesses: -1})
	if len(rep.Anomalies) < 10 {
		t.Fatalf("broken history found only %v", rep.Counts)
	}
	for _, c := range []Class{Lost, Phantom, Backwards, Duplicate, Torn, Divergent, NotConverged, Nonlinearizable, LogDataLoss} {
		if rep.Counts[c] == 0 {
			t.Errorf("broken history has no %s: %v", c, rep.Counts)
		}
	}
	want, _ := json.Marshal(rep)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5; i++ {
		s := *h
		s.Reads = append([]model.Read(nil), h.Reads...)
		s.Snapshots = append([]model.Snapshot(nil), h.Snapshots...)
		s.Stores = append([]model.StoreSpec(nil), h.Stores...)
		s.Final = append([]model.Snapshot(nil), h.Final...)
		rng.Shuffle(len(s.Reads), func(i, j int) { s.Reads[i], s.Reads[j] = s.Reads[j], s.Reads[i] })
		rng.Shuffle(len(s.Snapshots), func(i, j int) { s.Snapshots[i], s.Snapshots[j] = s.Snapshots[j], s.Snapshots[i] })
		rng.Shuffle(len(s.Stores), func(i, j int) { s.Stores[i], s.Stores[j] = s.Stores[j], s.Stores[i] })
		rng.Shuffle(len(s.Final), func(i, j int) { s.Final[i], s.Final[j] = s.Final[j], s.Final[i] })
		again := Check(&s, Options{Witnesses: -1})
		got, _ := json.Marshal(again)
		if string(got) != string(want) || again.String() != rep.String() {
			t.Fatalf("shuffled input, different report")
		}
	}
}

func TestRender(t *testing.T) {
	h := brokenHistory()
	rep := Check(h, Options{Witnesses: 3})
	out := rep.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "FAIL: ") || !strings.Contains(lines[0], `scenario "bench"`) {
		t.Fatalf("verdict line: %s", lines[0])
	}
	for _, c := range Classes {
		if !strings.Contains(out, "\n  "+string(c)+" ") {
			t.Errorf("no count line for %s:\n%s", c, out)
		}
	}
	var witnesses []string
	for _, l := range lines {
		if strings.HasPrefix(l, "    ") {
			witnesses = append(witnesses, strings.TrimSpace(l))
		}
	}
	if len(witnesses) != 3 {
		t.Fatalf("want 3 witnesses, got %d:\n%s", len(witnesses), out)
	}
	for _, w := range witnesses {
		if !strings.HasPrefix(w, "VIOLATION ") {
			t.Errorf("claimed violations come first: %s", w)
		}
	}
	if !strings.Contains(out, "first 3 of ") {
		t.Errorf("render must say how many witnesses it left out:\n%s", out)
	}
	all := Check(h, Options{Witnesses: -1}).String()
	if strings.Count(all, "\n    ") != len(rep.Anomalies) {
		t.Errorf("Witnesses: -1 must print every anomaly")
	}
	if !strings.Contains(all, "    unclaimed ") {
		t.Errorf("unclaimed anomalies are printed after the violations:\n%s", all)
	}
	if pass := Check(&model.History{}, Options{}).String(); !strings.HasPrefix(pass, "PASS: 0 claimed violations, 0 anomalies") {
		t.Errorf("pass line: %s", pass)
	}
}

func TestJSONShape(t *testing.T) {
	rep := Check(mustParseFile(t, "lost-write-bad.txt"), Options{})
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"verdict", "anomalies", "counts", "linearizability", "committed", "reads"} {
		if _, ok := m[f]; !ok {
			t.Errorf("report JSON has no %q: %s", f, raw)
		}
	}
	a := m["anomalies"].([]any)[0].(map[string]any)
	for _, f := range []string{"class", "property", "store", "key", "violation", "witness"} {
		if _, ok := a[f]; !ok {
			t.Errorf("anomaly JSON has no %q: %v", f, a)
		}
	}
	w := a["witness"].(map[string]any)
	for _, f := range []string{"source", "at", "fault", "got", "want", "versions", "detail"} {
		if _, ok := w[f]; !ok {
			t.Errorf("witness JSON has no %q: %v", f, w)
		}
	}
	if a["class"] != "lost" || a["property"] != "no-loss" || m["verdict"] != "fail" || w["fault"] != "crash capture" {
		t.Errorf("%s", raw)
	}
	if m["counts"].(map[string]any)["lost"] != 1.0 {
		t.Errorf("counts: %v", m["counts"])
	}
}

// One phantom document seen by a read, a snapshot and the final is one
// anomaly, witnessed at its earliest observation, whatever the order of
// the history's slices.
func TestPhantomReportedOnceAtEarliest(t *testing.T) {
	h := mustParse(t, `
store cache cache claims=no-phantom
txn 1 0/10 insert k/1 "v=1"
aborted 2 0/18 update k/1 "v=bad"
fault 2s 4s pause capture
read cache k/1 6s 7s lsn=0/18 "v=bad"
read cache k/1 1s 1500ms lsn=0/10 "v=1"
snapshot cache at=3s
  k/1 lsn=0/18 "v=bad"
snapshot cache at=8s
  k/1 lsn=0/18 "v=bad"
final cache at=9s truth
  k/1 lsn=0/18 "v=bad"
`)
	rep := Check(h, Options{})
	var ph []Anomaly
	for _, a := range rep.Anomalies {
		if a.Class == Phantom {
			ph = append(ph, a)
		}
	}
	if len(ph) != 1 {
		t.Fatalf("want one phantom, got %v", classesOf(rep))
	}
	w := ph[0].Witness
	if w.Seen != 4 || w.At != 3*time.Second || w.Source != FromSnapshot || w.Fault != "pause capture" {
		t.Fatalf("witness %+v", w)
	}
	if !strings.Contains(w.Detail, "aborted txn xid=2") {
		t.Fatalf("detail %q must name the aborted txn", w.Detail)
	}
	if got := w.Versions; !reflect.DeepEqual(got, []model.LSN{0x10, 0x18}) {
		t.Fatalf("versions %v", got)
	}
	if !ph[0].Violation {
		t.Fatal("the store claims no-phantom")
	}
}

// Revs are the search index's business only: a cache or replica document
// with revs set is judged by (LSN, value) alone.
func TestRevsJudgedOnlyForSearch(t *testing.T) {
	rep := Check(mustParse(t, `
store cache cache claims=all
txn 1 0/10 insert k/1 "v=1"
read cache k/1 1s 2s lsn=0/10 "v=1" revs=5
final cache at=3s truth
  k/1 lsn=0/10 "v=1" revs=9
`), Options{})
	if len(rep.Anomalies) != 0 {
		t.Fatalf("%s", rep)
	}
}

// Only stores whose final snapshot keeps a position are judged for
// convergence time: a cache cannot say where it stands.
func TestNotConvergedOnlyForPositionedFinals(t *testing.T) {
	rep := Check(mustParse(t, `
store cache cache claims=all
txn 1 0/10 insert k/1 "v=1"
deadline 1s
final cache at=3s truth
`), Options{})
	if rep.Verdict != Pass {
		t.Fatalf("%s", rep)
	}
}

// A replica row whose value contains the encoding's separators cannot be
// decoded back to the same row; the committed version it matches is
// still recognised, so its snapshots are not torn.
func TestReplicaRowWithSeparatorsIsNotTorn(t *testing.T) {
	h := mustParse(t, `
store replica replica claims=all
txn 1 0/10 insert notes/1 "body=a"
deadline 5s
converged replica 1s
final replica at=3s pos=0/10 truth
`)
	row := model.R("z", "b;a=1") // decodes to {a:1, z:b}, which encodes differently
	h.Committed = append(h.Committed, model.Txn{XID: 2, CommitLSN: 0x20, Changes: []model.Change{{Table: "notes", PK: "1", Op: model.OpUpdate, Row: row}}})
	h.Final[0].Position.LSN = 0x20
	h.Final[0].Docs[model.Key{Table: "notes", PK: "1"}] = model.Doc{Value: row.Encode(), LSN: 0x20}
	rep := Check(h, Options{})
	if len(rep.Anomalies) != 0 {
		t.Fatalf("%s", rep)
	}
}

// A store still catching up at the deadline is not-converged, not lossy:
// a change after its final position that it does not show yet is late,
// whether it is an older version, a missing insert, or a delete not yet
// applied, and even when the store already shows documents past its
// position (zombie-pause/pipeline/3 reported 150 of them as lost).
func TestLateChangesAreNotConvergedNotLost(t *testing.T) {
	rep := Check(mustParseFile(t, "late-not-lost-bad.txt"), Options{})
	if rep.Counts[Lost] != 0 || rep.Counts[NotConverged] != 1 || len(rep.Anomalies) != 1 {
		t.Fatalf("want one not-converged and nothing lost:\n%s", rep)
	}
	if d := rep.Anomalies[0].Witness.Detail; !strings.Contains(d, "4 key(s) not caught up (late, not lost)") {
		t.Fatalf("the witness must count the late keys: %s", d)
	}
}

// A change at or before the store's position that it does not reflect was
// passed, not awaited: lost, next to the store's not-converged.
func TestChangePassedByThePositionIsLost(t *testing.T) {
	rep := Check(mustParseFile(t, "lost-behind-position-bad.txt"), Options{})
	lost := rep.Anomalies[0]
	if rep.Counts[Lost] != 1 || lost.Class != Lost || lost.Key != (model.Key{Table: "k", PK: "1"}) || rep.Counts[NotConverged] != 1 {
		t.Fatalf("want k/1 lost and the cache not-converged:\n%s", rep)
	}
}

// Without a position a store cannot say what it has passed: everything it
// misses is lost, as before.
func TestUnpositionedStoreBehindIsLost(t *testing.T) {
	rep := Check(mustParse(t, `
store cache cache claims=all
txn 1 0/10 insert k/1 "v=1"
txn 2 0/20 update k/1 "v=2"
deadline 10s
final cache at=10s prefix=0/10
`), Options{})
	if rep.Counts[Lost] != 1 || rep.Counts[NotConverged] != 0 {
		t.Fatalf("%s", rep)
	}
}

// A search document the store has not caught up on is late, but if it
// counts fewer revs than its own version made, it skipped a change before
// that version: lost, whatever the position.
func TestLateSearchDocWithMissingRevsIsLost(t *testing.T) {
	rep := Check(mustParse(t, `
store search search claims=all
txn 1 0/10 insert docs/1 "title=a"
txn 2 0/20 update docs/1 "title=b"
txn 3 0/30 update docs/1 "title=c"
deadline 10s
final search at=10s pos=0/20 prefix=0/20
  docs/1 lsn=0/20 "b" revs=1
`), Options{})
	if rep.Counts[Lost] != 1 || rep.Counts[NotConverged] != 1 {
		t.Fatalf("want one lost (revs) and not-converged:\n%s", rep)
	}
	if d := rep.Anomalies[0].Witness.Detail; !strings.Contains(d, "has revs=1 want revs=2") {
		t.Fatalf("lost witness: %s", d)
	}
}

// A store recorded as converged in time whose final snapshot is behind the
// source did not stay converged: not-converged, and its late keys are not
// lost.
func TestFinalBehindTheSourceIsNotConverged(t *testing.T) {
	rep := Check(mustParse(t, `
store replica replica claims=all
txn 1 0/10 insert k/1 "v=1"
txn 2 0/20 update k/1 "v=2"
deadline 10s
converged replica 5s
final replica at=9s pos=0/10 prefix=0/10
`), Options{})
	if rep.Counts[NotConverged] != 1 || rep.Counts[Lost] != 0 || len(rep.Anomalies) != 1 {
		t.Fatalf("%s", rep)
	}
	if d := rep.Anomalies[0].Witness.Detail; !strings.Contains(d, "recorded converged at 5s, but its final position lsn=0/10 at 9s is behind source lsn=0/20") {
		t.Fatalf("witness: %s", d)
	}
}

// The final snapshot is an observation too: a store it shows at the
// source's final position, taken by the deadline, had converged even if
// the history did not record when (steady/pipeline/2 with one
// transaction was reported "never reached source lsn=0/2D0 ... (final
// position lsn=0/2D0)"). Taken after the deadline, it proves nothing in
// time, and the witness says so rather than "never reached".
func TestFinalSnapshotAtTheSourceByTheDeadlineIsConverged(t *testing.T) {
	const hist = `
store replica replica claims=all
txn 1 0/10 insert k/1 "v=1"
deadline 10s
final replica at=%s pos=0/10 truth
`
	if rep := Check(mustParse(t, fmt.Sprintf(hist, "10s")), Options{}); len(rep.Anomalies) != 0 || rep.Verdict != Pass {
		t.Fatalf("%s", rep)
	}
	rep := Check(mustParse(t, fmt.Sprintf(hist, "11s")), Options{})
	if rep.Counts[NotConverged] != 1 || len(rep.Anomalies) != 1 {
		t.Fatalf("%s", rep)
	}
	if d := rep.Anomalies[0].Witness.Detail; d != "not seen at source lsn=0/10 by the deadline 10s, only in its final snapshot at 11s" {
		t.Fatalf("witness: %s", d)
	}
}

func TestAbbrevKeepsWitnessesReadable(t *testing.T) {
	if got := Abbrev("bio=short"); got != "bio=short" {
		t.Fatalf("Abbrev shortened a short value: %q", got)
	}
	long := "avatar=" + strings.Repeat("x", 3000) + ";bio=india juliet;rev=292"
	got := Abbrev(long)
	if len(got) > 120 || !strings.HasPrefix(got, "avatar=xxx") || !strings.HasSuffix(got, "bio=india juliet;rev=292") || !strings.Contains(got, "bytes)") {
		t.Fatalf("Abbrev(%d bytes) = %q: want the start, the end and the count left out", len(long), got)
	}
}

// Snapshots of a store where nothing changed share one document map: each
// is still an observation (the checker looks through a shared map once
// only when it showed nothing).
func TestSharedSnapshotDocsAreEachObserved(t *testing.T) {
	h := mustParse(t, `
store cache cache claims=no-phantom
store replica replica
txn 1 0/10 insert k/1 "v=1"
aborted 2 0/18 update k/1 "v=bad"
snapshot cache at=3s
  k/1 lsn=0/18 "v=bad"
snapshot cache at=8s
  k/1 lsn=0/18 "v=bad"
snapshot replica at=4s
  k/1 lsn=0/10 "v=1"
snapshot replica at=5s
  k/1 lsn=0/10 "v=1"
snapshot replica at=6s
  k/1 lsn=0/10 "v=bad"
snapshot replica at=7s
  k/1 lsn=0/10 "v=bad"
`)
	h.Snapshots[1].Docs = h.Snapshots[0].Docs
	h.Snapshots[3].Docs = h.Snapshots[2].Docs
	h.Snapshots[5].Docs = h.Snapshots[4].Docs
	rep := Check(h, Options{})
	var seen, torn int
	for _, a := range rep.Anomalies {
		switch {
		case a.Class == Phantom && a.Store == "cache":
			seen = a.Witness.Seen
		case a.Class == Torn:
			torn++
		}
	}
	if seen != 2 {
		t.Fatalf("cache phantom seen %d times, want 2 (both snapshots): %v", seen, classesOf(rep))
	}
	if torn != 2 {
		t.Fatalf("%d torn replica snapshots, want the 2 that show v=bad: %v", torn, classesOf(rep))
	}
}
