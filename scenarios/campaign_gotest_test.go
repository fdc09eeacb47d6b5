package scenarios_test

import (
	"testing"

	"lockstep/scenarios"
	"lockstep/scenarios/campaigntest"
)

// TestCampaign is a campaign inside go test (package campaigntest). With no
// -lockstep flag it replays the failfiles in testdata/lockstep/TestCampaign
// and runs seed 1 of every scenario at 100 transactions, a few seconds; with
// them it is the campaign they ask for:
//
//	go test ./scenarios -run '^TestCampaign$' -lockstep.seeds=10000 -timeout 0
//	go test ./scenarios -run '^TestCampaign$' -lockstep.duration=20m -lockstep.scenario=partitions
//	go test ./scenarios -run '^TestCampaign$' -lockstep.seed=7 -lockstep.scenario=crash-capture+confirm-before-ack
func TestCampaign(t *testing.T) {
	cfg, err := campaigntest.FromFlags(campaigntest.Config{Seeds: 1, Options: scenarios.Options{Txns: 100}})
	if err != nil {
		t.Fatal(err)
	}
	campaigntest.Run(t, cfg)
}
