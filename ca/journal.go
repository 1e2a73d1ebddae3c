package ca

import (
	"context"
	"sync"
)

// Journal persists the CA's state: which authorities exist, their
// certificates and public keys, key ids, states, and the bundle sequence
// number. The CA treats the state as an opaque, versioned JSON document;
// the caller decides where it lives (typically the server's store).
//
// The CA calls Save before a state change takes effect and never mutates
// the slice after passing it.
type Journal interface {
	// Load returns the last saved state, or (nil, nil) when nothing has
	// been saved yet.
	Load(ctx context.Context) ([]byte, error)
	// Save replaces the saved state. It must be durable before it returns.
	Save(ctx context.Context, state []byte) error
}

// MemoryJournal is an in-memory Journal for tests and tools. It is not
// durable: real persistence is the caller's, through its store.
type MemoryJournal struct {
	mu    sync.Mutex // guards data and saves
	data  []byte
	saves int
}

var _ Journal = (*MemoryJournal)(nil)

// NewMemoryJournal returns an empty in-memory journal.
func NewMemoryJournal() *MemoryJournal { return &MemoryJournal{} }

// Load implements Journal.
func (j *MemoryJournal) Load(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.data == nil {
		return nil, nil
	}
	return append([]byte(nil), j.data...), nil
}

// Save implements Journal.
func (j *MemoryJournal) Save(ctx context.Context, state []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.data = append([]byte{}, state...)
	j.saves++
	return nil
}

// Saves returns how many times Save succeeded.
func (j *MemoryJournal) Saves() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.saves
}
