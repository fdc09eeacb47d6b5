package checker_test

import (
	"fmt"
	"time"

	"lockstep/checker"
	"lockstep/model"
)

// A cache that missed the last update of a row: the checker reports the
// lost version against the property the cache claims, with the fault
// window it fell in.
func ExampleCheck() {
	k := model.Key{Table: "accounts", PK: "7"}
	h := &model.History{
		Committed: []model.Txn{
			{XID: 1, CommitLSN: 0x1A0, Changes: []model.Change{{Table: "accounts", PK: "7", Op: model.OpInsert, Row: model.R("bal", "10")}}},
			{XID: 2, CommitLSN: 0x2F0, Changes: []model.Change{{Table: "accounts", PK: "7", Op: model.OpUpdate, Row: model.R("bal", "7")}}},
		},
		Stores: []model.StoreSpec{{Name: "cache", Kind: model.Cache, Claims: model.Claims{model.NoLoss: true}}},
		Final: []model.Snapshot{{Store: "cache", At: 12500 * time.Millisecond,
			Docs: model.Docs{k: {Value: "bal=10", LSN: 0x1A0}}}},
		Faults:  []model.FaultWindow{{Start: 10 * time.Second, What: "crash capture"}},
		QuietAt: 15 * time.Second,
	}
	rep := checker.Check(h, checker.Options{})
	fmt.Println(rep.Verdict, rep.OK())
	for _, a := range rep.Violations() {
		fmt.Println(a.Property, a)
	}
	// Output:
	// fail false
	// no-loss lost cache accounts/7: has lsn=0/1A0 want lsn=0/2F0 (at 12.5s, during crash capture)
}
