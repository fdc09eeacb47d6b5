package main

import (
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"lockstep/scenarios/containers"
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
		{[]string{"bench", "--max-rate", "10s"}, "lockstep bench: --max-rate is for the side-by-side benchmark: add --world containers --compare debezium"},
		{[]string{"bench", "--debezium", "tuned"}, "lockstep bench: --debezium is for the side-by-side benchmark: add --world containers --compare debezium"},
		{[]string{"bench", "--world", "containers", "--compare", "debezium", "--debezium", "fast"}, `lockstep bench: --debezium takes stock and tuned, not "fast"`},
		{[]string{"bench", "--world", "containers", "--compare", "debezium", "--debezium", "tuned,tuned"}, "lockstep bench: --debezium names tuned twice"},
		{[]string{"bench", "--world", "containers", "--compare", "debezium", "--poll", "-1s"}, "lockstep bench: --poll and --flush must not be negative"},
		{[]string{"bench", "--world", "containers", "--compare", "debezium", "--max-rate", "10ms"}, "lockstep bench: --max-rate must be 0 (none) or at least 1s, not 10ms"},
		{[]string{"bench", "--world", "containers", "--compare", "debezium", "--max-clients", "0"}, "lockstep bench: --max-clients must be at least 1, not 0"},
	} {
		code, out, errw := lockstep(c.args...)
		if code != 2 || out != "" || strings.TrimSpace(errw) != c.want {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, out, errw, c.want)
		}
	}
}

// --debezium picks the connectors and --poll and --flush shape the tuned
// one only: stock keeps Debezium's defaults.
func TestBenchCompareVariants(t *testing.T) {
	for _, c := range []struct {
		variants string
		want     []string
	}{{"stock,tuned", []string{"stock", "tuned"}}, {"tuned", []string{"tuned"}}, {"stock", []string{"stock"}}} {
		cc := containers.CompareConfig{Clients: 4, Duration: time.Minute, KillAt: 30 * time.Second}
		if err := checkCompare(flag.NewFlagSet("bench", flag.ContinueOnError), "containers", "debezium", &cc, c.variants, 20*time.Millisecond, 2*time.Second); err != nil {
			t.Fatalf("%s: %v", c.variants, err)
		}
		var got []string
		for _, v := range cc.Debezium {
			got = append(got, v.Name)
			o := v.Options
			if tuned := v.Name == "tuned"; tuned != (o.Poll == 20*time.Millisecond && o.Flush == 2*time.Second) || !tuned && (o.Poll != 0 || o.Flush != 0) {
				t.Errorf("%s: %s has poll %v flush %v", c.variants, v.Name, o.Poll, o.Flush)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("--debezium %s: %v, want %v", c.variants, got, c.want)
		}
	}
}
