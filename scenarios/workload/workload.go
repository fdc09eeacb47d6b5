// Package workload holds the application workloads lockstep drives the
// source database with: a bank (transfers keep the sum of balances fixed), a
// user-profile workload with inserts, updates, deletes and key skew, and one
// of large multi-row transactions. A workload draws each operation from the
// run's PRNG, so the same seed issues the same operations.
package workload

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"lockstep/model"
	"lockstep/pipeline"
)

// Workload generates application transactions.
type Workload interface {
	Name() string
	// Initial is the rows loaded before the run, as one transaction.
	Initial() []model.Change
	// Keyless is the tables without a primary key the workload writes
	// (with Tx.InsertRow and Tx.DeleteRow): a world creates them before
	// it loads Initial.
	Keyless() []pipeline.KeylessTable
	// Tables is the definitions of the keyed tables the workload writes:
	// a text key column pk, text columns, and unique constraints. A world
	// creates them before it loads Initial.
	Tables() []model.Table
	// Next draws the next operation.
	Next(r *rand.Rand) pipeline.TxnFunc
}

// New returns a fresh workload by name.
func New(name string) (Workload, error) {
	switch name {
	case "bank":
		return &Bank{Accounts: 10, Balance: 100}, nil
	case "profiles":
		return &Profiles{Users: 40}, nil
	case "bulk":
		return &Bulk{Items: 150, MinRows: 20, MaxRows: 60}, nil
	}
	return nil, fmt.Errorf("unknown workload %q (want one of: %s)", name, strings.Join(Names(), ", "))
}

// MinKeys is the fewest keys a sized workload takes: a transfer needs two
// accounts.
const MinKeys = 2

// NewSized is New with the key space set to keys rows (accounts, users or
// items; 0 keeps the workload's own size). A bulk transaction then writes at
// most keys rows. Shrinking uses it: fewer keys, fewer rows to read in a
// witness.
func NewSized(name string, keys int) (Workload, error) {
	w, err := New(name)
	if err != nil || keys == 0 {
		return w, err
	}
	if keys < MinKeys {
		return nil, fmt.Errorf("workload %s: %d keys: want at least %d", name, keys, MinKeys)
	}
	switch w := w.(type) {
	case *Bank:
		w.Accounts = keys
	case *Profiles:
		w.Users = keys
	case *Bulk:
		w.Items = keys
		w.MaxRows = min(w.MaxRows, keys)
		w.MinRows = min(w.MinRows, keys)
	}
	return w, nil
}

// Keys is the size of a workload's key space (accounts, users or items).
func Keys(w Workload) int {
	switch w := w.(type) {
	case *Bank:
		return w.Accounts
	case *Profiles:
		return w.Users
	case *Bulk:
		return w.Items
	}
	return 0
}

// Names lists the workloads.
func Names() []string { return []string{"bank", "bulk", "profiles"} }

// Events is the applications' event log: a table without a primary key,
// under REPLICA IDENTITY FULL, so every row is named by all its columns
// (in this order; a note is often NULL). The bank and profile workloads
// append to it inside their own transactions and now and then delete an
// old event, as a retention job does; nothing updates it.
var Events = pipeline.KeylessTable{Name: "events", Columns: []string{"seq", "actor", "action", "note"}, Full: true}

// eventLog draws the events a workload writes.
type eventLog struct {
	n    int
	live []model.Row // issued (committed or not), oldest first, not yet expired
}

// event is the next event's row. Its sequence number makes it distinct
// from every other event, as applications make them; its action and note
// hold spaces and punctuation, which a whole-row key must quote.
func (l *eventLog) event(r *rand.Rand, actor, action string) model.Row {
	l.n++
	row := model.R("seq", strconv.Itoa(l.n), "actor", actor, "action", action)
	if r.IntN(4) == 0 {
		row.Set("note", phrase(r, 2)+", (noted)")
	}
	l.live = append(l.live, row)
	return row
}

// expire is, pct times in a hundred, an old event to delete (never one of
// the last 20, which may still be in flight); nil otherwise.
func (l *eventLog) expire(r *rand.Rand, pct int) model.Row {
	const recent = 20
	if r.IntN(100) >= pct || len(l.live) <= recent {
		return nil
	}
	i := r.IntN(len(l.live) - recent)
	row := l.live[i]
	l.live = append(l.live[:i], l.live[i+1:]...)
	return row
}

// keyed is the definition of a table keyed by a text column pk, with
// text columns and the given unique constraints.
func keyed(name string, cols []string, unique ...[]string) model.Table {
	t := model.Table{Name: name, Columns: []model.Column{{Name: "pk", Type: "text"}}, Key: []string{"pk"}, Unique: unique}
	for _, c := range cols {
		t.Columns = append(t.Columns, model.Column{Name: c, Type: "text"})
	}
	return t
}

// ErrInsufficientFunds rolls a transfer back.
var ErrInsufficientFunds = errors.New("insufficient funds")

// Bank moves money between accounts; the sum of balances never changes, so a
// replica showing any other sum shows a torn transaction.
type Bank struct {
	Accounts  int
	Balance   int
	transfers int
	events    eventLog
}

func (b *Bank) Name() string { return "bank" }

// Keyless is the event log: every transfer appends to it.
func (b *Bank) Keyless() []pipeline.KeylessTable { return []pipeline.KeylessTable{Events} }

// Tables is the accounts and their ledger.
func (b *Bank) Tables() []model.Table {
	return []model.Table{keyed("accounts", []string{"balance", "owner"}), keyed("ledger", []string{"last"})}
}

func acct(i int) string { return fmt.Sprintf("a%02d", i) }

func (b *Bank) Initial() []model.Change {
	var cs []model.Change
	for i := 0; i < b.Accounts; i++ {
		cs = append(cs, model.Change{Table: "accounts", PK: acct(i), Op: model.OpInsert,
			Row: model.R("balance", strconv.Itoa(b.Balance), "owner", "owner "+acct(i))})
		cs = append(cs, model.Change{Table: "ledger", PK: acct(i), Op: model.OpInsert, Row: model.R("last", "opened")})
	}
	return cs
}

func (b *Bank) Next(r *rand.Rand) pipeline.TxnFunc {
	from := r.IntN(b.Accounts)
	to := (from + 1 + r.IntN(b.Accounts-1)) % b.Accounts
	if r.IntN(100) < 5 {
		// A transfer to the same account: two updates of one row in one
		// transaction, whose net effect is no change.
		to = from
	}
	amount := 1 + r.IntN(40)
	b.transfers++
	memo := fmt.Sprintf("t%d %s>%s %d", b.transfers, acct(from), acct(to), amount)
	event := b.events.event(r, acct(from), "transfer "+memo)
	expired := b.events.expire(r, 5)
	return func(tx pipeline.Tx) error {
		src, _ := tx.Get("accounts", acct(from))
		sb, _ := strconv.Atoi(src.Get("balance"))
		// Debit first, then check: a rolled-back transfer has written a
		// value that must never be seen downstream.
		tx.Put("accounts", acct(from), model.R("balance", strconv.Itoa(sb-amount)))
		if sb < amount {
			return ErrInsufficientFunds
		}
		// Read after the debit: for a self-transfer the credit lands on
		// the debited row.
		dst, _ := tx.Get("accounts", acct(to))
		db, _ := strconv.Atoi(dst.Get("balance"))
		tx.Put("accounts", acct(to), model.R("balance", strconv.Itoa(db+amount)))
		// A second table in the same transaction: the sender's last
		// transfer.
		tx.Put("ledger", acct(from), model.R("last", memo))
		// A third table, without a key: the event log.
		tx.InsertRow(Events.Name, event)
		if expired != nil {
			tx.DeleteRow(Events.Name, expired)
		}
		return nil
	}
}

// Total sums the balances of the accounts among a set of rows (for the
// bank invariant).
func Total(rows map[model.Key]model.Row) int {
	sum := 0
	for k, r := range rows {
		if k.Table == "accounts" {
			v, _ := strconv.Atoi(r.Get("balance"))
			sum += v
		}
	}
	return sum
}

var words = strings.Fields("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango")

func phrase(r *rand.Rand, n int) string {
	var buf [48]byte // a few words; longer phrases grow it
	b := buf[:0]
	for i := range n {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, words[r.IntN(len(words))]...)
	}
	return string(b)
}

// Profiles inserts, updates and deletes user profiles, with a Zipf skew so a
// few hot keys see most of the writes (and most of the races), in the
// shapes applications produce: a row changed twice in one transaction
// (update/update, insert/update, update/delete, delete/re-insert), a user
// renamed (a primary-key change), and avatars past the TOAST threshold that
// later updates leave alone (unchanged out-of-line values).
type Profiles struct {
	Users  int
	next   int
	rev    int
	events eventLog
	// zipf draws hot users from r over [0, zipfMax]; it is made again only
	// when either changes (setting one up costs more than a draw).
	zipf    *rand.Zipf
	zipfR   *rand.Rand
	zipfMax uint64
}

func (p *Profiles) Name() string { return "profiles" }

// Keyless is the event log: sign-ups, deletions and renames append to it.
func (p *Profiles) Keyless() []pipeline.KeylessTable { return []pipeline.KeylessTable{Events} }

// logged runs op, then appends event and deletes expired (when set) in the
// same transaction.
func logged(op pipeline.TxnFunc, event, expired model.Row) pipeline.TxnFunc {
	return func(tx pipeline.Tx) error {
		if err := op(tx); err != nil {
			return err
		}
		tx.InsertRow(Events.Name, event)
		if expired != nil {
			tx.DeleteRow(Events.Name, expired)
		}
		return nil
	}
}

func user(i int) string { return fmt.Sprintf("u%03d", i) }

// Users is the profiles' table: an email is unique among users (a NULL
// one is no one's).
var Users = keyed("users", []string{"name", "bio", "rev", "avatar", "email"}, []string{"email"})

// Tables is the users.
func (p *Profiles) Tables() []model.Table { return []model.Table{Users} }

// email is the address a user signs up with: new ids are never reused, so
// it is no one else's.
func email(id string) string { return id + "@example.com" }

func (p *Profiles) Initial() []model.Change {
	var cs []model.Change
	for i := 0; i < p.Users; i++ {
		cs = append(cs, model.Change{Table: "users", PK: user(i), Op: model.OpInsert,
			Row: model.R("name", "user "+user(i), "bio", "new", "rev", "0", "avatar", "none", "email", email(user(i)))})
	}
	p.next = p.Users
	return cs
}

// BigValue is a value well past the TOAST threshold, shaped like an
// encoded image: one long token (a search index holds it as one term).
// PostgreSQL stores it out of line (the container world's tables use
// STORAGE EXTERNAL, so it is never compressed back under the threshold).
func BigValue(r *rand.Rand, size int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789+/"
	var unit [61]byte
	for i := range unit {
		unit[i] = alphabet[r.IntN(len(alphabet))]
	}
	return strings.Repeat(string(unit[:]), size/len(unit)+1)[:size]
}

func (p *Profiles) Next(r *rand.Rand) pipeline.TxnFunc {
	if max := uint64(p.next - 1); p.zipf == nil || p.zipfR != r || p.zipfMax != max {
		p.zipf, p.zipfR, p.zipfMax = rand.NewZipf(r, 1.3, 1, max), r, max
	}
	hot := user(int(p.zipf.Uint64()))
	p.rev++
	rev := strconv.Itoa(p.rev)
	bio := phrase(r, 2+r.IntN(3))
	// update sets the profile's small columns; an avatar it does not name
	// keeps its value (and is sent as unchanged TOAST when it is big).
	update := func(tx pipeline.Tx, id, bio string) {
		name := "user " + id
		if row, ok := tx.Get("users", id); ok {
			name = row.Get("name")
		}
		tx.Put("users", id, model.R("name", name, "bio", bio, "rev", rev))
	}
	fresh := func() string { id := user(p.next); p.next++; return id }
	switch x := r.IntN(100); {
	case x < 8:
		id := fresh()
		row := model.R("name", "user "+id, "bio", phrase(r, 3), "rev", rev, "avatar", "none", "email", email(id))
		return logged(func(tx pipeline.Tx) error { tx.Put("users", id, row); return nil },
			p.events.event(r, id, "signed up"), p.events.expire(r, 20))
	case x < 16:
		return logged(func(tx pipeline.Tx) error { tx.Delete("users", hot); return nil },
			p.events.event(r, hot, "deleted (by request)"), p.events.expire(r, 20))
	case x < 20: // update, update
		bio2 := phrase(r, 2)
		return func(tx pipeline.Tx) error { update(tx, hot, bio); update(tx, hot, bio2); return nil }
	case x < 23: // insert, update
		id := fresh()
		row := model.R("name", "user "+id, "bio", phrase(r, 3), "rev", rev, "avatar", "none", "email", email(id))
		return func(tx pipeline.Tx) error { tx.Put("users", id, row); update(tx, id, bio); return nil }
	case x < 26: // update, delete
		return func(tx pipeline.Tx) error { update(tx, hot, bio); tx.Delete("users", hot); return nil }
	case x < 29: // delete, re-insert (with the email it had)
		row := model.R("name", "user "+hot, "bio", bio, "rev", rev, "avatar", "none")
		return func(tx pipeline.Tx) error {
			if old, ok := tx.Get("users", hot); ok && old.Get("email") != "" {
				row = row.Clone()
				row.Set("email", old.Get("email"))
			}
			tx.Delete("users", hot)
			tx.Put("users", hot, row)
			return nil
		}
	case x < 33: // rename: a primary-key change, sometimes after an update
		id, first := fresh(), r.IntN(2) == 0
		return logged(func(tx pipeline.Tx) error {
			if first {
				update(tx, hot, bio)
			}
			tx.Rekey("users", hot, id)
			return nil
		}, p.events.event(r, hot, `renamed "`+hot+`" to `+id), nil)
	case x < 36: // a new avatar, past the TOAST threshold, or none
		avatar := "none"
		if x < 35 {
			avatar = BigValue(r, 2500+r.IntN(1500))
		}
		return func(tx pipeline.Tx) error {
			if _, ok := tx.Get("users", hot); ok {
				tx.Put("users", hot, model.R("avatar", avatar, "rev", rev))
			}
			return nil
		}
	case x < 40: // two users swap their emails
		other := user(r.IntN(p.next))
		return swapEmails(hot, other, rev)
	case x < 42: // an account closed and its email signed up again under a new id
		id := fresh()
		return logged(func(tx pipeline.Tx) error {
			old, ok := tx.Get("users", hot)
			if !ok || old.Get("email") == "" {
				return nil
			}
			tx.Delete("users", hot)
			tx.Put("users", id, model.R("name", "user "+id, "bio", bio, "rev", rev, "avatar", "none", "email", old.Get("email")))
			return nil
		}, p.events.event(r, id, "signed up again as "+hot), nil)
	case x < 44: // a user takes over another's email, which is then closed
		other := user(r.IntN(p.next))
		return func(tx pipeline.Tx) error {
			if other == hot {
				return nil
			}
			gone, ok := tx.Get("users", other)
			if _, live := tx.Get("users", hot); !ok || !live || gone.Get("email") == "" {
				return nil
			}
			update(tx, hot, bio) // touched first: its net change comes before the delete
			tx.Delete("users", other)
			tx.Put("users", hot, model.R("email", gone.Get("email"), "rev", rev))
			return nil
		}
	default:
		return func(tx pipeline.Tx) error { update(tx, hot, bio); return nil }
	}
}

// swapEmails swaps two users' emails in one transaction, as an application
// must under a unique constraint checked at every statement: one email
// parked on a value no one else has, then the two set.
func swapEmails(a, b, rev string) pipeline.TxnFunc {
	return func(tx pipeline.Tx) error {
		if a == b {
			return nil
		}
		ra, okA := tx.Get("users", a)
		rb, okB := tx.Get("users", b)
		if !okA || !okB || ra.Get("email") == "" || rb.Get("email") == "" {
			return nil
		}
		tx.Put("users", a, model.R("email", "swap-"+rev+"@example.invalid", "rev", rev))
		tx.Put("users", b, model.R("email", ra.Get("email"), "rev", rev))
		tx.Put("users", a, model.R("email", rb.Get("email"), "rev", rev))
		return nil
	}
}

// Bulk runs large multi-row transactions over an inventory table: each
// touches tens of rows, and some delete and re-insert rows in one go or
// write them twice; one in a hundred replaces a catalog whose specs (big
// values, out of line) make the transaction larger than a log record may
// be.
type Bulk struct {
	Items            int
	MinRows, MaxRows int
	batch            int
}

func (b *Bulk) Name() string { return "bulk" }

// Tables is the inventory and the catalog.
func (b *Bulk) Tables() []model.Table {
	return []model.Table{keyed("items", []string{"qty", "tag"}), keyed("catalog", []string{"spec", "tag"})}
}

// Keyless is none: bulk writes keyed tables only.
func (b *Bulk) Keyless() []pipeline.KeylessTable { return nil }

func item(i int) string { return fmt.Sprintf("i%03d", i) }

func (b *Bulk) Initial() []model.Change {
	var cs []model.Change
	for i := 0; i < b.Items; i++ {
		cs = append(cs, model.Change{Table: "items", PK: item(i), Op: model.OpInsert,
			Row: model.R("qty", "10", "tag", "initial")})
	}
	for i := 0; i < ImportRows; i++ {
		cs = append(cs, model.Change{Table: "catalog", PK: catalogRow(i), Op: model.OpInsert,
			Row: model.R("spec", "none", "tag", "initial")})
	}
	return cs
}

// ImportRows and ImportSpecBytes size a catalog import: a transaction past
// the log's maximum record size (Kafka's default message.max.bytes is
// about 1 MB), which the capture must split and the stores take whole.
const (
	ImportRows      = 48
	ImportSpecBytes = 24_000
)

func (b *Bulk) Next(r *rand.Rand) pipeline.TxnFunc {
	b.batch++
	if r.IntN(100) == 0 {
		return b.catalogImport(r)
	}
	tag := fmt.Sprintf("batch%d %s", b.batch, words[r.IntN(len(words))])
	n := b.MinRows + r.IntN(b.MaxRows-b.MinRows+1)
	picked := map[int]bool{}
	for len(picked) < n {
		picked[r.IntN(b.Items)] = true
	}
	ids := make([]int, 0, n)
	for id := range picked {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	qty := make([]int, n)
	for i := range qty {
		qty[i] = r.IntN(100)
	}
	return func(tx pipeline.Tx) error {
		for i, id := range ids {
			switch {
			case qty[i] < 5:
				tx.Delete("items", item(id))
			case qty[i] < 8: // delete and re-insert in one go
				tx.Delete("items", item(id))
				tx.Put("items", item(id), model.R("qty", strconv.Itoa(qty[i]), "tag", tag))
			case qty[i] < 12: // written twice: a correction
				tx.Put("items", item(id), model.R("qty", strconv.Itoa(qty[i]), "tag", tag))
				tx.Put("items", item(id), model.R("qty", strconv.Itoa(qty[i]+1)))
			default:
				tx.Put("items", item(id), model.R("qty", strconv.Itoa(qty[i]), "tag", tag))
			}
		}
		return nil
	}
}

func catalogRow(i int) string { return fmt.Sprintf("c%02d", i) }

// catalogImport replaces the catalog: ImportRows rows of ImportSpecBytes
// each, about 1.15 MB in one transaction. The catalog is a table of its own
// so that the items' frequent updates stay small.
func (b *Bulk) catalogImport(r *rand.Rand) pipeline.TxnFunc {
	spec := BigValue(r, ImportSpecBytes)
	tag := fmt.Sprintf("import%d", b.batch)
	return func(tx pipeline.Tx) error {
		for i := 0; i < ImportRows; i++ {
			id := catalogRow(i)
			// Each row's spec differs in its first bytes, as real ones do.
			tx.Put("catalog", id, model.R("spec", id+spec[len(id):], "tag", tag))
		}
		return nil
	}
}
