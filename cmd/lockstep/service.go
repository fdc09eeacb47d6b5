package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kerr"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/debezium"
	"lockstep/pipeline/kafkalog"
	"lockstep/pipeline/pgsource"
	"lockstep/pipeline/realenv"
	"lockstep/pipeline/store/pgstore"
	"lockstep/pipeline/store/redisstore"
)

// The pipeline as a standalone service: the same Capture and Applier code
// the simulator runs, on real PostgreSQL, Kafka and Redis. SIGTERM drains
// (the loop stops at its next call and connections close); SIGKILL loses
// nothing, because nothing is confirmed or saved before it is durable.

var captureCmd = &command{
	name:  "capture",
	usage: "--source DSN --brokers HOST:PORT,... [--topic lockstep] [--slot lockstep] [--publication lockstep] [--tables a,b | --exclude-tables a,b]",
	short: "run the capture process: PostgreSQL logical decoding -> Kafka",
	long: `Capture streams the source database's committed transactions (pgoutput) into a
Kafka topic in commit order, taking a consistent snapshot first when the topic is
empty, and confirms an LSN to PostgreSQL only after Kafka acknowledged it.
The source needs wal_level=logical; the publication is created FOR ALL TABLES
when missing.

Rows are named by their table's primary key; a table without one is captured
under REPLICA IDENTITY FULL only, all its columns forming the key. Before it
starts, capture refuses (exit 2) when a table it would capture has neither:
add a primary key, set REPLICA IDENTITY FULL, or leave the table out with
--exclude-tables (or list the tables to capture with --tables). A change that
can never be captured (such a table created later, a TRUNCATE) stops it with
exit 2 and what to do; other errors are retried with a pause.`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		source := fs.String("source", "", "source PostgreSQL DSN (key=value or URL)")
		common := serviceFlags(fs)
		slot := fs.String("slot", "lockstep", "logical replication slot")
		pub := fs.String("publication", "lockstep", "publication to stream (created FOR ALL TABLES when missing)")
		tables := fs.String("tables", "", "capture only these tables, comma-separated (schema.table outside public)")
		exclude := fs.String("exclude-tables", "", "leave these tables out of the snapshot and the stream, comma-separated")
		return func(args []string) error {
			if *source == "" || common.brokers == "" {
				return usagef("--source and --brokers are required")
			}
			bugs, err := pipeline.ParseBugs(common.bugs)
			if err != nil {
				return usagef("%v", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			logger := serviceLogger("capture")
			stream, err := pgsource.NewStream(pgsource.Config{DSN: *source, Slot: *slot, Publication: *pub,
				Tables: splitList(*tables), ExcludeTables: splitList(*exclude), Logger: logger})
			if err != nil {
				return usagef("%v", err)
			}
			defer stream.Close(context.Background())
			if err := checkTables(ctx, stream, logger); err != nil {
				return drained(err, logger)
			}
			klog, err := common.log(ctx)
			if err != nil {
				return err
			}
			defer klog.Close()
			c := &pipeline.Capture{Env: &realenv.Env{Base: ctx}, Log: klog, Logger: logger, Bugs: bugs, MaxTxnBytes: common.maxRecord}
			logger.Info("lockstep: ready", "source", redact(*source), "topic", common.topic)
			return drained(runCapture(ctx, c, stream), logger)
		}
	},
}

// splitList reads a comma-separated flag value.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// checkTables refuses to start (exit 2, one line) when a table the capture
// would take has no key lockstep can name its rows by, or --tables names a
// table that is not published; it retries, with a growing pause, while the
// source cannot be asked.
func checkTables(ctx context.Context, s *pgsource.Stream, logger *slog.Logger) error {
	pause := 200 * time.Millisecond
	for {
		tables, err := s.CheckTables(ctx)
		switch {
		case err == nil:
			logger.Info("capture: tables checked", "tables", len(tables))
			logger.Debug("capture: tables", "names", strings.Join(tables, ","))
			return nil
		case errors.Is(err, pgsource.ErrUnsupported), errors.Is(err, pgsource.ErrNoTable), errors.Is(err, pipeline.ErrSourceRefused):
			return usagef("%v", err)
		case ctx.Err() != nil:
			return ctx.Err()
		}
		logger.Warn("capture: cannot check the source's tables yet; retrying", "err", err, "in", pause)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// runCapture runs c on stream until ctx ends, or until the capture stops on
// input it can never get past (pipeline.ErrUnsupported, such as a change to
// a table without a key, or pipeline.ErrRecordTooLarge): then it says what
// stopped it and what to do, one line, exit 2.
func runCapture(ctx context.Context, c *pipeline.Capture, stream pipeline.ChangeStream) error {
	c.Source = stream
	err := c.Run(ctx)
	var nk *pgsource.NoKeyError
	switch {
	case errors.As(err, &nk):
		// The table and the flag that gets past it, without the layers
		// of context the stream wrapped around it.
		return usagef("stopped: %v", nk)
	case errors.Is(err, pipeline.ErrUnsupported), errors.Is(err, pipeline.ErrRecordTooLarge):
		return usagef("stopped: %v", err)
	case errors.Is(err, pipeline.ErrSourceRefused):
		var r *pgsource.RefusedError
		if errors.As(err, &r) {
			return usagef("stopped: %v", r)
		}
		return usagef("stopped: %v", err)
	}
	return err
}

var applyCmd = &command{
	name:  "apply",
	usage: "--store replica|cache|search --target DSN-or-ADDR --brokers HOST:PORT,... [--topic lockstep | --debezium PREFIX]",
	short: "run a sink applier: Kafka -> one store",
	long: `Apply keeps one store in step with the topic: the replica (PostgreSQL, data and
position in one transaction), the cache (Redis, data and position in one
MULTI/EXEC; a Redis restarted empty is detected and rebuilt) or the search index
(PostgreSQL full-text search, bulk writes with per-document versions). It resumes
from the position saved in the store itself. With --debezium PREFIX it applies
what Debezium's PostgreSQL connector captured instead: its PREFIX.* topics,
transaction topic included, decoded back into transactions in commit order.`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		kind := fs.String("store", "", "replica, cache or search")
		target := fs.String("target", "", "the store: a PostgreSQL DSN (replica, search), or for the cache a Redis HOST:PORT or redis://[:PASSWORD@]HOST:PORT[/DB]")
		group := fs.String("group", "", "consumer group for monitoring offsets (default lockstep-<store>)")
		dbz := fs.String("debezium", "", "apply what Debezium's PostgreSQL connector with this topic.prefix captured (its <prefix>.* topics, with the transaction topic) instead of lockstep's --topic")
		common := serviceFlags(fs)
		return func(args []string) error {
			k, ok := model.ParseStoreKind(*kind)
			if !ok {
				return usagef("unknown store %q: want replica, cache or search", *kind)
			}
			if *target == "" || common.brokers == "" {
				return usagef("--target and --brokers are required")
			}
			bugs, err := pipeline.ParseBugs(common.bugs)
			if err != nil {
				return usagef("%v", err)
			}
			if *group == "" {
				*group = "lockstep-" + k.String()
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			logger := serviceLogger("apply-" + k.String())
			// go-redis logs through slog.Default at debug level
			// (redisstore): shown with LOCKSTEP_DEBUG, like ours.
			slog.SetDefault(logger)
			st, closeStore, err := openStore(ctx, k, *target, bugs)
			if err != nil {
				return err
			}
			defer closeStore()
			var log pipeline.Log
			topic := common.topic
			if *dbz != "" {
				dlog, err := debezium.OpenLog(strings.Split(common.brokers, ","), *dbz)
				if err != nil {
					return err
				}
				defer dlog.Close()
				dlog.Logger = logger
				log, topic = dlog, *dbz+".*"
			} else {
				klog, err := common.log(ctx)
				if err != nil {
					return err
				}
				defer klog.Close()
				log = klog
			}
			a := &pipeline.Applier{Env: &realenv.Env{Base: ctx}, Log: log, Store: st, Group: *group, Logger: logger, Bugs: bugs}
			logger.Info("lockstep: ready", "store", k, "target", redact(*target), "topic", topic)
			return drained(a.Run(ctx), logger)
		}
	},
}

type commonFlags struct {
	brokers, topic, bugs string
	maxRecord            int
	replicas, minInSync  int
}

func serviceFlags(fs *flag.FlagSet) *commonFlags {
	c := &commonFlags{}
	fs.StringVar(&c.brokers, "brokers", "", "Kafka bootstrap brokers, comma-separated HOST:PORT")
	fs.StringVar(&c.topic, "topic", "lockstep", "Kafka topic")
	fs.StringVar(&c.bugs, "bug", "", "break the pipeline on purpose (for harness tests): "+bugList())
	fs.IntVar(&c.replicas, "replication-factor", 3, "replicas of the topic, when lockstep creates it (1 for a one-broker development Kafka)")
	fs.IntVar(&c.minInSync, "min-insync", 2, "the topic's min.insync.replicas, when lockstep creates it: an append is acknowledged once this many replicas hold it (1 for one broker)")
	fs.IntVar(&c.maxRecord, "max-record-bytes", 0, "largest log record, as Kafka counts it: the capture splits larger transactions into parts (default 1000000, under Kafka's default message.max.bytes); raise it together with the topic's max.message.bytes")
	return c
}

func (c *commonFlags) log(ctx context.Context) (*kafkalog.Log, error) {
	if c.maxRecord < 0 || c.maxRecord > 100<<20 {
		return nil, fmt.Errorf("--max-record-bytes %d: want a size from 1 to %d (franz-go's largest write)", c.maxRecord, 100<<20)
	}
	if c.replicas < 1 || c.replicas > 32767 || c.minInSync < 1 || c.minInSync > c.replicas {
		return nil, usagef("--replication-factor %d --min-insync %d: want 1 <= min-insync <= replication-factor (1 and 1 for a one-broker Kafka)", c.replicas, c.minInSync)
	}
	l, err := kafkalog.New(kafkalog.Config{Brokers: strings.Split(c.brokers, ","), Topic: c.topic, MaxRecordBytes: int32(c.maxRecord),
		ReplicationFactor: int16(c.replicas), MinInSync: c.minInSync})
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if err := l.EnsureTopic(ctx); err != nil {
		l.Close()
		if errors.Is(err, kerr.InvalidReplicationFactor) {
			// Permanent: the cluster has fewer brokers than asked for.
			return nil, usagef("kafka: topic %s: the cluster at %s has fewer brokers than --replication-factor %d: %v; for a one-broker Kafka use --replication-factor 1 --min-insync 1",
				c.topic, c.brokers, c.replicas, err)
		}
		return nil, fmt.Errorf("kafka: topic %s: %w (are the brokers at %s reachable?)", c.topic, err, c.brokers)
	}
	return l, nil
}

// redisOptions reads a cache target: HOST:PORT, or a redis:// (rediss://
// for TLS) URL, which carries a password and a database number, e.g.
// redis://:secret@host:6379/2.
func redisOptions(target string) (*redis.Options, error) {
	opts := &redis.Options{Addr: target}
	if strings.HasPrefix(target, "redis://") || strings.HasPrefix(target, "rediss://") {
		var err error
		if opts, err = redis.ParseURL(target); err != nil {
			return nil, usagef("--target %s: %v; want HOST:PORT or redis://[:PASSWORD@]HOST:PORT[/DB]", redact(target), err)
		}
	}
	// A rebuild is one MULTI/EXEC that may hold a whole snapshot: give
	// Redis time to answer it.
	opts.ReadTimeout, opts.WriteTimeout = 30*time.Second, 30*time.Second
	return opts, nil
}

// openStore connects to the target store of the given kind.
func openStore(ctx context.Context, k model.StoreKind, target string, bugs pipeline.Bugs) (pipeline.Store, func(), error) {
	blind := bugs.NonIdempotentApply
	switch k {
	case model.Cache:
		opts, err := redisOptions(target)
		if err != nil {
			return nil, nil, err
		}
		rdb := redis.NewClient(opts)
		c, err := redisstore.New(ctx, rdb, redisstore.Options{Blind: blind})
		if err != nil {
			rdb.Close()
			return nil, nil, fmt.Errorf("redis at %s: %w", target, err)
		}
		return c, func() { rdb.Close() }, nil
	default:
		pool, err := pgxpool.New(ctx, target)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		var st pipeline.Store
		if k == model.Replica {
			st, err = pgstore.NewReplica(ctx, pool, pgstore.Options{Blind: blind, ImmediateUnique: bugs.UniqueRowByRow, DDLReset: bugs.DDLReset})
		} else {
			st, err = pgstore.NewSearch(ctx, pool, pgstore.Options{Blind: blind, BulkDocs: 500})
		}
		if err != nil {
			pool.Close()
			return nil, nil, fmt.Errorf("postgres %s: %w", k, err)
		}
		return st, pool.Close, nil
	}
}

func serviceLogger(name string) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("LOCKSTEP_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("proc", name)
}

// drained turns the end of a run loop into the command's result: stopping
// on SIGTERM/Ctrl-C is a clean exit.
func drained(err error, logger *slog.Logger) error {
	if errors.Is(err, context.Canceled) {
		logger.Info("lockstep: drained, exiting")
		return nil
	}
	return err
}

// redact hides a password in a DSN before it is logged.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" && u.Host != "" {
		return u.Redacted() // postgres://user:xxxxx@host/db, redis://:xxxxx@host
	}
	var out []string
	for _, f := range strings.Fields(dsn) {
		if strings.HasPrefix(f, "password=") {
			f = "password=***"
		}
		out = append(out, f)
	}
	return strings.Join(out, " ")
}
