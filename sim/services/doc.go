// Package services holds the simulated services the pipeline runs against in
// the simulator: a source database with a WAL and a logical replication slot,
// a replicated log with Kafka's semantics over three brokers, and the three
// kinds of downstream store. Each is the state of a sim.Node (so it crashes,
// restarts from its disk and pauses like a process), and each comes with a
// client that implements the matching pipeline port by calls over the
// simulated network.
package services

import (
	"errors"
	"time"
)

// Errors the simulated services answer with.
var (
	ErrAborted      = errors.New("transaction rolled back")
	ErrStaleSession = errors.New("replication session ended (source restarted, or another session took the slot)")
	// ErrSlotInUse: another process streams from the replication slot
	// (PostgreSQL's 55006, "replication slot is active for PID").
	ErrSlotInUse     = errors.New("replication slot is active for another process")
	ErrNotLeader     = errors.New("not the partition leader")
	ErrNotEnoughISR  = errors.New("not enough in-sync replicas")
	ErrOffline       = errors.New("partition offline: no leader")
	ErrOutOfRange    = errors.New("offset out of range")
	ErrOutOfSequence = errors.New("producer sequence out of order")
)

// DefaultTimeout is how long clients wait for an answer.
const DefaultTimeout = 100 * time.Millisecond
