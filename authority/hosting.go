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
// every request. Only successes are cached: a refusal is always re-read.
// mu guards every field.
type hostingCache struct {
	mu      sync.Mutex
	gen     uint64
	entries map[hostingKey]hostingEntry
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

// invalidate forgets every decision. Call it after a registry write has
// committed.
func (c *hostingCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.entries = nil
}
