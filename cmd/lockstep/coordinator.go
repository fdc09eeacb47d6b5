package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"lockstep/pipeline/pgsource"
	"lockstep/pipeline/realenv"
	"lockstep/pipeline/store/pgstore"
	"lockstep/pipeline/store/redisstore"
	"lockstep/pipeline/twopc"
	"lockstep/pipeline/twopc/dirlog"
	"lockstep/pipeline/twopc/pgxa"
	"lockstep/pipeline/twopc/remote"
)

var coordinatorCmd = &command{
	name:  "coordinator",
	usage: "--source DSN --replica DSN --search DSN --cache HOST:PORT [--listen :7070] [--log-dir DIR] [--bug NAME]",
	short: "run the two-phase-commit coordinator as a service: applications' transactions -> source, replica, search index, then the cache",
	long: `Coordinator is the 2pc system's transaction manager as a process of its own.
Applications run their transactions through it (JSON over HTTP, package
pipeline/twopc/remote); it runs each on the source, prepares it there and on
the replica and the search index (PREPARE TRANSACTION; every server needs
max_prepared_transactions above 0), logs the decision in --log-dir (a file
per decision, synced), commits the prepared transactions (COMMIT PREPARED)
and then writes the cache. Recovery runs when it starts and every second:
logged decisions are committed everywhere, any other prepared transaction
no request is working on is rolled back (presumed abort), so a kill -9
leaves nothing in doubt once it is back. GET /status tells how many
decisions the log still holds. Rows in the stores are versioned with the
source transaction's XID (bit 62 set): PostgreSQL does not tell a client
the commit LSN.`,
	flags: func(fs *flag.FlagSet) func([]string) error {
		source := fs.String("source", "", "source PostgreSQL DSN")
		replicaDSN := fs.String("replica", "", "replica PostgreSQL DSN")
		searchDSN := fs.String("search", "", "search index PostgreSQL DSN")
		cacheAddr := fs.String("cache", "", "Redis HOST:PORT or redis:// URL, written after each decision")
		listen := fs.String("listen", ":7070", "address to serve applications on")
		logDir := fs.String("log-dir", "/var/lib/lockstep/decisions", "the decision log's directory: keep it on a disk that survives a restart")
		bugs := fs.String("bug", "", "break two-phase commit on purpose (for harness tests): commit-before-prepared, forget-in-doubt")
		return func(args []string) error {
			if *source == "" || *replicaDSN == "" || *searchDSN == "" || *cacheAddr == "" {
				return usagef("--source, --replica, --search and --cache are required")
			}
			var b twopc.Bugs
			for _, name := range splitList(*bugs) {
				set, ok := twopc.BugNames[name]
				switch {
				case !ok:
					return usagef("unknown 2pc bug %q (want one of: %s)", name, twoPCBugList())
				case name == "heuristic-rollback":
					// A participant's behaviour, which PostgreSQL does
					// not have: only the simulated stores can break so.
					return usagef("bug heuristic-rollback: PostgreSQL takes no heuristic decisions; the simulator runs it")
				}
				set(&b)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			logger := serviceLogger("coordinator")
			c, closeAll, err := openCoordinator(ctx, *source, *replicaDSN, *searchDSN, *cacheAddr, *logDir, b, logger)
			if err != nil {
				return err
			}
			defer closeAll()
			return serveCoordinator(ctx, c, *listen, logger)
		}
	},
}

// callTimeout bounds each call to a participant (pgxa.BoundedStore).
const callTimeout = 5 * time.Second

// openCoordinator connects to the participants and the cache and opens
// the decision log: one incarnation of the coordinator.
func openCoordinator(ctx context.Context, source, replicaDSN, searchDSN, cacheAddr, logDir string, bugs twopc.Bugs, logger *slog.Logger) (*twopc.Coordinator, func(), error) {
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	pool := func(dsn, what string) (*pgxpool.Pool, error) {
		p, err := pgxpool.New(ctx, dsn)
		if err != nil {
			return nil, usagef("--%s: %v", what, err)
		}
		closers = append(closers, p.Close)
		return p, nil
	}
	fail := func(err error) (*twopc.Coordinator, func(), error) { closeAll(); return nil, nil, err }
	srcPool, err := pool(source, "source")
	if err != nil {
		return fail(err)
	}
	repPool, err := pool(replicaDSN, "replica")
	if err != nil {
		return fail(err)
	}
	searchPool, err := pool(searchDSN, "search")
	if err != nil {
		return fail(err)
	}
	replica, err := pgstore.NewReplica(ctx, repPool, pgstore.Options{})
	if err != nil {
		return fail(fmt.Errorf("replica: %w", err))
	}
	search, err := pgstore.NewSearch(ctx, searchPool, pgstore.Options{})
	if err != nil {
		return fail(fmt.Errorf("search index: %w", err))
	}
	opts, err := redisOptions(cacheAddr)
	if err != nil {
		return fail(err)
	}
	// A cache cut off must not hold a committed transaction's answer for
	// long: it is written three times at most, then goes without.
	opts.ReadTimeout, opts.WriteTimeout, opts.MaxRetries = 2*time.Second, 2*time.Second, -1
	rdb := redis.NewClient(opts)
	closers = append(closers, func() { rdb.Close() })
	cache, err := redisstore.New(ctx, rdb, redisstore.Options{})
	if err != nil {
		return fail(fmt.Errorf("redis at %s: %w", cacheAddr, err))
	}
	log, err := dirlog.Open(logDir)
	if err != nil {
		return fail(err)
	}
	host, _ := os.Hostname()
	c := &twopc.Coordinator{
		Env: &realenv.Env{Base: ctx},
		// Unique to this incarnation: its transactions' gids start with it.
		ID:     fmt.Sprintf("%s#%x", strings.ReplaceAll(host, ".", "-"), time.Now().UnixNano()),
		Source: pgxa.BoundedSource{Source: &pgsource.Prepared{Source: pgsource.Source{Pool: srcPool}}, Timeout: callTimeout, PrepareTimeout: 30 * time.Second},
		Stores: []twopc.Store{
			pgxa.BoundedStore{Store: pgxa.XIDStore{Store: pgstore.PreparedReplica(replica)}, Timeout: callTimeout},
			pgxa.BoundedStore{Store: pgxa.XIDStore{Store: pgstore.PreparedSearch(search)}, Timeout: callTimeout},
		},
		Cache:  pgxa.XIDCache{DirectStore: cache},
		Log:    log,
		Bugs:   bugs,
		Logger: logger,
	}
	return c, closeAll, nil
}

// serveCoordinator runs recovery and serves applications until ctx ends.
func serveCoordinator(ctx context.Context, c *twopc.Coordinator, listen string, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return usagef("--listen %s: %v", listen, err)
	}
	srv := &http.Server{Handler: (&remote.Server{Coordinator: c, Logger: logger}).Handler(ctx), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.RunRecovery(ctx, time.Second)
	}()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("lockstep: ready", "listen", ln.Addr().String(), "id", c.ID)
	select {
	case err = <-served:
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = srv.Shutdown(shut)
		cancel()
	}
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return drained(err, logger)
}
