package delegation

import "sync"

// memo is a bounded map safe for concurrent use: each entry counts the
// size put says, and when the next would pass max it is emptied first.
// The verifier's memories (tokens, signatures, SVID chains, headers) are
// memos: forgetting costs only time.
type memo[K comparable, V any] struct {
	mu   sync.Mutex
	m    map[K]V
	size int
	max  int
}

func newMemo[K comparable, V any](max int) *memo[K, V] {
	return &memo[K, V]{m: map[K]V{}, max: max}
}

func (m *memo[K, V]) get(k K) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[k]
	return v, ok
}

func (m *memo[K, V]) put(k K, v V, size int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.size+size > m.max {
		m.m, m.size = map[K]V{}, 0
	}
	m.m[k] = v
	m.size += size
}

// update changes k's value in place, if k is remembered.
func (m *memo[K, V]) update(k K, f func(*V)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.m[k]; ok {
		f(&v)
		m.m[k] = v
	}
}
