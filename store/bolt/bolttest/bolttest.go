// Package bolttest opens bbolt stores for tests: a real file in the
// test's temporary directory, closed (and the close checked) when the
// test ends.
package bolttest

import (
	"path/filepath"
	"testing"

	"mandate.dev/mandate/store/bolt"
)

// Open opens a new store in t's temporary directory.
func Open(t testing.TB) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "mandate.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}
