// Package checker judges a recorded run. It turns a model.History into a
// Report and never talks to a service: the same history always gives the
// same report (apart from porcupine's wall-clock timeout, which can only
// turn a linearizability result into Unknown).
//
// Ground truth is History.Committed replayed once, in commit order, with a
// model.State: every committed version of every key (the key's entry right
// after the transaction that wrote it), and the hash of every prefix
// state. Every store is judged against the projection of that truth for
// its kind (model.ProjectEntry), and every anomaly found is mapped to the
// one property it violates:
//
//	class            property       what it means
//	lost             no-loss        final store misses a key, holds an older version, kept a deleted key's committed value, or (search) counts fewer revs: a change it passed (its position or the doc's version is at or after it) never applied
//	phantom          no-phantom     a store showed (key, LSN, value) that no committed version has (aborted values are named)
//	backwards        per-key-order  a read returned an older version than a read that returned before it was called
//	duplicate        exactly-once   a search doc's revs exceed the truth's for its version: a change applied twice
//	torn             atomicity      a replica snapshot equals no prefix state, or not the one at its own position
//	divergent        convergence    a final doc has the truth's LSN but another value
//	not-converged    convergence    a positioned store had not reached the final source position by the deadline; the changes after its position it does not show yet are late, counted here, not lost
//	nonlinearizable  per-key-order  porcupine found no legal order of a store's reads
//	log-data-loss    no-loss        the log lost acknowledged records (store "log")
//
// Classes are judged independently, so one bad document can violate two
// properties: a final doc with the truth's LSN and another value is both
// divergent (the store did not converge) and phantom (that version never
// had that value); a final doc older than the truth with a made-up value
// is lost (or late) and phantom; a backwards pair of reads is also
// nonlinearizable.
// Porcupine is the independent cross-check of the backwards scan: with
// reads only, a store's reads are illegal exactly when some pair goes
// backwards or some read is not a committed version (a property test holds
// the two to it). Phantoms and duplicates are reported once per distinct
// document, at its earliest observation, with Witness.Seen counting them.
//
// An anomaly is a Violation when its store claims the property
// (StoreSpec.Claims); unclaimed anomalies are counted and shown, never
// failed. The Report's Verdict is three-way, like porcupine's: Fail on any
// claimed violation; Inconclusive when a claimed linearizability check
// timed out or the history is defective (Report.Problems: a store without
// a final snapshot, a read of an undeclared store, ...); Pass otherwise.
//
// Typical use, after a scenario has recorded its history:
//
//	rep := checker.Check(h, checker.Options{})
//	rep.Render(os.Stdout)
//	if !rep.OK() {
//		os.Exit(1)
//	}
//
// The tests keep hand-written histories in testdata, their verdict in
// their name (lost-write-bad.txt, steady-ok.txt) and the expected report
// below a "----" line; the format is documented on TestFixtures.
package checker
