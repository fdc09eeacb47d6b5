package pipeline

import (
	"context"
	"errors"
	"fmt"

	"lockstep/model"
)

// DualWriter is the naive baseline the pipeline is compared with: the
// application commits to the source, then writes each store itself, one blind
// write per change, retrying timeouts. Two clients can reach the stores in
// different orders, a crash between writes leaves the stores behind for good,
// and a retried write whose first attempt landed is applied twice.
type DualWriter struct {
	Env     Env
	Source  Source
	Stores  []DirectStore
	Retries int // extra attempts after a timeout (default 2)
}

// Do runs one application operation the naive way.
func (d *DualWriter) Do(ctx context.Context, fn TxnFunc) error {
	retries := d.Retries
	if retries == 0 {
		retries = 2
	}
	txn, err := d.Source.Exec(ctx, fn)
	for i := 0; i < retries && errors.Is(err, ErrTimeout); i++ {
		txn, err = d.Source.Exec(ctx, fn)
	}
	if err != nil {
		return fmt.Errorf("dual write: source: %w", err)
	}
	if len(txn.Changes) == 0 {
		return nil
	}
	// One write per row: what the transaction left, as an application
	// that writes its stores after committing would send.
	txn = model.Net(txn)
	for _, s := range d.Stores {
		err := s.Write(ctx, txn)
		for i := 0; i < retries && errors.Is(err, ErrTimeout); i++ {
			err = s.Write(ctx, txn)
		}
		if err != nil {
			return fmt.Errorf("dual write: %s: txn %d: %w", s.Kind(), txn.XID, err)
		}
	}
	return nil
}
