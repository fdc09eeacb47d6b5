// Package realenv is pipeline.Env for the real world: the wall clock, real
// goroutines and a randomly seeded generator. It is the one place pipeline
// processes outside the simulator get time and concurrency from, so the
// pipeline code itself stays identical in both worlds.
package realenv

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Env implements pipeline.Env with real time. Go's tasks get Base as their
// context (context.Background when nil).
type Env struct {
	Base context.Context

	once sync.Once
	rng  *rand.Rand
}

// Now is the wall clock.
func (e *Env) Now() time.Time { return time.Now() }

// Sleep waits d or until ctx is done.
func (e *Env) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Go runs fn in a new goroutine.
func (e *Env) Go(name string, fn func(ctx context.Context)) {
	ctx := e.Base
	if ctx == nil {
		ctx = context.Background()
	}
	go fn(ctx)
}

// Rand returns a generator seeded from the clock. It is not safe for
// concurrent use, like any *rand.Rand: give each goroutine its own Env.
func (e *Env) Rand() *rand.Rand {
	e.once.Do(func() {
		seed := uint64(time.Now().UnixNano())
		e.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	})
	return e.rng
}
