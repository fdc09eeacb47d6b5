package containers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"lockstep/faults"
	"lockstep/model"
)

// Target applies faults to a container world (faults.Target): kill -9 and
// restart, pause and unpause, and network faults made inside each
// container's network namespace from the host (nsenter + iptables for
// partitions, tc netem for delay and loss), so even FROM-scratch images
// can be cut off.
type Target struct {
	w   *World
	ctx context.Context
	// FailoverDowntime is how long a failed-over leader stays down before
	// it is restarted (default 8s).
	FailoverDowntime time.Duration
	// Topic is the topic whose partition's leader a failover kills and
	// whose unclean election is switched (default: the pipeline's, Topic).
	Topic string

	mu      sync.Mutex
	timers  []*time.Timer
	touched map[string]bool // containers whose netns carries rules
	// tl, since and states record what the target did (see Follow).
	tl     *model.Timeline
	since  func() time.Duration
	states map[string]*nodeState
}

// NewTarget returns the fault target of w; ctx bounds every docker call.
func NewTarget(ctx context.Context, w *World) *Target {
	return &Target{w: w, ctx: ctx, FailoverDowntime: 8 * time.Second, Topic: Topic, touched: map[string]bool{}}
}

func (t *Target) svc(name string) (*Service, error) {
	s, ok := t.w.Service(name)
	if !ok {
		return nil, fmt.Errorf("no container %q in this run", name)
	}
	return s, nil
}

func (t *Target) docker(name string, args ...string) error {
	s, err := t.svc(name)
	if err != nil {
		return err
	}
	_, err = docker(t.ctx, append(args, s.ID)...)
	return err
}

// Crash kills the container's processes with SIGKILL.
func (t *Target) Crash(name string) error {
	err := t.docker(name, "kill", "--signal", "KILL")
	if err == nil {
		t.note(name, func(s *nodeState) { s.crashed, s.paused = true, false })
	}
	return err
}

// Restart starts a killed container again, from its own filesystem.
func (t *Target) Restart(name string) error {
	t.mu.Lock()
	delete(t.touched, name) // a new network namespace: no rules
	t.mu.Unlock()
	err := t.docker(name, "start")
	if err == nil {
		t.note(name, func(s *nodeState) { s.crashed = false; clear(s.cutFrom) })
	}
	return err
}

func (t *Target) Pause(name string) error {
	err := t.docker(name, "pause")
	if err == nil {
		t.note(name, func(s *nodeState) { s.paused = true })
	}
	return err
}

func (t *Target) Resume(name string) error {
	err := t.docker(name, "unpause")
	if err == nil {
		t.note(name, func(s *nodeState) { s.paused = false })
	}
	return err
}

// netns runs a command (iptables, tc) inside a container's network namespace.
func (t *Target) netns(name string, cmd ...string) error {
	s, err := t.svc(name)
	if err != nil {
		return err
	}
	pid, err := docker(t.ctx, "inspect", "--format", "{{.State.Pid}}", s.ID)
	if err != nil {
		return err
	}
	if pid == "0" {
		return fmt.Errorf("%s is not running", name)
	}
	t.mu.Lock()
	t.touched[name] = true
	t.mu.Unlock()
	_, err = hostRun(t.ctx, append([]string{"nsenter", "-t", pid, "-n"}, cmd...)...)
	return err
}

func (t *Target) ip(name string) (string, error) {
	s, err := t.svc(name)
	if err != nil {
		return "", err
	}
	return docker(t.ctx, "inspect", "--format", `{{(index .NetworkSettings.Networks "`+t.w.net.Name+`").IPAddress}}`, s.ID)
}

// Partition drops every packet from a container of a to one of b (and back
// unless oneWay).
func (t *Target) Partition(a, b []string, oneWay bool) error {
	var errs []error
	block := func(x, y string) {
		ip, err := t.ip(y)
		if err == nil && ip != "" {
			err = t.netns(x, "iptables", "-I", "OUTPUT", "-d", ip, "-j", "DROP")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cut %s -> %s: %w", x, y, err))
		}
	}
	for _, x := range a {
		for _, y := range b {
			block(x, y)
			if !oneWay {
				block(y, x)
			}
		}
	}
	t.noteCut(a, b)
	return errors.Join(errs...)
}

// Heal removes every partition, delay and loss (lost-ack and lost-append
// included: they are losses).
func (t *Target) Heal() error {
	t.mu.Lock()
	var names []string
	for n := range t.touched {
		names = append(names, n)
	}
	t.touched = map[string]bool{}
	t.mu.Unlock()
	for _, n := range names {
		_ = t.netns(n, "iptables", "-F", "OUTPUT")
		_ = t.netns(n, "tc", "qdisc", "del", "dev", "eth0", "root")
	}
	t.mu.Lock()
	t.touched = map[string]bool{}
	t.mu.Unlock()
	t.noteHealed()
	return nil
}

// shape sends from's traffic to to through a netem queue: a prio qdisc whose
// fourth band (unused by default) holds the netem, and a filter on to's IP.
func (t *Target) shape(from, to string, netem ...string) error {
	ip, err := t.ip(to)
	if err != nil {
		return err
	}
	_ = t.netns(from, "tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "prio", "bands", "4", "priomap", "1", "2", "2", "2", "1", "2", "0", "0", "1", "1", "1", "1", "1", "1", "1", "1")
	args := append([]string{"tc", "qdisc", "replace", "dev", "eth0", "parent", "1:4", "handle", "40:", "netem"}, netem...)
	if err := t.netns(from, args...); err != nil {
		return err
	}
	return t.netns(from, "tc", "filter", "add", "dev", "eth0", "protocol", "ip", "parent", "1:0", "prio", "1", "u32", "match", "ip", "dst", ip+"/32", "flowid", "1:4")
}

// Delay slows the link from -> to: latency uniform-ish in [min, max]. It
// needs the kernel's prio and netem queueing disciplines; where they are
// missing (some sandboxed kernels) it says so rather than pretend.
func (t *Target) Delay(from, to string, min, max time.Duration) error {
	mid, jitter := (min+max)/2, (max-min)/2
	if err := t.shape(from, to, "delay", ms(mid), ms(jitter)); err != nil {
		if strings.Contains(err.Error(), "unknown") || strings.Contains(err.Error(), "find specified qdisc") {
			return fmt.Errorf("delay needs tc netem, which this kernel lacks (sch_prio/sch_netem): %w", err)
		}
		return err
	}
	return nil
}

// Loss drops a share p of the packets from -> to, with iptables' statistic
// match (available where netem is not).
func (t *Target) Loss(from, to string, p float64) error {
	ip, err := t.ip(to)
	if err != nil {
		return err
	}
	return t.netns(from, "iptables", "-I", "OUTPUT", "-d", ip, "-m", "statistic", "--mode", "random",
		"--probability", strconv.FormatFloat(p, 'f', 4, 64), "-j", "DROP")
}

// LostAck drops a share p of the packets every broker sends to node (the
// capture), with LostAppend's rule in the other direction. TCP makes the
// difference a network can make: the brokers still receive node's produce
// requests and append them, and the answers do not come back, so the Kafka
// client's request times out on an append that took effect (it then
// retries, and the broker deduplicates the idempotent producer's batch).
// Under 1, TCP retransmits what was dropped and the fault only slows the
// link: appends time out, ambiguously, only while p is near 1 for longer
// than the client's request timeout. Unlike the simulator's, which loses
// produce requests and their answers only, this drops all of node's traffic
// with the brokers (during streaming, the capture sends them little else).
func (t *Target) LostAck(node string, p float64) error {
	return t.eachBroker(func(b string) error { return t.Loss(b, node, p) })
}

// LostAppend drops a share p of the packets node sends to every broker, so
// its produce requests do not reach them and nothing is appended; to node
// it looks the same as LostAck. See LostAck for what TCP makes of it.
func (t *Target) LostAppend(node string, p float64) error {
	return t.eachBroker(func(b string) error { return t.Loss(node, b, p) })
}

func (t *Target) eachBroker(fn func(broker string) error) error {
	var errs []error
	n := 0
	for _, s := range t.w.Services() {
		if s.Role != faults.RoleBroker {
			continue
		}
		n++
		if err := fn(s.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
		}
	}
	if n == 0 {
		return errors.New("no broker in this run")
	}
	return errors.Join(errs...)
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

// ClockJump is not available: containers share the host's clock, and
// libfaketime is not part of the images.
func (t *Target) ClockJump(string, time.Duration) error {
	return errors.New("clock-jump is not supported in the container world (containers share the host clock)")
}

// SecondInstance starts a second container of a pipeline process beside
// the first (World.StartSecond).
func (t *Target) SecondInstance(name string) error { return t.w.StartSecond(t.ctx, name) }

// LeaderFailover kills the broker that leads the topic's partition and
// restarts it after FailoverDowntime.
func (t *Target) LeaderFailover() error {
	leader, err := t.leader()
	if err != nil {
		return err
	}
	name := "kafka" + strconv.Itoa(int(leader))
	if err := t.Crash(name); err != nil {
		return err
	}
	t.mu.Lock()
	t.timers = append(t.timers, time.AfterFunc(t.FailoverDowntime, func() { _ = t.Restart(name) }))
	t.mu.Unlock()
	return nil
}

func (t *Target) admin() (*kadm.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(t.w.Kafka...))
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// leader finds the broker that leads the topic's partition. A broker that
// is still coming back from an earlier failover may close the connection or
// report no leader yet: that is transient, so it asks again, with a growing
// pause, for up to leaderLookup, and names the last answer if none came.
func (t *Target) leader() (int32, error) {
	adm, err := t.admin()
	if err != nil {
		return 0, err
	}
	defer adm.Close()
	deadline := time.Now().Add(leaderLookup)
	pause := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		leader, err := t.askLeader(adm)
		if err == nil {
			return leader, nil
		}
		if t.ctx.Err() != nil || time.Now().Add(pause).After(deadline) {
			return 0, fmt.Errorf("after %d attempts in %v: %w", attempt, leaderLookup, err)
		}
		select {
		case <-t.ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// leaderLookup bounds how long leader keeps asking.
const leaderLookup = 20 * time.Second

func (t *Target) askLeader(adm *kadm.Client) (int32, error) {
	ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
	defer cancel()
	td, err := adm.ListTopics(ctx, t.Topic)
	if err != nil {
		return 0, fmt.Errorf("find the leader of %s: %w", t.Topic, err)
	}
	p, ok := td[t.Topic].Partitions[0]
	if !ok || p.Leader < 0 {
		return 0, fmt.Errorf("topic %s partition 0 has no leader", t.Topic)
	}
	return p.Leader, nil
}

// UncleanElection switches unclean leader election for the topic.
func (t *Target) UncleanElection(on bool) error {
	adm, err := t.admin()
	if err != nil {
		return err
	}
	defer adm.Close()
	v := strconv.FormatBool(on)
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	defer cancel()
	_, err = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "unclean.leader.election.enable", Value: &v}}, t.Topic)
	return err
}

// Retention deletes the topic's records older than keep, as retention.ms
// does: it finds the first offset written within keep (ListOffsets by
// timestamp) and deletes the records before it (DeleteRecords), which moves
// the log start offset there.
func (t *Target) Retention(keep time.Duration) error {
	adm, err := t.admin()
	if err != nil {
		return err
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	defer cancel()
	listed, err := adm.ListOffsetsAfterMilli(ctx, time.Now().Add(-keep).UnixMilli(), Topic)
	if err != nil {
		return fmt.Errorf("retention: find the first record younger than %s: %w", keep, err)
	}
	o, ok := listed.Lookup(Topic, 0)
	if !ok || o.Err != nil {
		return fmt.Errorf("retention: find the first record younger than %s: partition 0: %v", keep, o.Err)
	}
	if o.Offset < 0 {
		return nil // no record younger than keep, and none is deleted past the end
	}
	var before kadm.Offsets
	before.AddOffset(Topic, 0, o.Offset, -1)
	resps, err := adm.DeleteRecords(ctx, before)
	if err != nil {
		return fmt.Errorf("retention: delete records before offset %d: %w", o.Offset, err)
	}
	return resps.Error()
}

// SlotDrop drops the capture's replication slot on the source database
// node, as an operator or max_slot_wal_keep_size would: it ends the
// walsender holding it, then drops it, again while the capture is quick to
// take it back. The audit slot that records the ground truth is left alone.
func (t *Target) SlotDrop(node string) error {
	if node != "pg-source" {
		return fmt.Errorf("slot-drop: %s is not the source database (pg-source)", node)
	}
	ctx, cancel := context.WithTimeout(t.ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, t.w.SourceDSN)
	if err != nil {
		return fmt.Errorf("slot-drop: connect to %s: %w", node, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	const sql = `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`
	for {
		if _, err := conn.Exec(ctx, sql, PipelineSlot); err != nil {
			return fmt.Errorf("slot-drop: end the session holding slot %s: %w", PipelineSlot, err)
		}
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, PipelineSlot).Scan(&n); err != nil {
			return fmt.Errorf("slot-drop: look for slot %s: %w", PipelineSlot, err)
		}
		if n == 0 {
			return nil // gone already (the capture had not made it yet)
		}
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, PipelineSlot)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("slot-drop: drop slot %s: %w", PipelineSlot, err)
		}
		// The capture took the slot again between the two statements.
		time.Sleep(50 * time.Millisecond)
	}
}

// PipelineSlot is the replication slot the capture uses in the container
// world (the capture's default).
const PipelineSlot = "lockstep"

// Settle stops pending restarts' timers and brings every container back up
// and unpaused: the quiet phase's safety net.
func (t *Target) Settle() {
	t.mu.Lock()
	for _, tm := range t.timers {
		tm.Stop()
	}
	t.timers = nil
	t.mu.Unlock()
	_ = t.Heal()
	for _, s := range t.w.Services() {
		state, err := docker(t.ctx, "inspect", "--format", "{{.State.Status}}", s.ID)
		if err != nil {
			continue
		}
		switch strings.TrimSpace(state) {
		case "paused":
			_ = t.Resume(s.Name)
		case "exited", "created":
			_ = t.Restart(s.Name)
		}
	}
}
