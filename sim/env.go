package sim

import (
	"context"
	"math/rand/v2"
	"time"

	"lockstep/pipeline"
)

// Env returns the pipeline.Env of this node: virtual time (with this node's
// clock skew), parking sleeps, tasks on this node and the world's PRNG.
func (n *Node) Env() pipeline.Env { return nodeEnv{n} }

type nodeEnv struct{ n *Node }

func (e nodeEnv) Now() time.Time { return e.n.w.cfg.Epoch.Add(e.n.Now()) }

func (e nodeEnv) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.n.w.sleep(d)
	return ctx.Err()
}

func (e nodeEnv) Go(name string, fn func(ctx context.Context)) { e.n.Go(name, fn) }

func (e nodeEnv) Rand() *rand.Rand { return e.n.w.rng }
