package containers

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"

	"lockstep/faults"
	"lockstep/model"
	"lockstep/pipeline/debezium"
	"lockstep/scenarios"
)

// DebeziumImage is Kafka Connect standalone with Debezium's PostgreSQL
// connector; images/build-debezium.sh builds it (images/build.sh does not,
// so nothing else depends on it). LOCKSTEP_DEBEZIUM_IMAGE names another.
var DebeziumImage = cmp.Or(os.Getenv("LOCKSTEP_DEBEZIUM_IMAGE"), "lockstep/debezium:current")

// DebeziumOptions shape the Debezium connector of a world.
type DebeziumOptions struct {
	// TopicPrefix is the connector's topic.prefix: its topics are
	// "<prefix>.<schema>.<table>" and "<prefix>.transaction".
	TopicPrefix string
	// Slot and Publication are the connector's own, so that it never
	// shares them with lockstep's capture.
	Slot, Publication string
	// Tables is the connector's table.include.list ("public.t,public.u");
	// empty: every table.
	Tables []string
	// Poll is poll.interval.ms (Debezium's default 500 ms dominates its
	// latency) and Flush is Connect's offset.flush.interval.ms (default
	// 60 s), the interval at which Debezium confirms an LSN to PostgreSQL.
	Poll, Flush time.Duration
	// SnapshotMode is the connector's snapshot.mode (default "initial").
	// Snapshot reads carry no transaction, so the decoder refuses them:
	// "no_data" makes a connector that starts without offsets (its first
	// start, or a kill -9 before it flushed any) stream from its slot
	// instead of reading the tables.
	SnapshotMode string
	// Service is the Connect worker's container name (default
	// DebeziumService): two connectors in one world need two.
	Service string
}

// DebeziumService is the name of the Kafka Connect container.
const DebeziumService = "debezium"

// ServiceName is the Connect worker's container name.
func (o DebeziumOptions) ServiceName() string { return cmp.Or(o.Service, DebeziumService) }

// SlotName is the connector's replication slot.
func (o DebeziumOptions) SlotName() string { return cmp.Or(o.Slot, "debezium") }

func (o DebeziumOptions) prefix() string { return cmp.Or(o.TopicPrefix, "dbz") }

// TransactionTopic is the connector's transaction metadata topic.
func (o DebeziumOptions) TransactionTopic() string { return o.prefix() + ".transaction" }

// Topics are the transaction topic and the topic of each of Tables.
func (o DebeziumOptions) Topics() []string {
	topics := []string{o.TransactionTopic()}
	for _, t := range o.Tables {
		topics = append(topics, o.prefix()+"."+t)
	}
	return topics
}

// StartDebezium starts Kafka Connect standalone with Debezium's PostgreSQL
// connector on the source (pgoutput, transaction metadata on, offsets in a
// file in its container) and returns once the connector's replication slot
// exists: every transaction committed after that is captured. The tables
// must exist first (the connector's publication is created for them).
func (w *World) StartDebezium(ctx context.Context, o DebeziumOptions) error {
	if _, err := docker(ctx, "image", "inspect", "--format", "{{.Id}}", DebeziumImage); err != nil {
		return fmt.Errorf("%w: image %s is missing (run images/build-debezium.sh)", ErrNoDocker, DebeziumImage)
	}
	o.TopicPrefix = o.prefix()
	o.Slot, o.Publication = o.SlotName(), cmp.Or(o.Publication, "debezium")
	env := map[string]string{
		"BOOTSTRAP":    strings.Join(w.InternalKafka, ","),
		"PGHOST":       "pg-source",
		"TOPIC_PREFIX": o.TopicPrefix,
		"SLOT":         o.Slot,
		"PUBLICATION":  o.Publication,
		"TABLES":       strings.Join(o.Tables, ","),
	}
	if o.Poll > 0 {
		env["POLL_MS"] = strconv.FormatInt(o.Poll.Milliseconds(), 10)
	}
	if o.SnapshotMode != "" {
		env["SNAPSHOT_MODE"] = o.SnapshotMode
	}
	if o.Flush > 0 {
		env["FLUSH_MS"] = strconv.FormatInt(o.Flush.Milliseconds(), 10)
	}
	if err := w.run(ctx, o.ServiceName(), faults.RoleCapture, testcontainers.ContainerRequest{
		Image: DebeziumImage, Entrypoint: []string{"lockstep-connect"}, Env: env,
	}); err != nil {
		return err
	}
	return w.awaitSlot(ctx, o.Slot, 3*time.Minute)
}

// awaitSlot polls the source until the replication slot exists.
func (w *World) awaitSlot(ctx context.Context, slot string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	conn, err := pgx.Connect(ctx, w.SourceDSN)
	if err != nil {
		return fmt.Errorf("containers: connect to the source: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n); err != nil {
			return fmt.Errorf("containers: waiting for slot %s: %w", slot, err)
		}
		if n > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containers: Debezium created no slot %s within %s (its log is kept in %s): %w", slot, limit, w.LogDir, ctx.Err())
		case <-tick.C:
		}
	}
}

// SystemDebezium is the connector of --system debezium: Debezium as
// shipped (poll.interval.ms 500 ms, offsets flushed every 60 s, so a
// kill -9 sends up to a minute of transactions again), on every table, and
// no snapshot: the run starts it before any row is written (prepare), so
// the initial rows stream like any transaction.
var SystemDebezium = DebeziumOptions{SnapshotMode: "no_data"}

// StartDebeziumAppliers starts lockstep's three appliers on the topics of
// the connector o (apply --debezium PREFIX): the sink adapter that
// decodes Debezium's events back into transactions and applies them to the
// same stores, in the same way, as lockstep's own pipeline does.
func (w *World) StartDebeziumAppliers(ctx context.Context, o DebeziumOptions) error {
	args := []string{"--brokers", strings.Join(w.InternalKafka, ","), "--debezium", o.prefix()}
	if w.opts.Bugs != "" {
		// The appliers' switches break the sink the same way here:
		// non-idempotent-apply is the naive sink that applies Debezium's
		// copies again.
		args = append(args, "--bug", w.opts.Bugs)
	}
	return w.startProcs(ctx, w.appliers(args))
}

// debeziumFault refuses the faults --system debezium does not run: a
// second Connect worker (one JVM of it is as much as the machine takes,
// and standalone workers share no offsets), and retention and a dropped
// slot, past which Debezium's documentation promises nothing but a new
// snapshot, which the decoder cannot read.
func debeziumFault(k faults.Kind) error {
	switch k {
	case faults.SecondInstance, faults.Retention, faults.SlotDrop:
		return fmt.Errorf("--system debezium does not run %s faults", k)
	}
	return nil
}

// SupportsSystem reports whether a container scenario can run for sys, and
// why not: Debezium refuses some faults (debeziumFault) and lockstep's
// capture bugs. planned says a fault plan replaces the scenario's faults
// (CheckPlan checks the plan's); the bugs are refused either way.
func SupportsSystem(sc *scenarios.Scenario, sys scenarios.System, planned bool) error {
	if sys != scenarios.Debezium {
		return nil
	}
	for _, k := range sc.Kinds {
		if err := debeziumFault(k); err != nil && !planned {
			return fmt.Errorf("scenario %s: %w", sc.Name, err)
		}
	}
	// Only the appliers' and stores' switches reach a Debezium run: the
	// capture's would change nothing and pass for a test of Debezium.
	capture := sc.Bugs
	capture.NonIdempotentApply, capture.CommitOffsetFirst, capture.ReorderBatch = false, false, false
	capture.LSNOnlyVersion, capture.DropUnchangedToast, capture.NoIdleCheck = false, false, false
	capture.UnconditionalApply, capture.ResetToEarliest, capture.UniqueRowByRow = false, false, false
	if capture.Any() {
		return fmt.Errorf("scenario %s: lockstep's capture bugs do nothing to Debezium; --system debezium takes the appliers' switches only", sc.Name)
	}
	return nil
}

// awaitDebezium waits until Debezium's topics hold a transaction committed
// after lsn: the run's initial load (pgbench's 100,000 rows in one
// transaction). The appliers start after it, so each rebuilds its store
// with the load in one reset batch, as the pipeline's load it from the
// capture's snapshot.
func (w *World) awaitDebezium(ctx context.Context, o DebeziumOptions, lsn model.LSN, limit time.Duration) error {
	l, err := debezium.OpenLog(w.Kafka, o.prefix())
	if err != nil {
		return err
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for l.Last() <= lsn {
		if _, err := l.End(ctx); err != nil {
			return fmt.Errorf("containers: Debezium did not capture the initial rows within %s (its log is kept in %s): %w", limit, w.LogDir, err)
		}
	}
	return nil
}
