// Package debezium turns what Debezium's PostgreSQL connector writes to
// Kafka back into lockstep's committed transactions (model.Txn), so that
// lockstep's sinks and checker can judge Debezium as a system under test.
//
// The connector writes one topic per table, each record a change event in
// the JSON converter's envelope (before, after, op, source, transaction),
// and, with provide.transaction.metadata=true, a transaction topic of BEGIN
// and END events, END with the number of change events the transaction
// produced per table. Kafka orders records only within a topic, so a
// consumer of several topics sees the tables' events interleaved in any
// way; the END events, in the transaction topic's order, are the commit
// order, and their counts say when a transaction's events have all arrived.
// The Decoder buffers events until then and hands out whole transactions in
// commit order.
//
// The mapping to lockstep's model follows pipeline/pgsource's, so that the
// same source gives the same transactions whichever capture read it: Table
// is the table's name, prefixed with "schema." unless the schema is public;
// PK is the key's values joined with "," in the key's field order (the
// table's column order); Row is every other column of after, NULLs left
// out; XID is source.txId; CommitLSN is the LSN in the END event's id
// ("txId:lsn"), the end of the commit record, which is pgsource's CommitLSN
// too (measured on PostgreSQL 15 with pg_waldump).
//
// What Debezium writes differently, and how it is read:
//   - a delete's before holds only the key under REPLICA IDENTITY DEFAULT
//     (the other columns are placeholders such as "" and 0): it is ignored,
//     the record's key names the row;
//   - a table without a primary key has a null record key: under REPLICA
//     IDENTITY FULL its rows are named by all their columns, as pgsource
//     names them (pipeline.RowKey of after, or of before for a delete);
//     without FULL identity a delete names no row (ErrUnsupported);
//   - a delete is followed by a tombstone (same key, null value), which is
//     there for log compaction and is skipped;
//   - an update that changes the key is a delete of the old key (header
//     __debezium.newkey), a tombstone, and a create of the new key (header
//     __debezium.oldkey), consecutive in the transaction: they become one
//     update with OldPK, as pgsource makes it;
//   - an update that left a TOASTed value unchanged writes the placeholder
//     __debezium_unavailable_value for it: the column goes to
//     Change.Unchanged, and the stores keep the value they hold;
//   - values are JSON: strings are taken as they are, numbers as their
//     literal text and booleans as PostgreSQL's "t" and "f". Types whose
//     JSON form is not PostgreSQL's text form (timestamps, bytea, floats in
//     exponent form, numeric unless decimal.handling.mode=string) are not
//     translated.
//
// The transaction id Debezium writes is "txId:lsn" with the LSN of the
// event at hand, so BEGIN, END and each change event of one transaction
// carry different ids; transactions are matched by txId.
//
// Snapshot reads (op "r") carry no transaction metadata and are refused
// for now: run the connector on tables it finds empty, or with
// snapshot.mode=no_data. After a connector restart Debezium sends again
// what it sent since its last flushed offset, BEGIN to END; each END sent
// again hands the transaction out again, so duplicates reach the sinks as
// they would reach any consumer of Debezium's topics. The events of the
// copies are pooled: a transaction is whole once each of its events came
// in any copy, since a crash can cut a copy short after its END was
// written (the topics are written in parallel).
package debezium

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"lockstep/model"
	"lockstep/pipeline"
)

// Placeholder is what Debezium writes, by default, for a value it did not
// receive: an unchanged TOASTed column of an update (the connector's
// unavailable.value.placeholder).
const Placeholder = "__debezium_unavailable_value"

// Headers Debezium puts on the two events of a key change.
const (
	headerNewKey = "__debezium.newkey"
	headerOldKey = "__debezium.oldkey"
)

// ErrMalformed is wrapped by errors about records that do not follow
// Debezium's format, or that contradict each other.
var ErrMalformed = errors.New("malformed Debezium record")

// ErrUnsupported is wrapped by errors about events the decoder cannot turn
// into lockstep's model (snapshot reads, truncates, logical messages).
var ErrUnsupported = errors.New("unsupported Debezium event")

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one Kafka record as the decoder needs it. Offset is only for
// error messages.
type Record struct {
	Topic   string
	Offset  int64
	Key     []byte
	Value   []byte // nil: a tombstone
	Headers []Header
}

func (r Record) header(key string) ([]byte, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

func (r Record) String() string { return fmt.Sprintf("%s@%d", r.Topic, r.Offset) }

// Decoder rebuilds committed transactions from Debezium's topics. Feed it
// every record of the transaction topic and of the tables' topics, each
// topic in its order, interleaved in any way. It is pure: no I/O, no
// clocks. After an error its state is unusable.
type Decoder struct {
	// TransactionTopic is the topic of BEGIN and END events:
	// "<topic.prefix>.transaction" unless the connector's transaction.topic
	// says otherwise.
	TransactionTopic string
	// Placeholder is the connector's unavailable.value.placeholder; empty
	// means Debezium's default.
	Placeholder string

	// ends are the END events not yet handed out, in commit order.
	ends []End
	// pending holds each transaction's change events by txId, then by
	// total_order. A restart sends a transaction again, BEGIN to END: the
	// copies' events land on the same orders, so a transaction is whole
	// once every order arrived from any copy (a copy cut short by the
	// crash, missing an event the other END counts, would otherwise hold
	// every later transaction back for ever).
	pending map[uint64]map[int]event
	// done holds each transaction handed out, by txId: an END sent again
	// hands it out again, and change events sent again are dropped.
	done map[uint64]model.Txn
}

// End is one END event of the transaction topic: its transaction and how
// many change events it produced.
type End struct {
	XID       uint64
	CommitLSN model.LSN
	Count     int            // change events, all tables
	PerTable  map[string]int // by data_collection ("schema.table")
}

// event is one change event, decoded.
type event struct {
	rec        Record
	collection string // "schema.table", as END counts it
	change     model.Change
	newKey     bool // a key change's delete of the old key
	oldKey     string
}

// Add takes the next record of one of the topics and returns the
// transactions it completed, in commit order (often none).
func (d *Decoder) Add(r Record) ([]model.Txn, error) {
	if r.Topic == d.TransactionTopic {
		if err := d.addBoundary(r); err != nil {
			return nil, err
		}
	} else if r.Value != nil { // a tombstone repeats the delete before it
		if err := d.addChange(r); err != nil {
			return nil, err
		}
	}
	return d.complete()
}

// Waiting is how many END events wait for change events that have not
// arrived: transactions Add has not handed out yet.
func (d *Decoder) Waiting() int { return len(d.ends) }

// txnEvent is the JSON of a transaction topic record.
type txnEvent struct {
	Status          string `json:"status"`
	ID              string `json:"id"`
	EventCount      *int   `json:"event_count"`
	DataCollections []struct {
		DataCollection string `json:"data_collection"`
		EventCount     int    `json:"event_count"`
	} `json:"data_collections"`
}

func (d *Decoder) addBoundary(r Record) error {
	e, ok, err := ParseBoundary(r.Value)
	if err != nil {
		return fmt.Errorf("debezium: transaction event %s: %w", r, err)
	}
	if ok {
		d.ends = append(d.ends, e)
	}
	return nil
}

// ParseBoundary reads a record of the transaction topic: the END event it
// is, checked as the Decoder checks it, or ok false for a BEGIN (everything
// the decoder needs is in END; BEGIN's id even names a different LSN, its
// first event's).
func ParseBoundary(value []byte) (e End, ok bool, err error) {
	var ev txnEvent
	if err := json.Unmarshal(unwrap(value), &ev); err != nil {
		return End{}, false, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	xid, lsn, err := parseTxnID(ev.ID)
	if err != nil {
		return End{}, false, err
	}
	switch ev.Status {
	case "BEGIN":
		return End{}, false, nil
	case "END":
		if ev.EventCount == nil {
			return End{}, false, fmt.Errorf("END of txId %d has no event_count: %w", xid, ErrMalformed)
		}
		e := End{XID: xid, CommitLSN: model.LSN(lsn), Count: *ev.EventCount, PerTable: map[string]int{}}
		sum := 0
		for _, c := range ev.DataCollections {
			e.PerTable[c.DataCollection] += c.EventCount
			sum += c.EventCount
		}
		if sum != e.Count {
			return End{}, false, fmt.Errorf("END of txId %d counts %d events but its tables %d: %w", xid, e.Count, sum, ErrMalformed)
		}
		return e, true, nil
	default:
		return End{}, false, fmt.Errorf("status %q, want BEGIN or END: %w", ev.Status, ErrMalformed)
	}
}

// parseTxnID reads the PostgreSQL connector's "txId:lsn" transaction id.
func parseTxnID(id string) (xid, lsn uint64, err error) {
	x, l, ok := strings.Cut(id, ":")
	if ok {
		if xid, err = strconv.ParseUint(x, 10, 64); err == nil {
			lsn, err = strconv.ParseUint(l, 10, 64)
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("transaction id %q is not txId:lsn: %w", id, ErrMalformed)
	}
	return xid, lsn, nil
}

// envelope is a change event's JSON.
type envelope struct {
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
	Op     string          `json:"op"`
	Source struct {
		Schema string  `json:"schema"`
		Table  string  `json:"table"`
		TxID   *uint64 `json:"txId"`
	} `json:"source"`
	Transaction *struct {
		TotalOrder int `json:"total_order"`
	} `json:"transaction"`
}

func (d *Decoder) addChange(r Record) error {
	var env envelope
	if err := json.Unmarshal(unwrap(r.Value), &env); err != nil {
		return fmt.Errorf("debezium: change event %s: %w: %v", r, ErrMalformed, err)
	}
	switch env.Op {
	case "c", "u", "d":
	case "r":
		return fmt.Errorf("debezium: change event %s is a snapshot read, which carries no transaction: %w", r, ErrUnsupported)
	default:
		return fmt.Errorf("debezium: change event %s has op %q: %w", r, env.Op, ErrUnsupported)
	}
	if env.Source.TxID == nil || env.Transaction == nil || env.Source.Table == "" {
		return fmt.Errorf("debezium: change event %s lacks source.txId, source.table or transaction (is provide.transaction.metadata on?): %w", r, ErrMalformed)
	}
	ev, err := d.change(r, env)
	if err != nil {
		return fmt.Errorf("debezium: change event %s: %w", r, err)
	}
	xid, order := *env.Source.TxID, env.Transaction.TotalOrder
	if _, ok := d.done[xid]; ok {
		return nil // a copy of a transaction handed out already
	}
	if d.pending == nil {
		d.pending = map[uint64]map[int]event{}
	}
	if d.pending[xid] == nil {
		d.pending[xid] = map[int]event{}
	}
	d.pending[xid][order] = ev
	return nil
}

// change decodes one change event's key and row.
func (d *Decoder) change(r Record, env envelope) (event, error) {
	ev := event{rec: r, collection: env.Source.Schema + "." + env.Source.Table}
	table := env.Source.Table
	if env.Source.Schema != "public" {
		table = ev.collection
	}
	if key := bytes.TrimSpace(unwrap(r.Key)); len(key) == 0 || string(key) == "null" {
		return d.keylessChange(ev, table, env)
	}
	keyCols, pk, err := decodeKey(unwrap(r.Key))
	if err != nil {
		return event{}, fmt.Errorf("key: %w", err)
	}
	ev.change = model.Change{Table: table, PK: pk}
	switch env.Op {
	case "d":
		ev.change.Op = model.OpDelete
		if _, ok := r.header(headerNewKey); ok {
			ev.newKey = true
		}
		return ev, nil
	case "c":
		ev.change.Op = model.OpInsert
		if old, ok := r.header(headerOldKey); ok {
			if _, ev.oldKey, err = decodeKey(old); err != nil {
				return event{}, fmt.Errorf("header %s: %w", headerOldKey, err)
			}
			ev.change.Op = model.OpUpdate
		}
	case "u":
		ev.change.Op = model.OpUpdate
	}
	ev.change.Row, ev.change.Unchanged, err = d.row(env.After, keyCols)
	if err != nil {
		return event{}, fmt.Errorf("after: %w", err)
	}
	return ev, nil
}

// decodeKey reads a record key, a JSON object of the key's columns in the
// key's order, and returns the column names and lockstep's PK.
func decodeKey(b []byte) (cols []string, pk string, err error) {
	cols, raws, err := fields(b)
	if err != nil {
		return nil, "", err
	}
	vals := make([]string, len(raws))
	for i, raw := range raws {
		v, ok, err := text(raw)
		switch {
		case err != nil:
			return nil, "", fmt.Errorf("column %q: %w", cols[i], err)
		case !ok:
			return nil, "", fmt.Errorf("key column %q is null: %w", cols[i], ErrMalformed)
		}
		vals[i] = v
	}
	if len(cols) == 0 {
		return nil, "", fmt.Errorf("empty key (a table without a primary key?): %w", ErrUnsupported)
	}
	return cols, strings.Join(vals, ","), nil
}

// fields reads a JSON object's fields in their order: the JSON converter
// writes a row's columns in the table's order, which a whole-row key needs.
func fields(b []byte) (names []string, raws []json.RawMessage, err error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, fmt.Errorf("%w: want a JSON object, got %.40q", ErrMalformed, b)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		names, raws = append(names, t.(string)), append(raws, raw)
	}
	return names, raws, nil
}

// keylessChange decodes a change to a table without a primary key, whose
// record key is null. Under REPLICA IDENTITY FULL lockstep names such a
// row by all its columns (pipeline.RowKey, as pgsource does): a create by
// after, a delete by before (the whole old row), an update by both, as a
// key change. Without FULL identity a delete's or update's before is null
// and the row has no name: ErrUnsupported, as pgsource's NoKeyError.
func (d *Decoder) keylessChange(ev event, table string, env envelope) (event, error) {
	ev.change = model.Change{Table: table}
	var err error
	switch env.Op {
	case "c":
		ev.change.Op = model.OpInsert
		ev.change.PK, ev.change.Row, err = wholeRow(env.After)
	case "d":
		ev.change.Op = model.OpDelete
		ev.change.PK, _, err = wholeRow(env.Before)
	case "u":
		ev.change.Op = model.OpUpdate
		if ev.change.OldPK, _, err = wholeRow(env.Before); err == nil {
			ev.change.PK, ev.change.Row, err = wholeRow(env.After)
		}
		if err == nil && ev.change.OldPK == ev.change.PK {
			ev.change.OldPK = ""
		}
	}
	if err != nil {
		return event{}, fmt.Errorf("table %s without a primary key: %w", table, err)
	}
	return ev, nil
}

// wholeRow is a row image's whole-row key and its non-NULL columns.
func wholeRow(image json.RawMessage) (string, model.Row, error) {
	if b := bytes.TrimSpace(image); len(b) == 0 || string(b) == "null" {
		return "", nil, fmt.Errorf("no row image to name the row by (REPLICA IDENTITY is not FULL): %w", ErrUnsupported)
	}
	names, raws, err := fields(image)
	if err != nil {
		return "", nil, err
	}
	vals, null := make([]string, len(raws)), make([]bool, len(raws))
	row := model.Row{}
	for i, raw := range raws {
		v, ok, err := text(raw)
		if err != nil {
			return "", nil, fmt.Errorf("column %q: %w", names[i], err)
		}
		if v == Placeholder {
			return "", nil, fmt.Errorf("column %q was not sent (an unchanged TOASTed value) and is part of the row's name: %w", names[i], ErrUnsupported)
		}
		vals[i], null[i] = v, !ok
		if ok {
			row.Set(names[i], v)
		}
	}
	return pipeline.RowKey(vals, null), row, nil
}

// row is after's non-key columns, NULLs left out, and the sorted names of
// those Debezium did not receive (the placeholder).
func (d *Decoder) row(after json.RawMessage, keyCols []string) (model.Row, []string, error) {
	var cols map[string]json.RawMessage
	if err := json.Unmarshal(after, &cols); err != nil || cols == nil {
		return nil, nil, fmt.Errorf("%w: want a JSON object, got %.40q", ErrMalformed, after)
	}
	placeholder := d.Placeholder
	if placeholder == "" {
		placeholder = Placeholder
	}
	row := model.Row{}
	var unchanged []string
	for c, raw := range cols {
		if slices.Contains(keyCols, c) {
			continue
		}
		v, ok, err := text(raw)
		switch {
		case err != nil:
			return nil, nil, fmt.Errorf("column %q: %w", c, err)
		case !ok:
		case v == placeholder:
			unchanged = append(unchanged, c)
		default:
			row.Set(c, v)
		}
	}
	slices.Sort(unchanged)
	return row, unchanged, nil
}

// text is a JSON value as PostgreSQL's text form; ok is false for null.
func text(raw json.RawMessage) (string, bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false, fmt.Errorf("%w: empty value", ErrMalformed)
	}
	switch raw[0] {
	case 'n':
		return "", false, nil
	case 't':
		return "t", true, nil
	case 'f':
		return "f", true, nil
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		return s, true, nil
	case '{', '[':
		return "", false, fmt.Errorf("structured value %.40q: %w", raw, ErrUnsupported)
	default:
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return "", false, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		return n.String(), true, nil
	}
}

// unwrap returns the payload of a record the JSON converter wrote with
// schemas.enable=true ({"schema": ..., "payload": ...}), or b.
func unwrap(b []byte) []byte {
	var w struct {
		Schema  json.RawMessage `json:"schema"`
		Payload json.RawMessage `json:"payload"`
	}
	if bytes.Contains(b, []byte(`"payload"`)) && json.Unmarshal(b, &w) == nil && w.Schema != nil && w.Payload != nil {
		return w.Payload
	}
	return b
}

// complete hands out, in commit order, every transaction whose END and
// change events have all arrived.
func (d *Decoder) complete() ([]model.Txn, error) {
	var out []model.Txn
	for len(d.ends) > 0 {
		e := d.ends[0]
		if txn, ok := d.done[e.XID]; ok {
			// Sent again after a restart: the same transaction again,
			// as any consumer of the topics gets it.
			if txn.CommitLSN != e.CommitLSN {
				return out, fmt.Errorf("debezium: END of txId %d at commit LSN %s, handed out before at %s: %w", e.XID, e.CommitLSN, txn.CommitLSN, ErrMalformed)
			}
			out = append(out, txn)
			d.ends = d.ends[1:]
			continue
		}
		events := d.pending[e.XID]
		if len(events) < e.Count {
			break
		}
		txn, err := assemble(e, events)
		if err != nil {
			return out, err
		}
		delete(d.pending, e.XID)
		if d.done == nil {
			d.done = map[uint64]model.Txn{}
		}
		d.done[e.XID] = txn
		out = append(out, txn)
		d.ends = d.ends[1:]
	}
	return out, nil
}

// assemble checks a transaction's events against its END and joins each key
// change's two events.
func assemble(e End, events map[int]event) (model.Txn, error) {
	txn := model.Txn{XID: e.XID, CommitLSN: e.CommitLSN}
	if len(events) != e.Count {
		return model.Txn{}, fmt.Errorf("debezium: END of txId %d counts %d events, %d arrived: %w", e.XID, e.Count, len(events), ErrMalformed)
	}
	perTable := map[string]int{}
	for order := 1; order <= e.Count; order++ {
		ev, ok := events[order]
		if !ok {
			return model.Txn{}, fmt.Errorf("debezium: txId %d has %d events but not total_order %d: %w", e.XID, e.Count, order, ErrMalformed)
		}
		perTable[ev.collection]++
		if ev.newKey {
			continue // joined to the create that follows it
		}
		if ev.oldKey != "" {
			prev, ok := events[order-1]
			if !ok || !prev.newKey || prev.change.Table != ev.change.Table || prev.change.PK != ev.oldKey {
				return model.Txn{}, fmt.Errorf("debezium: key change to %s at %s does not follow the delete of %s: %w", ev.change.Key(), ev.rec, ev.oldKey, ErrMalformed)
			}
			ev.change.OldPK = ev.oldKey
		}
		txn.Changes = append(txn.Changes, ev.change)
	}
	for order := 1; order <= e.Count; order++ {
		if ev := events[order]; ev.newKey {
			if next, ok := events[order+1]; !ok || next.oldKey == "" {
				return model.Txn{}, fmt.Errorf("debezium: key change at %s has no create after it: %w", ev.rec, ErrMalformed)
			}
		}
	}
	for table, n := range e.PerTable {
		if perTable[table] != n {
			return model.Txn{}, fmt.Errorf("debezium: END of txId %d counts %d events of %s, %d arrived: %w", e.XID, n, table, perTable[table], ErrMalformed)
		}
	}
	return txn, nil
}
