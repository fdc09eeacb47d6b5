package pipeline

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"lockstep/model"
)

// madeSnapshot is a snapshot whose rows are made as they are read, never
// held: row i has a value of sizes[i%len(sizes)] bytes. reorder, when set,
// gives the order of the rows at each Scan (by its number, from 0).
type madeSnapshot struct {
	rows    int
	sizes   []int
	page    int
	scans   int
	reorder func(scan, i, n int) int
	// onPage runs before each page is handed out, with the scan's number
	// and whether it is the scan's last page.
	onPage func(scan int, last bool)
}

func (s *madeSnapshot) Head() model.Txn {
	return model.Txn{CommitLSN: 7, Snapshot: true, Schema: []model.Table{{Name: "t", Key: []string{"pk"}, Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "v", Type: "text"}}}}}
}

func (s *madeSnapshot) Scan(ctx context.Context, fn func([]model.Change) error) error {
	scan := s.scans
	s.scans++
	for from := 0; from < s.rows; from += s.page {
		page := make([]model.Change, 0, s.page)
		for i := from; i < min(from+s.page, s.rows); i++ {
			j := i
			if s.reorder != nil {
				j = s.reorder(scan, i, s.rows)
			}
			v := strings.Repeat("x", s.sizes[j%len(s.sizes)])
			page = append(page, model.Change{Table: "t", PK: fmt.Sprint(j), Op: model.OpInsert, Row: model.R("v", v)})
		}
		if s.onPage != nil {
			s.onPage(scan, from+s.page >= s.rows)
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

func (s *madeSnapshot) Close(context.Context) error { return nil }

// madeSource hands out one madeSnapshot.
type madeSource struct {
	fakeSource
	snap *madeSnapshot
}

func (s *madeSource) Snapshot(context.Context) (SnapshotReader, error) { return s.snap, nil }

// headLog keeps what the capture appended without the rows, so that only the
// capture's own memory is measured, and notes when the first append came.
type headLog struct {
	memLog
	limit      int // the most bytes a record may take (MaxRecordBytes)
	rows       int
	firstScan  int // the madeSnapshot's scans when the first append came
	snap       *madeSnapshot
	tooLarge   int
	recsPerAdd []int
}

func (l *headLog) MaxRecordBytes() int { return l.limit }

func (l *headLog) Produce(ctx context.Context, txns []model.Txn) (int64, error) {
	if len(l.recs) == 0 {
		l.firstScan = l.snap.scans
	}
	l.recsPerAdd = append(l.recsPerAdd, len(txns))
	heads := make([]model.Txn, len(txns))
	for i, t := range txns {
		if l.limit > 0 && overLimit(t, l.limit) != nil {
			l.tooLarge++
		}
		l.rows += len(t.Changes)
		heads[i] = t
		heads[i].Changes = nil
	}
	return l.memLog.Produce(ctx, heads)
}

// overLimit reports a record over limit bytes as an error.
func overLimit(t model.Txn, limit int) error {
	parts, err := SplitTxn(t, 0, limit)
	if err != nil || len(parts) > 1 {
		return fmt.Errorf("chunk %d of %d: over %d bytes", t.Chunk, t.Chunks, limit)
	}
	return nil
}

// Defect 9 of the long-running service: the capture read the whole
// snapshot into memory before appending it (1.4-1.7 GB RSS after 1M rows).
// It must append it chunk by chunk, as it reads, with the heap bounded by
// about one chunk however many rows the snapshot has: here 100,000 rows
// of 1 kB (100 MB) in chunks of at most 256 kB.
func TestCaptureStreamsASnapshotInBoundedMemory(t *testing.T) {
	const rows, limit = 100_000, 256 << 10
	var peak uint64
	var ms runtime.MemStats
	pages := 0
	snap := &madeSnapshot{rows: rows, sizes: []int{1000}, page: 500, onPage: func(int, bool) {
		if pages++; pages%10 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}}
	log := &headLog{limit: limit, snap: snap}
	c := &Capture{Env: &testEnv{}, Source: &madeSource{snap: snap}, Log: log}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	lsn, err := c.snapshot(context.Background())
	if err != nil || lsn != 7 {
		t.Fatalf("snapshot = %s, %v", lsn, err)
	}
	chunks := len(log.recs)
	if chunks < 300 || log.rows != rows || log.tooLarge > 0 {
		t.Fatalf("appended %d rows in %d chunks, %d over %d bytes; want %d rows in at least 300 chunks, none too large", log.rows, chunks, log.tooLarge, limit, rows)
	}
	for i, r := range log.recs {
		if !r.Txn.Snapshot || r.Txn.Chunk != i || r.Txn.Chunks != chunks || r.Txn.CommitLSN != 7 || (i == 0) != (r.Txn.Schema != nil) {
			t.Fatalf("record %d: snapshot=%v chunk %d of %d at %s, schema %v; want chunk %d of %d at 7, the schema in chunk 0 only",
				i, r.Txn.Snapshot, r.Txn.Chunk, r.Txn.Chunks, r.Txn.CommitLSN, r.Txn.Schema, i, chunks)
		}
	}
	if snap.scans != 2 || log.firstScan != 2 || len(log.recsPerAdd) != chunks {
		t.Errorf("%d scans, first append during scan %d, %d appends for %d chunks; want 2 scans (count, then append), appends during the second, one per chunk",
			snap.scans, log.firstScan, len(log.recsPerAdd), chunks)
	}
	// The rows alone are 100 MB; a chunk and a page are 0.8 MB.
	if grew := int64(peak) - int64(before); grew > 32<<20 {
		t.Errorf("the heap grew by %d MB while the capture appended a snapshot of %d rows of 1 kB; want it bounded by about a chunk (under 32 MB)", grew>>20, rows)
	}
}

// The second read may hand out the rows in another order (PostgreSQL scans
// from wherever it likes): the same rows give the same records when the
// cuts fall the same way, and when they do not, the capture gives the
// snapshot up, half-appended, which its restart check takes for missing.
func TestCaptureSnapshotReadInAnotherOrder(t *testing.T) {
	head := (&madeSnapshot{}).Head()
	// Values of 600 and 400 bytes cut into two records of a 600 and a 400
	// in this order, into three when both 600s come first.
	sizes := []int{600, 400}
	big, small := model.Change{Table: "t", PK: "0", Op: model.OpInsert, Row: model.R("v", strings.Repeat("x", 600))},
		model.Change{Table: "t", PK: "1", Op: model.OpInsert, Row: model.R("v", strings.Repeat("x", 400))}
	limit := 1000
	count := func(order ...model.Change) int {
		k := newCutter(head, 2000, limit)
		for _, c := range order {
			k.add(c)
		}
		return k.count()
	}
	for count(big, small) > 1 {
		limit++ // the smallest record that holds a 600 and a 400
	}
	if a, b := count(big, small, big, small), count(big, big, small, small); a != 2 || b != 3 {
		t.Fatalf("at %d bytes a record, the two orders cut into %d and %d records; the test wants 2 and 3", limit, a, b)
	}
	reversed := func(scan, i, n int) int {
		if scan == 0 {
			return i
		}
		return n - 1 - i // the same rows backwards: the same cuts
	}
	bigFirst := func(scan, i, n int) int {
		if scan == 0 {
			return i
		}
		return []int{0, 2, 1, 3}[i] // 600, 600, 400, 400
	}
	for _, tc := range []struct {
		name    string
		reorder func(scan, i, n int) int
		moved   bool
	}{{"backwards", reversed, false}, {"big rows first", bigFirst, true}} {
		t.Run(tc.name, func(t *testing.T) {
			snap := &madeSnapshot{rows: 4, sizes: sizes, page: 3, reorder: tc.reorder}
			log := &headLog{limit: limit, snap: snap}
			c := &Capture{Env: &testEnv{}, Source: &madeSource{snap: snap}, Log: log}
			_, err := c.snapshot(context.Background())
			if moved := errors.Is(err, errSnapshotCutMoved); moved != tc.moved || (err != nil && !moved) {
				t.Fatalf("snapshot: %v; want the cut moved: %v", err, tc.moved)
			}
			heads := make([]recordHead, len(log.recs))
			for i, r := range log.recs {
				heads[i] = headOf(r)
			}
			want := snapshotComplete
			if tc.moved {
				want = snapshotMissing
			}
			if got, _ := judgeSnapshot(0, 0, heads); got != want || log.tooLarge > 0 {
				t.Errorf("the log's snapshot (%d records, %d too large) judged %d, want %d", len(heads), log.tooLarge, got, want)
			}
		})
	}
}
