// Package sim is lockstep's deterministic world: a virtual clock, one event
// queue ordered by (virtual time, seeded tie-break, sequence), one seeded PRNG,
// and tasks of which exactly one runs at a time. On top of that kernel it
// models nodes (processes that crash, restart, pause and resume), a network
// (latency, loss, partitions), durable storage with an explicit sync, and
// request/response calls whose timeouts are ambiguous.
//
// One seed gives one run, bit for bit: every scheduling decision and message
// is folded into a trace hash, and CheckDeterminism runs a seed twice and
// names the first event where two runs part.
//
// The main loop, for a test:
//
//	w := sim.New(sim.Config{Seed: 42})
//	db := w.AddNode("db", func(n *sim.Node) any { return newDB(n.Disk()) })
//	app := w.AddNode("app", nil)
//	app.Go("client", func(ctx context.Context) {
//		r, err := sim.Call(ctx, app, db, time.Second, func(d *DB) (int, error) { return d.Put(1), nil })
//		...
//	})
//	res := w.Run(time.Minute)
//
// Code that runs inside the world (tasks and call handlers) must take time,
// concurrency and randomness only from the world: Env, Sleep, Go, Call, Rand.
package sim
