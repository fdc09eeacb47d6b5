package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
)

// Server serves a Coordinator to applications (Handler).
type Server struct {
	Coordinator *twopc.Coordinator
	// Idle is how long a transaction waits for its client's next request
	// before the coordinator rolls it back (default 5s): a client that
	// died must not hold rows locked.
	Idle   time.Duration
	Logger *slog.Logger

	mu   sync.Mutex
	txns map[string]*session
}

// session is one transaction in progress: the goroutine running
// Coordinator.Do takes the client's requests from calls.
type session struct {
	calls chan call
	done  chan struct{}
	err   error // Do's outcome, once done is closed
}

type call struct {
	req   Request
	reply chan Reply // buffered: the session never waits for a handler
}

func (s *Server) idle() time.Duration {
	if s.Idle == 0 {
		return 5 * time.Second
	}
	return s.Idle
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Handler serves POST /txn and GET /status. Transactions run under ctx
// (the process's lifetime), not a request's: a client giving up does not
// cut the commit phase of a decided transaction short.
func (s *Server) Handler(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /txn", func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.ID == "" {
			http.Error(w, fmt.Sprintf("a transaction request with an id: %v", err), http.StatusBadRequest)
			return
		}
		rep, ok := s.serve(ctx, r.Context(), req)
		if ok {
			writeJSON(w, rep)
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		ds, err := s.Coordinator.Log.Decisions(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, Status{Decisions: len(ds)})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// serve hands req to its transaction's session (a new one for Begin) and
// waits for the answer; false when the client went away first.
func (s *Server) serve(ctx, reqCtx context.Context, req Request) (Reply, bool) {
	s.mu.Lock()
	if s.txns == nil {
		s.txns = map[string]*session{}
	}
	sess := s.txns[req.ID]
	switch {
	case sess == nil && req.Begin:
		sess = &session{calls: make(chan call), done: make(chan struct{})}
		s.txns[req.ID] = sess
		go s.run(ctx, req.ID, sess)
	case sess == nil:
		s.mu.Unlock()
		// Never start a transaction half-way: what the client sent
		// before is gone with the session that held it.
		return Reply{Error: "no such transaction", Code: CodeGone}, true
	}
	s.mu.Unlock()
	c := call{req: req, reply: make(chan Reply, 1)}
	select {
	case sess.calls <- c:
	case <-sess.done:
		return ended(sess), true
	case <-reqCtx.Done():
		return Reply{}, false
	}
	select {
	case rep := <-c.reply:
		return rep, true
	case <-sess.done:
		select {
		case rep := <-c.reply: // the transaction's last request
			return rep, true
		default:
			return ended(sess), true
		}
	case <-reqCtx.Done():
		return Reply{}, false
	}
}

// ended answers a request to a session that ended without taking it.
func ended(sess *session) Reply {
	if sess.err == nil {
		return Reply{Error: "the transaction ended", Code: CodeGone}
	}
	return Reply{Error: sess.err.Error(), Code: codeOf(sess.err)}
}

// run is one transaction: Coordinator.Do, with the client's statements as
// the transaction's body.
func (s *Server) run(ctx context.Context, id string, sess *session) {
	var last *call
	err := s.Coordinator.Do(ctx, func(tx pipeline.Tx) error {
		for {
			var c call
			timer := time.NewTimer(s.idle())
			select {
			case c = <-sess.calls:
				timer.Stop()
			case <-timer.C:
				return fmt.Errorf("%w: no request from the client for %v", ErrGone, s.idle())
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			}
			rep := apply(tx, c.req.Ops)
			switch c.req.End {
			case EndCommit:
				last = &c
				return nil
			case EndAbort:
				last = &c
				return errAborted
			}
			c.reply <- rep
		}
	})
	if err != nil {
		s.logger().Debug("2pc: transaction failed", "id", id, "err", err)
	}
	s.mu.Lock()
	delete(s.txns, id)
	s.mu.Unlock()
	sess.err = err
	if last != nil {
		rep := Reply{Code: codeOf(err)}
		if err != nil {
			rep.Error = err.Error()
		}
		last.reply <- rep
	}
	close(sess.done)
}

// apply runs ops on tx; the reply holds the last Get's answer.
func apply(tx pipeline.Tx, ops []Op) Reply {
	var rep Reply
	for _, op := range ops {
		switch op.Kind {
		case "get":
			rep.Row, rep.Found = tx.Get(op.Table, op.PK)
		case "put":
			tx.Put(op.Table, op.PK, op.Row)
		case "delete":
			tx.Delete(op.Table, op.PK)
		case "rekey":
			tx.Rekey(op.Table, op.PK, op.NewPK)
		case "insert-row":
			tx.InsertRow(op.Table, op.Row)
		case "delete-row":
			tx.DeleteRow(op.Table, op.Row)
		}
	}
	return rep
}
