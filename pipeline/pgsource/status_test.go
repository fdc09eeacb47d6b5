package pgsource

import (
	"context"
	"encoding/binary"
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
	if err := s.sendStatus(time.Now()); err != nil {
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
