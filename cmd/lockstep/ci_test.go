package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The CI files (.github/workflows, deploy/) cannot run here: actionlint
// checks them as workflows (make lint), and this test checks what they ask
// of lockstep. Every lockstep invocation in their scripts must name a
// command that exists and parse as that command's flags parse; a value
// written out (or a manual-trigger input's default) must be one the flag
// takes. So a flag renamed or removed breaks the test, not the nightly run.
func TestCIFilesUseRealCommandsAndFlags(t *testing.T) {
	var found []string
	reported := map[string]bool{}
	for _, file := range workflowFiles(t) {
		wf := readWorkflow(t, file)
		for _, jobName := range sortedKeys(wf.Jobs) {
			job := wf.Jobs[jobName]
			for i, step := range job.Steps {
				if step.Run == "" {
					continue
				}
				env, err := wf.resolveEnv(job.Env, step.Env)
				if err != nil && !reported[err.Error()] {
					reported[err.Error()] = true
					t.Errorf("%s: %v", filepath.Base(file), err)
				}
				where := fmt.Sprintf("%s: job %s, step %d", filepath.Base(file), jobName, i+1)
				for _, args := range lockstepCalls(step.Run, env) {
					found = append(found, filepath.Base(file)+" "+jobName+": lockstep "+args[0].text)
					checkInvocation(t, where, args)
				}
			}
		}
	}
	for _, file := range manifestFiles(t) {
		for _, c := range manifestContainers(t, file) {
			where := fmt.Sprintf("%s: container %s", filepath.Base(file), c.Name)
			for _, args := range c.lockstepCalls() {
				found = append(found, filepath.Base(file)+" "+c.Name+": lockstep "+args[0].text)
				checkInvocation(t, where, args)
			}
		}
	}
	// The extraction itself must not rot into finding nothing.
	want := []string{
		"campaign-job.yaml campaign: lockstep campaign",
		"merge-job.yaml merge: lockstep merge",
		"nightly.yml containers: lockstep campaign",
		"nightly.yml merge: lockstep merge",
		"nightly.yml simulator: lockstep campaign",
	}
	slices.Sort(found)
	if !slices.Equal(found, want) {
		t.Errorf("lockstep invocations found in the CI files:\n  %s\nwant:\n  %s", strings.Join(found, "\n  "), strings.Join(want, "\n  "))
	}
}

// The pull-request workflow runs what CI runs (bash .ci/run), which runs the
// README's test command.
func TestPullRequestWorkflowRunsTheREADMEsTestCommand(t *testing.T) {
	wf := readWorkflow(t, filepath.Join(repoRoot, ".github/workflows/test.yml"))
	if _, ok := wf.On["pull_request"]; !ok {
		t.Errorf("test.yml: not triggered by pull_request")
	}
	var runs []string
	for _, job := range wf.Jobs {
		for _, s := range job.Steps {
			runs = append(runs, strings.TrimSpace(s.Run))
		}
	}
	if !slices.Contains(runs, "bash .ci/run") {
		t.Errorf("test.yml: no step runs `bash .ci/run`; steps run %q", runs)
	}
	ci := readFile(t, filepath.Join(repoRoot, ".ci/run"))
	if !regexp.MustCompile(`(?m)^make test$`).MatchString(ci) {
		t.Errorf(".ci/run: no line `make test`")
	}
	readme := readFile(t, filepath.Join(repoRoot, "README.md"))
	if !regexp.MustCompile("(?m)^make test +# every test \\(what CI runs\\)").MatchString(readme) {
		t.Errorf("README.md: `make test` is no longer the test command it gives")
	}
}

// What the nightly jobs write is what they upload, and the merge job
// downloads every shard's upload.
func TestNightlyUploadsWhatItWritesAndMergesEveryShard(t *testing.T) {
	wf := readWorkflow(t, filepath.Join(repoRoot, ".github/workflows/nightly.yml"))
	for _, key := range []string{"schedule", "workflow_dispatch"} {
		if _, ok := wf.On[key]; !ok {
			t.Errorf("nightly.yml: not triggered by %s", key)
		}
	}
	uploads := map[string][]string{} // job -> artifact names
	for _, jobName := range sortedKeys(wf.Jobs) {
		job := wf.Jobs[jobName]
		var paths []string
		for _, s := range job.Steps {
			if strings.HasPrefix(s.Uses, "actions/upload-artifact@") {
				paths = append(paths, strings.TrimSuffix(s.With["path"], "/")+"/")
				uploads[jobName] = append(uploads[jobName], s.With["name"])
				if s.If == "" {
					t.Errorf("nightly.yml: job %s uploads only when every step passed: a failing campaign's files are the ones to keep (want if: !cancelled())", jobName)
				}
			}
		}
		env, _ := wf.resolveEnv(job.Env, nil) // its errors are TestCIFilesUseRealCommandsAndFlags's
		for _, s := range job.Steps {
			for _, args := range lockstepCalls(s.Run, env) {
				for _, out := range outputFiles(args) {
					if !slices.ContainsFunc(paths, func(p string) bool { return strings.HasPrefix(out, p) }) {
						t.Errorf("nightly.yml: job %s writes %s but uploads only %q", jobName, out, paths)
					}
				}
			}
		}
	}
	for _, name := range []string{"simulator", "containers", "merge"} {
		if len(uploads[name]) == 0 {
			t.Errorf("nightly.yml: job %s uploads no artifact", name)
		}
	}
	var pattern string
	for _, s := range wf.Jobs["merge"].Steps {
		if strings.HasPrefix(s.Uses, "actions/download-artifact@") {
			pattern = s.With["pattern"]
		}
	}
	for _, name := range uploads["simulator"] {
		shard := expressionRE.ReplaceAllString(name, "1") // one matrix shard's name
		if ok, err := path.Match(pattern, shard); !ok || err != nil {
			t.Errorf("nightly.yml: the merge job downloads %q, which misses the shard artifact %q", pattern, shard)
		}
	}
	for _, name := range uploads["containers"] {
		if ok, _ := path.Match(pattern, name); ok {
			t.Errorf("nightly.yml: the merge job's %q takes the container campaign's %q for a simulator shard", pattern, name)
		}
	}
	if !slices.Contains(wf.Jobs["merge"].Needs, "simulator") || wf.Jobs["merge"].If == "" {
		t.Errorf("nightly.yml: the merge job must wait for the shards and run when one failed (needs: simulator, if: !cancelled())")
	}
}

// Shell word splitting, checked on the shapes the CI files use.
func TestLockstepCalls(t *testing.T) {
	env := map[string]envValue{"D": {text: "20m"}, "S": {opaque: true}}
	script := `go build -o bin/lockstep ./cmd/lockstep
mkdir -p out && bin/lockstep campaign --duration "$D" \
  --shard "$S" --json=out/$S/c.json # a comment --nope
exec lockstep merge --report=r "${files[@]}" >out/s.txt
echo lockstep run
go run ./cmd/lockstep list; sh -c 'lockstep run'
lockstep campaign --shard "$((JOB_COMPLETION_INDEX + 1))/8" --scenario 'a b'`
	var got []string
	for _, args := range lockstepCalls(script, env) {
		var words []string
		for _, a := range args {
			if a.opaque != strings.Contains(a.text, unknown) {
				t.Errorf("word %q: opaque %v", a.text, a.opaque)
			}
			words = append(words, strings.ReplaceAll(a.text, unknown, "?"))
		}
		got = append(got, strings.Join(words, " "))
	}
	want := []string{
		"campaign --duration 20m --shard ? --json=out/?/c.json",
		"merge --report=r ?",
		"list",
		"campaign --shard ?/8 --scenario a b",
	}
	if !slices.Equal(got, want) {
		t.Errorf("lockstepCalls:\n got %q\nwant %q", got, want)
	}
}

// The parse catches what it must and passes what only the run knows.
func TestInvocationErrors(t *testing.T) {
	w := func(texts ...string) []word {
		var ws []word
		for _, s := range texts {
			ws = append(ws, word{text: s, opaque: strings.Contains(s, unknown)})
		}
		return ws
	}
	cases := []struct {
		args []word
		want string // "" for no error
	}{
		{w("campaign", "--scenario", "all", "--seeds", "3", "--json", "out/c.json"), ""},
		{w("campaign", "--seeds", unknown), ""},
		{w("campaign", "--seeds="+unknown, "--txns", "5"), ""},
		{w("run", "--check-determinism", "--seed", "1", "--scenario", "steady"), ""},
		{w("campaign", "--seeds", "0"), "lockstep campaign --seeds 0: want a positive whole number"},
		{w("campaign", "--bogus", "1", "--seeds", "3", "--nope", "--txns", "x"), "lockstep campaign has no flag --bogus, --nope"},
		{w("frobnicate", "--seeds", "3"), "lockstep frobnicate: no such command"},
		{w(unknown), "lockstep \x00: no such command"},
	}
	for _, c := range cases {
		errs := invocationErrors(c.args)
		got := strings.Join(errs, "; ")
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%v: errors %q, want %q", c.args, got, c.want)
		}
	}
	// --txns x is a bad value as well as --bogus a missing flag.
	if errs := invocationErrors(w("campaign", "--bogus", "1", "--txns", "x")); len(errs) != 2 {
		t.Errorf("want a missing flag and a bad value, got %q", errs)
	}
}

// A scheduled run falls back to the manual trigger's defaults, and only to
// them.
func TestResolveEnvChecksTheFallbackAgainstTheInputsDefault(t *testing.T) {
	var wf workflow
	src := `on:
  schedule: [{cron: "0 2 * * *"}]
  workflow_dispatch:
    inputs:
      duration: {type: string, default: 40m}
      shards: {type: number, default: 8}
env:
  D: ${{ inputs.duration || '40m' }}
  N: ${{ inputs.shards || 8 }}
  M: ${{ matrix.shard }}/${{ inputs.shards || 8 }}
`
	if err := yaml.Unmarshal([]byte(src), &wf); err != nil {
		t.Fatal(err)
	}
	env, err := wf.resolveEnv()
	if err != nil {
		t.Fatal(err)
	}
	if env["D"] != (envValue{text: "40m"}) || env["N"] != (envValue{text: "8"}) || !env["M"].opaque {
		t.Errorf("resolved %+v", env)
	}
	wf.Env = map[string]string{"D": "${{ inputs.duration || '20m' }}", "X": "${{ inputs.nosuch || 'a' }}"}
	_, err = wf.resolveEnv()
	if err == nil || !strings.Contains(err.Error(), `env D falls back to "20m" on a schedule, but the manual trigger's default is "40m"`) ||
		!strings.Contains(err.Error(), "env X reads inputs.nosuch, which workflow_dispatch does not declare") {
		t.Errorf("mismatched fallbacks: %v", err)
	}
}

// checkInvocation reports invocationErrors as the test's errors.
func checkInvocation(t *testing.T, where string, args []word) {
	t.Helper()
	for _, e := range invocationErrors(args) {
		t.Errorf("%s: %s", where, e)
	}
}

// invocationErrors parses args (the command, then its arguments) as the
// CLI does. Words the file leaves to run time (a shell variable, a matrix
// value) are taken as any value; words written out must be values the flag
// takes.
func invocationErrors(args []word) []string {
	cmd := find(args[0].text)
	if args[0].opaque || cmd == nil {
		return []string{fmt.Sprintf("lockstep %s: no such command", args[0].text)}
	}
	real := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	cmd.flags(real)
	real.SetOutput(io.Discard)
	lenient := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	lenient.SetOutput(io.Discard)
	var given []recorded
	real.VisitAll(func(f *flag.Flag) {
		b, ok := f.Value.(interface{ IsBoolFlag() bool })
		lenient.Var(&recorder{name: f.Name, isBool: ok && b.IsBoolFlag(), got: &given}, f.Name, "")
	})
	texts := make([]string, len(args)-1)
	for i, a := range args[1:] {
		texts[i] = a.text
	}
	// Every flag the command lacks, not only the first: each one found is
	// defined as taking a value, and the words are parsed again.
	var errs, missing []string
	var ignored []recorded
	for {
		given = given[:0]
		err := lenient.Parse(texts)
		if err == nil {
			break
		}
		name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
		if !ok || slices.Contains(missing, "--"+name) {
			return append(errs, fmt.Sprintf("lockstep %s: %v", cmd.name, err))
		}
		missing = append(missing, "--"+name)
		lenient.Var(&recorder{name: name, got: &ignored}, name, "")
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Sprintf("lockstep %s has no flag %s", cmd.name, strings.Join(missing, ", ")))
	}
	for _, g := range given {
		if strings.Contains(g.value, unknown) {
			continue
		}
		if err := real.Set(g.name, g.value); err != nil {
			errs = append(errs, fmt.Sprintf("lockstep %s --%s %s: %v", cmd.name, g.name, g.value, err))
		}
	}
	return errs
}

type recorded struct{ name, value string }

// recorder is a flag that takes any value and notes it.
type recorder struct {
	name   string
	isBool bool
	got    *[]recorded
}

func (r *recorder) String() string     { return "" }
func (r *recorder) IsBoolFlag() bool   { return r.isBool }
func (r *recorder) Set(v string) error { *r.got = append(*r.got, recorded{r.name, v}); return nil }

// outputFiles are the files and directories an invocation writes.
func outputFiles(args []word) []string {
	var out []string
	for i, a := range args {
		for _, f := range []string{"json", "junit", "report"} {
			switch {
			case (a.text == "--"+f || a.text == "-"+f) && i+1 < len(args):
				out = append(out, args[i+1].text)
			case strings.HasPrefix(a.text, "--"+f+"="):
				out = append(out, strings.TrimPrefix(a.text, "--"+f+"="))
			}
		}
	}
	return out
}

var repoRoot = filepath.Join("..", "..")

func workflowFiles(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join(repoRoot, ".github/workflows/*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no workflow files in .github/workflows (%v)", err)
	}
	return files
}

func manifestFiles(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join(repoRoot, "deploy/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/ (%v)", err)
	}
	return files
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// workflow is the part of a GitHub Actions workflow this test reads.
type workflow struct {
	On   map[string]yaml.Node `yaml:"on"`
	Env  map[string]string    `yaml:"env"`
	Jobs map[string]struct {
		Needs stringList        `yaml:"needs"`
		If    string            `yaml:"if"`
		Env   map[string]string `yaml:"env"`
		Steps []struct {
			If   string            `yaml:"if"`
			Uses string            `yaml:"uses"`
			Run  string            `yaml:"run"`
			Env  map[string]string `yaml:"env"`
			With map[string]string `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// stringList is a YAML string or list of strings (a job's needs).
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = []string{n.Value}
		return nil
	}
	var s []string
	err := n.Decode(&s)
	*l = s
	return err
}

func readWorkflow(t *testing.T, file string) *workflow {
	t.Helper()
	var wf workflow
	if err := yaml.Unmarshal([]byte(readFile(t, file)), &wf); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &wf
}

var (
	expressionRE = regexp.MustCompile(`\$\{\{\s*(.*?)\s*\}\}`)
	// inputOrRE is `inputs.NAME || 'DEFAULT'` (or a bare number): a
	// manual-trigger input with the value a scheduled run takes instead.
	inputOrRE = regexp.MustCompile(`^inputs\.([\w-]+)\s*\|\|\s*(?:'([^']*)'|(\d+))$`)
)

// envValue is an environment variable as a script sees it: its text, or
// opaque when only the run knows it (a matrix value, another job's output).
type envValue struct {
	text   string
	opaque bool
}

// resolveEnv merges the workflow's, the job's and the step's env and
// resolves `${{ inputs.X || 'D' }}` to D, checking that D is the manual
// trigger's default too, so that a scheduled run and a manual one with
// the defaults are the same run (the error says where not; the env is
// whole anyway). Other expressions leave a value opaque.
func (wf *workflow) resolveEnv(layers ...map[string]string) (map[string]envValue, error) {
	var dispatch struct {
		Inputs map[string]struct {
			Default any `yaml:"default"`
		} `yaml:"inputs"`
	}
	if n, ok := wf.On["workflow_dispatch"]; ok {
		if err := n.Decode(&dispatch); err != nil {
			return nil, fmt.Errorf("workflow_dispatch: %w", err)
		}
	}
	inputs := dispatch.Inputs
	out := map[string]envValue{}
	var errs []string
	for _, layer := range append([]map[string]string{wf.Env}, layers...) {
		for k, v := range layer {
			ev := envValue{text: v}
			for _, m := range expressionRE.FindAllStringSubmatch(v, -1) {
				im := inputOrRE.FindStringSubmatch(m[1])
				if im == nil || strings.TrimSpace(v) != m[0] {
					ev = envValue{opaque: true}
					break
				}
				def := im[2] + im[3]
				input, ok := inputs[im[1]]
				if !ok {
					errs = append(errs, fmt.Sprintf("env %s reads inputs.%s, which workflow_dispatch does not declare", k, im[1]))
				} else if got := fmt.Sprint(input.Default); got != def {
					errs = append(errs, fmt.Sprintf("env %s falls back to %q on a schedule, but the manual trigger's default is %q", k, def, got))
				}
				ev = envValue{text: def}
			}
			out[k] = ev
		}
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// manifest is the part of a Kubernetes Job this test reads; the deploy
// package's test decodes the manifests whole, with the Kubernetes types.
type manifest struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Template struct {
			Spec struct {
				Containers []container `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type container struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
}

func manifestContainers(t *testing.T, file string) []container {
	t.Helper()
	var out []container
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, file)))
	for {
		var m manifest
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("%s: %v", file, err)
		}
		if m.Kind == "Job" {
			out = append(out, m.Spec.Template.Spec.Containers...)
		}
	}
}

// lockstepCalls are the container's lockstep invocations: its command and
// args, or the script of a `sh -c`. Kubernetes's $(VAR) in args is not
// expanded: the manifests leave expansion to the shell.
func (c container) lockstepCalls() [][]word {
	env := map[string]envValue{}
	for _, e := range c.Env {
		env[e.Name] = envValue{text: e.Value}
	}
	all := append(slices.Clone(c.Command), c.Args...)
	if len(all) >= 3 && (all[0] == "sh" || strings.HasSuffix(all[0], "/sh")) && all[1] == "-c" {
		return lockstepCalls(all[2], env)
	}
	if len(all) > 0 && isLockstep(all[0]) {
		words := make([]word, len(all)-1)
		for i, a := range all[1:] {
			words[i] = word{text: a}
		}
		return [][]word{words}
	}
	return nil
}

func isLockstep(w string) bool { return w == "lockstep" || strings.HasSuffix(w, "/lockstep") }

// word is a shell word after quote removal and expansion; opaque when part
// of it is known only at run time, that part written as unknown.
type word struct {
	text   string
	opaque bool
}

// unknown stands in a word for what only the run knows.
const unknown = "\x00"

// lockstepCalls finds the lockstep invocations in a shell script (the
// lockstep binary, or go run ./cmd/lockstep, in a command's first place)
// and returns each one's words after the program: the command, then its
// arguments. It knows as much shell as the CI files use: quotes,
// backslash-newline, comments, $VAR, ${VAR}, $(...), $((...)), ${a[@]},
// && || ; |, and redirections; env gives the variables.
func lockstepCalls(script string, env map[string]envValue) [][]word {
	var calls [][]word
	for _, cmd := range splitCommands(script, env) {
		for len(cmd) > 0 && !cmd[0].opaque && (cmd[0].text == "exec" || cmd[0].text == "!" || cmd[0].text == "then" || cmd[0].text == "do") {
			cmd = cmd[1:]
		}
		switch {
		case len(cmd) > 1 && !cmd[0].opaque && isLockstep(cmd[0].text):
			calls = append(calls, cmd[1:])
		case len(cmd) > 3 && cmd[0].text == "go" && cmd[1].text == "run" && cmd[2].text == "./cmd/lockstep":
			calls = append(calls, cmd[3:])
		}
	}
	return calls
}

// splitCommands splits a script into simple commands of expanded words,
// dropping comments and redirections.
func splitCommands(script string, env map[string]envValue) [][]word {
	s := strings.ReplaceAll(script, "\\\n", " ")
	var cmds [][]word
	var cur []word
	var w strings.Builder
	inWord, opaque, skipNext := false, false, false
	endWord := func() {
		if inWord {
			if skipNext {
				skipNext = false
			} else {
				cur = append(cur, word{text: w.String(), opaque: opaque})
			}
		}
		w.Reset()
		inWord, opaque = false, false
	}
	endCmd := func() {
		endWord()
		if len(cur) > 0 {
			cmds = append(cmds, cur)
		}
		cur = nil
	}
	// expand reads a $ expansion at s[i] and returns where it ends.
	expand := func(i int) int {
		inWord = true
		rest := s[i+1:]
		switch {
		case strings.HasPrefix(rest, "(("), strings.HasPrefix(rest, "("):
			depth := 0
			for j := i + 1; j < len(s); j++ {
				switch s[j] {
				case '(':
					depth++
				case ')':
					depth--
					if depth == 0 {
						opaque = true
						w.WriteString(unknown)
						return j + 1
					}
				}
			}
			opaque = true
			w.WriteString(unknown)
			return len(s)
		case strings.HasPrefix(rest, "{"):
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				opaque = true
				w.WriteString(unknown)
				return len(s)
			}
			name := rest[1:end]
			if v, ok := env[name]; ok && !v.opaque {
				w.WriteString(v.text)
			} else {
				opaque = true
				w.WriteString(unknown)
			}
			return i + 2 + end
		default:
			n := 0
			for n < len(rest) && (rest[n] == '_' || rest[n] >= 'A' && rest[n] <= 'Z' || rest[n] >= 'a' && rest[n] <= 'z' || rest[n] >= '0' && rest[n] <= '9') {
				n++
			}
			if n == 0 {
				w.WriteByte('$')
				return i + 1
			}
			if v, ok := env[rest[:n]]; ok && !v.opaque {
				w.WriteString(v.text)
			} else {
				opaque = true
				w.WriteString(unknown)
			}
			return i + 1 + n
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n' || c == ';':
			endCmd()
			i++
		case c == '&' && strings.HasPrefix(s[i:], "&&"), c == '|' && strings.HasPrefix(s[i:], "||"):
			endCmd()
			i += 2
		case c == '|' || c == '(' || c == ')':
			endCmd()
			i++
		case c == '>' || c == '<':
			// A redirection: its target is no argument.
			if inWord && w.String() == "2" {
				w.Reset()
				inWord = false
			}
			endWord()
			for i < len(s) && (s[i] == '>' || s[i] == '<' || s[i] == '&') {
				i++
			}
			skipNext = true
		case c == ' ' || c == '\t':
			endWord()
			i++
		case c == '#' && !inWord:
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '\'':
			inWord = true
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				end = len(s) - i - 1
			}
			w.WriteString(s[i+1 : i+1+end])
			i += end + 2
		case c == '"':
			inWord = true
			i++
			for i < len(s) && s[i] != '"' {
				switch {
				case s[i] == '$':
					i = expand(i)
				case s[i] == '\\' && i+1 < len(s):
					w.WriteByte(s[i+1])
					i += 2
				default:
					w.WriteByte(s[i])
					i++
				}
			}
			i++
		case c == '$':
			i = expand(i)
		default:
			inWord = true
			w.WriteByte(c)
			i++
		}
	}
	endCmd()
	return cmds
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
