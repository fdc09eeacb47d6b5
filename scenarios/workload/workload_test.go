package workload

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"lockstep/model"
	"lockstep/pipeline"
)

// memTx is a transaction over an in-memory table set, with the source's
// rules: Put sets the named columns, Rekey moves a row. Commit applies it.
type memTx struct {
	rows    map[model.Key]model.Row
	changes []model.Change
}

func (tx *memTx) Get(table, pk string) (model.Row, bool) {
	r, ok := tx.rows[model.Key{Table: table, PK: pk}]
	return r, ok
}

func (tx *memTx) Put(table, pk string, row model.Row) {
	k := model.Key{Table: table, PK: pk}
	merged := model.Row{}
	op := model.OpInsert
	if old, ok := tx.rows[k]; ok {
		op = model.OpUpdate
		for c, v := range old.All() {
			merged.Set(c, v)
		}
	}
	for c, v := range row.All() {
		merged.Set(c, v)
	}
	tx.rows[k] = merged
	tx.changes = append(tx.changes, model.Change{Table: table, PK: pk, Op: op, Row: merged})
}

func (tx *memTx) Delete(table, pk string) {
	k := model.Key{Table: table, PK: pk}
	if _, ok := tx.rows[k]; ok {
		delete(tx.rows, k)
		tx.changes = append(tx.changes, model.Change{Table: table, PK: pk, Op: model.OpDelete})
	}
}

func (tx *memTx) Rekey(table, pk, newPK string) {
	k, nk := model.Key{Table: table, PK: pk}, model.Key{Table: table, PK: newPK}
	if r, ok := tx.rows[k]; ok {
		delete(tx.rows, k)
		tx.rows[nk] = r
		tx.changes = append(tx.changes, model.Change{Table: table, PK: newPK, OldPK: pk, Op: model.OpUpdate, Row: r})
	}
}

// InsertRow and DeleteRow write the event log, named by whole rows;
// identical rows are one (the workloads never write two).
func (tx *memTx) InsertRow(table string, row model.Row) {
	k := model.Key{Table: table, PK: Events.Key(row)}
	tx.rows[k] = row
	tx.changes = append(tx.changes, model.Change{Table: table, PK: k.PK, Op: model.OpInsert, Row: row})
}

func (tx *memTx) DeleteRow(table string, row model.Row) { tx.Delete(table, Events.Key(row)) }

// run executes n operations of w, each in its own transaction (rolled back
// on error), and returns the committed transactions.
func run(t *testing.T, w Workload, n int) (map[model.Key]model.Row, []model.Txn) {
	t.Helper()
	rows := map[model.Key]model.Row{}
	for _, c := range w.Initial() {
		rows[c.Key()] = c.Row
	}
	r := rand.New(rand.NewPCG(1, 2))
	var committed []model.Txn
	for i := 0; i < n; i++ {
		op := w.Next(r)
		tx := &memTx{rows: map[model.Key]model.Row{}}
		for k, v := range rows {
			tx.rows[k] = v
		}
		if err := op(tx); err != nil {
			continue
		}
		rows = tx.rows
		committed = append(committed, model.Txn{CommitLSN: model.LSN(i + 1), Changes: tx.changes})
	}
	return rows, committed
}

var _ pipeline.Tx = (*memTx)(nil)

// The bank's invariant holds through self-transfers and the ledger table.
func TestBankKeepsTheSumOfBalances(t *testing.T) {
	b := &Bank{Accounts: 10, Balance: 100}
	rows, committed := run(t, b, 3000)
	if got := Total(rows); got != 1000 {
		t.Fatalf("sum of balances = %d after 3000 transfers, want 1000", got)
	}
	self, ledger := 0, 0
	for _, txn := range committed {
		if len(model.Net(txn).Changes) < len(txn.Changes) {
			self++
		}
		for _, c := range txn.Changes {
			if c.Table == "ledger" {
				ledger++
				break
			}
		}
	}
	if self == 0 || ledger == 0 {
		t.Fatalf("%d self-transfers and %d transfers touching the ledger in %d transactions: want both", self, ledger, len(committed))
	}
}

// The bank and profile workloads keep an event log without a key: rows
// appended inside their transactions, all distinct, some deleted later, and
// whole-row keys that need quoting (spaces, commas, quotes) and NULLs.
func TestWorkloadsKeepAnEventLog(t *testing.T) {
	for _, w := range []Workload{&Bank{Accounts: 10, Balance: 100}, &Profiles{Users: 40}} {
		t.Run(w.Name(), func(t *testing.T) {
			if got := w.Keyless(); len(got) != 1 || got[0].Name != Events.Name || !got[0].Full {
				t.Fatalf("Keyless() = %v, want the events table under FULL identity", got)
			}
			_, committed := run(t, w, 2000)
			inserted := map[string]int{}
			deletes, quoted, null := 0, 0, 0
			for _, txn := range committed {
				for _, c := range txn.Changes {
					if c.Table != Events.Name {
						continue
					}
					switch c.Op {
					case model.OpInsert:
						inserted[c.PK]++
						if strings.Contains(c.PK, `"`) {
							quoted++
						}
						if strings.HasSuffix(c.PK, ",)") {
							null++
						}
					case model.OpDelete:
						if inserted[c.PK] == 0 {
							t.Fatalf("delete of %s, which was never inserted", c.PK)
						}
						deletes++
					}
				}
			}
			for k, n := range inserted {
				if n > 1 {
					t.Fatalf("event %s inserted %d times: events must be distinct", k, n)
				}
			}
			if len(inserted) < 100 || deletes == 0 || quoted == 0 || null == 0 {
				t.Fatalf("%d events, %d deleted, %d keys quoted, %d with a NULL note: want many, some, some, some", len(inserted), deletes, quoted, null)
			}
		})
	}
}

// Profiles and bulk draw every shape the README lists.
func TestWorkloadsDrawTheFieldsShapes(t *testing.T) {
	shapes := map[string]int{}
	for _, w := range []Workload{&Profiles{Users: 40}, &Bulk{Items: 150, MinRows: 20, MaxRows: 60}} {
		_, committed := run(t, w, 2000)
		for _, txn := range committed {
			ops := map[model.Key][]model.Op{}
			for _, c := range txn.Changes {
				ops[c.Key()] = append(ops[c.Key()], c.Op)
				if c.OldPK != "" {
					shapes["key change"]++
				}
				for _, v := range c.Row.All() {
					if len(v) >= 2000 {
						shapes["value past the TOAST threshold"]++
					}
				}
			}
			for _, seq := range ops {
				for i := 1; i < len(seq); i++ {
					shapes[seq[i-1].String()+"/"+seq[i].String()]++
				}
			}
		}
	}
	for _, want := range []string{"update/update", "insert/update", "update/delete", "delete/insert", "key change", "value past the TOAST threshold"} {
		if shapes[want] == 0 {
			t.Errorf("no %s in 2000 transactions of each workload (saw %v)", want, shapes)
		}
	}
}

// A sized workload writes only its first keys rows of the keyed table (and
// new users past them, for profiles), and refuses a key space too small.
func TestNewSizedLimitsTheKeySpace(t *testing.T) {
	for _, name := range Names() {
		for _, keys := range []int{MinKeys, 5} {
			w, err := NewSized(name, keys)
			if err != nil {
				t.Fatal(err)
			}
			if Keys(w) != keys {
				t.Fatalf("%s: Keys = %d, want %d", name, Keys(w), keys)
			}
			initial := 0
			for _, c := range w.Initial() {
				if c.Table == "accounts" || c.Table == "users" || c.Table == "items" {
					initial++
				}
			}
			if initial != keys {
				t.Fatalf("%s sized %d: %d initial rows, want %d", name, keys, initial, keys)
			}
			rows, committed := run(t, w, 200)
			if len(committed) == 0 {
				t.Fatalf("%s sized %d: nothing committed in 200 operations", name, keys)
			}
			for k := range rows {
				switch k.Table {
				case "accounts", "items":
					if want := fmt.Sprintf("%c%0*d", k.PK[0], len(k.PK)-1, keys-1); k.PK > want {
						t.Fatalf("%s sized %d: row %s past the key space (last %s)", name, keys, k.PK, want)
					}
				}
			}
		}
		if _, err := NewSized(name, MinKeys-1); err == nil {
			t.Fatalf("%s: %d keys accepted", name, MinKeys-1)
		}
		if w, err := NewSized(name, 0); err != nil || Keys(w) == 0 {
			t.Fatalf("%s: NewSized(0) = %v, %v; want the default size", name, w, err)
		}
	}
}
