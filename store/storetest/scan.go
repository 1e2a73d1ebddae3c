package storetest

import (
	"errors"
	"slices"
	"testing"

	"mandate.dev/mandate/store"
)

// scanKeys are the keys of the Scan tests, in ascending byte order.
var scanKeys = []string{"a", "b", "b/1", "b/10", "b/2", "b/3", "c", "\xff", "\xff\x00"}

// newScanStore returns a store whose test bucket holds scanKeys, each with
// value "v:"+key, written in an order other than sorted.
func newScanStore(t *testing.T, open Opener) store.Store {
	t.Helper()
	s := newStore(t, open)
	update(t, s, putScanKeys)
	return s
}

func putScanKeys(tx store.Tx) error {
	for _, i := range []int{4, 8, 0, 6, 2, 7, 1, 5, 3} {
		if err := opPut(scanKeys[i], "v:"+scanKeys[i])(tx); err != nil {
			return err
		}
	}
	return nil
}

func testScan(t *testing.T, open Opener) {
	s := newScanStore(t, open)
	tests := []struct {
		name          string
		bucket        string
		prefix, start []byte
		want          []string
	}{
		{"all", bucket, nil, nil, scanKeys},
		{"empty prefix", bucket, []byte{}, []byte{}, scanKeys},
		{"prefix", bucket, []byte("b/"), nil, []string{"b/1", "b/10", "b/2", "b/3"}},
		{"prefix is a key", bucket, []byte("b"), nil, []string{"b", "b/1", "b/10", "b/2", "b/3"}},
		{"prefix matches nothing", bucket, []byte("bb"), nil, nil},
		{"prefix after all keys", bucket, []byte("\xff\xff"), nil, nil},
		{"binary prefix", bucket, []byte("\xff"), nil, []string{"\xff", "\xff\x00"}},
		{"start is a key", bucket, []byte("b/"), []byte("b/2"), []string{"b/2", "b/3"}},
		{"start between keys", bucket, []byte("b/"), []byte("b/15"), []string{"b/2", "b/3"}},
		{"start is last key", bucket, []byte("b/"), []byte("b/3"), []string{"b/3"}},
		{"start below prefix", bucket, []byte("b/"), []byte("a"), []string{"b/1", "b/10", "b/2", "b/3"}},
		{"start above prefix", bucket, []byte("b/"), []byte("c"), nil},
		{"start without prefix", bucket, nil, []byte("c"), []string{"c", "\xff", "\xff\x00"}},
		{"missing bucket", "missing", nil, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			view(t, s, func(tx store.Tx) error {
				var got []string
				err := tx.Scan(tc.bucket, tc.prefix, tc.start, func(k, v []byte) error {
					if want := "v:" + string(k); string(v) != want {
						t.Errorf("Scan visited %q with value %q, want %q", k, v, want)
					}
					got = append(got, string(k))
					return nil
				})
				if err != nil || !slices.Equal(got, tc.want) {
					t.Errorf("Scan(%q, %q, %q) keys = %q, %v, want %q, nil",
						tc.bucket, tc.prefix, tc.start, got, err, tc.want)
				}
				return nil
			})
		})
	}
}

// scanUntil scans the whole test bucket with a callback that returns nil
// for keys 1 to n-1 and result for key n. It returns the number of keys
// visited and Scan's error.
func scanUntil(tx store.Tx, n int, result error) (int, error) {
	visited := 0
	err := tx.Scan(bucket, nil, nil, func(_, _ []byte) error {
		visited++
		if visited == n {
			return result
		}
		return nil
	})
	return visited, err
}

func testScanStop(t *testing.T, open Opener) {
	s := newScanStore(t, open)
	view(t, s, func(tx store.Tx) error {
		visited, err := scanUntil(tx, 2, store.ErrStopScan)
		if err != nil || visited != 2 {
			t.Errorf("Scan stopped by ErrStopScan at key 2 = %v after %d keys, want nil after 2", err, visited)
		}
		return nil
	})
}

func testScanError(t *testing.T, open Opener) {
	s := newScanStore(t, open)
	view(t, s, func(tx store.Tx) error {
		visited, err := scanUntil(tx, 2, errTest)
		if !errors.Is(err, errTest) || visited != 2 {
			t.Errorf("Scan failing at key 2 = %v after %d keys, want %v after 2", err, visited, errTest)
		}
		return nil
	})
	err := s.Update(t.Context(), func(tx store.Tx) error {
		_, err := scanUntil(tx, 1, errTest)
		return err
	})
	if !errors.Is(err, errTest) {
		t.Errorf("Update(Scan failing) = %v, want %v", err, errTest)
	}
}

func testScanCopies(t *testing.T, open Opener) {
	s := newScanStore(t, open)
	var kept [][2][]byte
	keep := func(k, v []byte) error {
		kept = append(kept, [2][]byte{k, v})
		return nil
	}
	view(t, s, func(tx store.Tx) error { return tx.Scan(bucket, nil, nil, keep) })
	// Write and read more, so that any storage memory the slices might
	// alias is reused.
	put(t, s, bucket, "a", "changed")
	view(t, s, func(tx store.Tx) error { return tx.Scan(bucket, nil, nil, keep) })
	for i, k := range scanKeys {
		if got := string(kept[i][0]); got != k {
			t.Errorf("key %d kept from Scan = %q after the View, want %q", i, got, k)
		}
		if got := string(kept[i][1]); got != "v:"+k {
			t.Errorf("value of %q kept from Scan = %q after the View, want %q", k, got, "v:"+k)
		}
	}

	mutate := func(k, v []byte) error {
		clear(k)
		clear(v)
		return nil
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.Scan(bucket, nil, nil, mutate); err != nil {
			return err
		}
		wantGet(t, tx, bucket, "b", "v:b", true)
		return nil
	})
	view(t, s, func(tx store.Tx) error { return tx.Scan(bucket, nil, nil, mutate) })
	wantKeys(t, s, bucket, scanKeys...)
	wantStored(t, s, bucket, "b", "v:b", true)
}

// testScanWhileWriting checks that a Scan callback may write the key it is
// given and the Scan still visits every key exactly once, whether the keys
// were committed before or written earlier in the same Update.
func testScanWhileWriting(t *testing.T, open Opener) {
	tests := []struct {
		name     string
		write    func(tx store.Tx, key []byte) error
		wantKeys []string
	}{
		{"delete current key", func(tx store.Tx, key []byte) error {
			return tx.Delete(bucket, key)
		}, nil},
		{"overwrite current key", func(tx store.Tx, key []byte) error {
			return tx.Put(bucket, key, []byte("new"))
		}, scanKeys},
	}
	for _, tc := range tests {
		for _, sameTx := range []bool{false, true} {
			name := tc.name + "/committed"
			if sameTx {
				name = tc.name + "/same tx"
			}
			t.Run(name, func(t *testing.T) {
				s := newStore(t, open)
				if !sameTx {
					update(t, s, putScanKeys)
				}
				update(t, s, func(tx store.Tx) error {
					if sameTx {
						if err := putScanKeys(tx); err != nil {
							return err
						}
					}
					wantScanWriting(t, tx, tc.write)
					return nil
				})
				wantKeys(t, s, bucket, tc.wantKeys...)
			})
		}
	}
}

// wantScanWriting scans the test bucket, calling write for each key, and
// checks that every key of scanKeys was visited once, in order.
func wantScanWriting(t *testing.T, tx store.Tx, write func(store.Tx, []byte) error) {
	t.Helper()
	var visited []string
	err := tx.Scan(bucket, nil, nil, func(k, _ []byte) error {
		visited = append(visited, string(k))
		return write(tx, k)
	})
	if err != nil || !slices.Equal(visited, scanKeys) {
		t.Errorf("Scan keys = %q, %v, want %q, nil", visited, err, scanKeys)
	}
}
