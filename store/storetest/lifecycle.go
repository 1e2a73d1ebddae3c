package storetest

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"mandate.dev/mandate/store"
)

const (
	writers          = 16
	updatesPerWriter = 50
	readers          = 4
)

// addOne adds 1 to the big-endian counter under key and returns the
// bucket's next sequence number, all in tx.
func addOne(tx store.Tx, key []byte) (uint64, error) {
	n := uint64(0)
	v, err := tx.Get(bucket, key)
	switch {
	case err == nil && len(v) == 8:
		n = binary.BigEndian.Uint64(v)
	case err == nil:
		return 0, errors.New("counter is not 8 bytes")
	case !errors.Is(err, store.ErrNotFound):
		return 0, err
	}
	if err := tx.Put(bucket, key, binary.BigEndian.AppendUint64(nil, n+1)); err != nil {
		return 0, err
	}
	return tx.NextSequence(bucket)
}

// testConcurrentUpdates runs read-modify-write Updates from many
// goroutines, with Views alongside: no increment may be lost, sequence
// numbers are unique, and readers never see the counter go back.
func testConcurrentUpdates(t *testing.T, open Opener) {
	s := newStore(t, open)
	key := []byte("counter")
	var (
		mu   sync.Mutex
		seqs []uint64
		wg   sync.WaitGroup
	)
	for range writers {
		wg.Go(func() {
			for range updatesPerWriter {
				var seq uint64
				err := s.Update(t.Context(), func(tx store.Tx) (err error) {
					seq, err = addOne(tx, key)
					return err
				})
				if err != nil {
					t.Errorf("Update(increment) = %v, want nil", err)
					return
				}
				mu.Lock()
				seqs = append(seqs, seq)
				mu.Unlock()
			}
		})
	}
	done := make(chan struct{})
	var rg sync.WaitGroup
	for range readers {
		rg.Go(func() { readCounter(t, s, key, done) })
	}
	wg.Wait()
	close(done)
	rg.Wait()

	const total = writers * updatesPerWriter
	wantStored(t, s, bucket, string(key), string(binary.BigEndian.AppendUint64(nil, total)), true)
	slices.Sort(seqs)
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("sorted sequence numbers of %d Updates: [%d] = %d, want %d", total, i, seq, i+1)
		}
	}
	if len(seqs) != total {
		t.Errorf("%d Updates succeeded, want %d", len(seqs), total)
	}
}

// readCounter reads the counter under key until done is closed, reporting
// any decrease.
func readCounter(t *testing.T, s store.Store, key []byte, done <-chan struct{}) {
	last := uint64(0)
	for {
		select {
		case <-done:
			return
		default:
		}
		var n uint64
		err := s.View(t.Context(), func(tx store.Tx) error {
			v, err := tx.Get(bucket, key)
			if len(v) == 8 {
				n = binary.BigEndian.Uint64(v)
			}
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		})
		if err != nil || n < last {
			t.Errorf("View(read counter) = %d, %v after %d, want >= %d, nil", n, err, last, last)
			return
		}
		last = n
	}
}

func testContextDone(t *testing.T, open Opener) {
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()

	s := newStore(t, open)
	methods := []struct {
		name string
		run  func(context.Context, func(store.Tx) error) error
	}{
		{"View", s.View},
		{"Update", s.Update},
	}
	tests := []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"canceled", canceled, context.Canceled},
		{"deadline exceeded", expired, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		for _, m := range methods {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				called := false
				err := m.run(tc.ctx, func(tx store.Tx) error {
					called = true
					return tx.Put(bucket, []byte("k"), []byte("v"))
				})
				if !errors.Is(err, tc.want) || called {
					t.Errorf("%s(done ctx) = %v, called fn = %t, want %v, false", m.name, err, called, tc.want)
				}
			})
		}
	}
	wantKeys(t, s, bucket)
}

func testClosed(t *testing.T, open Opener) {
	s, _ := open(t)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	called := false
	fn := func(store.Tx) error {
		called = true
		return nil
	}
	if err := s.View(t.Context(), fn); err == nil || called {
		t.Errorf("View() after Close = %v, called fn = %t, want error, false", err, called)
	}
	if err := s.Update(t.Context(), fn); err == nil || called {
		t.Errorf("Update() after Close = %v, called fn = %t, want error, false", err, called)
	}
}

func testReopen(t *testing.T, open Opener) {
	s, reopen := open(t)
	if reopen == nil {
		closeAtEnd(t, s)
		t.Log("Opener returned no reopen: store does not persist, nothing to check")
		return
	}
	put(t, s, bucket, "k", "v")
	wantSequence(t, s, "seq", 1)
	wantSequence(t, s, "seq", 2)
	err := s.Update(t.Context(), func(tx store.Tx) error {
		return errors.Join(opPut("k", "lost")(tx), errTest)
	})
	if !errors.Is(err, errTest) {
		t.Fatalf("Update(failing fn) = %v, want %v", err, errTest)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}

	s = reopen()
	closeAtEnd(t, s)
	wantKeys(t, s, bucket, "k")
	wantStored(t, s, bucket, "k", "v", true)
	wantSequence(t, s, "seq", 3)
}
