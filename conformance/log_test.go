package conformance

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"pgregory.net/rapid"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/kafkalog"
	"lockstep/pipeline/kafkalog/kafkatest"
	"lockstep/pipeline/logcodec"
	"lockstep/sim"
	"lockstep/sim/services"
)

// The log: the same programs of log operations go through the simulated log
// (services.Cluster and its LogClient, in a fault-free world run to
// quiescence) and through pipeline/kafkalog on one real Kafka broker (a
// fresh topic per program), and what a client observes must be the same:
//
//   - Produce: which calls succeed and the last offset each returns; a call
//     holding a record over the limit fails with pipeline.ErrRecordTooLarge
//     naming the same record and size, and appends nothing. On Kafka that
//     refusal is kafkalog's own, before sending (the broker's refusal at
//     max.message.bytes is tested in pipeline/kafkalog); records of
//     exactly the limit, also of incompressible letters, are taken by the
//     broker in both.
//   - Fetch: the records read from an offset up to a maximum (their offsets
//     and decoded transactions, every field: snapshot, chunk of chunks,
//     changes with old key, row image, unchanged columns and revisions),
//     nothing at the end, a refusal past the end. Each record must also be
//     exactly (reflect.DeepEqual) what this client's acknowledged produce
//     put at that offset.
//   - End after every step, Commit and Committed for consumer groups.
//
// Not compared: timing, and how a read is cut into Fetch calls (Kafka hands
// out what its fetch responses brought, so a read repeats Fetch from where
// the last call ended; the contract is "up to max"); which error a refused
// Fetch wraps (the simulator's services.ErrOutOfRange, kafkalog's
// pipeline.ErrUnavailable around OFFSET_OUT_OF_RANGE: pipeline.Log leaves it
// open and the appliers restart on any fetch error). Producer idempotence is
// compared only where a client can see it without faults: a new Produce call
// of the same transactions appends them again in both (the idempotent
// producer dedupes retries of one batch, not new calls). A retry of a batch
// already written (same producer id and sequence) is forced by losing the
// broker's answers to a produce after it appended (LoseAnswers): on Kafka a
// proxy in front of the broker (kafkatest.Proxy) drops the answer and
// breaks the connection, so franz-go retries inside ProduceSync; in the
// simulator services.Cluster.LoseNextAcks drops it and the LogClient
// retries after its timeout. Both must answer the produce with the first
// write's offset and hold its records once. Not compared: replication,
// failover or min.insync.replicas (one broker here).
//
// Named programs cover each rule; random ones (rapid) mix produces of one
// to four transactions (whole, cut by pipeline.SplitTxn, snapshot chunks,
// padded to the limit or one byte over), the same records again, reads at
// offsets around the end, End, commits and reads of group offsets. Edges
// holds calls the pipeline never makes on which the two logs differ.

// logLimit is the largest record both logs take here: the simulated
// cluster's SetMaxRecordBytes and kafkalog's MaxRecordBytes (which kafkalog
// also sets as the topic's max.message.bytes), both counted as
// logcodec.RecordBytes counts. Small, so programs are cheap.
const logLimit = 4000

// TestLogAgainstKafka runs the simulated log and a real Kafka broker side by
// side, program by program: named programs first, then random ones.
func TestLogAgainstKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: needs a Kafka broker (-short)")
	}
	rapidDefaults()
	k := startKafkaWorld(t)
	for _, tc := range logShapes(t) {
		t.Run(tc.name, func(t *testing.T) { compareLog(t, k, tc.prog) })
	}
	t.Run("Random", func(t *testing.T) {
		rapid.Check(t, func(t *rapid.T) { compareLog(t, k, drawLogProgram(t)) })
	})
	t.Run("Edges", func(t *testing.T) {
		for _, tc := range logEdges() {
			t.Run(tc.name, func(t *testing.T) { compareLog(t, k, tc.prog) })
		}
	})
}

// A logProgram is steps one client takes on a log, each followed by End.
type logProgram []logStep

type logOp int

const (
	logProduce logOp = iota
	logFetch
	logEnd
	logCommit
	logCommitted
)

type logStep struct {
	Op    logOp
	Txns  []model.Txn // produce: the records, in order
	Again int         // produce: 1 + the step whose records these are again, or 0
	// Back places a fetch or commit at the last End minus Back, at least
	// 0, so a negative Back is past the end. Each world resolves it from
	// its own End (which is compared too).
	Back int
	// Absolute places it at At instead (the edge programs' negative
	// offsets).
	Absolute bool
	At       int64
	Max      int    // fetch
	Group    string // commit, committed
	// LoseAnswers: produce: the broker's answers to the next this many
	// produce requests are lost after it handled them, so the client
	// retries the same batch (same producer id and sequence numbers).
	LoseAnswers int
}

// offset is where a fetch or commit goes when the last End said end.
func (s logStep) offset(end int64) int64 {
	if s.Absolute {
		return s.At
	}
	return max(0, end-int64(s.Back))
}

func (s logStep) where() string {
	switch {
	case s.Absolute:
		return fmt.Sprint(s.At)
	case s.Back == 0:
		return "end"
	}
	return fmt.Sprintf("end%+d", -s.Back)
}

func (p logProgram) String() string {
	var b strings.Builder
	for i, s := range p {
		fmt.Fprintf(&b, "  S%d: ", i)
		switch s.Op {
		case logProduce:
			switch {
			case s.Again > 0:
				fmt.Fprintf(&b, "produce again the records of S%d:", s.Again-1)
			case len(s.Txns) == 0:
				b.WriteString("produce no records")
			default:
				b.WriteString("produce")
			}
			if s.LoseAnswers > 0 {
				fmt.Fprintf(&b, " (the broker's first %d answer(s) lost)", s.LoseAnswers)
			}
			for _, t := range s.Txns {
				b.WriteString("\n        " + logTxnText(t))
			}
		case logFetch:
			fmt.Fprintf(&b, "fetch max %d from %s", s.Max, s.where())
		case logEnd:
			b.WriteString("end")
		case logCommit:
			fmt.Fprintf(&b, "commit %s at %s", s.Group, s.where())
		case logCommitted:
			fmt.Fprintf(&b, "committed %s", s.Group)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// logTxnText shows every field a record carries, big values by name, and
// tells a nil row or change list from an empty one (the codec keeps them
// apart). Fields it does not know by name are shown too when set.
func logTxnText(t model.Txn) string {
	var b strings.Builder
	fmt.Fprintf(&b, "xid %d at %s", t.XID, t.CommitLSN)
	if t.Snapshot {
		b.WriteString(" snapshot")
	}
	if t.Chunk != 0 || t.Chunks != 0 {
		fmt.Fprintf(&b, " chunk %d of %d", t.Chunk, t.Chunks)
	}
	b.WriteString(otherFields(t, "XID", "CommitLSN", "Snapshot", "Chunk", "Chunks", "Changes"))
	if n, err := logcodec.TxnBytes(t); err == nil {
		fmt.Fprintf(&b, " (%d B)", n)
	}
	switch {
	case t.Changes == nil:
		b.WriteString(": changes nil")
	case len(t.Changes) == 0:
		b.WriteString(": no changes")
	}
	for i, c := range t.Changes {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		b.WriteString(sep + c.Op.String() + " " + c.Key().String())
		if c.OldPK != "" {
			b.WriteString(" from " + c.OldPK)
		}
		if c.Row == nil {
			b.WriteString(" row nil")
		} else {
			b.WriteString(" " + showRow(c.Row))
		}
		if c.Unchanged != nil {
			b.WriteString(" unchanged [" + strings.Join(c.Unchanged, ",") + "]")
		}
		if c.Revs != 0 {
			fmt.Fprintf(&b, " revs %d", c.Revs)
		}
		b.WriteString(otherFields(c, "Table", "PK", "Op", "Row", "OldPK", "Unchanged", "Revs"))
	}
	return b.String()
}

// otherFields shows the exported fields of the struct v that are set and
// not named in shown, as " Name=value": a field added to model.Txn or
// model.Change shows up in the transcripts, and one a log loses shows as a
// difference, with no change here.
func otherFields(v any, shown ...string) string {
	rv := reflect.ValueOf(v)
	var b strings.Builder
	for i := range rv.NumField() {
		f := rv.Type().Field(i)
		if !f.IsExported() || slices.Contains(shown, f.Name) || rv.Field(i).IsZero() {
			continue
		}
		fmt.Fprintf(&b, " %s=%v", f.Name, rv.Field(i).Interface())
	}
	return b.String()
}

// tooLarge is the part of an ErrRecordTooLarge message both logs write the
// same way: which record of the call, and its size against the limit.
var tooLarge = regexp.MustCompile(`record \d+ of \d+ \(txn \d+ at \S+, \d+ changes\) is \d+ bytes, over the limit of \d+`)

// errClass is what the transcript says of an error: its class, and for
// ErrRecordTooLarge the record it names. The message goes to the notes.
func errClass(err error) string {
	switch {
	case errors.Is(err, pipeline.ErrRecordTooLarge):
		named := tooLarge.FindString(err.Error())
		if named == "" {
			named = "no record named"
		}
		return "ErrRecordTooLarge: " + named
	case errors.Is(err, pipeline.ErrTimeout):
		return "ErrTimeout"
	case errors.Is(err, pipeline.ErrUnavailable):
		return "ErrUnavailable"
	}
	return "an error of no pipeline class"
}

// playLog runs prog on l as one client and writes down what it observes.
// It is the same code in both worlds; patience says, for one read, whether
// to ask again after an empty answer where records or a refusal are due
// (Kafka's consumer may need a fetch round or two; the simulator answers at
// once or not at all, so there it is never patient). Error messages go to
// notes, not into the text.
func playLog(ctx context.Context, l pipeline.Log, prog logProgram, lose answerLoser, patience func() func() bool) (text string, notes []string) {
	var b strings.Builder
	if m, ok := l.(interface{ MaxRecordBytes() int }); ok {
		fmt.Fprintf(&b, "max record bytes %d\n", m.MaxRecordBytes())
	}
	note := func(step int, what string, err error) {
		notes = append(notes, fmt.Sprintf("S%d %s: %v", step, what, err))
	}
	acked := map[int64]model.Txn{} // what this client's acknowledged produces put where
	var end int64                  // the last End answer
	for i, s := range prog {
		fmt.Fprintf(&b, "S%d: ", i)
		switch s.Op {
		case logProduce:
			lostBefore := lose.Lost()
			lose.LoseProduceAnswers(s.LoseAnswers)
			last, err := l.Produce(ctx, s.Txns)
			lose.LoseProduceAnswers(0) // none left over for later steps
			lost := ""
			if n := lose.Lost() - lostBefore; n > 0 {
				lost = fmt.Sprintf(", %d answer(s) lost", n)
			}
			if err != nil {
				fmt.Fprintf(&b, "produce %d records%s: %s\n", len(s.Txns), lost, errClass(err))
				note(i, "produce", err)
				break
			}
			fmt.Fprintf(&b, "produce %d records%s: last offset %d\n", len(s.Txns), lost, last)
			for j, t := range s.Txns {
				acked[last-int64(len(s.Txns)-1-j)] = t
			}
		case logFetch:
			off := s.offset(end)
			fmt.Fprintf(&b, "fetch max %d from %d:", s.Max, off)
			readLog(ctx, &b, l, off, s.Max, end, acked, patience(), func(err error) { note(i, "fetch", err) })
		case logEnd:
			b.WriteString("end\n")
		case logCommit:
			off := s.offset(end)
			if err := l.Commit(ctx, s.Group, off); err != nil {
				fmt.Fprintf(&b, "commit %s at %d: %s\n", s.Group, off, errClass(err))
				note(i, "commit", err)
				break
			}
			fmt.Fprintf(&b, "commit %s at %d: ok\n", s.Group, off)
		case logCommitted:
			off, err := l.Committed(ctx, s.Group)
			if err != nil {
				fmt.Fprintf(&b, "committed %s: %s\n", s.Group, errClass(err))
				note(i, "committed", err)
				break
			}
			fmt.Fprintf(&b, "committed %s: %d\n", s.Group, off)
		}
		e, err := l.End(ctx)
		if err != nil {
			fmt.Fprintf(&b, "  end: %s\n", errClass(err))
			note(i, "end", err)
			continue
		}
		fmt.Fprintf(&b, "  end %d\n", e)
		end = e
	}
	return b.String(), notes
}

// answerLoser loses the broker's answers to the next n produce requests
// after the broker handled them, and counts those it lost.
type answerLoser interface {
	LoseProduceAnswers(n int)
	Lost() int
}

// simAnswers is answerLoser on the simulated cluster, for the client on node.
type simAnswers struct {
	c     *services.Cluster
	node  string
	asked int // answers asked to lose so far
}

func (a *simAnswers) LoseProduceAnswers(n int) {
	a.asked += n - a.c.AcksToLose(a.node) // the count left from before was not lost
	a.c.LoseNextAcks(a.node, n)
}

func (a *simAnswers) Lost() int { return a.asked - a.c.AcksToLose(a.node) }

// readLog reads up to most records from off as a reader does: Fetch, then
// Fetch again from after the last record returned, until it holds most or
// reaches end (the End read before). An empty answer at end is the answer;
// below or past end it is asked again while again() says so. It writes the
// records, "nothing" or "refused", and a "!!" line for any record out of
// place, over the maximum, or not what was produced at its offset.
func readLog(ctx context.Context, b *strings.Builder, l pipeline.Log, off int64, most int, end int64, acked map[int64]model.Txn, again func() bool, note func(error)) {
	var got []pipeline.Record
	var odd []string
	var refused bool
	for cur := off; ; { // at least one Fetch, whatever most is
		recs, err := l.Fetch(ctx, cur, most-len(got))
		if err != nil {
			refused = true
			note(err)
			break
		}
		if len(recs) > most-len(got) {
			odd = append(odd, fmt.Sprintf("  !! %d records from a fetch of at most %d\n", len(recs), most-len(got)))
		}
		for j, r := range recs {
			if r.Offset != cur+int64(j) {
				odd = append(odd, fmt.Sprintf("  !! a fetch from %d returned offset %d as its record %d\n", cur, r.Offset, j))
			}
		}
		got = append(got, recs...)
		if len(recs) > 0 {
			if cur = recs[len(recs)-1].Offset + 1; cur >= end || len(got) >= most {
				break
			}
			continue
		}
		if cur == end || most < 1 || !again() {
			break
		}
	}
	switch {
	case len(got) == 0 && refused:
		b.WriteString(" refused\n")
	case len(got) == 0:
		b.WriteString(" nothing\n")
	default:
		fmt.Fprintf(b, " %d records\n", len(got))
	}
	b.WriteString(strings.Join(odd, ""))
	for _, r := range got {
		fmt.Fprintf(b, "  @%d %s\n", r.Offset, logTxnText(r.Txn))
		if want, ok := acked[r.Offset]; !ok {
			fmt.Fprintf(b, "  !! offset %d was never acknowledged to this client\n", r.Offset)
		} else if !reflect.DeepEqual(r.Txn, want) {
			fmt.Fprintf(b, "  !! offset %d was produced as %s\n", r.Offset, logTxnText(want))
		}
	}
	if refused && len(got) > 0 {
		b.WriteString("  then refused\n")
	}
}

// runLogSim runs prog on a fresh simulated cluster with the limit set, as
// one LogClient in a fault-free world, until the program is done. A panic
// of the simulated services is an error, so it fails one program only.
func runLogSim(prog logProgram) (text string, notes []string, err error) {
	w := sim.New(sim.Config{Seed: 1})
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("simulator: panic: %v", p)
		}
	}()
	defer w.Stop()
	c := services.NewCluster(w, "b")
	c.SetMaxRecordBytes(logLimit)
	app := w.AddNode("app", nil)
	done := false
	app.Go("program", func(ctx context.Context) {
		never := func() func() bool { return func() bool { return false } }
		text, notes = playLog(ctx, &services.LogClient{From: app, Cluster: c}, prog, &simAnswers{c: c, node: app.Name()}, never)
		done = true
	})
	const limit = time.Hour // of virtual time; a program takes a few seconds
	for !done && w.Now() < limit {
		if err := w.Run(w.Now() + time.Second); err != nil {
			return "", nil, fmt.Errorf("simulator: %w", err)
		}
	}
	if !done {
		return "", nil, fmt.Errorf("simulator: the program did not finish in %v of virtual time", limit)
	}
	return text, notes, nil
}

// kafkaWorld is one real broker; each program gets a topic of its own.
type kafkaWorld struct {
	broker  string
	proxy   *kafkatest.Proxy // every client's way to the broker
	version string           // of the Kafka jars
	topics  int
}

// kafkaConfig is the log on topic: one replica, the limit, a short long
// poll (an empty read at the end costs that much wall time) and a short
// wait before a retry's metadata refresh.
func (k *kafkaWorld) kafkaConfig(topic string) kafkalog.Config {
	return kafkalog.Config{Brokers: []string{k.broker}, Topic: topic, ReplicationFactor: 1, MinInSync: 1,
		MaxRecordBytes: logLimit, FetchWait: 100 * time.Millisecond,
		MetadataMinAge: 100 * time.Millisecond} // a lost answer's retry waits for a metadata refresh
}

// run runs prog on a new topic with a new kafkalog.Log.
func (k *kafkaWorld) run(prog logProgram) (string, []string, error) {
	k.topics++
	topic := fmt.Sprintf("program-%d", k.topics)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := kafkalog.New(k.kafkaConfig(topic))
	if err != nil {
		return "", nil, err
	}
	defer l.Close()
	if err := l.EnsureTopic(ctx); err != nil {
		return "", nil, err
	}
	text, notes := playLog(ctx, l, prog, k.proxy, func() func() bool {
		deadline := time.Now().Add(10 * time.Second)
		return func() bool { return time.Now().Before(deadline) }
	})
	return text, notes, nil
}

// compareLog runs prog on Kafka and in the simulator and fails when a client
// observed anything different, or anything out of place in either.
func compareLog(t failer, k *kafkaWorld, prog logProgram) {
	t.Helper()
	want, wantNotes, err := k.run(prog)
	if err != nil {
		t.Fatalf("Kafka: %v\nprogram:\n%s", err, prog)
	}
	got, gotNotes, err := runLogSim(prog)
	if err != nil {
		t.Fatalf("%v\nprogram:\n%s", err, prog)
	}
	// A timeout or an unavailable broker on the real side where the
	// simulator had none is the environment (a loaded machine starving the
	// broker), not a disagreement: run the program again on a fresh topic,
	// twice at most. A real disagreement repeats; the simulator's side is
	// deterministic.
	for attempt := 0; attempt < 2 && got != want && transientAt(want, got); attempt++ {
		if want, wantNotes, err = k.run(prog); err != nil {
			t.Fatalf("Kafka: %v\nprogram:\n%s", err, prog)
		}
	}
	notes := "errors, simulator:\n  " + strings.Join(gotNotes, "\n  ") + "\nerrors, Kafka:\n  " + strings.Join(wantNotes, "\n  ") + "\n"
	if got != want {
		t.Fatalf("the simulated log and Kafka %s disagree, first at line %d\nprogram:\n%s--- simulator\n%s--- Kafka %s\n%s%s",
			k.version, firstDiff(got, want), prog, got, k.version, want, notes)
	}
	if strings.Contains(got, "!!") {
		t.Fatalf("both logs returned records out of place\nprogram:\n%s%s%s", prog, got, notes)
	}
}

// Drawing programs. Values are small (some not ASCII) or big: 100 to 1,800
// characters that JSON escapes to about twice that, so a transaction of a
// few changes is often over the 4,000-byte limit and one change sometimes
// is. Transactions go to the log whole, or as the capture cuts them
// (pipeline.SplitTxn), or as snapshot chunks (cut by rows and bytes as the
// capture cuts them, or by rows alone as pipeline.SplitSnapshot does, which
// can leave a chunk over the limit), or padded to exactly the limit or one
// byte over.

type logDrawer struct {
	t   *rapid.T
	xid uint64
}

func (d *logDrawer) next() (uint64, model.LSN) {
	d.xid++
	return d.xid, model.LSN(0x100 * d.xid)
}

func (d *logDrawer) value(label string) string {
	id := rapid.IntRange(1, 9).Draw(d.t, label+" id")
	switch rapid.IntRange(0, 6).Draw(d.t, label) {
	case 0, 1, 2:
		return smallValue(id)
	case 3:
		return fmt.Sprintf("é%d", id)
	case 4:
		return noiseValue(uint64(id), rapid.IntRange(100, 3000).Draw(d.t, label+" size"))
	}
	return bigValue(id, rapid.IntRange(100, 1800).Draw(d.t, label+" size"))
}

// noiseValue is n random letters from seed: a value that does not
// compress. The Kafka producer compresses batches (snappy) and the broker
// checks a batch's compressed size; the limit counts uncompressed bytes.
func noiseValue(seed uint64, n int) string {
	rng := mrand.New(mrand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + rng.IntN(26))
	}
	return string(b)
}

// change draws a change as the sources write them: inserts with every
// column, updates that name some columns and mark a big one unchanged,
// key changes, deletes without a row.
func (d *logDrawer) change() model.Change {
	c := model.Change{Table: rapid.SampledFrom(tables).Draw(d.t, "table"), PK: rapid.SampledFrom(keys).Draw(d.t, "pk")}
	switch rapid.IntRange(0, 5).Draw(d.t, "op") {
	case 0, 1:
		c.Op, c.Row = model.OpInsert, model.R("v", d.value("v"), "blob", d.value("blob"))
	case 2, 3:
		c.Op, c.Row = model.OpUpdate, model.R("v", d.value("v"))
		if rapid.Bool().Draw(d.t, "blob set") {
			c.Row.Set("blob", d.value("blob"))
		} else if rapid.Bool().Draw(d.t, "blob unchanged") {
			c.Unchanged = []string{"blob"}
		}
		if rapid.IntRange(0, 3).Draw(d.t, "key change") == 0 {
			c.OldPK = rapid.SampledFrom(keys).Draw(d.t, "old pk")
		}
	case 4:
		c.Op, c.Row, c.Unchanged = model.OpUpdate, model.Row{}, []string{"blob"}
	default:
		c.Op = model.OpDelete
	}
	return c
}

func (d *logDrawer) txn() model.Txn {
	xid, lsn := d.next()
	t := model.Txn{XID: xid, CommitLSN: lsn}
	for range rapid.IntRange(1, 5).Draw(d.t, "changes") {
		t.Changes = append(t.Changes, d.change())
	}
	return t
}

// snapshot draws a snapshot of up to six distinct rows and cuts it into
// chunks of at most rows rows: by rows and bytes as the capture does, or by
// rows alone (SplitSnapshot, what the no-split-large-txn capture appends).
func (d *logDrawer) snapshot() []model.Txn {
	_, lsn := d.next()
	snap := model.Txn{CommitLSN: lsn, Snapshot: true}
	var all []model.Key
	for _, table := range tables {
		for _, pk := range keys {
			all = append(all, model.Key{Table: table, PK: pk})
		}
	}
	for _, k := range all[:rapid.IntRange(0, 6).Draw(d.t, "snapshot rows")] {
		snap.Changes = append(snap.Changes, model.Change{Table: k.Table, PK: k.PK, Op: model.OpInsert,
			Row: model.R("v", d.value("v"), "blob", d.value("blob")), Revs: rapid.IntRange(1, 3).Draw(d.t, "revs")})
	}
	rows := rapid.IntRange(1, 4).Draw(d.t, "chunk rows")
	if rapid.Bool().Draw(d.t, "rows only") {
		return pipeline.SplitSnapshot(snap, rows)
	}
	chunks, err := pipeline.SplitTxn(snap, rows, logLimit)
	if err != nil { // a row too large for any record: it goes as it is, and is refused
		return pipeline.SplitSnapshot(snap, rows)
	}
	return chunks
}

// item is one transaction as it goes to the log: one record or several.
func (d *logDrawer) item() []model.Txn {
	switch rapid.IntRange(0, 9).Draw(d.t, "item") {
	case 5, 6:
		t := d.txn()
		parts, err := pipeline.SplitTxn(t, 0, logLimit)
		if err != nil { // a change too large for any record: it goes whole, and is refused
			return []model.Txn{t}
		}
		return parts
	case 7:
		return d.snapshot()
	case 8:
		xid, lsn := d.next()
		return []model.Txn{paddedTxn(xid, lsn, logLimit+rapid.IntRange(0, 1).Draw(d.t, "over"), rapid.Bool().Draw(d.t, "noise"))}
	}
	return []model.Txn{d.txn()}
}

// drawLogProgram draws 1 to 10 steps.
func drawLogProgram(t *rapid.T) logProgram {
	d := &logDrawer{t: t}
	var prog logProgram
	var produces []int
	for i := range rapid.IntRange(1, 10).Draw(t, "steps") {
		var s logStep
		switch r := rapid.IntRange(0, 19).Draw(t, "step"); {
		case r < 9 && len(produces) > 0 && r >= 7:
			from := rapid.SampledFrom(produces).Draw(t, "again")
			s = logStep{Op: logProduce, Txns: prog[from].Txns, Again: from + 1}
		case r < 9:
			s.Op = logProduce
			for range rapid.IntRange(1, 4).Draw(t, "batch") {
				s.Txns = append(s.Txns, d.item()...)
			}
			if fits(s.Txns) {
				// Lost answers only where the broker is asked at all:
				// kafkalog refuses an oversize record before sending.
				s.LoseAnswers = rapid.SampledFrom([]int{0, 0, 0, 1, 1, 2}).Draw(t, "lose answers")
			}
			produces = append(produces, i)
		case r < 15:
			s = logStep{Op: logFetch, Back: rapid.IntRange(-2, 8).Draw(t, "back"), Max: rapid.IntRange(1, 6).Draw(t, "max")}
		case r < 16:
			s.Op = logEnd
		case r < 18:
			s = logStep{Op: logCommit, Group: rapid.SampledFrom([]string{"g1", "g2"}).Draw(t, "group"), Back: rapid.IntRange(-2, 5).Draw(t, "back")}
		default:
			s = logStep{Op: logCommitted, Group: rapid.SampledFrom([]string{"g1", "g2", "g3"}).Draw(t, "group")}
		}
		prog = append(prog, s)
	}
	return prog
}

// fits reports whether every record of txns is within the limit.
func fits(txns []model.Txn) bool {
	for _, t := range txns {
		if n, err := logcodec.TxnBytes(t); err != nil || n > logLimit {
			return false
		}
	}
	return true
}

// paddedTxn is a one-change transaction whose record is exactly n bytes,
// of x's or of noise.
func paddedTxn(xid uint64, lsn model.LSN, n int, noise bool) model.Txn {
	t := model.Txn{XID: xid, CommitLSN: lsn, Changes: []model.Change{{Table: "t1", PK: "pad", Op: model.OpInsert}}}
	for pad := max(0, n-200); pad < n; pad++ {
		v := strings.Repeat("x", pad)
		if noise {
			v = noiseValue(xid, pad)
		}
		t.Changes[0].Row = model.R("v", v)
		if got, _ := logcodec.TxnBytes(t); got == n {
			return t
		}
	}
	panic(fmt.Sprintf("no padding makes a record of %d bytes", n))
}

type logShape struct {
	name string
	prog logProgram
}

// logShapes are named programs for each rule the random ones meet by
// chance: the same records produced twice, the limit and one byte over, a
// transaction split into parts, snapshot chunks, reads at and past the end,
// and group offsets.
func logShapes(t *testing.T) []logShape {
	t.Helper()
	txn := func(xid uint64, changes ...model.Change) model.Txn {
		return model.Txn{XID: xid, CommitLSN: model.LSN(0x100 * xid), Changes: changes}
	}
	big := func(id, n int) string { return bigValue(id, n) }
	ins := func(pk, v, blob string) model.Change {
		return model.Change{Table: "t1", PK: pk, Op: model.OpInsert, Row: model.R("v", v, "blob", blob)}
	}
	a := txn(1, ins("a", "s1", big(1, 500)))
	b := txn(2, model.Change{Table: "t1", PK: "b", Op: model.OpUpdate, Row: model.R("v", "s2"), OldPK: "a", Unchanged: []string{"blob"}},
		model.Change{Table: "t2", PK: "c", Op: model.OpDelete})
	large := txn(3, ins("a", "s1", big(1, 1500)), ins("b", "s2", big(2, 1500)), ins("c", "s3", big(3, 1500)), ins("d", "s4", "é"))
	parts, err := pipeline.SplitTxn(large, 0, logLimit)
	if err != nil || len(parts) < 3 {
		t.Fatalf("SplitTxn of a transaction of %d changes cut %d parts (%v), want at least 3", len(large.Changes), len(parts), err)
	}
	snap := model.Txn{CommitLSN: 0x400, Snapshot: true}
	for i, pk := range keys {
		snap.Changes = append(snap.Changes, model.Change{Table: "t2", PK: pk, Op: model.OpInsert, Row: model.R("v", "s1", "blob", big(i+1, 1200)), Revs: i + 1})
	}
	chunks, err := pipeline.SplitTxn(snap, 3, logLimit)
	if err != nil {
		t.Fatal(err)
	}
	exact, over := paddedTxn(5, 0x500, logLimit, false), paddedTxn(6, 0x600, logLimit+1, false)
	noise := paddedTxn(7, 0x700, logLimit, true)
	produce := func(txns ...model.Txn) logStep { return logStep{Op: logProduce, Txns: txns} }
	fetch := func(back, max int) logStep { return logStep{Op: logFetch, Back: back, Max: max} }
	return []logShape{
		{"SameRecordsTwice", logProgram{produce(a, b), {Op: logProduce, Txns: []model.Txn{a, b}, Again: 1}, fetch(4, 10)}},
		// The idempotent producer: a batch the broker wrote but whose answer
		// was lost is retried with its sequence numbers and written once,
		// answered with the first write's offset; twice in a row too.
		{"LostAnswers", logProgram{{Op: logProduce, Txns: []model.Txn{a, b}, LoseAnswers: 1}, produce(exact),
			{Op: logProduce, Txns: []model.Txn{b}, LoseAnswers: 2}, {Op: logProduce, Txns: []model.Txn{a, b}, Again: 1, LoseAnswers: 1}, fetch(6, 10)}},
		{"AtTheLimitAndOneOver", logProgram{produce(exact), produce(a, over, b), produce(over), produce(b), produce(noise, noise), fetch(4, 5)}},
		{"SplitTransaction", logProgram{produce(large), produce(append([]model.Txn{a}, parts...)...), fetch(2, 2), fetch(len(parts)+1, 10)}},
		{"SnapshotChunks", logProgram{produce(chunks...), produce(pipeline.SplitSnapshot(snap, 0)...), fetch(len(chunks), 10)}},
		{"ReadAtAndPastTheEnd", logProgram{fetch(0, 3), fetch(-1, 3), produce(a, b), fetch(0, 1), fetch(-1, 1), fetch(-2, 4), fetch(1, 4)}},
		{"GroupOffsets", logProgram{{Op: logCommitted, Group: "g1"}, produce(a, b), {Op: logCommit, Group: "g1", Back: 1},
			{Op: logCommit, Group: "g2", Back: -3}, {Op: logCommitted, Group: "g1"}, {Op: logCommitted, Group: "g2"},
			{Op: logCommit, Group: "g1", Back: 2}, {Op: logCommitted, Group: "g1"}, {Op: logCommitted, Group: "g3"}}},
	}
}

// logEdges are calls the pipeline never makes (its produces hold at least
// one transaction of PostgreSQL text, its offsets are not negative, its
// reads ask for at least one record), on which the two logs were found to
// differ. Each is one disagreement, left failing until one side changes.
func logEdges() []logShape {
	one := model.Txn{XID: 1, CommitLSN: 0x100, Changes: []model.Change{{Table: "t1", PK: "a", Op: model.OpInsert, Row: model.R("v", "s1")}}}
	invalid := model.Txn{XID: 2, CommitLSN: 0x200, Changes: []model.Change{{Table: "t1", PK: "a", Op: model.OpInsert, Row: model.R("v", "\xff")}}}
	noOp := model.Txn{XID: 3, CommitLSN: 0x300, Changes: []model.Change{{Table: "t1", PK: "a", Row: model.R("v", "s1")}}}
	produce := func(txns ...model.Txn) logStep { return logStep{Op: logProduce, Txns: txns} }
	return []logShape{
		// The simulator acknowledges an empty produce with the offset
		// before the end (-1 on an empty log); kafkalog refuses it.
		{"ProduceNothing", logProgram{produce(), produce(one), produce()}},
		// The simulator appends records the codec cannot encode (its size
		// check encodes only what the cheap bound puts over the limit);
		// kafkalog refuses them with ErrUnavailable, nothing sent.
		{"UnencodableRecords", logProgram{produce(invalid), produce(noOp), {Op: logFetch, Back: 2, Max: 2}}},
		// A read of at most 0 records: the simulator answers nothing after
		// its long poll; kafkalog refuses it.
		{"FetchOfNoRecords", logProgram{produce(one), {Op: logFetch, Back: 1, Max: 0}}},
		// A negative offset: the simulated broker indexes its log at -1
		// and panics; kafkalog refuses the read.
		{"FetchNegativeOffset", logProgram{produce(one), {Op: logFetch, Absolute: true, At: -1, Max: 1}}},
		// A negative committed offset: the simulator gives it back;
		// Kafka's offset of -1 reads as none, which kafkalog returns as 0.
		{"CommitNegativeOffset", logProgram{produce(one), {Op: logCommit, Group: "g1", Absolute: true, At: -1}, {Op: logCommitted, Group: "g1"}}},
	}
}

// startKafkaWorld runs a throwaway single-node Kafka (kafkatest), checks
// that a topic made as the programs' are has max.message.bytes at the
// limit, and waits until consumer-group offsets can be committed (the
// first commit creates __consumer_offsets). It skips without the jars or
// Java.
func startKafkaWorld(t *testing.T) *kafkaWorld {
	t.Helper()
	broker, proxy := kafkatest.StartBehindProxy(t)
	k := &kafkaWorld{broker: broker.Addr, version: broker.Version, proxy: proxy}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := kafkalog.New(k.kafkaConfig("warm-up"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.EnsureTopic(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.broker))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cfgs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, "warm-up")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cfgs.On("warm-up", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rc.Configs {
		if c.Key == "max.message.bytes" && c.MaybeValue() != fmt.Sprint(logLimit) {
			t.Fatalf("kafkalog made the topic with max.message.bytes %s, want MaxRecordBytes (%d)", c.MaybeValue(), logLimit)
		}
	}
	for {
		err := l.Commit(ctx, "warm-up", 1) // retries for about 2s itself
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no consumer-group commit within a minute: %v", err)
		}
	}
	return k
}

// transientAt reports whether the first line where Kafka's transcript
// differs from the simulator's is a timeout or an unavailable broker.
func transientAt(kafka, sim string) bool {
	i := firstDiff(kafka, sim) - 1
	lines := strings.Split(kafka, "\n")
	if i >= len(lines) {
		return false
	}
	return strings.Contains(lines[i], "ErrTimeout") || strings.Contains(lines[i], "ErrUnavailable")
}
