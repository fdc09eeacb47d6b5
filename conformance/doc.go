// Package conformance holds the differential tests between the simulated
// services and the real ones: the simulator is only worth its speed if what
// it does is what PostgreSQL does.
//
//   - Source: the same random transaction programs (puts of some or all
//     columns, deletes, primary-key changes, reads, roll-backs; small values
//     and values stored out of line) run on the simulated source database
//     (sim/services) and on a throwaway PostgreSQL 15 (pipeline/pgsource)
//     must give the same decoded change stream: per committed transaction,
//     its changes in order with op, table, key, row image, old key and
//     unchanged TOAST columns; the same transactions committed and rolled
//     back; the same reads and the same final tables. Only LSNs and XIDs,
//     which differ between worlds, are left out. Replaying each world's
//     stream (model.State) must also give that world's tables.
//   - Stores: the same net transactions (model.Net) applied by the
//     simulated store rules (pipeline/store's Overlay, through
//     storetest.Ref) and by the PostgreSQL store adapters
//     (pipeline/store/pgstore) must leave the same documents, and both the
//     documents the checker's ground truth projects.
//
// Beside them, field_test.go replays the transactions reported from the
// field on PostgreSQL and the real store adapters. The package has no code
// outside its tests. They need PostgreSQL 15's programs (pgtest) and skip
// with a one-line reason without them.
package conformance
