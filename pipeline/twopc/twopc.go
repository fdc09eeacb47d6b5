// Package twopc is the third way lockstep compares of keeping several stores
// in sync: distributed transactions with two-phase commit (XA). The
// application hands each transaction to a coordinator, which runs it on the
// database of record and prepares it there (PREPARE TRANSACTION), prepares
// its net changes on every other transactional store (the replica and the
// search index), writes its decision to a durable decision log, and then
// commits the prepared transactions everywhere (COMMIT PREPARED). A cache
// has no prepare: as such systems do in practice, the coordinator writes it
// after the decision.
//
// A prepared transaction holds its row locks until the decision reaches
// it, so other transactions on those rows wait, or time out, while a
// coordinator is down, paused or cut off: the price of 2PC's atomicity.
// Recovery resolves in-doubt transactions after a coordinator restart:
// those its decision log says committed are committed, every other
// prepared one is rolled back (presumed abort: no record, no commit).
//
// Like the pipeline, the coordinator is written against ports (Source,
// Store, DecisionLog, pipeline.Env) and runs unchanged in the simulator.
//
// The coordinator's main loop reads:
//
//	txn := Source.Prepare(gid, fn)        // the application's transaction, prepared
//	for each store: Store.Prepare(gid, net(txn))
//	Log.Commit(gid, net(txn))             // the decision, durable: from here on it commits
//	lsn := Source.CommitPrepared(gid)     // the commit LSN labels every store's rows
//	for each store: Store.CommitPrepared(gid, lsn)
//	Cache.Write(net(txn) at lsn)
//	Log.Done(gid)
package twopc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
)

// Errors of participants.
var (
	// ErrLockTimeout: the participant waited longer than its lock timeout
	// for rows another transaction holds (lock_timeout): nothing was
	// prepared, the transaction may be tried again.
	ErrLockTimeout = errors.New("lock timeout: rows held by another transaction")
	// ErrUnknownGID: the participant holds no prepared transaction of that
	// id (PostgreSQL: "prepared transaction with identifier ... does not
	// exist"): it was committed or rolled back already, or never prepared.
	ErrUnknownGID = errors.New("no prepared transaction with that identifier")
)

// Source is the database of record as a 2PC participant.
type Source interface {
	// Prepare runs fn in one transaction and prepares it under gid: its
	// changes are durable and its rows locked until CommitPrepared or
	// RollbackPrepared. It returns the changes (no commit LSN yet). A
	// transaction that wrote nothing is not prepared (a read-only vote)
	// and returns no changes. fn failing rolls it back (the error wraps
	// it); ErrLockTimeout: it waited too long for rows another prepared
	// transaction holds; ErrTimeout: unknown, it may have prepared.
	Prepare(ctx context.Context, gid string, fn pipeline.TxnFunc) (model.Txn, error)
	// CommitPrepared commits gid and returns its commit LSN; for a gid it
	// committed before, the LSN it committed at. ErrUnknownGID when gid is
	// neither prepared nor committed.
	CommitPrepared(ctx context.Context, gid string) (model.LSN, error)
	// RollbackPrepared rolls gid back; nothing when it is not prepared.
	RollbackPrepared(ctx context.Context, gid string) error
	// Prepared lists the prepared transactions (pg_prepared_xacts).
	Prepared(ctx context.Context) ([]string, error)
}

// Store is a transactional store as a 2PC participant.
type Store interface {
	Kind() model.StoreKind
	// Prepare writes t's changes under gid, durable and locked, but not
	// visible until CommitPrepared. Errors as Source.Prepare's.
	Prepare(ctx context.Context, gid string, t model.Txn) error
	// CommitPrepared makes gid's changes visible, labelled with the
	// source's commit LSN. ErrUnknownGID when gid is not prepared (it
	// committed before, or was rolled back).
	CommitPrepared(ctx context.Context, gid string, lsn model.LSN) error
	// RollbackPrepared drops gid; nothing when it is not prepared.
	RollbackPrepared(ctx context.Context, gid string) error
	// Prepared lists the prepared transactions.
	Prepared(ctx context.Context) ([]string, error)
}

// Decision is a commit decision: the transaction's id and its net changes,
// which the cache gets once every participant committed (kept in the
// record so that recovery can still write them).
type Decision struct {
	GID string
	Txn model.Txn
}

// DecisionLog is the coordinator's durable log of commit decisions (its
// transaction log). Only commits are logged: presumed abort.
type DecisionLog interface {
	// Commit durably records that gid commits. Once it returns, the
	// transaction commits, whatever crashes.
	Commit(ctx context.Context, d Decision) error
	// Done forgets gid's decision once every participant committed it.
	Done(ctx context.Context, gid string) error
	// Decisions is every decision not yet done, in the order logged.
	Decisions(ctx context.Context) ([]Decision, error)
}

// Bugs are known 2PC bugs the harness must be able to catch, each a broken
// step next to the right one.
type Bugs struct {
	// CommitBeforePrepared has the coordinator decide commit once the
	// source prepared, then prepare and commit the other stores one by
	// one: a store that fails to prepare (down, cut off, a lock timeout)
	// misses a transaction the source committed.
	CommitBeforePrepared bool
	// ForgetInDoubt has a restarted coordinator forget its decision log and
	// the transactions its earlier incarnation prepared: they stay
	// prepared for good, holding their locks, and a decided one that
	// reached some participants but not others stays half committed.
	ForgetInDoubt bool
	// HeuristicRollback has the replica and the search index roll back a
	// prepared transaction on their own when its decision has not come
	// within HeuristicAfter (a heuristic decision taken as a rollback):
	// the source commits what they dropped.
	HeuristicRollback bool
}

// Any reports whether some bug is on.
func (b Bugs) Any() bool { return b != Bugs{} }

// BugNames maps each 2PC bug's command-line name to a setter.
var BugNames = map[string]func(*Bugs){
	"commit-before-prepared": func(b *Bugs) { b.CommitBeforePrepared = true },
	"forget-in-doubt":        func(b *Bugs) { b.ForgetInDoubt = true },
	"heuristic-rollback":     func(b *Bugs) { b.HeuristicRollback = true },
}

// BugList is the 2PC bug names, sorted.
func BugList() []string {
	names := make([]string, 0, len(BugNames))
	for n := range BugNames {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Coordinator runs application transactions with two-phase commit. One
// Coordinator is one process incarnation: ID must differ from every earlier
// incarnation's (transaction ids are ID.n), and Recover must run when it
// starts. Do and Recover may run concurrently (a coordinator service runs
// each client's transaction, and its recovery, on goroutines of their own).
type Coordinator struct {
	Env    pipeline.Env
	ID     string
	Source Source
	Stores []Store
	// Cache is written once a transaction committed everywhere; it is no
	// participant (a cache has no prepare), so nothing orders its writes.
	Cache  pipeline.DirectStore
	Log    DecisionLog
	Bugs   Bugs
	Logger *slog.Logger
	// Backoff is the pause between attempts of the commit phase (default
	// 50ms).
	Backoff time.Duration

	// mu guards n and active.
	mu sync.Mutex
	n  int
	// active is the transactions a Do of this process is working on:
	// recovery leaves them alone.
	active map[string]bool
}

// begin names a new transaction and marks it active.
func (c *Coordinator) begin() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active == nil {
		c.active = map[string]bool{}
	}
	c.n++
	gid := fmt.Sprintf("%s.%d", c.ID, c.n)
	c.active[gid] = true
	return gid
}

func (c *Coordinator) end(gid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.active, gid)
}

// isActive reports whether a Do of this process works on gid.
func (c *Coordinator) isActive(gid string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active[gid]
}

func (c *Coordinator) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Coordinator) backoff() time.Duration {
	if c.Backoff == 0 {
		return 50 * time.Millisecond
	}
	return c.Backoff
}

// Do runs one application transaction with two-phase commit. nil: it
// committed everywhere it had to (the cache write may still have failed:
// the cache is no participant). An error before the decision means it
// rolled back (or, for a timeout on the source, may not have run at all);
// once the decision is logged, Do only returns when the commit phase is
// done or ctx ends (the process died: recovery finishes it).
func (c *Coordinator) Do(ctx context.Context, fn pipeline.TxnFunc) error {
	gid := c.begin()
	defer c.end(gid)
	txn, err := c.Source.Prepare(ctx, gid, fn)
	if err != nil {
		// A prepare that timed out may have happened: roll back.
		c.rollback(ctx, gid)
		return fmt.Errorf("2pc %s: prepare on the source: %w", gid, err)
	}
	if len(txn.Changes) == 0 {
		return nil // read-only: nothing was prepared
	}
	d := Decision{GID: gid, Txn: model.Net(txn)}
	if c.Bugs.CommitBeforePrepared {
		return c.commitEarly(ctx, d)
	}
	for _, s := range c.Stores {
		if err := s.Prepare(ctx, gid, d.Txn); err != nil {
			c.rollback(ctx, gid)
			return fmt.Errorf("2pc %s: prepare on the %s: %w", gid, s.Kind(), err)
		}
	}
	if err := c.Log.Commit(ctx, d); err != nil {
		c.rollback(ctx, gid)
		return fmt.Errorf("2pc %s: log the decision: %w", gid, err)
	}
	return c.finish(ctx, d, -1)
}

// commitEarly is the CommitBeforePrepared bug: the decision is taken with
// the source alone prepared, and a store that then fails to prepare is
// left without the transaction.
func (c *Coordinator) commitEarly(ctx context.Context, d Decision) error {
	if err := c.Log.Commit(ctx, d); err != nil {
		c.rollback(ctx, d.GID)
		return fmt.Errorf("2pc %s: log the decision: %w", d.GID, err)
	}
	for _, s := range c.Stores {
		if err := s.Prepare(ctx, d.GID, d.Txn); err != nil {
			c.logger().Warn("2pc: a store failed to prepare after the decision; going on", "gid", d.GID, "store", s.Kind(), "err", err)
		}
	}
	return c.finish(ctx, d, -1)
}

// rollback rolls gid back on every participant, once each: one it does
// not reach keeps it prepared until recovery rolls it back (presumed
// abort: nothing was logged).
func (c *Coordinator) rollback(ctx context.Context, gid string) {
	if err := c.Source.RollbackPrepared(ctx, gid); err != nil {
		c.logger().Debug("2pc: rollback on the source failed; recovery will", "gid", gid, "err", err)
	}
	for _, s := range c.Stores {
		if err := s.RollbackPrepared(ctx, gid); err != nil {
			c.logger().Debug("2pc: rollback failed; recovery will", "gid", gid, "store", s.Kind(), "err", err)
		}
	}
}

// errGiveUp ends a bounded commit phase: recovery tries again later.
var errGiveUp = errors.New("participant unreachable: left for recovery")

// finish is the commit phase of a decided transaction: the source first,
// whose commit LSN labels the stores' rows, then every store, then the
// cache, then the decision is done. It tries each participant until it
// answers (attempts < 0) or attempts times (recovery's passes), since a
// decided transaction must commit everywhere.
func (c *Coordinator) finish(ctx context.Context, d Decision, attempts int) error {
	var lsn model.LSN
	err := c.retry(ctx, attempts, func() error {
		var err error
		lsn, err = c.Source.CommitPrepared(ctx, d.GID)
		return err
	})
	if errors.Is(err, ErrUnknownGID) {
		// Decided, yet the source holds nothing to commit: an earlier
		// attempt committed it (nothing rolls back a decided
		// transaction) and its answer was lost, to a crash of this
		// process or a cut connection. PostgreSQL forgets a gid once
		// committed, so it cannot say so; its commit LSN is unknown (0),
		// which the PostgreSQL stores do not use. The stores must commit
		// it too: rolling them back would lose what the source holds.
		c.logger().Info("2pc: the source no longer holds a decided transaction: committed before", "gid", d.GID)
		lsn, err = 0, nil
	}
	if err != nil {
		return fmt.Errorf("2pc %s: commit on the source: %w", d.GID, err)
	}
	for _, s := range c.Stores {
		err := c.retry(ctx, attempts, func() error { return s.CommitPrepared(ctx, d.GID, lsn) })
		switch {
		case errors.Is(err, ErrUnknownGID):
			// Committed by an earlier attempt (or gone: a heuristic
			// rollback, which only the checker can tell).
		case err != nil:
			return fmt.Errorf("2pc %s: commit on the %s: %w", d.GID, s.Kind(), err)
		}
	}
	if c.Cache != nil {
		t := d.Txn
		t.CommitLSN = lsn
		if err := c.retry(ctx, 3, func() error { return c.Cache.Write(ctx, t) }); err != nil {
			c.logger().Debug("2pc: cache write failed after commit", "gid", d.GID, "err", err)
		}
	}
	if err := c.Log.Done(ctx, d.GID); err != nil {
		return fmt.Errorf("2pc %s: mark the decision done: %w", d.GID, err)
	}
	return nil
}

// retry calls fn until it succeeds, fails for good (ErrUnknownGID), ctx
// ends, or attempts (when >= 0) are used up.
func (c *Coordinator) retry(ctx context.Context, attempts int, fn func() error) error {
	for i := 0; ; i++ {
		err := fn()
		if err == nil || errors.Is(err, ErrUnknownGID) {
			return err
		}
		if attempts >= 0 && i+1 >= attempts {
			return fmt.Errorf("%w: %w", errGiveUp, err)
		}
		if serr := c.Env.Sleep(ctx, c.backoff()); serr != nil {
			return serr
		}
	}
}

// Recover resolves in-doubt transactions, once: every decision of the log
// is carried out (one attempt per participant), and every transaction a
// participant holds prepared that no Do of this process works on and the
// log did not decide is rolled back (presumed abort). It runs when the
// coordinator starts and then now and then, since a prepare that timed out
// may land after its rollback.
func (c *Coordinator) Recover(ctx context.Context) error {
	decisions, err := c.Log.Decisions(ctx)
	if err != nil {
		return fmt.Errorf("2pc recovery: read the decision log: %w", err)
	}
	var first error
	for _, d := range decisions {
		if c.isActive(d.GID) || c.forgets(d.GID) {
			continue
		}
		if err := c.finish(ctx, d, 1); err != nil && first == nil {
			first = err
		}
	}
	lists := []func() ([]string, error){func() ([]string, error) { return c.Source.Prepared(ctx) }}
	rollbacks := []func(string) error{func(gid string) error { return c.Source.RollbackPrepared(ctx, gid) }}
	for _, s := range c.Stores {
		lists = append(lists, func() ([]string, error) { return s.Prepared(ctx) })
		rollbacks = append(rollbacks, func(gid string) error { return s.RollbackPrepared(ctx, gid) })
	}
	for i, list := range lists {
		gids, err := list()
		if err != nil {
			if first == nil {
				first = fmt.Errorf("2pc recovery: list prepared transactions: %w", err)
			}
			continue
		}
		slices.Sort(gids)
		for _, gid := range gids {
			// The decision log is read again now: a Do may have decided
			// since the list was taken.
			if c.isActive(gid) || c.forgets(gid) || c.decided(ctx, gid) {
				continue
			}
			if err := rollbacks[i](gid); err != nil && first == nil {
				first = fmt.Errorf("2pc recovery: roll back %s: %w", gid, err)
			}
		}
	}
	return first
}

// decided reports whether the log holds a commit decision for gid (true
// when it cannot be read: never roll back what might be decided).
func (c *Coordinator) decided(ctx context.Context, gid string) bool {
	ds, err := c.Log.Decisions(ctx)
	if err != nil {
		return true
	}
	return slices.ContainsFunc(ds, func(d Decision) bool { return d.GID == gid })
}

// forgets is the ForgetInDoubt bug: a transaction of an earlier
// incarnation is none of this one's business.
func (c *Coordinator) forgets(gid string) bool {
	return c.Bugs.ForgetInDoubt && !strings.HasPrefix(gid, c.ID+".")
}

// RunRecovery runs Recover when the coordinator starts and every interval
// after, until ctx ends.
func (c *Coordinator) RunRecovery(ctx context.Context, interval time.Duration) {
	for {
		if err := c.Recover(ctx); err != nil && ctx.Err() == nil {
			c.logger().Debug("2pc recovery: will try again", "err", err)
		}
		if c.Env.Sleep(ctx, interval) != nil {
			return
		}
	}
}
