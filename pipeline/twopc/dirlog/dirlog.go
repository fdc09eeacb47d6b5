// Package dirlog is a two-phase-commit coordinator's decision log on its
// own disk: a directory holding one file per commit decision not yet done.
//
// The log belongs to the coordinator, as a transaction manager's does in
// practice (Narayana's and Atomikos' default object stores are files on
// the TM's disk): kept in a participant (a table in the source database)
// it would be lost or unreadable whenever that participant is, and the
// coordinator could not tell what it decided while the source is down.
// It is also what the simulator models (a decision log on the coordinator
// node's disk), so both worlds run one protocol.
//
// A decision is durable once Commit returns: its file is written under a
// temporary name, synced, renamed into place and the directory synced, so
// a kill -9 at any point leaves either no decision or a whole one. Done
// removes the file. File names carry a sequence number, so Decisions lists
// them in the order logged.
package dirlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"lockstep/pipeline/twopc"
)

// Log is a decision log in a directory (twopc.DecisionLog).
type Log struct {
	dir string

	mu  sync.Mutex
	seq uint64
}

var _ twopc.DecisionLog = (*Log)(nil)

const suffix = ".decision"

// Open opens the log in dir, creating it when missing, and removes what a
// crash left half-written (temporary files).
func Open(dir string) (*Log, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	l := &Log{dir: dir}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("decision log: remove a half-written decision: %w", err)
			}
			continue
		}
		if n, _, ok := parseName(name); ok {
			l.seq = max(l.seq, n)
		}
	}
	return l, nil
}

// gidEscaper makes a gid a file name's part.
var gidEscaper = strings.NewReplacer("%", "%25", "/", "%2F")

// fileName is a decision's file: its sequence number, zero-padded so that
// names sort in log order, and its gid, escaped.
func fileName(seq uint64, gid string) string {
	return fmt.Sprintf("%020d-%s%s", seq, gidEscaper.Replace(gid), suffix)
}

// parseName reads a decision's file name: its sequence number and
// escaped gid.
func parseName(name string) (seq uint64, escapedGID string, ok bool) {
	head, ok := strings.CutSuffix(name, suffix)
	if !ok {
		return 0, "", false
	}
	num, gid, ok := strings.Cut(head, "-")
	n, err := strconv.ParseUint(num, 10, 64)
	return n, gid, ok && err == nil
}

// Commit implements twopc.DecisionLog: the decision is on disk, synced,
// when it returns.
func (l *Log) Commit(_ context.Context, d twopc.Decision) error {
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("decision log: encode %s: %w", d.GID, err)
	}
	l.mu.Lock()
	l.seq++
	name := fileName(l.seq, d.GID)
	l.mu.Unlock()
	path := filepath.Join(l.dir, name)
	if err := writeSynced(path+".tmp", data); err != nil {
		return fmt.Errorf("decision log: %s: %w", d.GID, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("decision log: %s: %w", d.GID, err)
	}
	if err := syncDir(l.dir); err != nil {
		return fmt.Errorf("decision log: %s: %w", d.GID, err)
	}
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Done implements twopc.DecisionLog.
func (l *Log) Done(_ context.Context, gid string) error {
	names, err := l.names()
	if err != nil {
		return err
	}
	for _, name := range names {
		if _, g, _ := parseName(name); g == gidEscaper.Replace(gid) {
			if err := os.Remove(filepath.Join(l.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("decision log: done %s: %w", gid, err)
			}
		}
	}
	return nil
}

// names lists the decisions' files in log order.
func (l *Log) names() ([]string, error) {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	var names []string
	for _, e := range entries {
		if _, _, ok := parseName(e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// Decisions implements twopc.DecisionLog.
func (l *Log) Decisions(context.Context) ([]twopc.Decision, error) {
	names, err := l.names()
	if err != nil {
		return nil, err
	}
	var ds []twopc.Decision
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(l.dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue // done meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("decision log: %w", err)
		}
		var d twopc.Decision
		if err := json.Unmarshal(data, &d); err != nil {
			return nil, fmt.Errorf("decision log: %s: %w", name, err)
		}
		ds = append(ds, d)
	}
	return ds, nil
}
