package pgsource

import (
	"fmt"
	"slices"
	"strings"

	"lockstep/model"
	"lockstep/pipeline"
)

// ErrUnsupported is wrapped by errors about changes lockstep cannot express
// as row changes (TRUNCATE, tables it cannot name rows of, a key column's
// value the server did not send). Such an error comes back every time the
// same WAL is decoded again: retrying cannot get past it. It is
// pipeline.ErrUnsupported, on which the capture stops.
var ErrUnsupported = pipeline.ErrUnsupported

// Assembler turns one replication session's pgoutput messages into whole
// committed transactions. It is pure: feed it messages in order, collect the
// transactions it completes. After an error its state is unusable: Reset it
// (a new session resends every Relation).
//
// The mapping to lockstep's model: Table is the relation's name, prefixed
// with "schema." unless the schema is public; PK is the primary-key
// columns' text values joined with ","; Row is every other column's text
// value, NULLs left out; CommitLSN is the Commit message's end LSN, which is
// what a consumer confirms ("this transaction and all before it").
//
// A table without a primary key is named by all its columns when it has
// REPLICA IDENTITY FULL: PK is the whole row as PostgreSQL writes a row
// value (rowKey), Row every non-NULL column, and an update that changes any
// column changes the key (OldPK). Identical rows are one row to lockstep. A
// change to any other keyless table is a *NoKeyError, unless Skip leaves
// the table out.
//
// An update does not carry a value that is stored out of line (TOASTed) and
// that it left unchanged: pgoutput sends the "unchanged" marker 'u' instead.
// The old row fills it in under REPLICA IDENTITY FULL; otherwise the column
// is left out of Row and named in Change.Unchanged, and the stores keep the
// value they hold.
type Assembler struct {
	// PrimaryKey names the primary-key columns of rel, or none (nil, nil)
	// when the table has no primary key. The Assembler asks it for every
	// relation whose replica identity is not the default: under REPLICA
	// IDENTITY FULL pgoutput flags every column as a key column, under
	// USING INDEX the index's. Key flags are trusted only for 'd'. A nil
	// PrimaryKey makes changes to such relations an error.
	PrimaryKey func(rel *Relation) ([]string, error)
	// Skip, when set, names the tables (lockstep's names) whose changes are
	// left out, as if they were not published: no key is looked up or
	// needed for them, and a TRUNCATE of only such tables is left out too.
	Skip func(table string) bool
	// Skipped, when set, hears of every change Skip left out.
	Skipped func(table string)
	// TypeName, when set, names a column's type as format_type does, from
	// the type OID and modifier a Relation message gives. With it, the
	// first transaction that changes a table after each Relation message
	// about it (its first change in a session, or after its definition
	// changed) carries the table's definition in Txn.Schema: its columns
	// with their types and its key. A replica creates a table the
	// snapshot did not have (one created after it) from that, typed.
	// Relation messages say nothing of unique constraints: the definition
	// has none.
	TypeName func(oid uint32, typmod int32) (string, error)

	rels  map[uint32]*relation
	open  bool
	begin Begin
	txn   model.Txn
}

// relation is a Relation with its key resolved to column indexes.
type relation struct {
	*Relation
	table    string
	key      []int // indexes into Columns, in column order
	wholeRow bool  // every column is the key (REPLICA IDENTITY FULL, no primary key)
	noKey    bool  // no primary key and no REPLICA IDENTITY FULL
	skip     bool  // Skip leaves the table out
	keyErr   error // why the relation has no usable key (reported on its first change)
	// def is the table's definition (TypeName), until a transaction
	// carried it; then nil.
	def *model.Table
}

// Reset forgets the open transaction and every relation, as a new session
// must.
func (a *Assembler) Reset() {
	a.rels, a.open, a.begin, a.txn = nil, false, Begin{}, model.Txn{}
}

// InTransaction reports whether a Begin awaits its Commit.
func (a *Assembler) InTransaction() bool { return a.open }

// Feed decodes one pgoutput message and adds it.
func (a *Assembler) Feed(data []byte) (txn model.Txn, done bool, err error) {
	m, err := Decode(data)
	if err != nil {
		return model.Txn{}, false, err
	}
	return a.Add(m)
}

// Add takes the next message of the session. done is true when m was a
// Commit: txn is then the whole transaction, its changes in WAL order
// (possibly none, for a transaction that touched no published table).
func (a *Assembler) Add(m Message) (txn model.Txn, done bool, err error) {
	switch m := m.(type) {
	case *Begin:
		if a.open {
			return model.Txn{}, false, fmt.Errorf("pgoutput: begin of xid %d inside xid %d: %w", m.XID, a.begin.XID, ErrMalformed)
		}
		a.open, a.begin = true, *m
		a.txn = model.Txn{XID: uint64(m.XID)}
	case *Commit:
		if !a.open {
			return model.Txn{}, false, fmt.Errorf("pgoutput: commit at %s without a begin: %w", m.CommitLSN, ErrMalformed)
		}
		if m.CommitLSN != a.begin.FinalLSN {
			return model.Txn{}, false, fmt.Errorf("pgoutput: commit of xid %d at %s, but its begin announced %s: %w",
				a.begin.XID, m.CommitLSN, a.begin.FinalLSN, ErrMalformed)
		}
		if m.EndLSN <= m.CommitLSN {
			return model.Txn{}, false, fmt.Errorf("pgoutput: commit of xid %d ends at %s, not after its start %s: %w",
				a.begin.XID, m.EndLSN, m.CommitLSN, ErrMalformed)
		}
		txn = a.txn
		txn.CommitLSN = m.EndLSN
		a.open, a.txn = false, model.Txn{}
		return txn, true, nil
	case *Relation:
		rel, err := a.resolve(m)
		if err != nil {
			return model.Txn{}, false, err
		}
		if rel.def, err = a.define(rel); err != nil {
			return model.Txn{}, false, err
		}
		if a.rels == nil {
			a.rels = map[uint32]*relation{}
		}
		a.rels[m.ID] = rel
	case *Insert:
		return a.row(m.RelationID, "insert", func(rel *relation) (model.Change, error) {
			if err := rel.checkTuple(m.New, "new"); err != nil {
				return model.Change{}, err
			}
			pk, err := rel.pk(m.New, nil)
			if err != nil {
				return model.Change{}, err
			}
			row, _, err := rel.row(m.New, nil, pk, false)
			return model.Change{Table: rel.table, PK: pk, Op: model.OpInsert, Row: row}, err
		})
	case *Update:
		return a.row(m.RelationID, "update", func(rel *relation) (model.Change, error) {
			if err := rel.checkTuple(m.New, "new"); err != nil {
				return model.Change{}, err
			}
			var old Tuple
			if m.OldKind != 0 {
				if err := rel.checkTuple(m.Old, "old"); err != nil {
					return model.Change{}, err
				}
				old = m.Old
			}
			pk, err := rel.pk(m.New, old)
			if err != nil {
				return model.Change{}, err
			}
			c := model.Change{Table: rel.table, PK: pk, Op: model.OpUpdate}
			if old != nil {
				oldPK, err := rel.pk(old, nil)
				if err != nil {
					return model.Change{}, fmt.Errorf("old row: %w", err)
				}
				if oldPK != pk {
					c.OldPK = oldPK
				}
			}
			// Unchanged TOAST values are filled in only from a whole old
			// row ('O'); a key-only old tuple holds NULLs elsewhere. The
			// others are listed in Unchanged: the stores keep what they
			// hold.
			var full Tuple
			if m.OldKind == 'O' {
				full = old
			}
			c.Row, c.Unchanged, err = rel.row(m.New, full, pk, true)
			return c, err
		})
	case *Delete:
		return a.row(m.RelationID, "delete", func(rel *relation) (model.Change, error) {
			if err := rel.checkTuple(m.Old, "old"); err != nil {
				return model.Change{}, err
			}
			pk, err := rel.pk(m.Old, nil)
			return model.Change{Table: rel.table, PK: pk, Op: model.OpDelete}, err
		})
	case *Truncate:
		var names []string
		for _, id := range m.RelationIDs {
			rel, ok := a.rels[id]
			switch {
			case !ok:
				names = append(names, fmt.Sprintf("relation %d", id))
			case rel.skip:
				if a.Skipped != nil {
					a.Skipped(rel.table)
				}
			default:
				names = append(names, rel.table)
			}
		}
		if len(names) == 0 {
			return model.Txn{}, false, nil
		}
		return model.Txn{}, false, fmt.Errorf("pgoutput: TRUNCATE of %s in xid %d: %w: a truncate is not a sequence of row changes; delete the rows instead",
			strings.Join(names, ", "), a.begin.XID, ErrUnsupported)
	case *Type, *Origin, *LogicalMessage:
		// Nothing lockstep needs.
	default:
		return model.Txn{}, false, fmt.Errorf("pgoutput: unexpected message %T", m)
	}
	return model.Txn{}, false, nil
}

// row adds the change build makes to the open transaction.
func (a *Assembler) row(relID uint32, op string, build func(*relation) (model.Change, error)) (model.Txn, bool, error) {
	if !a.open {
		return model.Txn{}, false, fmt.Errorf("pgoutput: %s outside a transaction: %w", op, ErrMalformed)
	}
	rel, ok := a.rels[relID]
	if !ok {
		return model.Txn{}, false, fmt.Errorf("pgoutput: %s in xid %d of relation %d, which no Relation message described: %w", op, a.begin.XID, relID, ErrMalformed)
	}
	switch {
	case rel.skip:
		if a.Skipped != nil {
			a.Skipped(rel.table)
		}
		return model.Txn{}, false, nil
	case rel.noKey:
		return model.Txn{}, false, fmt.Errorf("pgoutput: %s: %w", op, &NoKeyError{Tables: []string{rel.table}, XID: uint64(a.begin.XID)})
	case rel.keyErr != nil:
		return model.Txn{}, false, fmt.Errorf("pgoutput: %s in xid %d: %w", op, a.begin.XID, rel.keyErr)
	}
	c, err := build(rel)
	if err != nil {
		return model.Txn{}, false, fmt.Errorf("pgoutput: %s of %s in xid %d: %w", op, rel.table, a.begin.XID, err)
	}
	a.txn.Changes = append(a.txn.Changes, c)
	if rel.def != nil {
		a.txn.Schema = append(a.txn.Schema, *rel.def)
		rel.def = nil
	}
	return model.Txn{}, false, nil
}

// define is rel's definition from its Relation message, when TypeName is
// set and the table is captured and keyed.
func (a *Assembler) define(rel *relation) (*model.Table, error) {
	if a.TypeName == nil || rel.skip || rel.noKey || rel.keyErr != nil {
		return nil, nil
	}
	def := model.Table{Name: rel.table}
	for _, c := range rel.Columns {
		typ, err := a.TypeName(c.TypeOID, c.TypeMod)
		if err != nil {
			return nil, fmt.Errorf("pgoutput: the type of column %s of %s: %w", c.Name, rel.table, err)
		}
		def.Columns = append(def.Columns, model.Column{Name: c.Name, Type: typ})
	}
	if !rel.wholeRow {
		for _, i := range rel.key {
			def.Key = append(def.Key, rel.Columns[i].Name)
		}
	}
	return &def, nil
}

// TableName is lockstep's name for a table: "name" in schema public (or
// pg_catalog's empty namespace), "schema.name" elsewhere.
func TableName(namespace, name string) string {
	if namespace == "" || namespace == "public" {
		return name
	}
	return namespace + "." + name
}

func (a *Assembler) resolve(m *Relation) (*relation, error) {
	rel := &relation{Relation: m, table: TableName(m.Namespace, m.Name)}
	if a.Skip != nil && a.Skip(rel.table) {
		rel.skip = true
		return rel, nil
	}
	if m.ReplicaIdentity == 'd' {
		for i, c := range m.Columns {
			if c.Key {
				rel.key = append(rel.key, i)
			}
		}
		rel.noKey = len(rel.key) == 0
		return rel, nil
	}
	if a.PrimaryKey == nil {
		rel.keyErr = fmt.Errorf("table %s has replica identity %q, so pgoutput's key flags are not its primary key, and the assembler has no PrimaryKey lookup: %w",
			rel.table, m.ReplicaIdentity, ErrUnsupported)
		return rel, nil
	}
	names, err := a.PrimaryKey(m)
	if err != nil {
		return nil, fmt.Errorf("pgoutput: look up the primary key of %s: %w", rel.table, err)
	}
	if len(names) == 0 {
		if m.ReplicaIdentity != 'f' {
			rel.noKey = true
			return rel, nil
		}
		rel.wholeRow = true
		for i := range m.Columns {
			rel.key = append(rel.key, i)
		}
		return rel, nil
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for i, c := range m.Columns {
		if want[c.Name] {
			rel.key = append(rel.key, i)
			delete(want, c.Name)
		}
	}
	for _, n := range names {
		if want[n] {
			rel.keyErr = fmt.Errorf("primary key column %q of %s is not published: %w", n, rel.table, ErrUnsupported)
			break
		}
	}
	return rel, nil
}

func (rel *relation) checkTuple(t Tuple, which string) error {
	if len(t) != len(rel.Columns) {
		return fmt.Errorf("%s tuple has %d columns, relation %d columns: %w", which, len(t), len(rel.Columns), ErrMalformed)
	}
	return nil
}

// value is column i's text: from t, or, when t holds an unchanged TOAST
// marker, from old (a whole old row, or nil). ok is false for NULL;
// unchanged is true when the value was not sent and old does not hold it.
func (rel *relation) value(t, old Tuple, i int) (s string, ok, unchanged bool, err error) {
	v := t[i]
	if v.Kind == ValueUnchanged {
		if old == nil || old[i].Kind == ValueUnchanged {
			return "", false, true, nil
		}
		v = old[i]
	}
	switch v.Kind {
	case ValueNull:
		return "", false, false, nil
	case ValueText:
		return string(v.Data), true, false, nil
	case ValueBinary:
		return "", false, false, fmt.Errorf("column %q arrived in binary format: %w: stream without the binary option", rel.Columns[i].Name, ErrUnsupported)
	}
	return "", false, false, fmt.Errorf("column %q: value kind %q: %w", rel.Columns[i].Name, v.Kind, ErrMalformed)
}

// pk joins the key columns' values with ",", or, when every column is the
// key, is rowKey of them (where a NULL is a value too).
func (rel *relation) pk(t, old Tuple) (string, error) {
	vals := make([]string, len(rel.key))
	null := make([]bool, len(rel.key))
	for j, i := range rel.key {
		s, ok, unchanged, err := rel.value(t, old, i)
		switch {
		case err != nil:
			return "", fmt.Errorf("key: %w", err)
		case unchanged:
			// PostgreSQL sends the old key whenever a key column is stored
			// out of line, so this is a server that did not.
			return "", fmt.Errorf("key column %q is an unchanged TOASTed value whose data the server did not send: %w", rel.Columns[i].Name, ErrUnsupported)
		case !ok && !rel.wholeRow:
			return "", fmt.Errorf("key column %q is NULL: %w", rel.Columns[i].Name, ErrMalformed)
		}
		vals[j], null[j] = s, !ok
	}
	if rel.wholeRow {
		return rowKey(vals, null), nil
	}
	return strings.Join(vals, ","), nil
}

// row is every non-key column's value (every column's when all are the
// key), NULLs left out. Columns whose value was not sent (unchanged TOAST)
// and that old does not hold are left out too and named, sorted, in
// unchanged; only an update may have them.
func (rel *relation) row(t, old Tuple, pk string, update bool) (r model.Row, unchanged []string, err error) {
	r = model.Row{}
	k := 0
	for i, c := range rel.Columns {
		if !rel.wholeRow && k < len(rel.key) && rel.key[k] == i {
			k++
			continue
		}
		s, ok, notSent, err := rel.value(t, old, i)
		switch {
		case err != nil:
			return nil, nil, fmt.Errorf("row %s: %w", pk, err)
		case notSent && !update:
			return nil, nil, fmt.Errorf("row %s: column %q holds the unchanged-TOAST marker, which only an update may: %w", pk, c.Name, ErrMalformed)
		case notSent:
			unchanged = append(unchanged, c.Name)
		case ok:
			r.Set(c.Name, s)
		}
	}
	slices.Sort(unchanged)
	return r, unchanged, nil
}
