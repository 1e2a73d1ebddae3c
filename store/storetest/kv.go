package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"mandate.dev/mandate/store"
)

// op is one write in the test bucket.
type op func(store.Tx) error

func opPut(key, value string) op {
	return func(tx store.Tx) error {
		if err := tx.Put(bucket, []byte(key), []byte(value)); err != nil {
			return fmt.Errorf("Put(%q, %q) = %w", bucket, key, err)
		}
		return nil
	}
}

func opDelete(key string) op {
	return func(tx store.Tx) error {
		if err := tx.Delete(bucket, []byte(key)); err != nil {
			return fmt.Errorf("Delete(%q, %q) = %w", bucket, key, err)
		}
		return nil
	}
}

func apply(tx store.Tx, ops ...op) error {
	for _, o := range ops {
		if err := o(tx); err != nil {
			return err
		}
	}
	return nil
}

func testGetPutDelete(t *testing.T, open Opener) {
	big := strings.Repeat("0123456789abcdef", 4096) // spans several pages
	tests := []struct {
		name  string
		ops   []op
		key   string
		want  string
		found bool
	}{
		{"put", []op{opPut("k", "v")}, "k", "v", true},
		{"missing key", []op{opPut("other", "v")}, "k", "", false},
		{"missing bucket", nil, "k", "", false},
		{"overwrite", []op{opPut("k", "v1"), opPut("k", "v2")}, "k", "v2", true},
		{"delete", []op{opPut("k", "v"), opDelete("k")}, "k", "", false},
		{"delete absent key", []op{opPut("other", "v"), opDelete("k")}, "k", "", false},
		{"delete in absent bucket", []op{opDelete("k")}, "k", "", false},
		{"put after delete", []op{opPut("k", "v1"), opDelete("k"), opPut("k", "v2")}, "k", "v2", true},
		{"delete leaves others", []op{opPut("k", "v"), opPut("k2", "v2"), opDelete("k2")}, "k", "v", true},
		{"empty value", []op{opPut("k", "")}, "k", "", true},
		{"key prefix of another", []op{opPut("kk", "2"), opPut("k", "1")}, "k", "1", true},
		{"binary key", []op{opPut("\x00\xff\x00", "v")}, "\x00\xff\x00", "v", true},
		{"large value", []op{opPut("k", big)}, "k", big, true},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/one tx", func(t *testing.T) {
			s := newStore(t, open)
			update(t, s, func(tx store.Tx) error {
				if err := apply(tx, tc.ops...); err != nil {
					return err
				}
				wantGet(t, tx, bucket, tc.key, tc.want, tc.found) // own writes
				return nil
			})
			wantStored(t, s, bucket, tc.key, tc.want, tc.found)
		})
		t.Run(tc.name+"/tx per op", func(t *testing.T) {
			s := newStore(t, open)
			for _, o := range tc.ops {
				update(t, s, o)
			}
			wantStored(t, s, bucket, tc.key, tc.want, tc.found)
		})
	}
}

func testEmptyKey(t *testing.T, open Opener) {
	tests := []struct {
		name string
		key  []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
	}
	for _, tc := range tests {
		key := tc.key
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, open)
			update(t, s, func(tx store.Tx) error {
				if err := tx.Put(bucket, key, []byte("v")); err == nil {
					t.Errorf("Put(%q, %q) = nil, want error", bucket, key)
				}
				return nil
			})
			wantKeys(t, s, bucket)
		})
	}
}

func testCopySemantics(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(store.Tx) error // must leave "k" = "value"
	}{
		{"mutate value after Put", func(tx store.Tx) error {
			v := []byte("value")
			err := tx.Put(bucket, []byte("k"), v)
			v[0] = 'X'
			return err
		}},
		{"mutate key after Put", func(tx store.Tx) error {
			k := []byte("k")
			err := tx.Put(bucket, k, []byte("value"))
			k[0] = 'X'
			return err
		}},
		{"mutate Get result", func(tx store.Tx) error {
			if err := tx.Put(bucket, []byte("k"), []byte("value")); err != nil {
				return err
			}
			got, err := tx.Get(bucket, []byte("k"))
			clear(got)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, open)
			update(t, s, func(tx store.Tx) error {
				if err := tc.fn(tx); err != nil {
					return err
				}
				wantGet(t, tx, bucket, "k", "value", true)
				return nil
			})
			wantKeys(t, s, bucket, "k")
			wantStored(t, s, bucket, "k", "value", true)
		})
	}
	t.Run("mutate Get result in View", func(t *testing.T) {
		s := newStore(t, open)
		put(t, s, bucket, "k", "value")
		view(t, s, func(tx store.Tx) error {
			got, err := tx.Get(bucket, []byte("k"))
			clear(got)
			return err
		})
		wantStored(t, s, bucket, "k", "value", true)
	})
}

func testReadOnlyView(t *testing.T, open Opener) {
	s := newStore(t, open)
	put(t, s, bucket, "k", "v")
	tests := []struct {
		name string
		fn   func(store.Tx) error
	}{
		{"Put", func(tx store.Tx) error { return tx.Put(bucket, []byte("k"), []byte("changed")) }},
		{"Put new key", func(tx store.Tx) error { return tx.Put(bucket, []byte("k2"), []byte("v")) }},
		{"Put new bucket", func(tx store.Tx) error { return tx.Put("other", []byte("k"), []byte("v")) }},
		{"Delete", func(tx store.Tx) error { return tx.Delete(bucket, []byte("k")) }},
		{"NextSequence", func(tx store.Tx) error {
			_, err := tx.NextSequence(bucket)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.View(t.Context(), tc.fn); !errors.Is(err, store.ErrReadOnly) {
				t.Errorf("View(%s) = %v, want %v", tc.name, err, store.ErrReadOnly)
			}
		})
	}
	wantKeys(t, s, bucket, "k")
	wantStored(t, s, bucket, "k", "v", true)
	wantKeys(t, s, "other")
	wantSequence(t, s, bucket, 1)
}

func testRollback(t *testing.T, open Opener) {
	s := newStore(t, open)
	put(t, s, bucket, "k", "old")
	put(t, s, bucket, "gone", "x")
	err := s.Update(t.Context(), func(tx store.Tx) error {
		err := apply(tx, opPut("k", "new"), opPut("added", "x"), opDelete("gone"))
		if err == nil {
			err = tx.Put("fresh", []byte("k"), []byte("v"))
		}
		if err != nil {
			t.Errorf("in failing Update: %v", err)
		}
		return fmt.Errorf("wrapped: %w", errTest)
	})
	if !errors.Is(err, errTest) {
		t.Errorf("Update(failing fn) = %v, want %v", err, errTest)
	}
	wantKeys(t, s, bucket, "gone", "k")
	wantStored(t, s, bucket, "k", "old", true)
	wantStored(t, s, bucket, "gone", "x", true)
	wantKeys(t, s, "fresh")

	put(t, s, bucket, "k", "after")
	wantStored(t, s, bucket, "k", "after", true)
}
