package pgsource

import (
	"reflect"
	"testing"

	"lockstep/model"
)

// A snapshot carries the definitions of the tables it read, as of the
// snapshot: published columns with their types, the primary key in column
// order (none for a table named by whole rows), and the unique constraints
// a replica can keep (not partial ones, expressions, NULLS NOT DISTINCT,
// or ones over unpublished columns). CreateTable makes a table from a
// definition that reads back the same.
func testSnapshotSchema(t *testing.T, dsn string) {
	e := newEnv(t, dsn, nil)
	users := model.Table{Name: "users", Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "name", Type: "text"}, {Name: "email", Type: "text"}},
		Key: []string{"pk"}, Unique: [][]string{{"email"}}}
	if err := CreateTable(e.ctx, e.pool, users); err != nil {
		t.Fatal(err)
	}
	e.sql(`CREATE TABLE acct (id text, branch integer, balance numeric(12,2), owner varchar(20), note text, code text,
		PRIMARY KEY (branch, id), CONSTRAINT acct_owner UNIQUE (owner), CONSTRAINT acct_pair UNIQUE (code, branch))`)
	e.sql(`CREATE UNIQUE INDEX acct_lower ON acct (lower(owner))`)
	e.sql(`CREATE UNIQUE INDEX acct_part ON acct (note) WHERE note IS NOT NULL`)
	e.sql(`CREATE UNIQUE INDEX acct_nnd ON acct (note) NULLS NOT DISTINCT`)
	e.sql(`CREATE TABLE ev (seq integer, what text)`)
	e.sql(`ALTER TABLE ev REPLICA IDENTITY FULL`)
	e.sql(`CREATE TABLE later_dropped (pk text PRIMARY KEY, gone text, kept text)`)
	e.sql(`ALTER TABLE later_dropped DROP COLUMN gone`)
	e.sql(`INSERT INTO acct VALUES ('a', 1, 10.5, 'ann', NULL, 'c1')`)
	s := e.stream(Config{})
	snap := e.start(s)
	want := []model.Table{
		{Name: "acct", Columns: []model.Column{{Name: "id", Type: "text"}, {Name: "branch", Type: "integer"}, {Name: "balance", Type: "numeric(12,2)"},
			{Name: "owner", Type: "character varying(20)"}, {Name: "note", Type: "text"}, {Name: "code", Type: "text"}},
			Key: []string{"id", "branch"}, Unique: [][]string{{"owner"}, {"code", "branch"}}},
		{Name: "ev", Columns: []model.Column{{Name: "seq", Type: "integer"}, {Name: "what", Type: "text"}}},
		{Name: "later_dropped", Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "kept", Type: "text"}}, Key: []string{"pk"}},
		users,
	}
	if !reflect.DeepEqual(snap.Schema, want) {
		t.Fatalf("snapshot schema:\n got %+v\nwant %+v", snap.Schema, want)
	}
	if len(snap.Changes) != 1 || snap.Changes[0].PK != "a,1" {
		t.Fatalf("the row's key %+v: the key columns join in column order", snap.Changes)
	}
	// The unique constraint holds at the source, at every statement.
	e.exec(put("users", "u1", model.R("name", "a", "email", "x")))
	if _, err := e.src.Exec(e.ctx, put("users", "u2", model.R("name", "b", "email", "x"))); err == nil {
		t.Fatal("a duplicate email was committed")
	}
}
