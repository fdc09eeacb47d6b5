package pgsource

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"lockstep/model"
)

// pipeConn is a PgConn on one end of an in-memory connection; the server
// end is returned for the test to read what it is sent.
func pipeConn(tb testing.TB) (*pgconn.PgConn, net.Conn) {
	tb.Helper()
	client, server := net.Pipe()
	tb.Cleanup(func() { client.Close(); server.Close() })
	cfg, err := pgconn.ParseConfig("postgres://test@127.0.0.1/test")
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := pgconn.Construct(&pgconn.HijackedConn{Conn: client, Config: cfg, TxStatus: 'I',
		Frontend: pgproto3.NewFrontend(client, client), ParameterStatuses: map[string]string{}})
	if err != nil {
		tb.Fatal(err)
	}
	return conn, server
}

// TestStatusUpdatesCarryTheConfirmedPosition: every standby status update
// reports the confirmed position as written, flushed and applied, never
// more (the server releases WAL up to the flush position), and Confirm never
// moves it back. pglogrepl encodes the update; this pins what it sends.
func TestStatusUpdatesCarryTheConfirmedPosition(t *testing.T) {
	conn, server := pipeConn(t)
	updates := make(chan []byte, 10)
	go func() {
		be := pgproto3.NewBackend(server, server)
		for {
			msg, err := be.Receive()
			if err != nil {
				close(updates)
				return
			}
			if cd, ok := msg.(*pgproto3.CopyData); ok {
				updates <- append([]byte(nil), cd.Data...)
			}
		}
	}()
	s, err := NewStream(Config{DSN: "postgres://test@127.0.0.1/test"})
	if err != nil {
		t.Fatal(err)
	}
	s.repl, s.confirmed = conn, 0x16B3700

	check := func(what string, want model.LSN) {
		t.Helper()
		b := <-updates
		if len(b) != 34 || b[0] != 'r' {
			t.Fatalf("%s: not a standby status update: %x", what, b)
		}
		w, f, a := binary.BigEndian.Uint64(b[1:]), binary.BigEndian.Uint64(b[9:]), binary.BigEndian.Uint64(b[17:])
		if model.LSN(w) != want || model.LSN(f) != want || model.LSN(a) != want {
			t.Errorf("%s: write %s flush %s apply %s, want %s for all three", what, model.LSN(w), model.LSN(f), model.LSN(a), want)
		}
		if b[33] != 0 {
			t.Errorf("%s: asks the server for a reply", what)
		}
	}
	if err := s.sendStatus(context.Background(), time.Now()); err != nil {
		t.Fatal(err)
	}
	check("due update", 0x16B3700)
	if err := s.Confirm(context.Background(), 0x16B3770); err != nil {
		t.Fatal(err)
	}
	check("confirm", 0x16B3770)
	if err := s.Confirm(context.Background(), 0x16B3000); err != nil {
		t.Fatal(err)
	}
	check("confirm of an older position", 0x16B3770)
}

// TestNextReturnsNoneWhenIdle: on a quiet stream Next returns no
// transactions, and no error, once IdleInterval has passed (it used to wait
// for a transaction or the end of ctx), and the stream goes on.
func TestNextReturnsNoneWhenIdle(t *testing.T) {
	conn, server := pipeConn(t)
	go io.Copy(io.Discard, server)
	s, err := NewStream(Config{DSN: "postgres://test@127.0.0.1/test", IdleInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.repl, s.lastStatus = conn, time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 2 {
		start := time.Now()
		txns, err := s.Next(ctx)
		if took := time.Since(start); err != nil || len(txns) > 0 || took < 50*time.Millisecond {
			t.Fatalf("idle Next %d = %v, %v after %s; want none, no error, after IdleInterval (50ms)", i, txns, err, took)
		}
	}
}

// TestConfirmGivesUpWhenCtxEnds: a status update the server does not read
// (a dead network) holds Confirm only until ctx ends, not for writeTimeout,
// so a capture's stop is bounded.
func TestConfirmGivesUpWhenCtxEnds(t *testing.T) {
	conn, _ := pipeConn(t) // nobody reads the server end
	s, err := NewStream(Config{DSN: "postgres://test@127.0.0.1/test"})
	if err != nil {
		t.Fatal(err)
	}
	s.repl = conn
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.Confirm(ctx, 0x16B3770)
	if took := time.Since(start); err == nil || took > writeTimeout/2 {
		t.Fatalf("Confirm with nobody reading = %v after %s; want an error once ctx ends (50ms)", err, took)
	}
}
