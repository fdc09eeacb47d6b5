package logcodec

import (
	"encoding/json"
	"fmt"
	"math"

	"lockstep/model"
)

// Record sizes, as Kafka counts them against its size limit.
//
// A Kafka broker refuses a record batch larger than the topic's
// max.message.bytes (the broker's message.max.bytes by default, 1,048,588
// bytes) with MESSAGE_TOO_LARGE; the size it compares is the whole batch
// (UnifiedLog.analyzeAndValidateRecords: batch.sizeInBytes), header
// included. RecordBytes is that size for a batch holding one record: the
// smallest batch a record can travel in, so a record whose RecordBytes is
// over the limit can never be written. franz-go checks the same before
// sending (ProducerBatchMaxBytes), counting 4 bytes more: the batch's length
// prefix inside the produce request (kgo's recordBatchOverhead).

// batchHeader is a magic-2 record batch's bytes besides its records:
// base offset 8, length 4, partition leader epoch 4, magic 1, CRC 4,
// attributes 2, last offset delta 4, first and max timestamps 8+8, producer
// id 8, producer epoch 2, base sequence 4, record count 4.
const batchHeader = 61

// RecordBytes is the size of a record batch holding one record whose value
// is n bytes long, with no key and no headers, uncompressed: what the log
// compares with its limit.
func RecordBytes(n int) int {
	// length varint, then attributes 1, timestamp delta 1 (0), offset
	// delta 1 (0), key length 1 (-1: no key), value length varint, the
	// value, header count 1 (0).
	body := 4 + varintLen(n) + n + 1
	return batchHeader + varintLen(body) + body
}

// varintLen is the length of n as a zig-zag varint, as Kafka writes lengths
// inside records.
func varintLen(n int) int {
	u := uint64(n) << 1
	if n < 0 {
		u = ^u
	}
	l := 1
	for u >= 0x80 {
		u >>= 7
		l++
	}
	return l
}

// TxnBytes is the size t's record takes in the log (RecordBytes of its
// encoding).
func TxnBytes(t model.Txn) (int, error) {
	b, err := EncodeTxn(t)
	if err != nil {
		return 0, err
	}
	return RecordBytes(len(b)), nil
}

// TxnBytesBound is an upper bound on TxnBytes(t), computed without encoding
// or allocating, so it can be checked on every transaction: only one whose
// bound is over a limit needs measuring exactly. It allows every string six
// bytes per byte (JSON's longest escape, \u00XX) and every number twenty
// digits, and holds for any Chunk and Chunks.
func TxnBytesBound(t model.Txn) int {
	n := envelopeBound + len(t.Changes) + schemaBound(t.Schema) // a comma per change
	for _, c := range t.Changes {
		n += changeBound(c)
	}
	return RecordBytes(n)
}

// envelopeBound bounds a transaction's encoding without its changes:
// {"v":1,"xid":N,"lsn":N,"snapshot":true,"chunk":N,"chunks":N,"prev":N,"changes":[]}
// is 80 bytes besides its five numbers of at most 20 digits.
const envelopeBound = 80 + 5*20

// changeBound bounds one change's encoding:
// {"table":S,"pk":S,"op":"update","row":R,"old_pk":S,"revs":N,"unchanged":[S,S]}
// is 55 bytes besides its strings, its row, a number of at most 20 digits
// and the unchanged list (15 bytes besides its strings and commas).
func changeBound(c model.Change) int {
	n := 55 + 20 + str(c.Table) + str(c.PK) + str(c.OldPK)
	row := 4 // null
	if c.Row != nil {
		row = 2 // {}
		for k, v := range c.Row.All() {
			row += str(k) + 1 + str(v) + 1 // "k":"v",
		}
	}
	unchanged := 15
	for _, col := range c.Unchanged {
		unchanged += str(col) + 1
	}
	return n + row + unchanged
}

// schemaBound bounds the encoding of a snapshot's table definitions:
// ,"schema":[...] is 12 bytes besides its tables, a table
// {"name":S,"columns":[...],"key":[...],"unique":[[...],...]} 40 besides
// its strings and lists, a column {"name":S,"type":S} 20 besides its
// strings, and every list item a comma and its brackets.
func schemaBound(tables []model.Table) int {
	if len(tables) == 0 {
		return 0
	}
	n := 12
	for _, t := range tables {
		n += 40 + 1 + str(t.Name)
		for _, c := range t.Columns {
			n += 20 + 1 + str(c.Name) + str(c.Type)
		}
		for _, k := range t.Key {
			n += str(k) + 1
		}
		for _, u := range t.Unique {
			n += 3
			for _, c := range u {
				n += str(c) + 1
			}
		}
	}
	return n
}

// str bounds a JSON string's encoding: quotes and six bytes per byte.
func str(s string) int { return 2 + 6*len(s) }

// ChangeBytes is the exact number of bytes c takes in a transaction's
// encoding, the comma that separates it from the next change not counted.
func ChangeBytes(c model.Change) (int, error) {
	w, err := toWire(c)
	if err != nil {
		return 0, fmt.Errorf("logcodec: measure change: %w", err)
	}
	b, err := json.Marshal(w)
	if err != nil {
		return 0, fmt.Errorf("logcodec: measure change %s: %w", c.Key(), err)
	}
	return len(b), nil
}

// EnvelopeBytes is the size of t's encoding without its changes (with an
// empty list), with room for any Chunk and Chunks: a part of t holding
// changes of ChangeBytes s1..sk encodes to at most
// EnvelopeBytes(t) + s1 + ... + sk + (k-1) bytes (the commas).
func EnvelopeBytes(t model.Txn) int {
	t.Changes = []model.Change{}
	t.Chunk, t.Chunks = math.MaxInt, math.MaxInt
	b, err := EncodeTxn(t) // cannot fail: no changes to refuse
	if err != nil {
		return envelopeBound
	}
	return len(b)
}
