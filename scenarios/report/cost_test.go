package report

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"lockstep/scenarios"
)

// The index shows what each system cost the application, the three
// systems side by side, and a run's report says what it cost.
func TestCampaignShowsEachSystemsCost(t *testing.T) {
	sc := scenarios.ByName("steady")
	cfg := scenarios.CampaignConfig{Scenarios: []*scenarios.Scenario{sc}, Systems: scenarios.AllSystems, Seeds: 1, FirstSeed: 1,
		Parallel: 1, Options: scenarios.Options{Txns: 100}}
	sum := scenarios.Campaign(cfg)
	dir := t.TempDir()
	if err := WriteCampaign(dir, cfg, sum, CampaignOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	table := regexp.MustCompile(`(?s)<table id="cost">.*?</table>`).FindString(string(b))
	for _, sys := range scenarios.AllSystems {
		c := sum.Cell("steady", sys)
		if c.Metrics.Throughput <= 0 || c.Metrics.LatencyP99 <= 0 {
			t.Errorf("%s: metrics %+v", sys, c.Metrics)
		}
		if !strings.Contains(table, string(sys)+": txn/s") {
			t.Errorf("the cost table has no %s column: %s", sys, table)
		}
	}
	out, err := scenarios.Run(sc, scenarios.TwoPC, 1, scenarios.Options{Txns: 100})
	if err != nil {
		t.Fatal(err)
	}
	if r := FromOutcome(out); len(r.Notes) == 0 || !strings.HasPrefix(r.Notes[0], "cost: ") {
		t.Errorf("run report notes %q, want the cost first", r.Notes)
	}
}
