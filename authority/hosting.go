package authority

import (
	"sync"
	"time"

	"mandate.dev/mandate/registry"
)

// hostingCacheTTL bounds how long a hosting decision is reused. Writes made
// through this authority invalidate the cache at once; the TTL bounds what
// another writer of the same store could leave stale.
const hostingCacheTTL = time.Second

// hostingCacheMax bounds the cache; when full it is emptied.
const hostingCacheMax = 16384

// hostingCache remembers recent successful hosting checks (agent, node) so
// the issuance hot path does not read and decode the same two records for
// every request, and, for the delegation flow, recent reads of single
// registrations and node records. Only successes are cached: a refusal,
// or a record not found, is always re-read. mu guards every field.
type hostingCache struct {
	mu      sync.Mutex
	gen     uint64
	entries map[hostingKey]hostingEntry
	agents  map[string]cachedRecord[registry.Agent]
	nodes   map[string]cachedRecord[registry.Node]
}

// cachedRecord is a record as read, reused until expires. Its holders
// only read it.
type cachedRecord[T any] struct {
	v       *T
	expires time.Time
}

type hostingKey struct{ agent, node string }

type hostingEntry struct {
	agent   *registry.Agent
	node    *registry.Node
	expires time.Time
}

// get returns a cached decision and the generation to pass to put.
func (c *hostingCache) get(k hostingKey, now time.Time) (hostingEntry, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if ok && now.Before(e.expires) {
		return e, c.gen, true
	}
	return hostingEntry{}, c.gen, false
}

// put stores a decision read at generation gen, unless the registry has
// changed since.
func (c *hostingCache) put(k hostingKey, gen uint64, e hostingEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.entries == nil || len(c.entries) >= hostingCacheMax {
		c.entries = make(map[hostingKey]hostingEntry)
	}
	c.entries[k] = e
}

// invalidate forgets every decision and record. Call it after a registry
// write has committed.
func (c *hostingCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.entries, c.agents, c.nodes = nil, nil, nil
}

// cachedRead is the record id of m, one of c's record maps: as kept, if
// it was read within hostingCacheTTL of now and since the last change
// of the registry; else as read returns it, then kept (unless the
// registry changed while it was read). An error of read's is returned,
// and nothing kept.
func cachedRead[T any](c *hostingCache, m *map[string]cachedRecord[T], id string, now time.Time, read func() (*T, error)) (*T, error) {
	c.mu.Lock()
	e, ok := (*m)[id]
	gen := c.gen
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.v, nil
	}
	v, err := read()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == c.gen {
		if *m == nil || len(*m) >= hostingCacheMax {
			*m = make(map[string]cachedRecord[T])
		}
		(*m)[id] = cachedRecord[T]{v, now.Add(hostingCacheTTL)}
	}
	return v, nil
}
