package main

import (
	"strings"
	"testing"
)

// The side-by-side benchmark's flags are checked before anything starts:
// each bad combination is one line and exit 2, without Docker.
func TestBenchCompareFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--compare", "debezium"}, "lockstep bench: --compare debezium runs real services: add --world containers"},
		{[]string{"bench", "--world", "containers"}, "lockstep bench: bench in containers is the side-by-side benchmark: add --compare debezium"},
		{[]string{"bench", "--world", "containers", "--compare", "flink"}, `lockstep bench: --compare takes debezium, not "flink"`},
		{[]string{"bench", "--world", "moon"}, `lockstep bench: --world must be sim or containers, not "moon"`},
		{[]string{"bench", "--clients", "8"}, "lockstep bench: --clients is for the side-by-side benchmark: add --world containers --compare debezium"},
		{[]string{"bench", "--world", "containers", "--compare", "debezium", "--clients", "0"}, "lockstep bench: --clients must be at least 1, not 0"},
		{[]string{"bench", "--world", "containers", "--compare", "debezium", "--duration", "10s", "--kill-at", "10s"}, "lockstep bench: --kill-at 10s must be within the load (10s), a second before its end"},
	} {
		code, out, errw := lockstep(c.args...)
		if code != 2 || out != "" || strings.TrimSpace(errw) != c.want {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, out, errw, c.want)
		}
	}
}
