// Package logcodec is the encoding of a transaction as a log record's value,
// shared by every log: the Kafka log (pipeline/kafkalog) writes it, and the
// simulated log (sim/services) and the capture measure records with it, so a
// size limit means the same in both worlds. It depends on model only, so
// simulated code can use it without pulling in a Kafka client.
package logcodec

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"lockstep/model"
)

// Version is the version of the record value's encoding, written in
// every value as "v"; DecodeTxn refuses any other.
const Version = 1

// wireTxn is the JSON form of a model.Txn:
//
//	{"v":1,"xid":7,"lsn":23456,"prev":23400,"snapshot":true,"changes":[
//	  {"table":"users","pk":"u2","op":"update","row":{"name":"Ann"},"old_pk":"u1","revs":3,"unchanged":["bio"]}]}
//
// A nil row or change list is null and an empty one {} or []: decoding
// gives back exactly what was encoded (but an empty unchanged list, which
// is left out, comes back nil).
type wireTxn struct {
	V        int          `json:"v"`
	XID      uint64       `json:"xid"`
	LSN      uint64       `json:"lsn"`
	Snapshot bool         `json:"snapshot,omitempty"`
	Chunk    int          `json:"chunk,omitempty"`
	Chunks   int          `json:"chunks,omitempty"`
	Prev     uint64       `json:"prev,omitempty"`
	Changes  []wireChange `json:"changes"`
	// Schema is model.Txn.Schema, a snapshot's table definitions.
	Schema []wireTable `json:"schema,omitempty"`
}

// wireTable is a model.Table:
//
//	{"name":"users","columns":[{"name":"pk","type":"text"},{"name":"email"}],"key":["pk"],"unique":[["email"]]}
type wireTable struct {
	Name    string       `json:"name"`
	Columns []wireColumn `json:"columns"`
	Key     []string     `json:"key,omitempty"`
	Unique  [][]string   `json:"unique,omitempty"`
}

type wireColumn struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

type wireChange struct {
	Table string    `json:"table"`
	PK    string    `json:"pk"`
	Op    string    `json:"op"`
	Row   model.Row `json:"row"`
	OldPK string    `json:"old_pk,omitempty"`
	Revs  int       `json:"revs,omitempty"`
	// Unchanged is model.Change.Unchanged; an empty list comes back nil.
	Unchanged []string `json:"unchanged,omitempty"`
}

// EncodeTxn is a transaction's record value.
func EncodeTxn(t model.Txn) ([]byte, error) {
	w := wireTxn{V: Version, XID: t.XID, LSN: uint64(t.CommitLSN), Snapshot: t.Snapshot, Chunk: t.Chunk, Chunks: t.Chunks, Prev: uint64(t.PrevLSN)}
	if t.Changes != nil {
		w.Changes = make([]wireChange, len(t.Changes))
	}
	for i, c := range t.Changes {
		wc, err := toWire(c)
		if err != nil {
			return nil, fmt.Errorf("logcodec: encode txn %d: change %d: %w", t.XID, i, err)
		}
		w.Changes[i] = wc
	}
	for _, tb := range t.Schema {
		wt := wireTable{Name: tb.Name, Key: tb.Key, Unique: tb.Unique, Columns: make([]wireColumn, len(tb.Columns))}
		for i, c := range tb.Columns {
			wt.Columns[i] = wireColumn(c)
		}
		w.Schema = append(w.Schema, wt)
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("logcodec: encode txn %d: %w", t.XID, err)
	}
	return b, nil
}

// toWire is a change's JSON form; it refuses what JSON could not give back.
func toWire(c model.Change) (wireChange, error) {
	switch c.Op {
	case model.OpInsert, model.OpUpdate, model.OpDelete:
	default:
		return wireChange{}, fmt.Errorf("unknown %s", c.Op)
	}
	if !validUTF8(c) {
		return wireChange{}, fmt.Errorf("%s is not valid UTF-8", c.Key())
	}
	return wireChange{Table: c.Table, PK: c.PK, Op: c.Op.String(), Row: c.Row, OldPK: c.OldPK, Revs: c.Revs, Unchanged: c.Unchanged}, nil
}

// Check reports whether t can be encoded, as EncodeTxn would find, without
// encoding it: every op known and every string valid UTF-8. A log that
// measures records without encoding them (the simulated one) refuses what
// the Kafka log could not write.
func Check(t model.Txn) error {
	for i, c := range t.Changes {
		if _, err := toWire(c); err != nil {
			return fmt.Errorf("logcodec: encode txn %d: change %d: %w", t.XID, i, err)
		}
	}
	return nil
}

// validUTF8 reports whether every string of c is valid UTF-8, which JSON
// needs to give it back unchanged (PostgreSQL text in a UTF8 database is).
func validUTF8(c model.Change) bool {
	if !utf8.ValidString(c.Table) || !utf8.ValidString(c.PK) || !utf8.ValidString(c.OldPK) {
		return false
	}
	for k, v := range c.Row.All() {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
	}
	for _, col := range c.Unchanged {
		if !utf8.ValidString(col) {
			return false
		}
	}
	return true
}

// DecodeTxn is the inverse of EncodeTxn.
func DecodeTxn(b []byte) (model.Txn, error) {
	var w wireTxn
	if err := json.Unmarshal(b, &w); err != nil {
		return model.Txn{}, fmt.Errorf("logcodec: decode txn: %w", err)
	}
	if w.V != Version {
		return model.Txn{}, fmt.Errorf("logcodec: decode txn: encoding version %d, want %d", w.V, Version)
	}
	t := model.Txn{XID: w.XID, CommitLSN: model.LSN(w.LSN), Snapshot: w.Snapshot, Chunk: w.Chunk, Chunks: w.Chunks, PrevLSN: model.LSN(w.Prev)}
	if w.Changes != nil {
		t.Changes = make([]model.Change, len(w.Changes))
	}
	for i, c := range w.Changes {
		var op model.Op
		switch c.Op {
		case "insert":
			op = model.OpInsert
		case "update":
			op = model.OpUpdate
		case "delete":
			op = model.OpDelete
		default:
			return model.Txn{}, fmt.Errorf("logcodec: decode txn %d: change %d has unknown op %q", w.XID, i, c.Op)
		}
		t.Changes[i] = model.Change{Table: c.Table, PK: c.PK, Op: op, Row: c.Row, OldPK: c.OldPK, Revs: c.Revs, Unchanged: c.Unchanged}
	}
	for _, wt := range w.Schema {
		tb := model.Table{Name: wt.Name, Key: wt.Key, Unique: wt.Unique, Columns: make([]model.Column, len(wt.Columns))}
		for i, c := range wt.Columns {
			tb.Columns[i] = model.Column(c)
		}
		t.Schema = append(t.Schema, tb)
	}
	return t, nil
}
