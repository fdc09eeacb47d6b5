package scenarios

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"lockstep/scenarios/workload"
)

// Repro is everything that shapes a run: the same Repro gives the same run
// (in the simulator, the same trace hash). Its String is the repro token
// that runs and campaigns print and `lockstep repro` reads:
//
//	SCENARIO[+BUG...]/SYSTEM/SEED[,KEY=VALUE...]
//
// for example steady/pipeline/1,txns=50 or
// partitions/pipeline/3,world=containers,plan=/tmp/p.txt,plansum=1f2e3d4c5b6a7988.
// Bug switches ride in the scenario name; a parameter is written only when it
// differs from the default, always in the order of the fields below. Commas
// rather than URL-style ?key=val&... so that the token needs no quoting in a
// shell.
type Repro struct {
	Scenario string // with its bug switches: "steady+skip-snapshot"
	System   System
	Seed     uint64

	// World is "" for the simulator or "containers".
	World   string
	Txns    int           // application transactions; 0 is the world's default
	Clients int           // application clients; 0 is the world's default
	Quiet   time.Duration // fault phase; 0 is the world's default
	Settle  time.Duration // time the stores get to converge; 0 is the world's default
	// Bench (containers) measures throughput and lag, without faults unless
	// Plan is set.
	Bench bool
	// Plan (containers) is the absolute path of a fault plan file run
	// instead of the seed's own plan, and PlanSum the first 8 bytes of its
	// SHA-256 in hex, so that a replay refuses a file changed since the run.
	Plan    string
	PlanSum string
	// Keys sizes the workload's key space; 0 is the workload's own.
	Keys int
	// ObserverDelay holds the observer's first sample back (the
	// simulator's Options.ObserverDelay); 0 is none.
	ObserverDelay time.Duration
	_             struct{}
}

// WorldContainers is Repro.World for a run against real services.
const WorldContainers = "containers"

// String is the repro token.
func (r Repro) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s/%d", r.Scenario, r.System, r.Seed)
	param := func(k, v string) { b.WriteString("," + k + "=" + v) }
	if r.World != "" {
		param("world", r.World)
	}
	if r.Txns != 0 {
		param("txns", strconv.Itoa(r.Txns))
	}
	if r.Clients != 0 {
		param("clients", strconv.Itoa(r.Clients))
	}
	if r.Quiet != 0 {
		param("quiet", r.Quiet.String())
	}
	if r.Settle != 0 {
		param("settle", r.Settle.String())
	}
	if r.Bench {
		param("bench", "true")
	}
	if r.Plan != "" {
		param("plan", escapePath(r.Plan))
	}
	if r.PlanSum != "" {
		param("plansum", r.PlanSum)
	}
	if r.Keys != 0 {
		param("keys", strconv.Itoa(r.Keys))
	}
	if r.ObserverDelay != 0 {
		param("observe", r.ObserverDelay.String())
	}
	return b.String()
}

// Options are the simulator options the token sets (the rest default).
func (r Repro) Options() Options {
	return Options{Txns: r.Txns, Clients: r.Clients, Quiet: r.Quiet, Settle: r.Settle, Keys: r.Keys, ObserverDelay: r.ObserverDelay}
}

// ParseRepro reads a repro token, with or without the "lockstep repro "
// in front of it. It checks the token's form only: whether the scenario
// exists is the runner's to say.
func ParseRepro(token string) (Repro, error) {
	s := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(token), "lockstep repro "))
	r, err := parseRepro(s)
	if err != nil {
		return Repro{}, fmt.Errorf("malformed repro token %q: %w", token, err)
	}
	return r, nil
}

func parseRepro(s string) (Repro, error) {
	head, params, _ := strings.Cut(s, ",")
	parts := strings.Split(head, "/")
	if len(parts) != 3 || parts[0] == "" {
		return Repro{}, errors.New("want SCENARIO/SYSTEM/SEED[,KEY=VALUE...]")
	}
	sys, err := ParseSystem(parts[1])
	if err != nil {
		return Repro{}, err
	}
	seed, err := strconv.ParseUint(parts[2], 0, 64)
	if err != nil {
		return Repro{}, fmt.Errorf("seed %q: want a decimal or 0x-hex number", parts[2])
	}
	r := Repro{Scenario: parts[0], System: sys, Seed: seed}
	if params == "" {
		return r, nil
	}
	seen := map[string]bool{}
	for _, p := range strings.Split(params, ",") {
		k, v, ok := strings.Cut(p, "=")
		if !ok || v == "" {
			return Repro{}, fmt.Errorf("parameter %q: want KEY=VALUE", p)
		}
		if seen[k] {
			return Repro{}, fmt.Errorf("parameter %s given twice", k)
		}
		seen[k] = true
		if err := r.set(k, v); err != nil {
			return Repro{}, fmt.Errorf("%s=%s: %w", k, v, err)
		}
	}
	switch {
	case r.World != WorldContainers && r.Bench:
		return Repro{}, errors.New("bench needs world=containers")
	case r.World != WorldContainers && r.Plan != "":
		return Repro{}, errors.New("plan needs world=containers")
	case r.PlanSum != "" && r.Plan == "":
		return Repro{}, errors.New("plansum without plan")
	case r.World == WorldContainers && r.Keys != 0:
		return Repro{}, errors.New("keys needs the simulator (world=sim)")
	case r.World == WorldContainers && r.ObserverDelay != 0:
		return Repro{}, errors.New("observe needs the simulator (world=sim)")
	}
	return r, nil
}

func (r *Repro) set(k, v string) error {
	var err error
	switch k {
	case "world":
		switch v {
		case "sim":
			r.World = ""
		case WorldContainers:
			r.World = v
		default:
			return errors.New("want sim or containers")
		}
	case "txns":
		r.Txns, err = positiveInt(v)
	case "clients":
		r.Clients, err = positiveInt(v)
	case "quiet":
		r.Quiet, err = positiveDuration(v)
	case "settle":
		r.Settle, err = positiveDuration(v)
	case "bench":
		r.Bench, err = strconv.ParseBool(v)
	case "plan":
		r.Plan, err = unescapePath(v)
	case "keys":
		r.Keys, err = positiveInt(v)
		if err == nil && r.Keys < workload.MinKeys {
			err = fmt.Errorf("want at least %d", workload.MinKeys)
		}
	case "observe":
		r.ObserverDelay, err = positiveDuration(v)
	case "plansum":
		if len(v) != 16 || strings.Trim(v, "0123456789abcdef") != "" {
			err = errors.New("want 16 lower-case hex digits")
		}
		r.PlanSum = v
	default:
		err = errors.New("unknown parameter (want txns, clients, quiet, settle, world, bench, plan, plansum, keys or observe)")
	}
	return err
}

func positiveInt(s string) (int, error) {
	n, err := strconv.ParseInt(s, 10, strconv.IntSize)
	if err != nil || n < 1 {
		return 0, errors.New("want a positive whole number")
	}
	return int(n), nil
}

func positiveDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errors.New("want a positive duration such as 20s")
	}
	return d, nil
}

// escapePath percent-encodes the bytes of a path that would end the
// parameter (a comma), start an escape or need quoting in a shell.
func escapePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._-+:@=", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func unescapePath(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("a % must be followed by two hex digits")
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", errors.New("a % must be followed by two hex digits")
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), nil
}
