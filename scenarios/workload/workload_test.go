package workload

import (
	"math/rand/v2"
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
		for c, v := range old {
			merged[c] = v
		}
	}
	for c, v := range row {
		merged[c] = v
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
				for _, v := range c.Row {
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
