// Package storetest is the conformance suite every [store.Store]
// implementation must pass. An implementation's tests call [Run]:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
//			path := filepath.Join(t.TempDir(), "data")
//			return mustOpen(t, path), func() store.Store { return mustOpen(t, path) }
//		})
//	}
//
// The suite checks only behaviour promised by package store, so it holds
// for a single-process store as well as for one shared by several replicas.
package storetest

import (
	"errors"
	"slices"
	"testing"

	"mandate.dev/mandate/store"
)

// Opener opens a new, empty Store for one subtest, failing t if it cannot.
//
// reopen, if not nil, opens the data of s again, as a restart would; the
// suite calls it only after closing s, and it too fails t on error. An
// implementation that keeps nothing across Close (say, in memory) returns a
// nil reopen, and the persistence test then checks nothing.
//
// The suite closes every Store it is given, from open and from reopen.
// Anything else to clean up (files, schemas) is the Opener's, via t.TempDir
// or t.Cleanup.
type Opener func(t *testing.T) (s store.Store, reopen func() store.Store)

// Run runs the conformance suite against the stores open returns, each
// case in its own subtest with a fresh store.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		run  func(*testing.T, Opener)
	}{
		{"GetPutDelete", testGetPutDelete},
		{"EmptyKey", testEmptyKey},
		{"CopySemantics", testCopySemantics},
		{"ReadOnlyView", testReadOnlyView},
		{"Rollback", testRollback},
		{"Scan", testScan},
		{"ScanStop", testScanStop},
		{"ScanError", testScanError},
		{"ScanCopies", testScanCopies},
		{"ScanWhileWriting", testScanWhileWriting},
		{"NextSequence", testNextSequence},
		{"NextSequenceRollback", testNextSequenceRollback},
		{"BucketIsolation", testBucketIsolation},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"ContextDone", testContextDone},
		{"Closed", testClosed},
		{"Reopen", testReopen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open) })
	}
}

// bucket is the bucket most tests use.
const bucket = "test"

// errTest is what failing callbacks return.
var errTest = errors.New("storetest: callback failed")

// newStore opens a fresh store that is closed when t ends.
func newStore(t *testing.T, open Opener) store.Store {
	t.Helper()
	s, _ := open(t)
	closeAtEnd(t, s)
	return s
}

func closeAtEnd(t *testing.T, s store.Store) {
	t.Helper()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	})
}

func update(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update() = %v, want nil", err)
	}
}

func view(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.View(t.Context(), fn); err != nil {
		t.Fatalf("View() = %v, want nil", err)
	}
}

// put commits key=value in bucket.
func put(t *testing.T, s store.Store, bucket, key, value string) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		return tx.Put(bucket, []byte(key), []byte(value))
	})
}

// wantGet checks that Get in tx returns value, or ErrNotFound if !ok.
func wantGet(t *testing.T, tx store.Tx, bucket, key, value string, ok bool) {
	t.Helper()
	got, err := tx.Get(bucket, []byte(key))
	switch {
	case !ok && !errors.Is(err, store.ErrNotFound):
		t.Errorf("Get(%q, %q) = %q, %v, want error %v", bucket, key, got, err, store.ErrNotFound)
	case ok && (err != nil || string(got) != value):
		t.Errorf("Get(%q, %q) = %q, %v, want %q, nil", bucket, key, got, err, value)
	}
}

// wantStored checks wantGet in a new View.
func wantStored(t *testing.T, s store.Store, bucket, key, value string, ok bool) {
	t.Helper()
	view(t, s, func(tx store.Tx) error {
		wantGet(t, tx, bucket, key, value, ok)
		return nil
	})
}

// keys returns the keys Scan(bucket, prefix, start) visits.
func keys(tx store.Tx, bucket string, prefix, start []byte) ([]string, error) {
	var got []string
	err := tx.Scan(bucket, prefix, start, func(k, _ []byte) error {
		got = append(got, string(k))
		return nil
	})
	return got, err
}

// wantKeys checks that bucket holds exactly the keys want, in order.
func wantKeys(t *testing.T, s store.Store, bucket string, want ...string) {
	t.Helper()
	view(t, s, func(tx store.Tx) error {
		got, err := keys(tx, bucket, nil, nil)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Scan(%q) keys = %q, %v, want %q, nil", bucket, got, err, want)
		}
		return nil
	})
}
