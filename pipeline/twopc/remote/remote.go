// Package remote puts a two-phase-commit coordinator in a process of its
// own, as a transaction manager service (a sharding proxy running XA, a
// standalone TM): the application runs its transaction through the
// coordinator, statement by statement, and the coordinator runs it on the
// source, prepares it everywhere, decides and commits. Killing, pausing or
// cutting off that process is what leaves transactions in doubt.
//
// The wire protocol is JSON over HTTP. A transaction is a series of POST
// /txn requests under one id the client picks: the first has Begin set, a
// request carries the writes the client buffered since the last one and at
// most one read (a Get, whose answer it returns), and the last ends the
// transaction (commit or abort) and answers with its outcome. GET /status
// tells how many decisions the coordinator's log still holds.
package remote

import (
	"context"
	"errors"
	"fmt"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/twopc"
)

// Op is one statement of a transaction.
type Op struct {
	// Kind is get, put, delete, rekey, insert-row or delete-row
	// (pipeline.Tx's methods).
	Kind  string    `json:"kind"`
	Table string    `json:"table"`
	PK    string    `json:"pk,omitempty"`
	NewPK string    `json:"new_pk,omitempty"`
	Row   model.Row `json:"row,omitempty"`
}

// Request is one POST /txn.
type Request struct {
	ID    string `json:"id"`
	Begin bool   `json:"begin,omitempty"`
	Ops   []Op   `json:"ops,omitempty"`
	// End is "commit" or "abort" on a transaction's last request.
	End string `json:"end,omitempty"`
}

// Reply answers a Request: the trailing Get's row, or the ended
// transaction's outcome.
type Reply struct {
	Found bool      `json:"found,omitempty"`
	Row   model.Row `json:"row,omitempty"`
	// Error is the transaction's failure ("" when it committed); Code
	// classifies it for the client (the Code* constants).
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

// Status answers GET /status.
type Status struct {
	// Decisions is the commit decisions the log holds: decided
	// transactions whose commit phase has not finished.
	Decisions int `json:"decisions"`
}

// Ends and error codes.
const (
	EndCommit = "commit"
	EndAbort  = "abort"

	// CodeLockTimeout: a participant waited too long for rows another
	// transaction holds; nothing committed, it may be tried again.
	CodeLockTimeout = "lock-timeout"
	// CodeTimeout: a participant did not answer in time; the outcome is
	// unknown.
	CodeTimeout = "timeout"
	// CodeAborted: the application's own transaction rolled back.
	CodeAborted = "aborted"
	// CodeGone: the coordinator holds no such transaction (it gave up
	// waiting for the client, or restarted): it rolled back.
	CodeGone = "gone"
	// CodeFailed: any other failure; whether it committed depends on
	// where it failed, as for twopc.Coordinator.Do.
	CodeFailed = "failed"
)

// ErrGone: the coordinator no longer holds the transaction (it restarted,
// or waited for the client longer than its idle limit) and rolled it back.
var ErrGone = errors.New("2pc coordinator: no such transaction (rolled back)")

// codeOf classifies a transaction's error for the wire.
func codeOf(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, twopc.ErrLockTimeout):
		return CodeLockTimeout
	case errors.Is(err, pipeline.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	case errors.Is(err, errAborted):
		return CodeAborted
	case errors.Is(err, ErrGone):
		return CodeGone
	}
	return CodeFailed
}

// errorOf is the client's error for a reply's code.
func errorOf(r Reply) error {
	switch r.Code {
	case "":
		return nil
	case CodeLockTimeout:
		return fmt.Errorf("2pc coordinator: %w: %s", twopc.ErrLockTimeout, r.Error)
	case CodeTimeout:
		return fmt.Errorf("2pc coordinator: %w: %s", pipeline.ErrTimeout, r.Error)
	case CodeGone:
		return fmt.Errorf("%w: %s", ErrGone, r.Error)
	}
	return fmt.Errorf("2pc coordinator: %s", r.Error)
}

// errAborted ends a transaction the application rolled back.
var errAborted = errors.New("the application rolled the transaction back")
