package containers

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestWorldStartsAndLeavesNothingBehind(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w, err := Start(ctx, Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(w.Services()); got != 7 {
		t.Errorf("%d services, want 7 (3 PostgreSQL, Redis, 3 Kafka)", got)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	left, _ := docker(ctx, "ps", "-aq", "--filter", "label="+labelRun+"="+w.id)
	nets, _ := docker(ctx, "network", "ls", "-q", "--filter", "label="+labelRun+"="+w.id)
	if strings.TrimSpace(left+nets) != "" {
		t.Fatalf("left behind: containers %q networks %q", left, nets)
	}
}
