package checker

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lockstep/model"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of checker/testdata/*.txt")

// TestFixtures runs every history in testdata. A fixture carries its
// verdict in its name: *-ok.txt must pass (no claimed violation, verdict
// pass), *-bad.txt must fail. Below its "----" line is the expected
// description of the report (see describe); go test -rewrite regenerates
// it, so review the diff.
//
// The history format, one command a line (lines starting with '#' are
// comments):
//
//	scenario NAME [system=S] [seed=N]
//	store NAME KIND [claims=all|none|PROP,PROP]
//	txn XID LSN [snapshot] CHANGE [; CHANGE]...
//	aborted XID LSN CHANGE [; CHANGE]...
//	    CHANGE: insert KEY "ROW" | update KEY "ROW" [from=OLDPK] | delete KEY
//	read STORE KEY CALL RETURN (absent | lsn=LSN "VALUE" [revs=N]) [client=N]
//	snapshot STORE at=DUR [pos=LSN[@OFFSET]] [revs-from=LSN] [prefix=LSN | truth]
//	final STORE at=DUR [pos=LSN[@OFFSET]] [revs-from=LSN] [prefix=LSN | truth]
//	    then indented doc lines: KEY lsn=LSN "VALUE" [revs=N]   (add or replace)
//	                             -KEY                            (remove)
//	fault START END|quiet WHAT...
//	quiet DUR | deadline DUR | converged STORE DUR | loglosses N
//	position STORE AT (LSN[@OFFSET] | lost)   a write of the store's position
//
// KEY is table/pk, LSN is PostgreSQL's X/Y in hex, ROW is a row's
// canonical encoding "col=val;col=val". prefix=LSN fills the docs with the
// projection (for the store's kind) of the source after every commit at
// or before LSN; truth is the final source state.
func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no fixtures in testdata")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, want, _ := strings.Cut(string(raw), "----\n")
			h, err := parseHistory(input)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			rep := Check(h, Options{Witnesses: -1})
			got := describe(rep)
			switch {
			case strings.HasSuffix(name, "-ok"):
				if !rep.OK() || rep.Verdict != Pass {
					t.Errorf("must pass, got verdict %s:\n%s", rep.Verdict, rep)
				}
			case strings.HasSuffix(name, "-bad"):
				if rep.OK() || rep.Verdict != Fail {
					t.Errorf("must fail, got verdict %s:\n%s", rep.Verdict, rep)
				}
			default:
				t.Fatalf("fixture name must end in -ok or -bad")
			}
			assertDeterministic(t, h, rep)
			if *rewrite {
				out := input + "----\n" + got
				if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("report differs (go test ./checker -run TestFixtures -rewrite to accept)\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

// describe is the fixtures' expected output: the verdict, linearizability
// per store, then one line per anomaly (claimed or counted, its property,
// its String) with its versions and repeat count, then problems.
func describe(r *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "verdict %s\n", r.Verdict)
	b.WriteString("lin")
	for _, l := range r.Linearizability {
		fmt.Fprintf(&b, " %s=%s", l.Store, l.Result)
	}
	b.WriteByte('\n')
	for _, a := range r.Anomalies {
		mark := "counted"
		if a.Violation {
			mark = "violation"
		}
		fmt.Fprintf(&b, "%s %s %s\n", mark, a.Property, a)
		if len(a.Witness.Versions) > 0 || a.Witness.Seen > 1 {
			b.WriteString("  versions")
			for _, v := range a.Witness.Versions {
				fmt.Fprintf(&b, " %s", v)
			}
			if a.Witness.Seen > 1 {
				fmt.Fprintf(&b, " seen=%d", a.Witness.Seen)
			}
			b.WriteByte('\n')
		}
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "problem %s\n", p)
	}
	return b.String()
}

// assertDeterministic checks the report again from the same history and
// that it survives encoding/json.
func assertDeterministic(t *testing.T, h *model.History, rep *Report) {
	t.Helper()
	j1, err := json.Marshal(rep)
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	for i := 0; i < 3; i++ {
		again := Check(h, Options{Witnesses: -1})
		j2, _ := json.Marshal(again)
		if string(j1) != string(j2) || rep.String() != again.String() {
			t.Fatalf("same history, different report:\n%s\n%s", j1, j2)
		}
	}
	var back Report
	if err := json.Unmarshal(j1, &back); err != nil {
		t.Fatalf("json round trip: %v", err)
	}
	if len(back.Anomalies) != len(rep.Anomalies) || back.Verdict != rep.Verdict {
		t.Fatalf("json round trip lost data: %s", j1)
	}
}

// parseHistory reads the fixture format documented on TestFixtures.
func parseHistory(text string) (*model.History, error) {
	h := &model.History{ConvergedAt: map[string]time.Duration{}}
	type block struct {
		snap   *model.Snapshot
		final  bool
		prefix *model.LSN // nil: no fill
		edits  []func(kind model.StoreKind, d model.Docs) error
	}
	var blocks []*block
	var cur *block
	sc := bufio.NewScanner(strings.NewReader(text))
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Text()
		if t := strings.TrimSpace(raw); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		toks, err := tokenize(raw)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d: %q: %s", line, raw, fmt.Sprintf(format, args...))
		}
		indented := raw[0] == ' ' || raw[0] == '\t'
		if indented {
			if cur == nil {
				return nil, fail("doc line outside a snapshot or final block")
			}
			if strings.HasPrefix(toks[0], "-") {
				k, err := parseKey(toks[0][1:])
				if err != nil {
					return nil, fail("%v", err)
				}
				cur.edits = append(cur.edits, func(_ model.StoreKind, d model.Docs) error {
					if _, ok := d[k]; !ok {
						return fmt.Errorf("line %d: -%s: no such doc", line, k)
					}
					delete(d, k)
					return nil
				})
				continue
			}
			k, err := parseKey(toks[0])
			if err != nil {
				return nil, fail("%v", err)
			}
			doc, rest, err := parseDoc(toks[1:])
			if err != nil || len(rest) > 0 {
				return nil, fail("want KEY lsn=LSN \"VALUE\" [revs=N]")
			}
			cur.edits = append(cur.edits, func(_ model.StoreKind, d model.Docs) error {
				d[k] = doc
				return nil
			})
			continue
		}
		cur = nil
		args := toks[1:]
		switch toks[0] {
		case "scenario":
			if len(args) < 1 {
				return nil, fail("want a name")
			}
			h.Scenario = args[0]
			for _, a := range args[1:] {
				k, v, _ := strings.Cut(a, "=")
				switch k {
				case "system":
					h.System = v
				case "seed":
					n, err := strconv.ParseUint(v, 10, 64)
					if err != nil {
						return nil, fail("%v", err)
					}
					h.Seed = n
				default:
					return nil, fail("unknown %s", k)
				}
			}
		case "store":
			if len(args) < 2 {
				return nil, fail("want NAME KIND [claims=...]")
			}
			kind, ok := model.ParseStoreKind(args[1])
			if !ok {
				return nil, fail("unknown kind %q", args[1])
			}
			claims := model.Claims{}
			for _, a := range args[2:] {
				v, ok := strings.CutPrefix(a, "claims=")
				if !ok {
					return nil, fail("unknown %s", a)
				}
				switch v {
				case "all":
					for _, p := range model.AllProperties {
						claims[p] = true
					}
				case "none":
				default:
					for _, p := range strings.Split(v, ",") {
						if !validProperty(model.Property(p)) {
							return nil, fail("unknown property %q", p)
						}
						claims[model.Property(p)] = true
					}
				}
			}
			h.Stores = append(h.Stores, model.StoreSpec{Name: args[0], Kind: kind, Claims: claims})
		case "txn", "aborted":
			if len(args) < 3 {
				return nil, fail("want XID LSN CHANGE...")
			}
			xid, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return nil, fail("%v", err)
			}
			lsn, err := model.ParseLSN(args[1])
			if err != nil {
				return nil, fail("%v", err)
			}
			txn := model.Txn{XID: xid, CommitLSN: lsn}
			rest := args[2:]
			if len(rest) > 0 && rest[0] == "snapshot" {
				txn.Snapshot = true
				rest = rest[1:]
			}
			for len(rest) > 0 {
				var c model.Change
				c, rest, err = parseChange(rest)
				if err != nil {
					return nil, fail("%v", err)
				}
				txn.Changes = append(txn.Changes, c)
				if len(rest) > 0 {
					if rest[0] != ";" {
						return nil, fail("want ; between changes, got %q", rest[0])
					}
					rest = rest[1:]
				}
			}
			if toks[0] == "txn" {
				h.Committed = append(h.Committed, txn)
			} else {
				h.Aborted = append(h.Aborted, txn)
			}
		case "read":
			if len(args) < 5 {
				return nil, fail("want STORE KEY CALL RETURN (absent | lsn=... \"VALUE\")")
			}
			k, err := parseKey(args[1])
			if err != nil {
				return nil, fail("%v", err)
			}
			call, err1 := time.ParseDuration(args[2])
			ret, err2 := time.ParseDuration(args[3])
			if err1 != nil || err2 != nil {
				return nil, fail("bad times")
			}
			r := model.Read{Store: args[0], Key: k, Call: call, Return: ret}
			rest := args[4:]
			if rest[0] == "absent" {
				rest = rest[1:]
			} else {
				r.Found = true
				r.Doc, rest, err = parseDoc(rest)
				if err != nil {
					return nil, fail("%v", err)
				}
			}
			for _, a := range rest {
				v, ok := strings.CutPrefix(a, "client=")
				if !ok {
					return nil, fail("unknown %s", a)
				}
				if r.Client, err = strconv.Atoi(v); err != nil {
					return nil, fail("%v", err)
				}
			}
			h.Reads = append(h.Reads, r)
		case "snapshot", "final":
			if len(args) < 2 {
				return nil, fail("want STORE at=DUR")
			}
			b := &block{snap: &model.Snapshot{Store: args[0], Docs: model.Docs{}}, final: toks[0] == "final"}
			for _, a := range args[1:] {
				k, v, _ := strings.Cut(a, "=")
				switch k {
				case "at":
					if b.snap.At, err = time.ParseDuration(v); err != nil {
						return nil, fail("%v", err)
					}
				case "pos":
					lsnText, off, hasOff := strings.Cut(v, "@")
					lsn, err := model.ParseLSN(lsnText)
					if err != nil {
						return nil, fail("%v", err)
					}
					b.snap.HasPosition = true
					b.snap.Position.LSN = lsn
					if hasOff {
						if b.snap.Position.Offset, err = strconv.ParseInt(off, 10, 64); err != nil {
							return nil, fail("%v", err)
						}
					}
				case "revs-from":
					if b.snap.RevsFrom, err = model.ParseLSN(v); err != nil {
						return nil, fail("%v", err)
					}
				case "prefix":
					lsn, err := model.ParseLSN(v)
					if err != nil {
						return nil, fail("%v", err)
					}
					b.prefix = &lsn
				case "truth":
					all := model.LSN(1<<64 - 1)
					b.prefix = &all
				default:
					return nil, fail("unknown %s", a)
				}
			}
			blocks = append(blocks, b)
			cur = b
		case "fault":
			if len(args) < 3 {
				return nil, fail("want START END|quiet WHAT")
			}
			start, err := time.ParseDuration(args[0])
			if err != nil {
				return nil, fail("%v", err)
			}
			var end time.Duration
			if args[1] != "quiet" {
				if end, err = time.ParseDuration(args[1]); err != nil {
					return nil, fail("%v", err)
				}
			}
			h.Faults = append(h.Faults, model.FaultWindow{Start: start, End: end, What: strings.Join(args[2:], " ")})
		case "quiet", "deadline":
			if len(args) != 1 {
				return nil, fail("want DUR")
			}
			d, err := time.ParseDuration(args[0])
			if err != nil {
				return nil, fail("%v", err)
			}
			if toks[0] == "quiet" {
				h.QuietAt = d
			} else {
				h.Deadline = d
			}
		case "converged":
			if len(args) != 2 {
				return nil, fail("want STORE DUR")
			}
			d, err := time.ParseDuration(args[1])
			if err != nil {
				return nil, fail("%v", err)
			}
			h.ConvergedAt[args[0]] = d
		case "position":
			if len(args) != 3 {
				return nil, fail("want STORE AT (LSN[@OFFSET] | lost)")
			}
			at, err := time.ParseDuration(args[1])
			if err != nil {
				return nil, fail("%v", err)
			}
			w := model.PositionWrite{Store: args[0], At: at, Lost: args[2] == "lost"}
			if !w.Lost {
				lsnText, off, hasOff := strings.Cut(args[2], "@")
				if w.Position.LSN, err = model.ParseLSN(lsnText); err != nil {
					return nil, fail("%v", err)
				}
				if hasOff {
					if w.Position.Offset, err = strconv.ParseInt(off, 10, 64); err != nil {
						return nil, fail("%v", err)
					}
				}
			}
			h.Positions = append(h.Positions, w)
		case "loglosses":
			n, err := strconv.Atoi(args[0])
			if err != nil {
				return nil, fail("%v", err)
			}
			h.LogLosses = n
		default:
			return nil, fail("unknown command %q", toks[0])
		}
	}
	// Fill blocks now that every transaction is known.
	for _, b := range blocks {
		spec, ok := h.Store(b.snap.Store)
		kind := spec.Kind
		if b.prefix != nil {
			if !ok {
				return nil, fmt.Errorf("%s of undeclared store %q cannot use prefix/truth", "snapshot", b.snap.Store)
			}
			s := model.NewState()
			for _, txn := range h.Committed {
				if txn.CommitLSN <= *b.prefix {
					s.Apply(txn)
				}
			}
			b.snap.Docs = s.Project(kind)
		}
		for _, e := range b.edits {
			if err := e(kind, b.snap.Docs); err != nil {
				return nil, err
			}
		}
		if b.final {
			h.Final = append(h.Final, *b.snap)
		} else {
			h.Snapshots = append(h.Snapshots, *b.snap)
		}
	}
	return h, sc.Err()
}

func validProperty(p model.Property) bool {
	for _, q := range model.AllProperties {
		if p == q {
			return true
		}
	}
	return false
}

// tokenize splits on blanks; a token starting with '"' is a Go string
// literal.
func tokenize(s string) ([]string, error) {
	var toks []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return toks, nil
		}
		if s[0] == '"' {
			end := 1
			for ; end < len(s); end++ {
				if s[end] == '\\' {
					end++
					continue
				}
				if s[end] == '"' {
					break
				}
			}
			if end >= len(s) {
				return nil, fmt.Errorf("unterminated string in %q", s)
			}
			v, err := strconv.Unquote(s[:end+1])
			if err != nil {
				return nil, err
			}
			toks = append(toks, "\x00"+v) // mark literals so they are never commands
			s = s[end+1:]
			continue
		}
		end := strings.IndexAny(s, " \t")
		if end < 0 {
			end = len(s)
		}
		toks = append(toks, s[:end])
		s = s[end:]
	}
}

func literal(tok string) (string, bool) { return strings.CutPrefix(tok, "\x00") }

func parseKey(s string) (model.Key, error) {
	table, pk, ok := strings.Cut(s, "/")
	if !ok || table == "" || pk == "" {
		return model.Key{}, fmt.Errorf("malformed key %q: want table/pk", s)
	}
	return model.Key{Table: table, PK: pk}, nil
}

// parseDoc reads lsn=LSN "VALUE" [revs=N].
func parseDoc(toks []string) (model.Doc, []string, error) {
	var d model.Doc
	if len(toks) < 2 {
		return d, nil, fmt.Errorf("want lsn=LSN \"VALUE\"")
	}
	v, ok := strings.CutPrefix(toks[0], "lsn=")
	if !ok {
		return d, nil, fmt.Errorf("want lsn=LSN, got %q", toks[0])
	}
	lsn, err := model.ParseLSN(v)
	if err != nil {
		return d, nil, err
	}
	d.LSN = lsn
	if d.Value, ok = literal(toks[1]); !ok {
		return d, nil, fmt.Errorf("want a quoted value, got %q", toks[1])
	}
	rest := toks[2:]
	if len(rest) > 0 {
		if v, ok := strings.CutPrefix(rest[0], "revs="); ok {
			if d.Revs, err = strconv.Atoi(v); err != nil {
				return d, nil, err
			}
			rest = rest[1:]
		}
	}
	return d, rest, nil
}

func parseChange(toks []string) (model.Change, []string, error) {
	var c model.Change
	if len(toks) < 2 {
		return c, nil, fmt.Errorf("want OP KEY ...")
	}
	k, err := parseKey(toks[1])
	if err != nil {
		return c, nil, err
	}
	c.Table, c.PK = k.Table, k.PK
	switch toks[0] {
	case "delete":
		c.Op = model.OpDelete
		return c, toks[2:], nil
	case "insert", "update":
		c.Op = model.OpInsert
		if toks[0] == "update" {
			c.Op = model.OpUpdate
		}
		if len(toks) < 3 {
			return c, nil, fmt.Errorf("want %s KEY \"ROW\"", toks[0])
		}
		row, ok := literal(toks[2])
		if !ok {
			return c, nil, fmt.Errorf("want a quoted row, got %q", toks[2])
		}
		c.Row = model.DecodeRow(row)
		rest := toks[3:]
		if len(rest) > 0 {
			if v, ok := strings.CutPrefix(rest[0], "from="); ok {
				c.OldPK = v
				rest = rest[1:]
			}
		}
		return c, rest, nil
	}
	return c, nil, fmt.Errorf("unknown change %q", toks[0])
}
