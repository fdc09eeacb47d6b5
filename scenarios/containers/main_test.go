package containers

import (
	"context"
	"os"
	"testing"
)

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
