package containers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"lockstep/faults"
	"lockstep/scenarios"
)

// Topic is the log topic the pipeline uses.
const Topic = "lockstep"

// Service is one container of a run.
type Service struct {
	Name string
	Role faults.Role
	ID   string
	c    testcontainers.Container
}

// Options shape a container world.
type Options struct {
	// LogDir keeps every container's log after the run (default: a new
	// directory under the system temp dir).
	LogDir string
	// Pipeline starts the capture and the three sink appliers.
	Pipeline bool
	// Bugs is passed to the pipeline processes as --bug.
	Bugs string
	// CommitTimestamps turns on the source's track_commit_timestamp, so
	// pg_xact_commit_timestamp tells when each transaction committed (the
	// side-by-side benchmark's commit -> Kafka latency).
	CommitTimestamps bool
	Logger           *slog.Logger
}

// World is one run's private network and containers: a source PostgreSQL, a
// replica PostgreSQL, a search PostgreSQL (full-text search), Redis, three
// Kafka brokers (KRaft, replication factor 3, min.insync.replicas 2) and,
// for the pipeline, the capture and three sink appliers, each in its own
// container so it can be killed, paused and cut off like any other process.
// Only ports on 127.0.0.1 are published.
type World struct {
	id    string
	opts  Options
	net   *testcontainers.DockerNetwork
	mu    sync.Mutex
	svcs  map[string]*Service
	order []string
	// procs are the pipeline's processes as StartPipeline started them,
	// by service name, for starting a second instance (StartSecond).
	procs  map[string]proc
	log    *slog.Logger
	closed bool
	// runs counts the runs given this world (Config.World), dirty says
	// one ran since the last reset, and runDir is the folder the last
	// one's pipeline logs go to (see claim).
	runs   int
	dirty  bool
	runDir string

	SourceDSN  string // host DSNs of the databases
	ReplicaDSN string
	SearchDSN  string
	RedisAddr  string
	Kafka      []string // brokers' external listeners on 127.0.0.1
	// InternalSourceDSN etc. are the addresses on the private network.
	InternalSourceDSN  string
	InternalReplicaDSN string
	InternalSearchDSN  string
	InternalRedis      string
	InternalKafka      []string
	LogDir             string
	// CoordinatorURL is two-phase commit's coordinator on 127.0.0.1, once
	// StartCoordinator started it.
	CoordinatorURL string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// quiet drops testcontainers' own chatter; lockstep logs what matters.
type quiet struct{}

func (quiet) Printf(string, ...any) {}

// bindPrefix marks, in a request's Env, a host port to publish a container
// port on (removed from the environment before the container is created).
const bindPrefix = "LOCKSTEP_BIND_"

func bind(hostPort int, containerPort string) map[string]string {
	return map[string]string{bindPrefix + containerPort: strconv.Itoa(hostPort)}
}

func withBind(env map[string]string, hostPort int, containerPort string) map[string]string {
	for k, v := range bind(hostPort, containerPort) {
		env[k] = v
	}
	return env
}

func dsn(host string, port int) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", host, port)
}

// Start creates the network and the storage containers (databases, cache,
// brokers) and waits until they are ready. The pipeline processes start with
// StartPipeline, once the source is prepared.
func Start(ctx context.Context, opts Options) (*World, error) {
	if err := Available(ctx); err != nil {
		return nil, err
	}
	os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true") // its reaper image cannot be pulled here; we clean up ourselves
	tclog.SetDefault(quiet{})
	_ = RemoveStale(ctx)
	w := &World{id: fmt.Sprintf("lockstep-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6), opts: opts, svcs: map[string]*Service{}, log: opts.Logger}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	w.LogDir = opts.LogDir
	if w.LogDir == "" {
		w.LogDir = filepath.Join(os.TempDir(), w.id)
	}
	if err := os.MkdirAll(w.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("containers: log dir: %w", err)
	}
	register(w)
	nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(w.labels()))
	if err != nil {
		return nil, fmt.Errorf("containers: create network: %w", err)
	}
	w.net = nw
	type spec struct {
		name string
		role faults.Role
		req  testcontainers.ContainerRequest
	}
	var specs []spec
	pg := func(name string, dst *string, internal *string) error {
		port, err := freePort()
		if err != nil {
			return err
		}
		*dst, *internal = dsn("127.0.0.1", port), dsn(name, 5432)
		var args []string
		if name == sourceNode && opts.CommitTimestamps {
			args = []string{"-c", "track_commit_timestamp=on"}
		}
		specs = append(specs, spec{name, faults.RoleDB, testcontainers.ContainerRequest{
			Image: BaseImage, Entrypoint: []string{"lockstep-pg"}, Cmd: args,
			ExposedPorts: []string{"5432/tcp"}, Env: bind(port, "5432/tcp"),
			WaitingFor: wait.ForLog("database system is ready to accept connections").WithStartupTimeout(90 * time.Second),
		}})
		return nil
	}
	if err := errors.Join(pg("pg-source", &w.SourceDSN, &w.InternalSourceDSN),
		pg("pg-replica", &w.ReplicaDSN, &w.InternalReplicaDSN),
		pg("pg-search", &w.SearchDSN, &w.InternalSearchDSN)); err != nil {
		w.Close(ctx)
		return nil, err
	}
	specs[1].role, specs[2].role = faults.RoleStore, faults.RoleStore
	redisPort, err := freePort()
	if err != nil {
		w.Close(ctx)
		return nil, err
	}
	w.RedisAddr, w.InternalRedis = fmt.Sprintf("127.0.0.1:%d", redisPort), "redis:6379"
	specs = append(specs, spec{"redis", faults.RoleStore, testcontainers.ContainerRequest{
		Image: BaseImage, Entrypoint: []string{"redis-server"},
		Cmd:          []string{"--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"},
		ExposedPorts: []string{"6379/tcp"}, Env: bind(redisPort, "6379/tcp"),
		WaitingFor: wait.ForLog("Ready to accept connections").WithStartupTimeout(60 * time.Second),
	}})
	for i := 1; i <= 3; i++ {
		port, err := freePort()
		if err != nil {
			w.Close(ctx)
			return nil, err
		}
		name := "kafka" + strconv.Itoa(i)
		w.Kafka = append(w.Kafka, fmt.Sprintf("127.0.0.1:%d", port))
		w.InternalKafka = append(w.InternalKafka, name+":9092")
		specs = append(specs, spec{name, faults.RoleBroker, testcontainers.ContainerRequest{
			Image: BaseImage, Entrypoint: []string{"lockstep-kafka"},
			Env:            withBind(map[string]string{"NODE_ID": strconv.Itoa(i), "EXTERNAL_PORT": strconv.Itoa(port)}, port, "19092/tcp"),
			ExposedPorts:   []string{"19092/tcp"},
			ConfigModifier: func(c *container.Config) { c.Hostname = name },
			WaitingFor:     wait.ForLog("Kafka Server started").WithStartupTimeout(120 * time.Second),
		}})
	}
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.run(ctx, s.name, s.role, s.req)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		w.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return w, nil
}

func (w *World) labels() map[string]string {
	return map[string]string{labelRun: w.id, labelPID: strconv.Itoa(os.Getpid())}
}

// run starts one container on the run's network under its service name.
func (w *World) run(ctx context.Context, name string, role faults.Role, req testcontainers.ContainerRequest) error {
	req.Name = w.id + "-" + name
	req.Networks = []string{w.net.Name}
	req.NetworkAliases = map[string][]string{w.net.Name: {name}}
	req.Labels = w.labels()
	prev := req.ConfigModifier
	req.ConfigModifier = func(c *container.Config) {
		if prev != nil {
			prev(c)
		}
		if c.Hostname == "" {
			c.Hostname = name
		}
	}
	// Publish each port on 127.0.0.1 only, at the host port chosen before
	// start (so it survives a restart and can be advertised).
	bindings := network.PortMap{}
	for k, v := range req.Env {
		if strings.HasPrefix(k, bindPrefix) {
			port, err := network.ParsePort(strings.TrimPrefix(k, bindPrefix))
			if err != nil {
				return fmt.Errorf("containers: %s: %w", name, err)
			}
			bindings[port] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: v}}
			delete(req.Env, k)
		}
	}
	req.HostConfigModifier = func(hc *container.HostConfig) {
		hc.RestartPolicy = container.RestartPolicy{Name: "no"}
		hc.PortBindings = bindings
	}
	start := time.Now()
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	svc := &Service{Name: name, Role: role, c: c}
	if c != nil {
		svc.ID = c.GetContainerID()
	}
	w.mu.Lock()
	if svc.ID != "" {
		w.svcs[name] = svc
		w.order = append(w.order, name)
	}
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("containers: start %s: %w (its log is kept in %s)", name, err, w.LogDir)
	}
	w.log.Info("containers: started", "service", name, "in", time.Since(start).Round(time.Millisecond))
	return nil
}

// proc is a pipeline process: its service name, role and command.
type proc struct {
	name string
	role faults.Role
	cmd  []string
}

// StartPipeline starts the capture and one applier per store.
func (w *World) StartPipeline(ctx context.Context) error {
	brokers := strings.Join(w.InternalKafka, ",")
	common := []string{"--brokers", brokers, "--topic", Topic}
	if w.opts.Bugs != "" {
		common = append(common, "--bug", w.opts.Bugs)
	}
	procs := append([]proc{{"capture", faults.RoleCapture, append([]string{"capture", "--source", w.InternalSourceDSN}, common...)}},
		w.appliers(common)...)
	return w.startProcs(ctx, procs)
}

// appliers are the three sink appliers' processes, with args after each
// command.
func (w *World) appliers(args []string) []proc {
	return []proc{
		{"applier-replica", faults.RoleApplier, append([]string{"apply", "--store", "replica", "--target", w.InternalReplicaDSN}, args...)},
		{"applier-cache", faults.RoleApplier, append([]string{"apply", "--store", "cache", "--target", w.InternalRedis}, args...)},
		{"applier-search", faults.RoleApplier, append([]string{"apply", "--store", "search", "--target", w.InternalSearchDSN}, args...)},
	}
}

// startProcs starts lockstep processes, each in a container of its own,
// and waits until each says it is ready.
func (w *World) startProcs(ctx context.Context, procs []proc) error {
	w.mu.Lock()
	w.procs = map[string]proc{}
	for _, p := range procs {
		w.procs[p.name] = p
	}
	w.mu.Unlock()
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.run(ctx, p.name, p.role, testcontainers.ContainerRequest{
				Image: PipelineImage, Cmd: p.cmd,
				WaitingFor: wait.ForLog("lockstep: ready").WithStartupTimeout(90 * time.Second),
			})
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// StartSecond starts a second instance of pipeline process name: a
// container of its own (service scenarios.SecondInstanceName(name)) with
// the same command, so the same slot, topic, store and consumer group, on
// the run's network, kept and removed with the others. It returns once the
// container runs, without waiting for the process to be ready: the fault
// phase goes on meanwhile.
func (w *World) StartSecond(ctx context.Context, name string) error {
	w.mu.Lock()
	p, ok := w.procs[name]
	_, dup := w.svcs[scenarios.SecondInstanceName(name)]
	w.mu.Unlock()
	switch {
	case !ok:
		return fmt.Errorf("containers: no pipeline process %q to start a second instance of", name)
	case dup:
		return fmt.Errorf("containers: %s has a second instance already", name)
	}
	return w.run(ctx, scenarios.SecondInstanceName(name), p.role, testcontainers.ContainerRequest{Image: PipelineImage, Cmd: p.cmd})
}

var (
	liveMu sync.Mutex
	live   = map[*World]bool{}
)

func register(w *World)   { liveMu.Lock(); live[w] = true; liveMu.Unlock() }
func unregister(w *World) { liveMu.Lock(); delete(live, w); liveMu.Unlock() }

// CloseAll closes every world this process still has open: what a signal
// handler calls before exiting, so Ctrl-C leaves nothing behind.
func CloseAll(ctx context.Context) {
	liveMu.Lock()
	ws := make([]*World, 0, len(live))
	for w := range live {
		ws = append(ws, w)
	}
	liveMu.Unlock()
	for _, w := range ws {
		_ = w.Close(ctx)
	}
}

// Services lists the run's services in start order.
func (w *World) Services() []*Service {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*Service, 0, len(w.order))
	for _, n := range w.order {
		out = append(out, w.svcs[n])
	}
	return out
}

// Service returns a service by name.
func (w *World) Service(name string) (*Service, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.svcs[name]
	return s, ok
}

// Close keeps every container's log in LogDir, then removes the containers
// and the network. It is safe to call more than once and after a failure.
func (w *World) Close(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	svcs := make([]*Service, 0, len(w.order))
	for _, n := range w.order {
		svcs = append(svcs, w.svcs[n])
	}
	w.mu.Unlock()
	defer unregister(w)
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for _, s := range svcs {
		if err := w.remove(ctx, s); err != nil {
			errs = append(errs, err)
		}
	}
	// Containers that failed before registering still carry the run label.
	if ids, err := docker(ctx, "ps", "-aq", "--filter", "label="+labelRun+"="+w.id); err == nil && ids != "" {
		for _, id := range strings.Fields(ids) {
			_, _ = docker(ctx, "rm", "-f", "-v", id)
		}
	}
	if w.net != nil {
		if _, err := docker(ctx, "network", "rm", w.net.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
