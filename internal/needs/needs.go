// Package needs is how a test says a real service it needs (PostgreSQL,
// Kafka's jars, Java, Redis) is missing: a skip with a one-line reason on a
// developer's machine, a failure in CI (LOCKSTEP_REQUIRE_DOCKER=1), which
// installs every service, so a missing one there is a broken environment
// and never a reason to pass.
package needs

import (
	"os"
	"testing"
)

// Missing skips t, or fails it when LOCKSTEP_REQUIRE_DOCKER=1, saying what
// is missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("LOCKSTEP_REQUIRE_DOCKER") == "1" {
		t.Fatalf("LOCKSTEP_REQUIRE_DOCKER=1 but "+format, args...)
	}
	t.Skipf("skipping: "+format, args...)
}
