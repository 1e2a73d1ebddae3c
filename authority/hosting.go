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

// agent and node return a record cached under its SPIFFE ID, and the
// generation to pass to putAgent or putNode.
func (c *hostingCache) agent(id string, now time.Time) (*registry.Agent, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return getRecord(c.agents, id, now, c.gen)
}

func (c *hostingCache) node(id string, now time.Time) (*registry.Node, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return getRecord(c.nodes, id, now, c.gen)
}

// putAgent and putNode cache a record read at generation gen, unless the
// registry has changed since.
func (c *hostingCache) putAgent(id string, gen uint64, v *registry.Agent, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == c.gen {
		c.agents = keepRecord(c.agents, id, cachedRecord[registry.Agent]{v, expires})
	}
}

func (c *hostingCache) putNode(id string, gen uint64, v *registry.Node, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == c.gen {
		c.nodes = keepRecord(c.nodes, id, cachedRecord[registry.Node]{v, expires})
	}
}

func getRecord[T any](m map[string]cachedRecord[T], id string, now time.Time, gen uint64) (*T, uint64, bool) {
	if e, ok := m[id]; ok && now.Before(e.expires) {
		return e.v, gen, true
	}
	return nil, gen, false
}

// keepRecord adds e to m (made, or emptied when full, first) and returns m.
func keepRecord[T any](m map[string]cachedRecord[T], id string, e cachedRecord[T]) map[string]cachedRecord[T] {
	if m == nil || len(m) >= hostingCacheMax {
		m = make(map[string]cachedRecord[T])
	}
	m[id] = e
	return m
}
