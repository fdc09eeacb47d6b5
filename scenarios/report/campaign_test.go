package report

import (
	"html"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"lockstep/checker"
	"lockstep/scenarios"
)

// The index lists every failing run by its token; the first PerCell of
// each scenario and system link to a report that exists, and to its
// shrunk form when a Shrink hook is given; the rest say why they have
// none.
func TestWriteCampaign(t *testing.T) {
	sc, err := scenarios.Resolve("crash-capture")
	if err != nil {
		t.Fatal(err)
	}
	cfg := scenarios.CampaignConfig{Scenarios: []*scenarios.Scenario{sc}, Systems: scenarios.Systems, Seeds: 4, FirstSeed: 1,
		Parallel: 2, Options: scenarios.Options{Txns: 200}}
	sum := scenarios.Campaign(cfg)
	failing := sum.Cell("crash-capture", scenarios.DualWrite).Failing
	if len(failing) < 2 {
		t.Fatalf("want at least 2 failing dual-write runs to test the cap, got %v", failing)
	}
	dir := t.TempDir()
	shrunk := 0
	opts := CampaignOptions{PerCell: 1, Shrink: func(r scenarios.Repro) (*scenarios.Outcome, error) {
		shrunk++
		return Replay(r)
	}}
	if err := WriteCampaign(dir, cfg, sum, opts); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	selfContained(t, page)
	text := html.UnescapeString(page)
	for _, tok := range failing {
		if !strings.Contains(text, "lockstep repro "+tok) {
			t.Errorf("failing run %s not listed", tok)
		}
	}
	links := regexp.MustCompile(`href="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(links) != 2 || shrunk != 1 {
		t.Fatalf("want one report and one shrunk report linked (PerCell 1), got %d links, %d shrinks", len(links), shrunk)
	}
	for _, l := range links {
		if _, err := os.Stat(filepath.Join(dir, l[1])); err != nil {
			t.Errorf("link %s: %v", l[1], err)
		}
	}
	if !strings.Contains(text, "no report: past the first 1") {
		t.Error("the runs past PerCell do not say why they have no report")
	}
	if !strings.Contains(page, `<table id="systems">`) || !strings.Contains(text, "seeds/s per core") {
		t.Error("no systems table or no seeds/s")
	}
}

// Notes on unclaimed anomalies name the scenarios they came from and who
// claims the property there, from the scenarios' own claims.
func TestUnclaimedNotes(t *testing.T) {
	steady, _ := scenarios.Resolve("steady")
	unclean, _ := scenarios.Resolve("unclean-election")
	cfg := scenarios.CampaignConfig{Scenarios: []*scenarios.Scenario{steady, unclean}, Systems: scenarios.Systems}
	sum := &scenarios.Summary{Cells: []*scenarios.Cell{
		{Scenario: "steady", System: scenarios.DualWrite, Unclaimed: map[checker.Class]int{checker.Torn: 2}},
		{Scenario: "unclean-election", System: scenarios.Pipeline, Unclaimed: map[checker.Class]int{checker.Lost: 3}},
		{Scenario: "steady", System: scenarios.Pipeline, Unclaimed: map[checker.Class]int{}},
	}}
	got := unclaimedNotes(cfg, sum, map[string]*scenarios.Scenario{"steady": steady, "unclean-election": unclean})
	want := []string{
		"pipeline, lost: 3 unclaimed (unclean-election 3: no store claims no-loss there (an unclean election may lose acknowledged records)).",
		"dualwrite, torn: 2 unclaimed (steady 2: atomicity is claimed there by replica only).",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
