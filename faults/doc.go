// Package faults is lockstep's fault vocabulary: what can go wrong in a run
// (crash, pause, partition, slow or lossy links, clock jumps, a Kafka leader
// failover, unclean leader election, appends whose acknowledgement or request
// the log loses, log retention deleting old records, a dropped replication
// slot), written down as plain data so that a run's faults can be
// generated from a seed, printed into a bug report, pasted back and replayed.
//
// A Plan is a time-ordered list of Faults followed by a quiet phase. Faults
// happen before Plan.Quiet; at Quiet the world undoes everything still in
// force (restarts crashed nodes, resumes paused ones, heals partitions and
// links, turns unclean leader election off) and the system gets time to
// converge, so the checker can judge convergence. Plans print and parse as
// text, one fault per line:
//
//	swarm crash,partition,delay,lost-append,retention,slot-drop
//	@1.5s crash capture
//	@3s restart capture
//	@4s partition capture,db | broker1,broker2
//	@4.2s partition app1 -> db
//	@5s delay applier-cache->cache 20ms..80ms
//	@6s lost-append capture 0.9
//	@7s retention 1.5s
//	@7.5s slot-drop db
//	@8s heal
//	quiet @20s
//
// Generate draws a plan from a seeded PRNG with a swarm-style mix: each seed
// enables a random subset of the allowed kinds, each at its own random rate,
// so that across many seeds some runs hammer one fault kind and others combine
// several. Plans are well-formed (see Check).
//
// Worlds (the simulator, the containers) implement only the primitive actions
// of Target; an Injector dispatches faults to it and remembers what is in
// force, so HealAll can undo exactly that at Quiet. A world runs a plan so:
//
//	inj := faults.NewInjector(target)
//	for _, f := range plan.Faults {
//		sleepUntil(f.At)
//		if err := inj.Apply(f); err != nil { ... }
//	}
//	sleepUntil(plan.Quiet)
//	if err := inj.HealAll(); err != nil { ... }
//	// quiet phase: let the stores converge, then check.
//
// Plan.Windows says when each fault was in force, for the checker's witnesses.
//
// The package is pure data and functions apart from the Injector's calls into
// its Target: no clock, no goroutines, no randomness but the caller's PRNG.
package faults
