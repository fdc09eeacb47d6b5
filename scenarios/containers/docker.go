package containers

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Images the container world runs; images/build.sh (make images) builds
// them offline and tags them :current. LOCKSTEP_PIPELINE_IMAGE names
// another pipeline image: a build of one branch, run beside others that
// use :current.
var (
	BaseImage     = "lockstep/base:current"
	PipelineImage = cmp.Or(os.Getenv("LOCKSTEP_PIPELINE_IMAGE"), "lockstep/pipeline:current")
)

// Labels on everything a run creates, so leftovers of a killed run can be
// found and removed.
const (
	labelRun = "lockstep.run"
	labelPID = "lockstep.pid"
)

// docker runs the docker CLI. Faults use it directly (kill -s KILL, pause,
// start) because those are one-line operations with exact semantics.
func docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// ErrNoDocker says Docker cannot be used here, and what to do.
var ErrNoDocker = errors.New("Docker is not available")

// Available reports whether the Docker daemon is reachable and the images
// exist, with an error that says what to do when not.
func Available(ctx context.Context) error {
	if _, err := exec.LookPath("docker"); err != nil {
		return fmt.Errorf("%w: no docker command (apt-get install -y docker.io, then start dockerd)", ErrNoDocker)
	}
	if _, err := docker(ctx, "info", "--format", "{{.ServerVersion}}"); err != nil {
		return fmt.Errorf("%w: cannot reach the daemon (start dockerd): %v", ErrNoDocker, err)
	}
	for _, img := range []string{BaseImage, PipelineImage} {
		if _, err := docker(ctx, "image", "inspect", "--format", "{{.Id}}", img); err != nil {
			return fmt.Errorf("%w: image %s is missing (run make images)", ErrNoDocker, img)
		}
	}
	return nil
}

// RemoveStale removes containers and networks left by runs whose process is
// gone (a killed test or CLI), so nothing accumulates.
func RemoveStale(ctx context.Context) error {
	out, err := docker(ctx, "ps", "-a", "--filter", "label="+labelRun, "--format", `{{.ID}} {{.Label "`+labelPID+`"}}`)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		id, pid, ok := strings.Cut(line, " ")
		if !ok || alive(pid) {
			continue
		}
		_, _ = docker(ctx, "rm", "-f", "-v", id)
	}
	nets, err := docker(ctx, "network", "ls", "--filter", "label="+labelRun, "--format", `{{.ID}} {{.Label "`+labelPID+`"}}`)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(nets, "\n") {
		id, pid, ok := strings.Cut(line, " ")
		if !ok || alive(pid) {
			continue
		}
		_, _ = docker(ctx, "network", "rm", id)
	}
	return nil
}

func alive(pid string) bool {
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		return false
	}
	return syscall.Kill(n, 0) == nil || n == os.Getpid()
}

// hostRun runs a host command (nsenter, iptables, tc).
func hostRun(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}
