package containers

// One cluster for many runs: a container campaign starts the storage
// containers once (about 30 s) and, between seeds, puts every service back
// as Start left it, so a seed costs its pipeline's start, its fault phase
// and its quiet phase. Fingerprint is what proves a reset complete: it
// describes everything in the cluster a run can see, and must read the same
// after a reset as on a cluster just started (TestResetIsAFreshCluster).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"lockstep/faults"
)

// resetTimeout bounds a reset, waiting for restarted services included.
const resetTimeout = 3 * time.Minute

// claim readies w for the run cfg describes: a world a run used since its
// last reset is reset first. It sets the pipeline's bug switches for StartPipeline and
// the folder the run's pipeline logs go to (returned).
func (w *World) claim(ctx context.Context, cfg Config) (string, error) {
	w.mu.Lock()
	closed, dirty := w.closed, w.dirty
	w.mu.Unlock()
	if closed {
		return "", errors.New("containers: the world to reuse is closed")
	}
	if dirty {
		if err := w.Reset(ctx); err != nil {
			return "", err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.runs++
	w.dirty = true
	w.opts.Bugs = bugNames(cfg.Scenario)
	w.runDir = cfg.LogDir
	if w.runDir == "" {
		w.runDir = filepath.Join(w.LogDir, fmt.Sprintf("run%d-%s-%s-%d", w.runs, cfg.Scenario.Name, cfg.System, cfg.Seed))
	}
	if err := os.MkdirAll(w.runDir, 0o755); err != nil {
		return "", fmt.Errorf("containers: log dir: %w", err)
	}
	return w.runDir, nil
}

// Reset puts the world back as Start left it: the pipeline's processes
// (second instances included) removed, their logs kept in the last run's
// folder; every container running, unpaused and without network faults;
// and each service's state dropped: the source's replication slots and
// its database (tables, publication, sequences), made again empty as
// initdb makes it; the replica's and the search index's databases the
// same; Redis flushed; every topic and consumer group of the brokers
// deleted. What stays is what no run can see: PostgreSQL's WAL position
// and transaction ids go on from where they were (the checker reads only
// their order), and Kafka's internal offsets topic is kept.
func (w *World) Reset(ctx context.Context) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, resetTimeout)
	defer cancel()
	if err := w.removeProcesses(ctx); err != nil {
		return fmt.Errorf("containers: reset: %w", err)
	}
	t := NewTarget(ctx, w)
	for _, s := range w.Services() {
		t.touched[s.Name] = true // heal every container, not only those this target cut
	}
	t.Settle()
	steps := []struct {
		what string
		fn   func(context.Context) error
	}{
		{"pg-source", func(ctx context.Context) error { return resetPostgres(ctx, w.SourceDSN) }},
		{"pg-replica", func(ctx context.Context) error { return resetPostgres(ctx, w.ReplicaDSN) }},
		{"pg-search", func(ctx context.Context) error { return resetPostgres(ctx, w.SearchDSN) }},
		{"redis", w.resetRedis},
		{"kafka", w.resetKafka},
	}
	for _, s := range steps {
		// A service the last run crashed was just restarted: it may take
		// a moment to answer.
		if err := retry(ctx, s.fn); err != nil {
			return fmt.Errorf("containers: reset %s: %w", s.what, err)
		}
	}
	w.mu.Lock()
	w.dirty = false
	w.mu.Unlock()
	w.log.Info("containers: reset", "in", time.Since(start).Round(time.Millisecond))
	return nil
}

// retry calls fn until it succeeds or ctx ends, with fn's last error.
func retry(ctx context.Context, fn func(context.Context) error) error {
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// isProcess tells the pipeline's containers (first and second instances).
func isProcess(s *Service) bool { return s.Role == faults.RoleCapture || s.Role == faults.RoleApplier }

// removeProcesses keeps the logs of the pipeline's containers in the last
// run's folder and removes the containers.
func (w *World) removeProcesses(ctx context.Context) error {
	w.mu.Lock()
	var gone []*Service
	kept := w.order[:0]
	for _, n := range w.order {
		if s := w.svcs[n]; isProcess(s) {
			gone = append(gone, s)
			delete(w.svcs, n)
		} else {
			kept = append(kept, n)
		}
	}
	w.order, w.procs = kept, nil
	w.mu.Unlock()
	var errs []error
	for _, s := range gone {
		if err := w.remove(ctx, s); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// keepLog writes a container's log to its run's folder: the pipeline's
// processes to the run's own, the cluster's to LogDir.
func (w *World) keepLog(ctx context.Context, s *Service) {
	dir := w.LogDir
	w.mu.Lock()
	if isProcess(s) && w.runDir != "" {
		dir = w.runDir
	}
	w.mu.Unlock()
	f, err := os.Create(filepath.Join(dir, s.Name+".log"))
	if err != nil {
		return
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, "docker", "logs", "--timestamps", s.ID)
	cmd.Stdout, cmd.Stderr = f, f
	_ = cmd.Run()
}

// remove keeps a container's log and removes the container.
func (w *World) remove(ctx context.Context, s *Service) error {
	w.keepLog(ctx, s)
	_, err := docker(ctx, "rm", "-f", "-v", s.ID)
	return err
}

// withDB is dsn with another database.
func withDB(dsn, db string) string { return strings.Replace(dsn, "dbname=postgres", "dbname="+db, 1) }

// resetPostgres drops every replication slot of a cluster (ending the
// sessions streaming from them) and its database postgres, and creates
// the database again from template1, as initdb does: no table, sequence,
// function, schema or publication of a run is left.
func resetPostgres(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, withDB(dsn, "template1"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		type slot struct {
			name string
			pid  int32
		}
		var slots []slot
		rows, _ := conn.Query(ctx, `SELECT slot_name, coalesce(active_pid, 0) FROM pg_replication_slots`)
		var s slot
		if _, err := pgx.ForEachRow(rows, []any{&s.name, &s.pid}, func() error { slots = append(slots, s); return nil }); err != nil {
			return err
		}
		if len(slots) == 0 {
			break
		}
		for _, s := range slots {
			if s.pid != 0 {
				if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, s.pid); err != nil {
					return fmt.Errorf("end the session on slot %s: %w", s.name, err)
				}
			}
			// A session just ended may hold it a moment longer: the loop
			// looks again.
			_, _ = conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, s.name)
		}
	}
	// A prepared transaction (two-phase commit's, left in doubt) keeps
	// its database from being dropped, even by FORCE.
	if err := rollbackPrepared(ctx, dsn); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS postgres WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop database postgres: %w", err)
	}
	if _, err := conn.Exec(ctx, `CREATE DATABASE postgres`); err != nil {
		return fmt.Errorf("create database postgres: %w", err)
	}
	return nil
}

func (w *World) resetRedis(ctx context.Context) error {
	rdb := redis.NewClient(&redis.Options{Addr: w.RedisAddr, MaxRetries: -1})
	defer rdb.Close()
	return rdb.FlushAll(ctx).Err()
}

// kafkaAdmin is an admin client of the world's brokers.
func (w *World) kafkaAdmin() (*kadm.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.Kafka...))
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// resetKafka deletes every topic (but Kafka's internal ones) and every
// consumer group, and waits until the brokers list none.
func (w *World) resetKafka(ctx context.Context) error {
	adm, err := w.kafkaAdmin()
	if err != nil {
		return err
	}
	defer adm.Close()
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	if names := topics.Names(); len(names) > 0 {
		if err := answered(adm.DeleteTopics(ctx, names...)); err != nil {
			return err
		}
	}
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	if names := groups.Groups(); len(names) > 0 {
		if err := answered(adm.DeleteGroups(ctx, names...)); err != nil {
			return err
		}
	}
	state, err := kafkaState(ctx, adm)
	if err != nil {
		return err
	}
	if len(state) > 0 {
		return fmt.Errorf("still there after deletion: %s", strings.Join(state, "; "))
	}
	return nil
}

// answered is an admin request's error, or the first of its answers'.
func answered[R interface{ Error() error }](resps R, err error) error {
	if err != nil {
		return err
	}
	return resps.Error()
}

// kafkaState lists the brokers' topics (with each partition's start and
// end offsets) and consumer groups: none on a cluster just started.
func kafkaState(ctx context.Context, adm *kadm.Client) ([]string, error) {
	var out []string
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range topics.Names() {
		starts, err := adm.ListStartOffsets(ctx, name)
		if err != nil {
			return nil, err
		}
		ends, err := adm.ListEndOffsets(ctx, name)
		if err != nil {
			return nil, err
		}
		line := "topic " + name
		starts.Each(func(o kadm.ListedOffset) {
			e, _ := ends.Lookup(o.Topic, o.Partition)
			line += fmt.Sprintf(" p%d=[%d,%d)", o.Partition, o.Offset, e.Offset)
		})
		out = append(out, line)
	}
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	for _, g := range groups.Groups() {
		out = append(out, "group "+g)
	}
	slices.Sort(out)
	return out, nil
}

// Fingerprint describes everything in the world a run can see, one fact a
// line, in a fixed order: each container and its state, its network
// namespace's filter rules and queueing disciplines; for each PostgreSQL
// its databases, replication slots, and in database postgres its schemas
// (with owners and grants), relations, functions, publications,
// extensions, roles and settings not at their defaults; Redis's keyspace; the brokers' topics (with offsets) and
// consumer groups. Two worlds with the same fingerprint give a run the
// same start.
func (w *World) Fingerprint(ctx context.Context) (string, error) {
	containers, err := w.ContainerFingerprint(ctx)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(containers)
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	for _, db := range []struct{ name, dsn string }{{"pg-source", w.SourceDSN}, {"pg-replica", w.ReplicaDSN}, {"pg-search", w.SearchDSN}} {
		facts, err := postgresState(ctx, db.dsn)
		if err != nil {
			return "", fmt.Errorf("%s: %w", db.name, err)
		}
		for _, f := range facts {
			line("%s: %s", db.name, f)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: w.RedisAddr, MaxRetries: -1})
	keyspace, err := rdb.Info(ctx, "keyspace").Result()
	rdb.Close()
	if err != nil {
		return "", fmt.Errorf("redis: %w", err)
	}
	line("redis: %s", strings.Join(strings.Fields(keyspace), " "))
	adm, err := w.kafkaAdmin()
	if err != nil {
		return "", err
	}
	defer adm.Close()
	state, err := kafkaState(ctx, adm)
	if err != nil {
		return "", fmt.Errorf("kafka: %w", err)
	}
	for _, f := range state {
		line("kafka: %s", f)
	}
	return b.String(), nil
}

// ContainerFingerprint is Fingerprint's first part: each container and its
// state, its network namespace's filter rules and queueing disciplines.
// It asks no service, so faults in force do not change how it is read: a
// paused broker cannot answer the rest's questions (Kafka's ListGroups
// asks every broker), a paused container can still be inspected.
func (w *World) ContainerFingerprint(ctx context.Context) (string, error) {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	for _, s := range w.Services() {
		status, err := docker(ctx, "inspect", "--format", "{{.State.Status}}", s.ID)
		if err != nil {
			return "", err
		}
		line("container %s (%s): %s", s.Name, s.Role, status)
		pid, err := docker(ctx, "inspect", "--format", "{{.State.Pid}}", s.ID)
		if err != nil {
			return "", err
		}
		for _, cmd := range [][]string{{"iptables", "-S", "OUTPUT"}, {"tc", "qdisc", "show", "dev", "eth0"}, {"tc", "filter", "show", "dev", "eth0"}} {
			out, err := hostRun(ctx, append([]string{"nsenter", "-t", pid, "-n"}, cmd...)...)
			if err != nil {
				return "", fmt.Errorf("%s: %w", s.Name, err)
			}
			line("  %s: %s", strings.Join(cmd[:2], " "), strings.Join(strings.Fields(out), " "))
		}
	}
	return b.String(), nil
}

// postgresState is Fingerprint's part for one PostgreSQL cluster.
func postgresState(ctx context.Context, dsn string) ([]string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	const user = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'`
	queries := []struct{ what, sql string }{
		{"database", `SELECT datname || ' ' || datistemplate::text || ' ' || datallowconn::text FROM pg_database ORDER BY 1`},
		{"slot", `SELECT slot_name || ' ' || slot_type || ' ' || coalesce(plugin, '') FROM pg_replication_slots ORDER BY 1`},
		{"schema", `SELECT n.nspname || ' owner ' || pg_get_userbyid(n.nspowner) || ' acl ' || coalesce(n.nspacl::text, '-') FROM pg_namespace n WHERE ` + user + ` ORDER BY 1`},
		{"relation", `SELECT n.nspname || '.' || c.relname || ' ' || c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ` + user + ` ORDER BY 1`},
		{"function", `SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ` + user + ` ORDER BY 1`},
		{"publication", `SELECT pubname FROM pg_publication ORDER BY 1`},
		{"extension", `SELECT extname || ' ' || extversion FROM pg_extension ORDER BY 1`},
		{"role", `SELECT rolname || ' ' || rolsuper::text || ' ' || rolreplication::text FROM pg_roles ORDER BY 1`},
		{"setting", `SELECT name || '=' || setting || ' (' || source || ')' FROM pg_settings WHERE source NOT IN ('default', 'client', 'session') ORDER BY 1`},
	}
	var out []string
	for _, q := range queries {
		rows, err := conn.Query(ctx, q.sql)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", q.what, err)
		}
		vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", q.what, err)
		}
		for _, v := range vals {
			out = append(out, q.what+" "+v)
		}
	}
	return out, nil
}
