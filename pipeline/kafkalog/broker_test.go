package kafkalog

import (
	"testing"

	"lockstep/pipeline/kafkalog/kafkatest"
)

// startBroker runs a throwaway single-node Kafka for the test and returns
// its address.
func startBroker(t testing.TB) string {
	t.Helper()
	return kafkatest.Start(t).Addr
}
