package scenarios

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"lockstep/checker"
	"lockstep/faults"
)

// ReproFile is a simulated run that a token alone cannot name: one driven by
// an explicit fault plan instead of the plan its seed draws, such as a run the
// shrinker minimised. Its text, which `lockstep repro FILE` reads, is
//
//	# comments and blank lines are ignored
//	token crash-capture+confirm-before-ack/pipeline/9,txns=20,clients=1,keys=4
//	hash 1f2e3d4c5b6a7988
//	anomaly not-converged replica
//	plan
//	@1.5s crash capture
//	quiet @20s
//
// token is everything else that shapes the run (simulator only); hash, when
// present, is the trace hash the run gave, which a replay must give again;
// anomaly, when present, is the class and store the shrinker kept failing.
// Everything after the "plan" line is the plan in faults.Parse's text.
type ReproFile struct {
	Repro Repro
	Plan  faults.Plan
	Hash  uint64        // 0: not recorded
	Class checker.Class // "": not recorded
	Store string
	_     struct{}
}

// Options are the simulator options the file sets: its token's, with the
// explicit plan.
func (f ReproFile) Options() Options {
	o := f.Repro.Options()
	p := f.Plan
	o.Plan = &p
	return o
}

// String is the file's text; ParseReproFile reads it back to an equal value.
func (f ReproFile) String() string {
	var b strings.Builder
	b.WriteString("# lockstep repro file: `lockstep repro THIS_FILE` replays the run; its trace hash must be the one below\n")
	fmt.Fprintf(&b, "token %s\n", f.Repro)
	if f.Hash != 0 {
		fmt.Fprintf(&b, "hash %016x\n", f.Hash)
	}
	if f.Class != "" {
		fmt.Fprintf(&b, "anomaly %s %s\n", f.Class, f.Store)
	}
	b.WriteString("plan\n")
	b.WriteString(f.Plan.String())
	return b.String()
}

// LooksLikeReproFile says whether text is meant as a repro file: its first
// line that is not blank or a comment starts with "token".
func LooksLikeReproFile(text string) bool {
	for _, line := range strings.Split(text, "\n") {
		fields := strings.Fields(stripComment(line))
		if len(fields) > 0 {
			return fields[0] == "token"
		}
	}
	return false
}

func stripComment(line string) string {
	if i := strings.IndexByte(line, '#'); i >= 0 {
		return line[:i]
	}
	return line
}

// ParseReproFile reads a repro file's text. Errors name the line.
func ParseReproFile(text string) (ReproFile, error) {
	var f ReproFile
	lines := strings.Split(text, "\n")
	seen := map[string]int{}
	for i, raw := range lines {
		n := i + 1
		fail := func(format string, args ...any) (ReproFile, error) {
			return ReproFile{}, fmt.Errorf("repro file line %d: %s", n, fmt.Sprintf(format, args...))
		}
		fields := strings.Fields(stripComment(raw))
		if len(fields) == 0 {
			continue
		}
		key := fields[0]
		if prev, dup := seen[key]; dup {
			return fail("second %s line (first on line %d)", key, prev)
		}
		seen[key] = n
		switch key {
		case "token":
			if len(fields) != 2 {
				return fail("expected 'token SCENARIO/SYSTEM/SEED[,KEY=VALUE...]'")
			}
			r, err := ParseRepro(fields[1])
			if err != nil {
				return fail("%v", err)
			}
			if r.World != "" || r.Plan != "" {
				return fail("a repro file holds simulated runs only: its plan follows the 'plan' line")
			}
			f.Repro = r
		case "hash":
			h, err := strconv.ParseUint(strings.Join(fields[1:], ""), 16, 64)
			if len(fields) != 2 || err != nil || h == 0 {
				return fail("expected 'hash HEX', the 16 hex digits of a trace hash")
			}
			f.Hash = h
		case "anomaly":
			if len(fields) != 3 || !knownClass(checker.Class(fields[1])) {
				return fail("expected 'anomaly CLASS STORE' with CLASS one of %s", classList())
			}
			f.Class, f.Store = checker.Class(fields[1]), fields[2]
		case "plan":
			if len(fields) != 1 {
				return fail("expected 'plan' alone, then the plan's lines")
			}
			if seen["token"] == 0 {
				return fail("plan before the token line")
			}
			p, err := faults.Parse(strings.Join(lines[n:], "\n"))
			if err != nil {
				var pe *faults.ParseError
				if errors.As(err, &pe) {
					return ReproFile{}, fmt.Errorf("repro file line %d: %v", n+pe.Line, pe.Err)
				}
				return ReproFile{}, fmt.Errorf("repro file: %w", err)
			}
			f.Plan = p
			return f, nil
		default:
			return fail("unexpected %q: expected token, hash, anomaly or plan", key)
		}
	}
	if seen["token"] == 0 {
		return ReproFile{}, errors.New("repro file: no 'token' line")
	}
	return ReproFile{}, errors.New("repro file: no 'plan' line: expected one, then the plan's lines ending in 'quiet @<time>'")
}

func knownClass(c checker.Class) bool {
	for _, x := range checker.Classes {
		if x == c {
			return true
		}
	}
	return false
}

func classList() string {
	s := make([]string, len(checker.Classes))
	for i, c := range checker.Classes {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}
