package remote

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
)

// Client runs an application's transactions through a coordinator
// service.
type Client struct {
	// URL is the service's base URL (http://host:port).
	URL  string
	HTTP *http.Client
	// Timeout bounds each request (default 5s): the coordinator paused or
	// cut off, the client gives up with pipeline.ErrTimeout (the outcome
	// unknown), as the simulated client does.
	Timeout time.Duration
}

// Do runs fn as one transaction with two-phase commit. nil: it committed;
// an error wrapping twopc.ErrLockTimeout: it did not, and may be tried
// again; pipeline.ErrTimeout: the coordinator did not answer, the outcome
// is unknown; fn's own error: it rolled back.
func (c *Client) Do(ctx context.Context, fn pipeline.TxnFunc) error {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	t := &remoteTx{ctx: ctx, c: c, id: hex.EncodeToString(id), begin: true}
	ferr := fn(t)
	switch {
	case t.err != nil:
		t.abort()
		return t.err
	case ferr != nil:
		t.abort()
		return ferr
	}
	rep, err := t.send(EndCommit)
	if err != nil {
		return err
	}
	return errorOf(rep)
}

// remoteTx is pipeline.Tx over the wire: writes wait in ops until the
// next read or the end, so a statement costs a round trip only when the
// application needs its answer.
type remoteTx struct {
	ctx   context.Context
	c     *Client
	id    string
	begin bool
	ops   []Op
	err   error // the first failure: every later statement is skipped
}

func (t *remoteTx) Get(table, pk string) (model.Row, bool) {
	if t.err != nil {
		return nil, false
	}
	t.ops = append(t.ops, Op{Kind: "get", Table: table, PK: pk})
	rep, err := t.send("")
	if err == nil && rep.Code != "" {
		err = errorOf(rep) // the transaction ended: the coordinator restarted, or gave up on us
	}
	if err != nil {
		t.err = err
		return nil, false
	}
	return rep.Row, rep.Found
}

func (t *remoteTx) write(op Op) {
	if t.err == nil {
		t.ops = append(t.ops, op)
	}
}

func (t *remoteTx) Put(table, pk string, row model.Row) {
	t.write(Op{Kind: "put", Table: table, PK: pk, Row: row})
}
func (t *remoteTx) Delete(table, pk string) { t.write(Op{Kind: "delete", Table: table, PK: pk}) }
func (t *remoteTx) Rekey(table, pk, newPK string) {
	t.write(Op{Kind: "rekey", Table: table, PK: pk, NewPK: newPK})
}
func (t *remoteTx) InsertRow(table string, row model.Row) {
	t.write(Op{Kind: "insert-row", Table: table, Row: row})
}
func (t *remoteTx) DeleteRow(table string, row model.Row) {
	t.write(Op{Kind: "delete-row", Table: table, Row: row})
}

// abort tells the coordinator to roll back, if it holds the transaction;
// one it never heard of has nothing to roll back, and one that does not
// answer rolls back on its own (Server.Idle).
func (t *remoteTx) abort() {
	if !t.begin {
		_, _ = t.send(EndAbort)
	}
}

// send posts the buffered statements, ending the transaction with end
// when it is not "".
func (t *remoteTx) send(end string) (Reply, error) {
	req := Request{ID: t.id, Begin: t.begin, Ops: t.ops, End: end}
	t.begin, t.ops = false, nil
	body, err := json.Marshal(req)
	if err != nil {
		return Reply{}, fmt.Errorf("2pc client: %w", err)
	}
	timeout := t.c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, t.c.URL+"/txn", bytes.NewReader(body))
	if err != nil {
		return Reply{}, fmt.Errorf("2pc client: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hc := t.c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		// Unreachable, or no answer in time: whether it committed is
		// unknown.
		return Reply{}, fmt.Errorf("2pc client: %w: %w", pipeline.ErrTimeout, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Reply{}, fmt.Errorf("2pc client: the coordinator answered %s", resp.Status)
	}
	var rep Reply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return Reply{}, fmt.Errorf("2pc client: %w: read the answer: %w", pipeline.ErrTimeout, err)
	}
	return rep, nil
}

// Status asks the coordinator how many decisions its log holds.
func (c *Client) Status(ctx context.Context) (Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/status", nil)
	if err != nil {
		return Status{}, err
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("2pc coordinator status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("2pc coordinator status: %s", resp.Status)
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return Status{}, fmt.Errorf("2pc coordinator status: %w", err)
	}
	return st, nil
}
