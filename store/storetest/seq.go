package storetest

import (
	"errors"
	"testing"

	"mandate.dev/mandate/store"
)

// wantSequence checks that NextSequence(bucket) in a new Update returns want.
func wantSequence(t *testing.T, s store.Store, bucket string, want uint64) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		got, err := tx.NextSequence(bucket)
		if err != nil || got != want {
			t.Errorf("NextSequence(%q) = %d, %v, want %d, nil", bucket, got, err, want)
		}
		return nil
	})
}

func testNextSequence(t *testing.T, open Opener) {
	s := newStore(t, open)
	update(t, s, func(tx store.Tx) error {
		for want := uint64(1); want <= 3; want++ {
			got, err := tx.NextSequence(bucket)
			if err != nil || got != want {
				t.Errorf("NextSequence(%q) = %d, %v, want %d, nil", bucket, got, err, want)
			}
		}
		return nil
	})
	for want := uint64(4); want <= 10; want++ {
		wantSequence(t, s, bucket, want)
	}
	wantSequence(t, s, "other", 1)
	wantKeys(t, s, bucket) // the counter is not a key
}

func testNextSequenceRollback(t *testing.T, open Opener) {
	s := newStore(t, open)
	wantSequence(t, s, bucket, 1)
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if _, err := tx.NextSequence(bucket); err != nil {
			return err
		}
		_, err := tx.NextSequence("fresh")
		if err != nil {
			return err
		}
		return errTest
	})
	if !errors.Is(err, errTest) {
		t.Fatalf("Update(NextSequence, then fail) = %v, want %v", err, errTest)
	}
	wantSequence(t, s, bucket, 2)
	wantSequence(t, s, "fresh", 1)
}

func testBucketIsolation(t *testing.T, open Opener) {
	s := newStore(t, open)
	buckets := []string{"b", "bb", "b/", "B"}
	for _, b := range buckets {
		put(t, s, b, "k", "in "+b)
		put(t, s, b, b, "own")
	}
	update(t, s, func(tx store.Tx) error { return tx.Delete("b", []byte("k")) })
	wantSequence(t, s, "bb", 1)
	wantSequence(t, s, "bb", 2)

	wantKeys(t, s, "b", "b")
	wantStored(t, s, "b", "k", "", false)
	for _, b := range buckets[1:] {
		wantKeys(t, s, b, min(b, "k"), max(b, "k"))
		wantStored(t, s, b, "k", "in "+b, true)
	}
	wantSequence(t, s, "b", 1)
	wantSequence(t, s, "bb", 3)
}
