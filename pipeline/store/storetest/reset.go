package storetest

import (
	"fmt"
	"maps"

	"lockstep/model"
	"lockstep/pipeline"
)

// Reads during a rebuild: a whole reader of the replica (ReadAll) takes its
// snapshot, a rebuild (a reset batch) commits, then the reader reads the
// rows. The reader must see the replica before the rebuild or after it,
// whole: never the old position beside the rebuilt tables. PostgreSQL's
// DDL is not MVCC-safe, so a rebuild that drops and creates the tables
// shows such a reader new tables that are empty to it (a torn read). The
// simulated replica and pgstore's run the same cases (sim/services and
// conformance), with the correct rebuild and with the reset-by-ddl bug.

// ReadOutcome is what a reader during a rebuild saw.
type ReadOutcome string

const (
	SawBefore ReadOutcome = "before" // the replica as before the rebuild, whole
	SawAfter  ReadOutcome = "after"  // the replica as the rebuild left it, whole
	SawTorn   ReadOutcome = "torn"   // anything else: a state no commit left
	SawError  ReadOutcome = "error"  // the read failed
)

// ResetCase is a replica at Before (a reset batch), then a rebuild to After
// (another) while a whole read is under way.
type ResetCase struct {
	Name          string
	Before, After pipeline.Batch
	// Dropped tells the rebuild drops a table the reader lists: with the
	// reset-by-ddl bug the read fails rather than seeing it empty.
	Dropped bool
}

var (
	resetT  = model.Table{Name: "t", Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "v", Type: "text"}}, Key: []string{"pk"}}
	resetT2 = model.Table{Name: "t", Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "v", Type: "text"}, {Name: "w", Type: "integer"}}, Key: []string{"pk"}}
	resetU  = model.Table{Name: "u", Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "n", Type: "integer"}}, Key: []string{"pk"}}
)

func resetSnapshot(lsn model.LSN, schema []model.Table, changes ...model.Change) pipeline.Batch {
	t := model.Txn{CommitLSN: lsn, Snapshot: true, Schema: schema, Changes: changes}
	return pipeline.Batch{Reset: true, Txns: []model.Txn{t}, Position: model.Position{Offset: int64(lsn), LSN: lsn}}
}

// ResetCases are the rebuilds a reader must never see torn: with the same
// table definitions (the rows alone change), with a column added to a
// table (it must be made again), and with a table gone.
var ResetCases = []ResetCase{
	{Name: "same definitions",
		Before: resetSnapshot(0x10, []model.Table{resetT}, ins("t", "a", model.R("v", "1")), ins("t", "b", model.R("v", "2"))),
		After:  resetSnapshot(0x20, []model.Table{resetT}, ins("t", "a", model.R("v", "3")), ins("t", "c", model.R("v", "4")))},
	{Name: "a column added",
		Before: resetSnapshot(0x10, []model.Table{resetT}, ins("t", "a", model.R("v", "1"))),
		After:  resetSnapshot(0x20, []model.Table{resetT2}, ins("t", "a", model.R("v", "1", "w", "7")), ins("t", "b", model.R("v", "2")))},
	{Name: "a table gone", Dropped: true,
		Before: resetSnapshot(0x10, []model.Table{resetT, resetU}, ins("t", "a", model.R("v", "1")), ins("u", "x", model.R("n", "5"))),
		After:  resetSnapshot(0x20, []model.Table{resetT}, ins("t", "a", model.R("v", "1")))},
}

// Classify says what a reader that got snap (or err) saw of c, and how it
// differs from the replica before the rebuild when it is torn.
func (c ResetCase) Classify(snap model.Snapshot, err error) (ReadOutcome, string) {
	if err != nil {
		return SawError, err.Error()
	}
	for _, s := range []struct {
		b   pipeline.Batch
		out ReadOutcome
	}{{c.Before, SawBefore}, {c.After, SawAfter}} {
		ref := NewRef(model.Replica, false)
		if err := ref.Apply(s.b); err != nil {
			return SawError, fmt.Sprintf("the reference: %v", err)
		}
		if snap.HasPosition && snap.Position == s.b.Position && maps.Equal(snap.Docs, ref.Docs()) {
			return s.out, ""
		}
	}
	ref := NewRef(model.Replica, false)
	_ = ref.Apply(c.Before)
	return SawTorn, fmt.Sprintf("at position %v (has %v), against the replica before the rebuild:\n%s", snap.Position, snap.HasPosition, diff(snap.Docs, ref.Docs()))
}

// Want is what a reader during c's rebuild must see: the replica before it
// (the rebuild deletes rows, which the reader's snapshot still sees, or
// waits for the reader to drop tables), or, with the reset-by-ddl bug, a
// torn replica (the rebuilt tables, empty to it, beside the old position)
// or, when a table it lists is gone, an error.
func (c ResetCase) Want(ddl bool) ReadOutcome {
	switch {
	case !ddl:
		return SawBefore
	case c.Dropped:
		return SawError
	default:
		return SawTorn
	}
}
