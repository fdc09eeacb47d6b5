// Package pgtest starts throwaway PostgreSQL 15 clusters for tests: a new
// cluster in a temporary directory, listening on a free 127.0.0.1 port,
// configured for logical replication, and stopped when the test ends. It is
// exported for tests only; nothing else should import it.
//
//	dsn := pgtest.Start(t)            // skips the test when PostgreSQL is not installed
//	db := pgtest.NewDatabase(t, dsn)  // an empty database of its own on that cluster
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"lockstep/internal/needs"
)

// DefaultBinDir is where Debian and Ubuntu install PostgreSQL 15's
// programs. The environment variable LOCKSTEP_PG_BIN overrides it.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// Settings are the server settings of every cluster Start makes.
var Settings = map[string]string{
	"listen_addresses":        "'127.0.0.1'",
	"unix_socket_directories": "''",
	"wal_level":               "logical",
	"max_replication_slots":   "40", // slots outlive their tests until the cluster stops
	"max_wal_senders":         "40",
	"max_connections":         "100",
	"fsync":                   "off", // throwaway data: speed over durability
	"full_page_writes":        "off",
	"shared_buffers":          "32MB",
	"log_min_messages":        "warning",
}

func binDir() string {
	if d := os.Getenv("LOCKSTEP_PG_BIN"); d != "" {
		return d
	}
	return DefaultBinDir
}

// Start starts a throwaway cluster and returns the DSN of its "postgres"
// database (user postgres, trust authentication). The cluster is stopped
// and deleted when t ends. It skips t when the binaries are missing, or
// when running as root without a postgres user to run them as (initdb
// refuses to run as root).
func Start(t testing.TB) (dsn string) {
	t.Helper()
	dsn, _ = StartRestartable(t)
	return dsn
}

// StartRestartable is Start, and a restart of the cluster as after a
// crash: an immediate stop (no shutdown checkpoint, as a kill -9 leaves
// it) and a start on the same port, which recovers from the WAL.
// Connections open before it are dead after it.
func StartRestartable(t testing.TB) (dsn string, restart func() error) {
	t.Helper()
	bin := binDir()
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		needs.Missing(t, "PostgreSQL 15 binaries not found at %s", bin)
	}
	var prefix []string
	base := t.TempDir()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			needs.Missing(t, "running as root and there is no postgres user to run PostgreSQL as")
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			needs.Missing(t, "running as root and runuser is not installed")
		}
		prefix = []string{runuser, "-u", "postgres", "--"}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		// t.TempDir's parent is private to root: let postgres through.
		if err := os.Chmod(filepath.Dir(base), 0o755); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		if err := os.Chown(base, uid, gid); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	data := filepath.Join(base, "data")
	logFile := filepath.Join(base, "postgres.log")
	run := func(name string, args ...string) error {
		argv := append(append(append([]string(nil), prefix...), filepath.Join(bin, name)), args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = base
		cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
		}
		return nil
	}
	if err := run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := writeSettings(filepath.Join(data, "postgresql.conf")); err != nil {
		t.Fatalf("pgtest: %v", err)
	}

	var port int
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if port, err = freePort(); err != nil {
			break
		}
		if err = run("pg_ctl", "-D", data, "-l", logFile, "-w", "-t", "60", "-o", "-p "+strconv.Itoa(port), "start"); err == nil {
			break
		}
	}
	if err != nil {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("pgtest: start PostgreSQL: %v\nserver log:\n%s", err, log)
	}
	t.Cleanup(func() {
		if err := run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"); err != nil {
			t.Errorf("pgtest: stop PostgreSQL: %v", err)
		}
	})
	restart = func() error {
		if err := run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"); err != nil {
			return fmt.Errorf("pgtest: crash PostgreSQL: %w", err)
		}
		if err := run("pg_ctl", "-D", data, "-l", logFile, "-w", "-t", "60", "-o", "-p "+strconv.Itoa(port), "start"); err != nil {
			return fmt.Errorf("pgtest: restart PostgreSQL: %w", err)
		}
		return nil
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), restart
}

func writeSettings(conf string) error {
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("\n# pgtest\n")
	for _, k := range sortedKeys(Settings) {
		fmt.Fprintf(&b, "%s = %s\n", k, Settings[k])
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before the server binds it; Start then tries another.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var dbCount atomic.Int64

var notIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabase creates an empty database on the cluster of dsn and returns
// its DSN, so tests sharing a cluster do not see each other's tables or
// publications. (Replication slot names are cluster-wide: use distinct
// ones.)
func NewDatabase(t testing.TB, dsn string) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", dbCount.Add(1), notIdent.ReplaceAllString(strings.ToLower(t.Name()), "_"))
	if len(name) > 63 {
		name = name[:63]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Fatalf("pgtest: NewDatabase needs a URL DSN, got %q", dsn)
	}
	u.Path = "/" + name
	return u.String()
}

// ErrNotURL is returned by WithParam for a DSN that is not a URL.
var ErrNotURL = errors.New("pgtest: DSN is not a URL")

// WithParam returns dsn with a connection parameter set, e.g.
// WithParam(dsn, "wal_sender_timeout", "2s") for a server setting that a
// session may change.
func WithParam(dsn, key, value string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return "", ErrNotURL
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Querier is a connection, a pool or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// AwaitLockWaiters returns once at least n sessions of db's database wait
// for a lock, or stop (which may be nil) says to, polling: a statement that
// waits in another session tells nothing to its own, and only the server
// knows. It returns ctx's error if neither comes first.
func AwaitLockWaiters(ctx context.Context, db Querier, n int, stop func() bool) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if stop != nil && stop() {
			return nil
		}
		var waiting int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE NOT l.granted AND a.datname = current_database()`).Scan(&waiting); err != nil {
			return fmt.Errorf("pgtest: count the sessions waiting for a lock: %w", err)
		}
		if waiting >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: waiting for %d sessions to wait for a lock: %w", n, ctx.Err())
		case <-tick.C:
		}
	}
}
