// Package pgsource is PostgreSQL logical decoding (pgoutput) as a
// pipeline.ChangeStream, and PostgreSQL as a pipeline.Source.
//
// It has three layers:
//
//   - a pure decoder (Decode) of pgoutput protocol version 1, written from
//     PostgreSQL's "Logical Replication Message Formats" chapter; the
//     streaming replication protocol's CopyData messages around it
//     (XLogData, keepalives, standby status updates) are pglogrepl's;
//   - the Assembler, also pure, which turns a session's messages into whole
//     committed model.Txns (XID from Begin, CommitLSN the commit's end LSN,
//     changes in WAL order);
//   - the adapters: Stream (a replication connection, replication=database)
//     and Source (a pgxpool), plus CreateTables.
//
// The capture loop drives a Stream like this:
//
//	s, _ := pgsource.NewStream(pgsource.Config{DSN: dsn})
//	snap, _ := s.Snapshot(ctx) // drops and recreates the slot, opens a consistent read
//	_ = snap.Scan(ctx, func(rows []model.Change) error {
//		// ... store a page of rows downstream (the capture scans twice:
//		// it counts the chunks first) ...
//		return nil
//	})
//	snap.Close(ctx)
//	from, _ := s.Start(ctx) // == snap.Head().CommitLSN right after a snapshot
//	var stored model.LSN
//	for {
//		txns, err := s.Next(ctx) // whole transactions after from, in commit order; none when quiet
//		if len(txns) > 0 {
//			// ... store txns durably downstream ...
//			stored = txns[len(txns)-1].CommitLSN
//		}
//		s.Confirm(ctx, stored) // also while quiet, so the slot does not stay behind
//	}
//
// Rows map to lockstep's model the same way in the snapshot and in the
// stream: Table is the table's name ("schema.table" outside public), PK the
// primary-key columns' text values joined with ",", Row every other
// non-NULL column's text value. An update that leaves a TOASTed (out of
// line) value unchanged does not carry it: under REPLICA IDENTITY FULL
// (CreateTables sets it) the old row fills it in, otherwise the column is
// named in Change.Unchanged and left out of Row, and the stores keep the
// value they hold. TRUNCATE is reported as an error. The first transaction
// that changes a table after each Relation message about it carries the
// table's definition (Txn.Schema: columns with their types, its key), so a
// replica can create a table the snapshot did not have.
//
// A table without a primary key is captured only under REPLICA IDENTITY
// FULL, and then all its columns form the key: PK is the whole row as
// PostgreSQL writes a row value, e.g. (1,"a b",), Row every non-NULL
// column, and identical rows are one row to lockstep. Any other keyless
// table must be left out (Config.ExcludeTables or Config.Tables):
// CheckTables names them before anything is created, a snapshot refuses
// them, and a change to one while streaming is a *NoKeyError. Errors that
// wrap ErrUnsupported (which is pipeline.ErrUnsupported) come back every
// time the same WAL is decoded: pipeline.Capture stops on them rather than
// retry.
//
// It needs PostgreSQL 15 or later (CREATE_REPLICATION_SLOT's option list,
// pg_publication_tables.attnames). Package pgtest starts throwaway
// PostgreSQL 15 clusters for tests.
package pgsource
