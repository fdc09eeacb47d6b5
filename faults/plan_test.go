package faults

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"lockstep/model"
)

const example = `# the plan from the design notes
swarm crash,partition,delay,loss,clock-jump,leader-failover,unclean-election,lost-ack,lost-append,second-instance

@1.5s crash capture
@3s restart capture
@4s partition capture,db | broker1,broker2
@4.2s partition app1 -> db          # one-way
@5s delay applier-cache->cache 20ms..80ms
@5s loss capture->broker1 0.3
@6s clock-jump applier-search +2s
@7s leader-failover
@7s unclean-election
@7.5s lost-ack capture 0.9      # the append takes effect, its answer is lost
@7.5s lost-append capture 1     # the append request is lost
@8s heal
@9s second-instance applier-search   # a replacement beside the first
quiet @20s
`

func TestParseExample(t *testing.T) {
	p, err := Parse(example)
	if err != nil {
		t.Fatal(err)
	}
	want := Plan{
		Swarm: []Kind{Crash, Partition, Delay, Loss, ClockJump, LeaderFailover, UncleanElection, LostAck, LostAppend, SecondInstance},
		Faults: []Fault{
			{At: 1500 * time.Millisecond, Kind: Crash, Node: "capture"},
			{At: 3 * time.Second, Kind: Restart, Node: "capture"},
			{At: 4 * time.Second, Kind: Partition, A: []string{"capture", "db"}, B: []string{"broker1", "broker2"}},
			{At: 4200 * time.Millisecond, Kind: Partition, A: []string{"app1"}, B: []string{"db"}, OneWay: true},
			{At: 5 * time.Second, Kind: Delay, From: "applier-cache", To: "cache", Min: 20 * time.Millisecond, Max: 80 * time.Millisecond},
			{At: 5 * time.Second, Kind: Loss, From: "capture", To: "broker1", P: 0.3},
			{At: 6 * time.Second, Kind: ClockJump, Node: "applier-search", Jump: 2 * time.Second},
			{At: 7 * time.Second, Kind: LeaderFailover},
			{At: 7 * time.Second, Kind: UncleanElection},
			{At: 7500 * time.Millisecond, Kind: LostAck, Node: "capture", P: 0.9},
			{At: 7500 * time.Millisecond, Kind: LostAppend, Node: "capture", P: 1},
			{At: 8 * time.Second, Kind: Heal},
			{At: 9 * time.Second, Kind: SecondInstance, Node: "applier-search"},
		},
		Quiet: 20 * time.Second,
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("Parse:\n got %#v\nwant %#v", p, want)
	}
	wantText := `swarm crash,partition,delay,loss,clock-jump,leader-failover,unclean-election,lost-ack,lost-append,second-instance
@1.5s crash capture
@3s restart capture
@4s partition capture,db | broker1,broker2
@4.2s partition app1 -> db
@5s delay applier-cache->cache 20ms..80ms
@5s loss capture->broker1 0.3
@6s clock-jump applier-search +2s
@7s leader-failover
@7s unclean-election
@7.5s lost-ack capture 0.9
@7.5s lost-append capture 1
@8s heal
@9s second-instance applier-search
quiet @20s
`
	if got := p.String(); got != wantText {
		t.Fatalf("String:\n%s\nwant:\n%s", got, wantText)
	}
}

func TestParseLenient(t *testing.T) {
	// Spaces inside groups, a single-value delay, CRLF line ends, a
	// negative jump, no swarm line.
	p, err := Parse("@1s partition a , b|c\r\n@2s delay a->b 50ms\r\n@3s clock-jump a -1.5s\r\n\r\nquiet @1m\r\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "@1s partition a,b | c\n@2s delay a->b 50ms..50ms\n@3s clock-jump a -1.5s\nquiet @1m0s\n"
	if got := p.String(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		line       int // 0: an error about the whole plan
		want       string
	}{
		{"malformed time", "@1.5x crash capture\nquiet @2s", 1, `malformed time "1.5x": expected a duration`},
		{"missing time", "@ crash capture\nquiet @2s", 1, "missing time"},
		{"negative time", "@-1s crash capture\nquiet @2s", 1, "negative time"},
		{"unknown kind", "# c\n@1s crsh capture\nquiet @2s", 2, `unknown fault kind "crsh": expected one of crash, restart`},
		{"missing kind", "@1s\nquiet @2s", 1, "missing fault kind"},
		{"missing node", "\n\n@1s crash\nquiet @2s", 3, "crash needs a node: expected '@<time> crash <node>'"},
		{"two nodes", "@1s pause a b\nquiet @2s", 1, "pause needs a node, got 2 arguments"},
		{"bad node name", "@1s restart a/b\nquiet @2s", 1, `node name "a/b"`},
		{"probability above 1", "@1s loss a->b 1.5\nquiet @2s", 1, "loss probability 1.5: want 0 < p <= 1"},
		{"zero probability", "@1s loss a->b 0\nquiet @2s", 1, "want 0 < p <= 1"},
		{"malformed probability", "@1s loss a->b lots\nquiet @2s", 1, `malformed loss probability "lots"`},
		{"lost-ack without probability", "@1s lost-ack capture\nquiet @2s", 1, "lost-ack needs a node and a probability, got 1 arguments: expected '@<time> lost-ack <node> <p>'"},
		{"lost-append as a link", "@1s lost-append capture->broker1 0.5\nquiet @2s", 1, `node name "capture->broker1"`},
		{"lost-append probability", "@1s lost-append capture 2\nquiet @2s", 1, "lost-append probability 2: want 0 < p <= 1"},
		{"malformed lost-ack probability", "@1s lost-ack capture most\nquiet @2s", 1, `malformed lost-ack probability "most"`},
		{"link without arrow", "@1s delay a-b 1ms..2ms\nquiet @2s", 1, `link "a-b" lacks '->'`},
		{"self link", "@1s loss a->a 0.1\nquiet @2s", 1, "goes nowhere"},
		{"inverted delay", "@1s delay a->b 80ms..20ms\nquiet @2s", 1, "delay range 80ms..20ms"},
		{"malformed latency", "@1s delay a->b 20..80ms\nquiet @2s", 1, `malformed minimum latency "20"`},
		{"one group", "@1s partition a,b\nquiet @2s", 1, "partition needs two groups"},
		{"empty group", "@1s partition a |\nquiet @2s", 1, "two non-empty groups"},
		{"node in both groups", "@1s partition a,b | b\nquiet @2s", 1, "b is in both groups"},
		{"mixed separators", "@1s partition a | b -> c\nquiet @2s", 1, "mixes '|' and '->'"},
		{"heal with args", "@1s heal now\nquiet @2s", 1, "heal takes no arguments"},
		{"zero jump", "@1s clock-jump a 0s\nquiet @2s", 1, "non-zero jump"},
		{"out of order", "@2s crash a\n@1s restart a\nquiet @3s", 2, "@1s comes before the previous fault's @2s"},
		{"fault at quiet", "@2s crash a\nquiet @2s", 2, "quiet @2s is not after the last fault's @2s"},
		{"after quiet", "quiet @2s\n@3s crash a", 2, "after the quiet line (line 1)"},
		{"malformed quiet", "quiet 20s", 1, "expected 'quiet @<time>'"},
		{"junk", "@1s crash a\nbogus line\nquiet @2s", 2, `unexpected "bogus"`},
		{"unknown swarm kind", "swarm crash,boom\nquiet @2s", 1, `swarm: unknown fault kind "boom"`},
		{"undo kind in swarm", "swarm heal\nquiet @2s", 1, "heal only ends other faults"},
		{"late swarm", "@1s heal\nswarm crash\nquiet @2s", 2, "swarm line after the faults"},
		{"no quiet", "@1s crash a\n", 0, "no 'quiet @<time>' line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.text)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded", tc.text)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
			var pe *ParseError
			switch {
			case tc.line == 0 && errors.As(err, &pe):
				t.Errorf("error %q names line %d, want a whole-plan error", msg, pe.Line)
			case tc.line != 0 && (!errors.As(err, &pe) || pe.Line != tc.line):
				t.Errorf("error %q does not name line %d", msg, tc.line)
			case tc.line != 0 && !strings.HasPrefix(msg, "plan line "):
				t.Errorf("error %q does not start with the line", msg)
			}
		})
	}
}

func TestFaultValidate(t *testing.T) {
	for _, tc := range []struct {
		f    Fault
		want string
	}{
		{Fault{Kind: "boom"}, `unknown fault kind "boom"`},
		{Fault{Kind: Crash}, "crash needs a node"},
		{Fault{Kind: Heal, Node: "x"}, "heal takes no node"},
		{Fault{Kind: Crash, Node: "x", P: 0.5}, "crash takes no probability"},
		{Fault{Kind: LeaderFailover, OneWay: true}, "takes no partition groups"},
		{Fault{Kind: Loss, From: "a", To: "b", P: 0.1, Min: 1}, "loss takes no latency range"},
		{Fault{Kind: Delay, From: "a", To: "b"}, "delay range 0s..0s"},
		{Fault{Kind: Partition, A: []string{"a", "a"}, B: []string{"b"}}, "a listed twice in group A"},
		{Fault{Kind: Heal, Jump: time.Second}, "heal takes no clock jump"},
		{Fault{At: -1, Kind: Heal}, "negative time"},
		{Fault{Kind: LostAck, P: 0.5}, "lost-ack needs a node"},
		{Fault{Kind: LostAppend, Node: "capture"}, "lost-append probability 0: want 0 < p <= 1"},
		{Fault{Kind: LostAck, Node: "capture", P: 1, To: "broker1"}, "lost-ack takes no link"},
	} {
		err := tc.f.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%#v) = %v, want %q", tc.f, err, tc.want)
		}
	}
}

// names draws node names, tricky ones included ("n-", which ends in '-'
// just before a link's "->").
var names = rapid.OneOf(
	rapid.SampledFrom([]string{"db", "capture", "broker1", "applier-cache", "n-", "-", "a.b", "x_1"}),
	rapid.StringMatching(`[a-zA-Z0-9_.-]{1,8}`),
)

func drawFault(t *rapid.T, at time.Duration) Fault {
	f := Fault{At: at, Kind: rapid.SampledFrom(Kinds).Draw(t, "kind")}
	switch f.Kind {
	case Crash, Restart, Pause, Resume, SecondInstance:
		f.Node = names.Draw(t, "node")
	case Partition:
		ns := rapid.SliceOfNDistinct(names, 2, 6, rapid.ID[string]).Draw(t, "group nodes")
		k := rapid.IntRange(1, len(ns)-1).Draw(t, "split")
		f.A, f.B = ns[:k], ns[k:]
		f.OneWay = rapid.Bool().Draw(t, "one-way")
	case Delay, Loss:
		ns := rapid.SliceOfNDistinct(names, 2, 2, rapid.ID[string]).Draw(t, "link")
		f.From, f.To = ns[0], ns[1]
		if f.Kind == Delay {
			f.Min = time.Duration(rapid.Int64Range(0, 1e10).Draw(t, "min"))
			f.Max = f.Min + time.Duration(rapid.Int64Range(0, 1e10).Draw(t, "spread"))
			if f.Max == 0 {
				f.Max = 1
			}
		} else {
			f.P = rapid.Float64Range(1e-9, 1).Draw(t, "p")
		}
	case ClockJump:
		f.Node = names.Draw(t, "node")
		f.Jump = time.Duration(rapid.Int64Range(-1e11, 1e11).Filter(func(d int64) bool { return d != 0 }).Draw(t, "jump"))
	case LostAck, LostAppend:
		f.Node = names.Draw(t, "node")
		f.P = rapid.Float64Range(1e-9, 1).Draw(t, "p")
	case Retention:
		f.Keep = time.Duration(rapid.Int64Range(1, 1e11).Draw(t, "keep"))
	case SlotDrop:
		f.Node = names.Draw(t, "node")
	}
	return f
}

func drawPlan(t *rapid.T) Plan {
	var p Plan
	ats := rapid.SliceOfN(rapid.Int64Range(0, 1e12), 0, 20).Draw(t, "ats")
	slices.Sort(ats)
	for _, at := range ats {
		p.Faults = append(p.Faults, drawFault(t, time.Duration(at)))
	}
	p.Quiet = time.Duration(rapid.Int64Range(1, 1e11).Draw(t, "quiet after"))
	if len(ats) > 0 {
		p.Quiet += time.Duration(ats[len(ats)-1])
	}
	starters := slices.DeleteFunc(slices.Clone(Kinds), Kind.undo)
	if sw := rapid.SliceOfDistinct(rapid.SampledFrom(starters), rapid.ID[Kind]).Draw(t, "swarm"); len(sw) > 0 {
		p.Swarm = sw
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := drawPlan(t)
		if err := p.Validate(); err != nil {
			t.Fatalf("drew an invalid plan: %v\n%s", err, p)
		}
		text := p.String()
		q, err := Parse(text)
		if err != nil {
			t.Fatalf("Parse(String()) failed: %v\n%s", err, text)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the plan:\n%s\nbecame\n%s\n%#v\n%#v", text, q, p, q)
		}
	})
}

func TestWindows(t *testing.T) {
	p, err := Parse(`
@1s crash capture
@2s pause app1
@3s partition a | b
@3.5s clock-jump db +2s
@4s restart capture
@5s delay a->b 1ms..2ms
@6s heal
@7s loss a->b 0.5
@7s leader-failover
@8s unclean-election
@9s crash db
@10s crash capture
@11s restart capture
@12s lost-append capture 0.8
@13s heal
@14s lost-ack capture 1
quiet @20s`)
	if err != nil {
		t.Fatal(err)
	}
	s := time.Second
	want := []model.FaultWindow{
		{Start: 1 * s, End: 4 * s, What: "crash capture"},
		{Start: 2 * s, End: 20 * s, What: "pause app1"},
		{Start: 3 * s, End: 6 * s, What: "partition a | b"},
		{Start: 3500 * time.Millisecond, End: 3500 * time.Millisecond, What: "clock-jump db +2s"},
		{Start: 5 * s, End: 6 * s, What: "delay a->b 1ms..2ms"},
		{Start: 7 * s, End: 13 * s, What: "loss a->b 0.5"},
		{Start: 7 * s, End: 7 * s, What: "leader-failover"},
		{Start: 8 * s, End: 20 * s, What: "unclean-election"},
		{Start: 9 * s, End: 20 * s, What: "crash db"},
		{Start: 10 * s, End: 11 * s, What: "crash capture"},
		{Start: 12 * s, End: 13 * s, What: "lost-append capture 0.8"},
		{Start: 14 * s, End: 20 * s, What: "lost-ack capture 1"},
	}
	if got := p.Windows(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Windows:\n got %v\nwant %v", got, want)
	}
	h := model.History{Faults: p.Windows(), QuietAt: p.Quiet}
	if got := h.FaultAt(5500 * time.Millisecond); got != "delay a->b 1ms..2ms; partition a | b; pause app1" {
		t.Errorf("FaultAt(5.5s) = %q", got)
	}
}

func TestMix(t *testing.T) {
	p := Plan{Faults: []Fault{
		{At: 1, Kind: Pause, Node: "a"}, {At: 2, Kind: Crash, Node: "b"}, {At: 3, Kind: Restart, Node: "b"},
	}, Quiet: 10}
	if got := p.Mix(); got != "crash,pause" {
		t.Errorf("Mix of a hand-written plan = %q, want the kinds it starts", got)
	}
	p.Swarm = []Kind{Crash, Pause, Loss}
	if got := p.Mix(); got != "crash,pause,loss" {
		t.Errorf("Mix with a swarm = %q", got)
	}
	if got := (Plan{Quiet: 1}).Mix(); got != "none" {
		t.Errorf("Mix of an empty plan = %q", got)
	}
}

// A hand-written plan naming a node the world lacks (or its observer) is
// refused with the fault and the nodes there are; every node of the
// design notes' plan is known.
func TestCheckNodes(t *testing.T) {
	p, err := Parse(example)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckNodes(pipelineTopo); err != nil {
		t.Fatalf("the example plan on its own topology: %v", err)
	}
	cases := map[string]string{
		"@1s crash capturer\n@2s restart capturer\nquiet @5s": "fault 0 (@1s crash capturer): unknown node capturer (want one of: db, capture, broker1,",
		"@1s partition db | observer\n@2s heal\nquiet @5s":    "fault 0 (@1s partition db | observer): observer is an observer",
		"@1s delay capture->brokerX 1ms..2ms\nquiet @5s":      "unknown node brokerX",
	}
	for text, want := range cases {
		p, err := Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.CheckNodes(pipelineTopo); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want an error containing %q", text, err, want)
		}
	}
}

// The log and source maintenance faults read back as printed, and refuse
// what they do not take.
func TestRetentionAndSlotDropText(t *testing.T) {
	text := "@2s retention 1.5s\n@3s slot-drop db\nquiet @20s\n"
	p, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []Fault{{At: 2 * time.Second, Kind: Retention, Keep: 1500 * time.Millisecond}, {At: 3 * time.Second, Kind: SlotDrop, Node: "db"}}
	if !reflect.DeepEqual(p.Faults, want) {
		t.Fatalf("parsed %+v, want %+v", p.Faults, want)
	}
	if got := p.String(); got != text {
		t.Fatalf("printed %q, want %q", got, text)
	}
	for _, bad := range []string{"@1s retention", "@1s retention 0s", "@1s retention -1s", "@1s retention db 1s", "@1s slot-drop", "@1s slot-drop a b"} {
		if _, err := Parse(bad + "\nquiet @20s\n"); err == nil {
			t.Errorf("Parse(%q) accepted it", bad)
		}
	}
	if err := (Fault{Kind: Crash, Node: "x", Keep: time.Second}).Validate(); err == nil {
		t.Error("a crash with a retention age passed Validate")
	}
	topo := Topology{Nodes: []Node{{"db", RoleDB}, {"capture", RoleCapture}, {"broker1", RoleBroker}}}
	cfg := GenConfig{Kinds: []Kind{Retention, SlotDrop}}
	if err := p.Check(topo, cfg); err != nil {
		t.Fatalf("Check: %v", err)
	}
	wrong := Plan{Quiet: 20 * time.Second, Faults: []Fault{{At: time.Second, Kind: SlotDrop, Node: "capture"}}}
	if err := wrong.Check(topo, cfg); err == nil || !strings.Contains(err.Error(), "not a source database") {
		t.Fatalf("slot-drop of the capture: Check says %v", err)
	}
}
