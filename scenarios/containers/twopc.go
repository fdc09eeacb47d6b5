package containers

// Two-phase commit in the container world: the coordinator
// (pipeline/twopc) is a process in a container of its own, on real
// PostgreSQL participants, which the fault injector kills, pauses and cuts
// off as it does the capture; the application's clients run their
// transactions through it (pipeline/twopc/remote).

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"lockstep/faults"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
	"lockstep/pipeline/twopc/remote"
	"lockstep/scenarios"
)

// coordinatorPort is the coordinator's port in its container.
const coordinatorPort = 7070

// decisionDir is the coordinator's decision log, on its container's own
// disk: a kill -9 and restart (docker start) keeps it, as a volume would;
// a reset removes it with the container.
const decisionDir = "/var/lib/lockstep/decisions"

// StartCoordinator starts two-phase commit's coordinator, with the world's
// bug switches, and waits until it serves (it has run its first recovery
// by then, or is running it).
func (w *World) StartCoordinator(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	name := scenarios.CoordinatorNode
	cmd := []string{"coordinator", "--source", w.InternalSourceDSN, "--replica", w.InternalReplicaDSN,
		"--search", w.InternalSearchDSN, "--cache", w.InternalRedis,
		"--listen", ":" + strconv.Itoa(coordinatorPort), "--log-dir", decisionDir}
	if w.opts.Bugs != "" {
		cmd = append(cmd, "--bug", w.opts.Bugs)
	}
	w.mu.Lock()
	w.procs = map[string]proc{name: {name, faults.RoleCapture, cmd}}
	w.CoordinatorURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	w.mu.Unlock()
	tcp := strconv.Itoa(coordinatorPort) + "/tcp"
	return w.run(ctx, name, faults.RoleCapture, testcontainers.ContainerRequest{
		Image: PipelineImage, Cmd: cmd, ExposedPorts: []string{tcp}, Env: bind(port, tcp),
		WaitingFor: wait.ForLog("lockstep: ready").WithStartupTimeout(90 * time.Second),
	})
}

// do2PC runs one application operation through the coordinator, retrying
// as the simulated client does: after a timeout (its outcome unknown), a
// lock timeout or a transaction the coordinator lost (it certainly did not
// commit), twice.
func (r *run) do2PC(phase, opCtx context.Context, op pipeline.TxnFunc) error {
	c := &remote.Client{URL: r.w.CoordinatorURL}
	err := c.Do(opCtx, op)
	for retry := 0; retry < 2 && retryable2PC(err) && opCtx.Err() == nil && phase.Err() == nil; retry++ {
		err = c.Do(opCtx, op)
	}
	return err
}

func retryable2PC(err error) bool {
	return errors.Is(err, pipeline.ErrTimeout) || errors.Is(err, twopc.ErrLockTimeout) || errors.Is(err, remote.ErrGone)
}

// InDoubt is what a two-phase-commit run left in doubt and when: prepared
// transactions the participants (pg_prepared_xacts of the source, the
// replica and the search index) held, sampled twice a second.
type InDoubt struct {
	// Peak is the most prepared transactions held at once, at PeakAt.
	Peak   int
	PeakAt time.Duration
	// AtHeal is those held when the faults were healed; AtEnd those held
	// once the quiet phase ended (0: recovery resolved everything).
	AtHeal, AtEnd int
	// Decisions is the decisions the coordinator's log still held at the
	// end (its commit phase not finished), -1 when it did not answer.
	Decisions int
	// ResolvedAt is when, after the heal, no participant held a prepared
	// transaction and the log no decision; -1: never within the settle
	// time.
	ResolvedAt time.Duration
	Samples    []InDoubtSample
}

// InDoubtSample is one sample of the prepared transactions held.
type InDoubtSample struct {
	At       time.Duration
	Prepared int
}

func (d *InDoubt) String() string {
	resolved := "never within the settle time"
	if d.ResolvedAt >= 0 {
		resolved = "at " + d.ResolvedAt.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("in doubt: peak %d prepared transactions (at %v), %d when the faults healed, %d at the end; resolved %s\n",
		d.Peak, d.PeakAt.Round(time.Millisecond), d.AtHeal, d.AtEnd, resolved)
}

// participants connects to the three PostgreSQL participants, to count
// their prepared transactions.
type participants []*pgxpool.Pool

func (r *run) participants(ctx context.Context) (participants, error) {
	var ps participants
	for _, dsn := range []string{r.w.SourceDSN, r.w.ReplicaDSN, r.w.SearchDSN} {
		p, err := pgxpool.New(ctx, dsn)
		if err != nil {
			ps.close()
			return nil, fmt.Errorf("containers: 2pc participants: %w", err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func (ps participants) close() {
	for _, p := range ps {
		p.Close()
	}
}

// prepared counts the prepared transactions every participant holds; an
// error when one does not answer.
func (ps participants) prepared(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	total := 0
	for _, p := range ps {
		var n int
		if err := p.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_xacts`).Scan(&n); err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// sampleInDoubt records the prepared transactions twice a second until ctx
// ends.
func (r *run) sampleInDoubt(ctx context.Context, ps participants, d *InDoubt) {
	for sleepUntil(ctx, time.Now().Add(500*time.Millisecond)) {
		n, err := ps.prepared(ctx)
		if err != nil {
			continue // a participant down: no sample
		}
		at := r.since()
		r.mu.Lock()
		d.Samples = append(d.Samples, InDoubtSample{At: at, Prepared: n})
		if n > d.Peak {
			d.Peak, d.PeakAt = n, at
		}
		r.mu.Unlock()
	}
}

// awaitResolved waits, after the heal, until no participant holds a
// prepared transaction and the coordinator's log no decision, or the
// settle time is up: what recovery leaves is then judged.
func (r *run) awaitResolved(ctx context.Context, ps participants, d *InDoubt) {
	d.AtHeal, _ = ps.prepared(ctx)
	d.ResolvedAt, d.Decisions = -1, -1
	client := &remote.Client{URL: r.w.CoordinatorURL}
	deadline := time.Now().Add(r.cfg.Settle)
	for ctx.Err() == nil {
		n, err := ps.prepared(ctx)
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, serr := client.Status(sctx)
		cancel()
		if err == nil {
			d.AtEnd = n
		}
		if serr == nil {
			d.Decisions = st.Decisions
		}
		if err == nil && serr == nil && n == 0 && st.Decisions == 0 {
			d.ResolvedAt = r.since()
			return
		}
		if time.Now().After(deadline) {
			r.log.Warn("2pc: transactions still in doubt after the settle time", "prepared", n, "decisions", d.Decisions)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rollbackPrepared rolls back every prepared transaction of the cluster at
// dsn (in database postgres, where the runs prepare theirs): one left in
// doubt would keep a reset from dropping the database.
func rollbackPrepared(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, _ := conn.Query(ctx, `SELECT gid FROM pg_prepared_xacts WHERE database = current_database()`)
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list prepared transactions: %w", err)
	}
	for _, gid := range gids {
		if _, err := conn.Exec(ctx, `ROLLBACK PREPARED `+quoteLiteral(gid)); err != nil {
			return fmt.Errorf("roll back prepared transaction %s: %w", gid, err)
		}
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
