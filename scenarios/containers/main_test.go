package containers

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain removes every container and network of this test process when
// it is interrupted, and fails the package if anything was left behind.
func TestMain(m *testing.M) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "containers: interrupted; removing this run's containers")
		CloseAll(context.Background())
		os.Exit(1)
	}()
	code := m.Run()
	CloseAll(context.Background())
	if left := leftovers(); left != "" {
		fmt.Fprintf(os.Stderr, "containers: left behind after the tests: %s\n", left)
		code = 1
	}
	os.Exit(code)
}

// leftovers lists containers and networks labelled with this process.
func leftovers() string {
	if Available(context.Background()) != nil {
		return ""
	}
	filter := "label=" + labelPID + "=" + strconv.Itoa(os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _ := docker(ctx, "ps", "-aq", "--filter", filter)
	n, _ := docker(ctx, "network", "ls", "-q", "--filter", filter)
	return strings.TrimSpace(strings.ReplaceAll(c+" "+n, "\n", " "))
}

// requireDocker skips a container test with one line when Docker or the
// images are missing, and fails it instead when LOCKSTEP_REQUIRE_DOCKER=1
// (CI sets it, so a broken Docker set-up can never pass as skipped).
func requireDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping container test in -short mode")
	}
	if err := Available(context.Background()); err != nil {
		if os.Getenv("LOCKSTEP_REQUIRE_DOCKER") == "1" {
			t.Fatalf("LOCKSTEP_REQUIRE_DOCKER=1 but %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}
