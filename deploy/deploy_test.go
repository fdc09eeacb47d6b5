package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// No schema checker can run here: kubeconform and kubeval fetch the
// Kubernetes JSON schemas from the network at run time. Instead the
// manifests are decoded strictly into the API's Go types (k8s.io/api), so
// a misspelt or misplaced field, or a value of the wrong type, fails; what
// the API server would also refuse, and what the campaign needs, is
// checked field by field below.

// objects are a manifest file's documents, decoded by kind.
type objects struct {
	jobs []*batchv1.Job
	pvcs []*corev1.PersistentVolumeClaim
}

func decode(t *testing.T, file string) objects {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var objs objects
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("%s, document %d: %v", file, i+1, err)
		}
		var obj any
		switch head.APIVersion + " " + head.Kind {
		case "batch/v1 Job":
			j := &batchv1.Job{}
			objs.jobs, obj = append(objs.jobs, j), j
		case "v1 PersistentVolumeClaim":
			p := &corev1.PersistentVolumeClaim{}
			objs.pvcs, obj = append(objs.pvcs, p), p
		default:
			t.Fatalf("%s, document %d: unexpected %s %s", file, i+1, head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s, document %d (%s): %v", file, i+1, head.Kind, err)
		}
	}
	return objs
}

func stripComments(doc string) string {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// The strict decoder is strict: an unknown or misplaced field fails.
func TestDecodeRefusesUnknownFields(t *testing.T) {
	bad := "apiVersion: batch/v1\nkind: Job\nspec:\n  completionsMode: Indexed\n"
	if err := yaml.UnmarshalStrict([]byte(bad), &batchv1.Job{}); err == nil || !strings.Contains(err.Error(), "completionsMode") {
		t.Fatalf("a misspelt field decoded: %v", err)
	}
	bad = "apiVersion: batch/v1\nkind: Job\nspec:\n  completions: eight\n"
	if err := yaml.UnmarshalStrict([]byte(bad), &batchv1.Job{}); err == nil {
		t.Fatal("a string for an integer field decoded")
	}
}

type campaignSetup struct {
	job    *batchv1.Job
	c      corev1.Container
	claim  string
	shards int
}

func campaignJob(t *testing.T) campaignSetup {
	t.Helper()
	objs := decode(t, "campaign-job.yaml")
	if len(objs.jobs) != 1 || len(objs.pvcs) != 1 {
		t.Fatalf("campaign-job.yaml: %d jobs and %d claims; want one of each", len(objs.jobs), len(objs.pvcs))
	}
	job, pvc := objs.jobs[0], objs.pvcs[0]
	spec := job.Spec
	if len(spec.Template.Spec.Containers) != 1 {
		t.Fatalf("campaign job: %d containers, want 1", len(spec.Template.Spec.Containers))
	}
	c := spec.Template.Spec.Containers[0]
	shards, err := strconv.Atoi(env(c, "SHARDS"))
	if err != nil || shards < 1 {
		t.Fatalf("campaign job: SHARDS=%q: want a positive number", env(c, "SHARDS"))
	}
	if !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
		t.Errorf("claim %s: access modes %v: every shard's pod writes it at once, want ReadWriteMany", pvc.Name, pvc.Spec.AccessModes)
	}
	return campaignSetup{job: job, c: c, claim: pvc.Name, shards: shards}
}

func TestCampaignJobIsIndexedByShard(t *testing.T) {
	s := campaignJob(t)
	spec := s.job.Spec
	switch {
	case spec.CompletionMode == nil || *spec.CompletionMode != batchv1.IndexedCompletion:
		t.Errorf("campaign job: completionMode %v, want Indexed (JOB_COMPLETION_INDEX picks the shard)", spec.CompletionMode)
	case spec.Completions == nil || int(*spec.Completions) != s.shards:
		t.Errorf("campaign job: completions %s, but SHARDS=%d: shards would be missed or run twice", orNone(spec.Completions), s.shards)
	case spec.Parallelism == nil || *spec.Parallelism > *spec.Completions:
		t.Errorf("campaign job: parallelism %s, want at most completions", orNone(spec.Parallelism))
	}
	if spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("campaign job: restartPolicy %q: a pod failure policy needs Never", spec.Template.Spec.RestartPolicy)
	}
	if spec.BackoffLimitPerIndex == nil {
		t.Errorf("campaign job: no backoffLimitPerIndex: one shard's failures would end the others")
	}
	failIndexOn1 := false
	if p := spec.PodFailurePolicy; p != nil {
		for _, r := range p.Rules {
			if r.Action == batchv1.PodFailurePolicyActionFailIndex && r.OnExitCodes != nil &&
				r.OnExitCodes.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && slices.Contains(r.OnExitCodes.Values, 1) &&
				r.OnExitCodes.ContainerName != nil && *r.OnExitCodes.ContainerName == s.c.Name {
				failIndexOn1 = true
			}
		}
	}
	if !failIndexOn1 {
		t.Errorf("campaign job: no pod failure rule fails the index on exit 1 (a violation) of container %s: it would run the shard again", s.c.Name)
	}
	checkVolume(t, "campaign job", s.job, s.c, s.claim)
	if lim := s.c.Resources.Limits.Cpu(); lim.IsZero() {
		t.Errorf("campaign job: no CPU limit: Go's GOMAXPROCS, and so the campaign's parallelism, would be the node's cores")
	}
}

func orNone(p *int32) string {
	if p == nil {
		return "none"
	}
	return strconv.Itoa(int(*p))
}

// checkVolume: the container's $OUT is where the job's claim is mounted.
func checkVolume(t *testing.T, what string, job *batchv1.Job, c corev1.Container, claim string) {
	t.Helper()
	out := env(c, "OUT")
	for _, m := range c.VolumeMounts {
		if m.MountPath != out {
			continue
		}
		for _, v := range job.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
				return
			}
		}
	}
	t.Errorf("%s: OUT=%q is not where claim %s is mounted (mounts %v)", what, out, claim, c.VolumeMounts)
}

// The campaign pod's script, run by sh for every completion index with a
// stand-in lockstep that notes its arguments: index i runs shard i+1 of
// SHARDS into a directory of its own, and the merge job's script then
// reads every shard's JSON.
func TestJobScriptsCoverEveryShardOnce(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh: the manifests' scripts need a POSIX shell")
	}
	s := campaignJob(t)
	bin, out := t.TempDir(), t.TempDir()
	stub := "#!/bin/sh\nfor a; do printf '%s\\n' \"$a\"; done >\"$CALLS\"\n"
	if err := os.WriteFile(filepath.Join(bin, "lockstep"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(c corev1.Container, calls string, extra ...string) []string {
		t.Helper()
		if len(c.Command) != 2 || c.Command[1] != "-c" || len(c.Args) != 1 {
			t.Fatalf("container %s: command %q args %q: want [sh -c] and one script", c.Name, c.Command, c.Args)
		}
		cmd := exec.Command("sh", "-c", c.Args[0])
		cmd.Env = []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "CALLS=" + calls}
		for _, e := range c.Env {
			if e.Name != "OUT" {
				cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
			}
		}
		cmd.Env = append(append(cmd.Env, "OUT="+out), extra...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("container %s: %v: %s", c.Name, err, b)
		}
		b, err := os.ReadFile(calls)
		if err != nil {
			t.Fatalf("container %s did not run lockstep: %v", c.Name, err)
		}
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	flagValue := func(args []string, name string) string {
		if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		t.Fatalf("lockstep %q: no %s", args, name)
		return ""
	}
	dirs := map[string]bool{}
	for i := 0; i < s.shards; i++ {
		args := run(s.c, filepath.Join(t.TempDir(), "calls"), fmt.Sprintf("JOB_COMPLETION_INDEX=%d", i))
		if args[0] != "campaign" {
			t.Fatalf("index %d runs lockstep %q", i, args)
		}
		if got, want := flagValue(args, "--shard"), fmt.Sprintf("%d/%d", i+1, s.shards); got != want {
			t.Errorf("index %d runs --shard %s, want %s", i, got, want)
		}
		for _, f := range []string{"--json", "--junit", "--report"} {
			p := flagValue(args, f)
			dir := filepath.Dir(p)
			if !strings.HasPrefix(p, out+string(filepath.Separator)) || dirs[p] {
				t.Errorf("index %d writes %s %s: want a path of its own under OUT", i, f, p)
			}
			dirs[p] = true
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				t.Errorf("index %d: %s's directory %s was not made", i, f, dir)
			}
			if f == "--json" {
				if err := os.WriteFile(p, []byte("{}"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	objs := decode(t, "merge-job.yaml")
	if len(objs.jobs) != 1 || len(objs.jobs[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("merge-job.yaml: want one job of one container")
	}
	mj := objs.jobs[0]
	mc := mj.Spec.Template.Spec.Containers[0]
	checkVolume(t, "merge job", mj, mc, s.claim)
	if mc.Image != s.c.Image {
		t.Errorf("merge job runs image %s, the campaign %s", mc.Image, s.c.Image)
	}
	args := run(mc, filepath.Join(t.TempDir(), "calls"))
	if args[0] != "merge" {
		t.Fatalf("merge job runs lockstep %q", args)
	}
	var inputs []string
	for _, a := range args {
		if strings.HasSuffix(a, ".json") && dirs[a] {
			inputs = append(inputs, a)
		}
	}
	if len(inputs) != s.shards {
		t.Errorf("merge job reads %d of the %d shards' JSON files: lockstep %q", len(inputs), s.shards, args)
	}
	for _, f := range []string{"--json", "--junit", "--report"} {
		if p := flagValue(args, f); dirs[p] || !strings.HasPrefix(p, out) {
			t.Errorf("merge job writes %s %s: want a new path under OUT", f, p)
		}
	}
}
