package twopc

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
)

// fakeEnv is an Env whose Sleep returns at once: the coordinator's loops
// run straight through in a test.
type fakeEnv struct{}

func (fakeEnv) Now() time.Time                                   { return time.Time{} }
func (fakeEnv) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }
func (fakeEnv) Go(string, func(context.Context))                 {}
func (fakeEnv) Rand() *rand.Rand                                 { return rand.New(rand.NewPCG(1, 2)) }

// fakePart is a participant in memory: what is prepared, what committed
// (at which LSN), every call in order.
type fakePart struct {
	kind      model.StoreKind
	prepared  []string
	committed map[string]model.LSN
	calls     []string
	failPrep  bool
	nextLSN   model.LSN
}

func newPart(kind model.StoreKind, prepared ...string) *fakePart {
	return &fakePart{kind: kind, prepared: prepared, committed: map[string]model.LSN{}, nextLSN: 100}
}

func (p *fakePart) Kind() model.StoreKind { return p.kind }

func (p *fakePart) prepare(gid string) error {
	p.calls = append(p.calls, "prepare "+gid)
	if p.failPrep {
		return pipeline.ErrUnavailable
	}
	p.prepared = append(p.prepared, gid)
	return nil
}

func (p *fakePart) commit(gid string) (model.LSN, error) {
	p.calls = append(p.calls, "commit "+gid)
	if lsn, ok := p.committed[gid]; ok {
		return lsn, nil
	}
	i := slices.Index(p.prepared, gid)
	if i < 0 {
		return 0, ErrUnknownGID
	}
	p.prepared = slices.Delete(p.prepared, i, i+1)
	p.nextLSN++
	p.committed[gid] = p.nextLSN
	return p.nextLSN, nil
}

func (p *fakePart) RollbackPrepared(_ context.Context, gid string) error {
	p.calls = append(p.calls, "rollback "+gid)
	p.prepared = slices.DeleteFunc(p.prepared, func(g string) bool { return g == gid })
	return nil
}

func (p *fakePart) Prepared(context.Context) ([]string, error) { return slices.Clone(p.prepared), nil }

type fakeSource struct{ *fakePart }

func (s fakeSource) Prepare(_ context.Context, gid string, fn pipeline.TxnFunc) (model.Txn, error) {
	return model.Txn{Changes: []model.Change{{Table: "t", PK: "a", Op: model.OpInsert, Row: model.R("v", "1")}}}, s.prepare(gid)
}

func (s fakeSource) CommitPrepared(_ context.Context, gid string) (model.LSN, error) {
	return s.commit(gid)
}

type fakeStore struct{ *fakePart }

func (s fakeStore) Prepare(_ context.Context, gid string, _ model.Txn) error { return s.prepare(gid) }

func (s fakeStore) CommitPrepared(_ context.Context, gid string, lsn model.LSN) error {
	_, err := s.commit(gid)
	if err == nil {
		s.committed[gid] = lsn
	}
	return err
}

type fakeLog struct{ ds []Decision }

func (l *fakeLog) Commit(_ context.Context, d Decision) error { l.ds = append(l.ds, d); return nil }
func (l *fakeLog) Done(_ context.Context, gid string) error {
	l.ds = slices.DeleteFunc(l.ds, func(d Decision) bool { return d.GID == gid })
	return nil
}
func (l *fakeLog) Decisions(context.Context) ([]Decision, error) { return slices.Clone(l.ds), nil }

func rig(bugs Bugs) (*Coordinator, *fakePart, *fakePart, *fakeLog) {
	src, st := newPart(model.Replica), newPart(model.Replica)
	log := &fakeLog{}
	c := &Coordinator{Env: fakeEnv{}, ID: "c#2", Source: fakeSource{src}, Stores: []Store{fakeStore{st}}, Log: log, Bugs: bugs}
	return c, src, st, log
}

// Recovery commits everywhere what the log decided (labelled with the
// source's LSN), rolls back what it did not (presumed abort), and leaves
// the log empty; with ForgetInDoubt it leaves an earlier incarnation's
// transactions prepared.
func TestRecoverResolvesInDoubtTransactions(t *testing.T) {
	for _, bugs := range []Bugs{{}, {ForgetInDoubt: true}} {
		c, src, st, log := rig(bugs)
		// c#1.1 decided, committed on the source only; c#1.2 prepared,
		// undecided; c#1.3 decided, prepared everywhere.
		src.prepared = []string{"c#1.2", "c#1.3"}
		src.committed["c#1.1"] = 7
		st.prepared = []string{"c#1.1", "c#1.2", "c#1.3"}
		log.ds = []Decision{{GID: "c#1.1"}, {GID: "c#1.3"}}
		err := c.Recover(context.Background())
		if err != nil {
			t.Fatalf("bugs %+v: recover: %v", bugs, err)
		}
		if bugs.ForgetInDoubt {
			if len(st.prepared) != 3 || len(log.ds) != 2 {
				t.Errorf("forget-in-doubt: store holds %v, log %v: want everything left as it was", st.prepared, log.ds)
			}
			continue
		}
		if len(src.prepared) != 0 || len(st.prepared) != 0 || len(log.ds) != 0 {
			t.Errorf("left prepared: source %v, store %v; log %v; want nothing", src.prepared, st.prepared, log.ds)
		}
		if st.committed["c#1.1"] != 7 || st.committed["c#1.3"] != src.committed["c#1.3"] {
			t.Errorf("store committed %v, source %v: want each at the source's LSN", st.committed, src.committed)
		}
		if _, ok := st.committed["c#1.2"]; ok {
			t.Error("the undecided transaction committed")
		}
	}
}

// Recovery leaves alone what a Do of this process is working on.
func TestRecoverLeavesActiveTransactions(t *testing.T) {
	c, src, _, _ := rig(Bugs{})
	c.active = map[string]bool{"c#2.1": true}
	src.prepared = []string{"c#2.1"}
	if err := c.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(src.prepared, []string{"c#2.1"}) {
		t.Errorf("source holds %v: recovery rolled back an active transaction", src.prepared)
	}
}

// A store that fails to prepare rolls the transaction back everywhere and
// nothing is decided; with CommitBeforePrepared the source commits anyway.
func TestDoRollsBackWhenAStoreCannotPrepare(t *testing.T) {
	for _, bugs := range []Bugs{{}, {CommitBeforePrepared: true}} {
		c, src, st, log := rig(bugs)
		st.failPrep = true
		err := c.Do(context.Background(), nil)
		committed := len(src.committed) > 0
		switch {
		case !bugs.CommitBeforePrepared && (err == nil || committed || len(src.prepared) > 0 || len(log.ds) > 0):
			t.Errorf("err %v; source committed %v, holds %v; log %v: want an error and nothing committed or held", err, src.committed, src.prepared, log.ds)
		case bugs.CommitBeforePrepared && !committed:
			t.Errorf("commit-before-prepared: the source did not commit (err %v)", err)
		}
	}
	c, src, st, log := rig(Bugs{})
	if err := c.Do(context.Background(), nil); err != nil || len(log.ds) != 0 {
		t.Fatalf("do: %v, log %v", err, log.ds)
	}
	want := []string{"prepare c#2.1", "commit c#2.1"}
	if !slices.Equal(src.calls, want) || !slices.Equal(st.calls, want) {
		t.Errorf("calls: source %v, store %v; want %v each", src.calls, st.calls, want)
	}
}

// A decision whose source commit happened before the coordinator died,
// on a source that forgets a gid once committed (PostgreSQL): recovery
// takes the unknown gid as committed and commits the stores, which still
// hold it prepared; rolling them back would lose what the source holds.
func TestRecoverCommitsStoresWhenTheSourceForgotTheGID(t *testing.T) {
	c, src, st, log := rig(Bugs{})
	st.prepared = []string{"c#1.1"}
	log.ds = []Decision{{GID: "c#1.1", Txn: model.Txn{Changes: []model.Change{{Table: "t", PK: "a", Op: model.OpInsert, Row: model.R("v", "1")}}}}}
	if err := c.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.committed["c#1.1"]; !ok || len(st.prepared) != 0 {
		t.Fatalf("the store after recovery: prepared %v, committed %v; want c#1.1 committed (calls %v)", st.prepared, st.committed, st.calls)
	}
	if len(log.ds) != 0 || len(src.prepared) != 0 {
		t.Fatalf("left: decisions %v, source prepared %v", log.ds, src.prepared)
	}
}
