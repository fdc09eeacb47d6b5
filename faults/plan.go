package faults

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"lockstep/model"
)

// Plan is a run's faults: Faults in time order (ties keep their order), all
// before Quiet. At Quiet the world undoes whatever is still in force (see
// Injector.HealAll) and a quiet phase lets the system converge.
type Plan struct {
	Faults []Fault
	Quiet  time.Duration
	// Swarm is the mix of kinds the generator's seed enabled, in the order
	// of Kinds; nil for a hand-written plan. It is informational: the
	// faults say what happens.
	Swarm []Kind
}

// String prints the plan as text that Parse reads back to an equal plan:
// an optional "swarm k1,k2" line, one line per fault, then "quiet @<time>".
func (p Plan) String() string {
	var b strings.Builder
	if len(p.Swarm) > 0 {
		b.WriteString("swarm ")
		for i, k := range p.Swarm {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(string(k))
		}
		b.WriteByte('\n')
	}
	for _, f := range p.Faults {
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	b.WriteString("quiet @")
	b.WriteString(p.Quiet.String())
	b.WriteByte('\n')
	return b.String()
}

// Mix names the plan's fault mix for a report: the swarm kinds the seed
// enabled, comma-separated, or for a plan without Swarm the kinds of the
// faults it starts (restart, resume and heal only end others); "none" when
// there are none.
func (p Plan) Mix() string {
	kinds := p.Swarm
	if len(kinds) == 0 {
		present := map[Kind]bool{}
		for _, f := range p.Faults {
			present[f.Kind] = true
		}
		for _, k := range Kinds {
			if present[k] && !k.undo() {
				kinds = append(kinds, k)
			}
		}
	}
	if len(kinds) == 0 {
		return "none"
	}
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

// Validate checks every fault, that faults are in time order and before
// Quiet, and that Swarm names distinct kinds that start faults. It does not
// check that crashes are paired with restarts and so on: see Check.
func (p Plan) Validate() error {
	if p.Quiet < 0 {
		return fmt.Errorf("negative quiet time %s", p.Quiet)
	}
	if err := checkSwarm(p.Swarm); err != nil {
		return err
	}
	for i, f := range p.Faults {
		if err := f.Validate(); err != nil {
			return fmt.Errorf("fault %d (%s): %w", i, f, err)
		}
		if err := checkOrder(p.Faults, i, p.Quiet); err != nil {
			return fmt.Errorf("fault %d (%s): %w", i, f, err)
		}
	}
	return nil
}

func checkOrder(fs []Fault, i int, quiet time.Duration) error {
	if i > 0 && fs[i].At < fs[i-1].At {
		return fmt.Errorf("@%s comes before the previous fault's @%s: faults must be in time order", fs[i].At, fs[i-1].At)
	}
	if fs[i].At >= quiet {
		return fmt.Errorf("@%s is not before quiet @%s: faults happen before the quiet phase", fs[i].At, quiet)
	}
	return nil
}

func checkSwarm(ks []Kind) error {
	seen := map[Kind]bool{}
	for _, k := range ks {
		switch {
		case !k.Known():
			return fmt.Errorf("swarm: unknown fault kind %q: expected one of %s", string(k), kindList(DefaultKinds, UncleanElection))
		case k.undo():
			return fmt.Errorf("swarm: %s only ends other faults: expected one of %s", k, kindList(DefaultKinds, UncleanElection))
		case seen[k]:
			return fmt.Errorf("swarm: %s listed twice", k)
		}
		seen[k] = true
	}
	return nil
}

func kindList(ks []Kind, more ...Kind) string {
	s := make([]string, 0, len(ks)+len(more))
	for _, k := range append(append([]Kind(nil), ks...), more...) {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// ParseError is a plan text error at a line (counted from 1).
type ParseError struct {
	Line int
	Err  error
}

func (e *ParseError) Error() string { return fmt.Sprintf("plan line %d: %v", e.Line, e.Err) }
func (e *ParseError) Unwrap() error { return e.Err }

// usage is each kind's line form, for error messages.
var usage = map[Kind]string{
	Crash:           "@<time> crash <node>",
	Restart:         "@<time> restart <node>",
	Pause:           "@<time> pause <node>",
	Resume:          "@<time> resume <node>",
	Partition:       "@<time> partition <a,b> | <c,d>  or, one-way, @<time> partition <a,b> -> <c,d>",
	Heal:            "@<time> heal",
	Delay:           "@<time> delay <from>-><to> <min>..<max>",
	Loss:            "@<time> loss <from>-><to> <p>",
	ClockJump:       "@<time> clock-jump <node> <+/-duration>",
	LeaderFailover:  "@<time> leader-failover",
	UncleanElection: "@<time> unclean-election",
	LostAck:         "@<time> lost-ack <node> <p>",
	LostAppend:      "@<time> lost-append <node> <p>",
	SecondInstance:  "@<time> second-instance <node>",
	Retention:       "@<time> retention <age to keep>",
	SlotDrop:        "@<time> slot-drop <node>",
}

// Parse reads a plan's text as String prints it. Blank lines and '#'
// comments (whole-line or trailing) are ignored; faults must be in time order
// and before the closing "quiet @<time>" line, which is required and last.
// Errors are *ParseError, naming the line and what was expected there.
func Parse(text string) (Plan, error) {
	var p Plan
	quietLine, swarmLine := 0, 0
	for i, raw := range strings.Split(text, "\n") {
		n := i + 1
		fail := func(format string, args ...any) (Plan, error) {
			return Plan{}, &ParseError{Line: n, Err: fmt.Errorf(format, args...)}
		}
		line := raw
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if quietLine != 0 {
			return fail("%q after the quiet line (line %d): the quiet line ends the plan", strings.TrimSpace(line), quietLine)
		}
		switch {
		case fields[0] == "quiet":
			if len(fields) != 2 || !strings.HasPrefix(fields[1], "@") {
				return fail("expected 'quiet @<time>', as in 'quiet @20s'")
			}
			d, err := parseDur(fields[1][1:], "quiet time")
			if err != nil {
				return fail("%v", err)
			}
			p.Quiet = d
			quietLine = n
			if len(p.Faults) > 0 {
				if last := p.Faults[len(p.Faults)-1]; last.At >= p.Quiet {
					return fail("quiet @%s is not after the last fault's @%s: faults happen before the quiet phase", p.Quiet, last.At)
				}
			}
		case fields[0] == "swarm":
			if swarmLine != 0 {
				return fail("second swarm line (first on line %d): expected one 'swarm <kind>,<kind>...'", swarmLine)
			}
			if len(p.Faults) > 0 {
				return fail("swarm line after the faults: expected it before the first fault")
			}
			if len(fields) != 2 {
				return fail("expected 'swarm <kind>,<kind>...' with no spaces, as in 'swarm crash,delay'")
			}
			for _, k := range strings.Split(fields[1], ",") {
				p.Swarm = append(p.Swarm, Kind(k))
			}
			if err := checkSwarm(p.Swarm); err != nil {
				return fail("%v", err)
			}
			swarmLine = n
		case strings.HasPrefix(fields[0], "@"):
			f, err := parseFault(fields)
			if err == nil {
				err = f.Validate()
			}
			if err != nil {
				return fail("%v", err)
			}
			if len(p.Faults) > 0 {
				if prev := p.Faults[len(p.Faults)-1]; f.At < prev.At {
					return fail("@%s comes before the previous fault's @%s: list faults in time order", f.At, prev.At)
				}
			}
			p.Faults = append(p.Faults, f)
		default:
			return fail("unexpected %q: expected '@<time> <kind> ...', 'swarm <kinds>' or 'quiet @<time>'", fields[0])
		}
	}
	if quietLine == 0 {
		return Plan{}, errors.New("plan has no 'quiet @<time>' line: expected one after the last fault")
	}
	return p, nil
}

func parseDur(s, what string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("missing %s: expected a duration such as 1.5s or 200ms", what)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("malformed %s %q: expected a duration such as 1.5s or 200ms", what, s)
	}
	return d, nil
}

// parseFault reads "@<time> <kind> args..." split into fields.
func parseFault(fields []string) (Fault, error) {
	var f Fault
	at, err := parseDur(fields[0][1:], "time")
	if err != nil {
		return f, err
	}
	if at < 0 {
		return f, fmt.Errorf("negative time @%s: expected a time since the run started", at)
	}
	f.At = at
	if len(fields) < 2 {
		return f, fmt.Errorf("missing fault kind after @%s: expected one of %s", at, kindList(Kinds))
	}
	f.Kind = Kind(fields[1])
	if !f.Kind.Known() {
		return f, fmt.Errorf("unknown fault kind %q: expected one of %s", fields[1], kindList(Kinds))
	}
	args := fields[2:]
	want := func(problem string) error {
		return fmt.Errorf("%s %s: expected '%s'", f.Kind, problem, usage[f.Kind])
	}
	switch f.Kind {
	case Crash, Restart, Pause, Resume, SecondInstance, SlotDrop:
		if len(args) != 1 {
			return f, want(argProblem(len(args), "a node"))
		}
		f.Node = args[0]
	case Retention:
		if len(args) != 1 {
			return f, want(argProblem(len(args), "an age to keep"))
		}
		if f.Keep, err = parseDur(args[0], "retention age"); err != nil {
			return f, err
		}
	case Heal, LeaderFailover, UncleanElection:
		if len(args) != 0 {
			return f, want("takes no arguments")
		}
	case Partition:
		rest := strings.Join(args, " ")
		sym, symOK := cutGroups(rest, "|")
		one, oneOK := cutGroups(rest, "->")
		switch {
		case symOK && oneOK:
			return f, want("mixes '|' and '->'")
		case symOK:
			f.A, f.B = sym[0], sym[1]
		case oneOK:
			f.A, f.B, f.OneWay = one[0], one[1], true
		default:
			return f, want("needs two groups")
		}
	case Delay:
		if len(args) != 2 {
			return f, want(argProblem(len(args), "a link and a latency range"))
		}
		if f.From, f.To, err = parseLink(args[0]); err != nil {
			return f, want(err.Error())
		}
		lo, hi, ok := strings.Cut(args[1], "..")
		if !ok {
			hi = lo
		}
		if f.Min, err = parseDur(lo, "minimum latency"); err != nil {
			return f, err
		}
		if f.Max, err = parseDur(hi, "maximum latency"); err != nil {
			return f, err
		}
	case Loss:
		if len(args) != 2 {
			return f, want(argProblem(len(args), "a link and a probability"))
		}
		if f.From, f.To, err = parseLink(args[0]); err != nil {
			return f, want(err.Error())
		}
		if f.P, err = parseProb(f.Kind, args[1]); err != nil {
			return f, err
		}
	case LostAck, LostAppend:
		if len(args) != 2 {
			return f, want(argProblem(len(args), "a node and a probability"))
		}
		f.Node = args[0]
		if f.P, err = parseProb(f.Kind, args[1]); err != nil {
			return f, err
		}
	case ClockJump:
		if len(args) != 2 {
			return f, want(argProblem(len(args), "a node and a jump"))
		}
		f.Node = args[0]
		if f.Jump, err = parseDur(args[1], "clock jump"); err != nil {
			return f, err
		}
	}
	return f, nil
}

func parseProb(k Kind, s string) (float64, error) {
	p, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed %s probability %q: expected a number p with 0 < p <= 1, such as 0.3", k, s)
	}
	return p, nil
}

func argProblem(got int, need string) string {
	if got == 0 {
		return "needs " + need
	}
	return fmt.Sprintf("needs %s, got %d arguments", need, got)
}

// cutGroups splits "a,b | c" at sep into two comma-separated groups.
func cutGroups(s, sep string) ([2][]string, bool) {
	l, r, ok := strings.Cut(s, sep)
	if !ok {
		return [2][]string{}, false
	}
	return [2][]string{splitGroup(l), splitGroup(r)}, true
}

func splitGroup(s string) []string {
	if s = strings.TrimSpace(s); s == "" {
		return nil
	}
	g := strings.Split(s, ",")
	for i := range g {
		g[i] = strings.TrimSpace(g[i])
	}
	return g
}

func parseLink(s string) (from, to string, err error) {
	from, to, ok := strings.Cut(s, "->")
	if !ok {
		return "", "", fmt.Errorf("link %q lacks '->'", s)
	}
	return from, to, nil
}

// Windows says when each fault was in force, in plan order, for the
// checker's witnesses:
//
//   - crash and pause: from the fault to the node's next restart or resume,
//     or to Quiet when the plan leaves that to the quiet phase;
//   - partition, delay, loss, lost-ack and lost-append: to the next heal,
//     or to Quiet;
//   - unclean-election: to Quiet, when the world turns it off;
//   - second-instance: to Quiet (the second instance runs on after it);
//   - clock-jump and leader-failover: a point (End == Start);
//   - restart, resume and heal end other windows and have none of their own.
//
// What is the fault's text without its time, e.g. "crash capture". End is
// always explicit (never model.FaultWindow's "0: until quiet"), except that a
// point fault at @0s reads as open until quiet there.
func (p Plan) Windows() []model.FaultWindow {
	var ws []model.FaultWindow
	for i, f := range p.Faults {
		end := p.Quiet
		switch f.Kind {
		case Restart, Resume, Heal:
			continue
		case ClockJump, LeaderFailover, Retention, SlotDrop:
			end = f.At
		case Crash, Pause:
			closer := Restart
			if f.Kind == Pause {
				closer = Resume
			}
			for _, g := range p.Faults[i+1:] {
				if g.Kind == closer && g.Node == f.Node {
					end = g.At
					break
				}
			}
		case SecondInstance:
			// Runs to the end of the run: in force until Quiet here.
		case Partition, Delay, Loss, LostAck, LostAppend:
			for _, g := range p.Faults[i+1:] {
				if g.Kind == Heal {
					end = g.At
					break
				}
			}
		}
		ws = append(ws, model.FaultWindow{Start: f.At, End: end, What: f.What()})
	}
	return ws
}
