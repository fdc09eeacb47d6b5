// Package redisstore keeps lockstep's cache (model.Cache) in Redis, with
// the semantics of the simulated cache in sim/services.
//
// Each document is a hash at "doc:<table>/<pk>" with the fields value (the
// row's canonical encoding, model.ProjectChange's value) and lsn (its
// version, in decimal); the applied position is the hash "lockstep:position"
// with the fields offset and lsn. The cache keeps no revision counts and no
// tombstones.
//
// Apply is atomic: it WATCHes the position key, checks the batch's base,
// reads the touched documents' versions, and writes documents and position
// in one MULTI/EXEC, starting over when another applier moved the position
// meanwhile (redis.TxFailedErr).
//
// A cache is volatile: a Redis that restarted empty (or was flushed) has no
// position key, so Position reports ok=false and the sink applier rebuilds
// the cache from a fold of the log instead of applying on top of nothing;
// any batch with a base is refused with pipeline.ErrPositionMismatch.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/store"
)

const (
	// PositionKey is the hash holding the applied position.
	PositionKey = "lockstep:position"
	// DocPrefix starts every document's key: DocPrefix + table + "/" + pk.
	DocPrefix = "doc:"
)

// Options configure a Cache.
type Options struct {
	// Name is the store's name in snapshots (default "cache").
	Name string
	// Blind turns off the per-document version guard in Apply, so changes
	// the cache already holds are applied again (a bug variant).
	Blind bool
	// Retries is how many times Apply starts over after a watched key
	// changed under it (default 50).
	Retries int
	_       struct{}
}

// Cache is the cache store. Safe for concurrent use.
type Cache struct {
	rdb  *redis.Client
	opts Options
}

var (
	_ pipeline.Store       = (*Cache)(nil)
	_ pipeline.DirectStore = (*Cache)(nil)
)

// New returns the cache over rdb, after checking that Redis answers.
func New(ctx context.Context, rdb *redis.Client, opts Options) (*Cache, error) {
	if opts.Name == "" {
		opts.Name = model.Cache.String()
	}
	if opts.Retries == 0 {
		opts.Retries = 50
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redisstore: ping: %w", err)
	}
	return &Cache{rdb: rdb, opts: opts}, nil
}

// Kind implements pipeline.Store.
func (c *Cache) Kind() model.StoreKind { return model.Cache }

// DocKey is the Redis key of a document. Table names must not contain '/'.
func DocKey(k model.Key) string { return DocPrefix + k.Table + "/" + k.PK }

// parseDocKey is the inverse of DocKey.
func parseDocKey(s string) (model.Key, bool) {
	rest, ok := strings.CutPrefix(s, DocPrefix)
	if !ok {
		return model.Key{}, false
	}
	table, pk, ok := strings.Cut(rest, "/")
	return model.Key{Table: table, PK: pk}, ok
}

func checkTables(txns []model.Txn) error {
	for _, t := range txns {
		for _, c := range t.Changes {
			if strings.Contains(c.Table, "/") {
				return fmt.Errorf("table name %q contains '/'", c.Table)
			}
		}
	}
	return nil
}

// parsePos reads HMGET offset lsn of the position key.
func parsePos(vals []any) (model.Position, bool, error) {
	if len(vals) != 2 || vals[0] == nil || vals[1] == nil {
		return model.Position{}, false, nil
	}
	off, err1 := strconv.ParseInt(fmt.Sprint(vals[0]), 10, 64)
	lsn, err2 := strconv.ParseUint(fmt.Sprint(vals[1]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return model.Position{}, false, fmt.Errorf("malformed position %v: %w", vals, err)
	}
	return model.Position{Offset: off, LSN: model.LSN(lsn)}, true, nil
}

// parseDoc reads HMGET value lsn of a document key.
func parseDoc(vals []any) (model.Doc, bool, error) {
	if len(vals) != 2 || vals[0] == nil || vals[1] == nil {
		return model.Doc{}, false, nil
	}
	lsn, err := strconv.ParseUint(fmt.Sprint(vals[1]), 10, 64)
	if err != nil {
		return model.Doc{}, false, fmt.Errorf("malformed document version %v: %w", vals[1], err)
	}
	return model.Doc{Value: fmt.Sprint(vals[0]), LSN: model.LSN(lsn)}, true, nil
}

func posArgs(p model.Position) []any {
	return []any{"offset", strconv.FormatInt(p.Offset, 10), "lsn", strconv.FormatUint(uint64(p.LSN), 10)}
}

func docArgs(d model.Doc) []any {
	return []any{"value", d.Value, "lsn", strconv.FormatUint(uint64(d.LSN), 10)}
}

// Position implements pipeline.Store. ok is false when Redis holds no
// position: the cache is new, was cleared, or Redis restarted empty.
func (c *Cache) Position(ctx context.Context) (model.Position, bool, error) {
	vals, err := c.rdb.HMGet(ctx, PositionKey, "offset", "lsn").Result()
	if err != nil {
		return model.Position{}, false, fmt.Errorf("redisstore: read position: %w", err)
	}
	pos, ok, err := parsePos(vals)
	if err != nil {
		return model.Position{}, false, fmt.Errorf("redisstore: read position: %w", err)
	}
	return pos, ok, nil
}

// scanDocs lists every document key.
func scanDocs(ctx context.Context, r redis.Cmdable) ([]string, error) {
	var keys []string
	var cursor uint64
	for {
		batch, next, err := r.Scan(ctx, cursor, DocPrefix+"*", 1000).Result()
		if err != nil {
			return nil, err
		}
		keys = append(keys, batch...)
		if next == 0 {
			return keys, nil
		}
		cursor = next
	}
}

// load reads the slots of keys.
func load(ctx context.Context, r redis.Cmdable, keys []model.Key) (map[model.Key]store.Slot, error) {
	slots := make(map[model.Key]store.Slot, len(keys))
	if len(keys) == 0 {
		return slots, nil
	}
	cmds := make([]*redis.SliceCmd, len(keys))
	_, err := r.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.HMGet(ctx, DocKey(k), "value", "lsn")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		d, ok, err := parseDoc(cmds[i].Val())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if ok {
			slots[k] = store.Slot{Doc: d, Live: true}
		}
	}
	return slots, nil
}

// Apply implements pipeline.Store: documents and position change in one
// MULTI/EXEC, under WATCH of the position, after checking the batch's base.
// Reset deletes every document key (found with SCAN) in the same
// transaction.
func (c *Cache) Apply(ctx context.Context, b pipeline.Batch) error {
	wrap := func(err error) error { return fmt.Errorf("redisstore: apply up to %s: %w", b.Position, err) }
	if err := checkTables(b.Txns); err != nil {
		return wrap(err)
	}
	keys := store.Keys(b.Txns)
	// Only the position is watched, not the documents: every writer of a
	// cache's documents is an applier, and every applier's MULTI moves the
	// position, so a document read here cannot change before the EXEC
	// without the position changing too. Watching the documents as well
	// cost Redis time quadratic in their number (WATCH scans the client's
	// watched keys for each new one): a 100,000-row transaction's WATCH
	// took 59 s, past the client's read timeout, and the applier retried
	// forever.
	watch := []string{PositionKey}
	for attempt := 0; ; attempt++ {
		err := c.rdb.Watch(ctx, func(tx *redis.Tx) error { return c.apply(ctx, tx, b, keys) }, watch...)
		if !errors.Is(err, redis.TxFailedErr) {
			if err != nil {
				return wrap(err)
			}
			return nil
		}
		if attempt >= c.opts.Retries {
			return wrap(fmt.Errorf("gave up after %d attempts: %w", attempt+1, err))
		}
		select { // another writer moved a watched key: start over
		case <-ctx.Done():
			return wrap(ctx.Err())
		case <-time.After(time.Duration(attempt+1) * time.Millisecond):
		}
	}
}

func (c *Cache) apply(ctx context.Context, tx *redis.Tx, b pipeline.Batch, keys []model.Key) error {
	vals, err := tx.HMGet(ctx, PositionKey, "offset", "lsn").Result()
	if err != nil {
		return fmt.Errorf("read position: %w", err)
	}
	at, has, err := parsePos(vals)
	if err != nil {
		return err
	}
	if b.Base == nil && b.Refuses(at, has) {
		return fmt.Errorf("cache at %s, the batch wants a cache without position: %w", at, pipeline.ErrPositionMismatch)
	}
	if b.Base != nil && (!has || at != *b.Base) {
		if !has {
			return fmt.Errorf("cache has no position, batch base %s: %w", *b.Base, pipeline.ErrPositionMismatch)
		}
		return fmt.Errorf("cache at %s, batch base %s: %w", at, *b.Base, pipeline.ErrPositionMismatch)
	}
	var stale []string
	loaded := map[model.Key]store.Slot{}
	if b.Reset {
		if stale, err = scanDocs(ctx, tx); err != nil {
			return fmt.Errorf("list documents: %w", err)
		}
	} else if loaded, err = load(ctx, tx, keys); err != nil {
		return fmt.Errorf("read documents: %w", err)
	}
	o := store.NewOverlay(model.Cache, !c.opts.Blind, loaded)
	for _, t := range b.Txns {
		o.ApplyTxn(t)
	}
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for len(stale) > 0 {
			n := min(len(stale), 1000)
			p.Del(ctx, stale[:n]...)
			stale = stale[n:]
		}
		for _, w := range o.Changed() {
			if w.Slot.Live {
				p.HSet(ctx, DocKey(w.Key), docArgs(w.Slot.Doc)...)
			} else {
				p.Del(ctx, DocKey(w.Key))
			}
		}
		p.HSet(ctx, PositionKey, posArgs(b.Position)...)
		return nil
	})
	return err
}

// Write implements pipeline.DirectStore: the transaction's changes as one
// blind MULTI/EXEC, no version check, no position.
func (c *Cache) Write(ctx context.Context, t model.Txn) error {
	if err := checkTables([]model.Txn{t}); err != nil {
		return fmt.Errorf("redisstore: write txn %d: %w", t.XID, err)
	}
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, ch := range t.Changes {
			if ch.OldPK != "" && ch.OldPK != ch.PK {
				p.Del(ctx, DocKey(model.Key{Table: ch.Table, PK: ch.OldPK}))
			}
			if ch.Op == model.OpDelete {
				p.Del(ctx, DocKey(ch.Key()))
				continue
			}
			// The cache keeps no revisions: the document needs no
			// previous one.
			p.HSet(ctx, DocKey(ch.Key()), docArgs(model.ProjectChange(model.Cache, ch, t.CommitLSN, model.Doc{}, false))...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisstore: write txn %d: %w", t.XID, err)
	}
	return nil
}

// Read returns one document.
func (c *Cache) Read(ctx context.Context, k model.Key) (model.Doc, bool, error) {
	vals, err := c.rdb.HMGet(ctx, DocKey(k), "value", "lsn").Result()
	if err != nil {
		return model.Doc{}, false, fmt.Errorf("redisstore: read %s: %w", k, err)
	}
	d, ok, err := parseDoc(vals)
	if err != nil {
		return model.Doc{}, false, fmt.Errorf("redisstore: read %s: %w", k, err)
	}
	return d, ok, nil
}

// readAll is one script, so Redis runs it without interleaving any other
// command: the documents and the position of one instant.
var readAll = redis.NewScript(`
local pos = redis.call('HMGET', KEYS[1], 'offset', 'lsn')
local out = {pos[1], pos[2]}
local cursor = '0'
repeat
	local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
	cursor = r[1]
	for _, k in ipairs(r[2]) do
		local v = redis.call('HMGET', k, 'value', 'lsn')
		out[#out + 1] = k
		out[#out + 1] = v[1]
		out[#out + 1] = v[2]
	end
until cursor == '0'
return out
`)

// ReadAll returns every document and the position, read at one instant (a
// Lua script).
func (c *Cache) ReadAll(ctx context.Context) (model.Snapshot, error) {
	wrap := func(err error) error { return fmt.Errorf("redisstore: read all: %w", err) }
	res, err := readAll.Run(ctx, c.rdb, []string{PositionKey}, DocPrefix+"*").Slice()
	if err != nil {
		return model.Snapshot{}, wrap(err)
	}
	if len(res) < 2 || (len(res)-2)%3 != 0 {
		return model.Snapshot{}, wrap(fmt.Errorf("malformed script reply of %d values", len(res)))
	}
	snap := model.Snapshot{Store: c.opts.Name, Docs: model.Docs{}}
	if snap.Position, snap.HasPosition, err = parsePos(res[:2]); err != nil {
		return model.Snapshot{}, wrap(err)
	}
	for i := 2; i < len(res); i += 3 {
		k, ok := parseDocKey(fmt.Sprint(res[i]))
		if !ok {
			return model.Snapshot{}, wrap(fmt.Errorf("malformed document key %q", res[i]))
		}
		d, ok, err := parseDoc(res[i+1 : i+3])
		if err != nil {
			return model.Snapshot{}, wrap(fmt.Errorf("%s: %w", k, err))
		}
		if ok {
			snap.Docs[k] = d
		}
	}
	return snap, nil
}

// Clear deletes every document and the position.
func (c *Cache) Clear(ctx context.Context) error {
	keys, err := scanDocs(ctx, c.rdb)
	if err != nil {
		return fmt.Errorf("redisstore: clear: %w", err)
	}
	keys = append(keys, PositionKey)
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		if err := c.rdb.Del(ctx, keys[:n]...).Err(); err != nil {
			return fmt.Errorf("redisstore: clear: %w", err)
		}
		keys = keys[n:]
	}
	return nil
}
