package bolt

import (
	"encoding/binary"
	"testing"

	"mandate.dev/mandate/store"
)

// BenchmarkUpdatePut measures one Update holding one small Put: dominated
// by the fsync of each commit.
func BenchmarkUpdatePut(b *testing.B) {
	s, _ := openTemp(b)
	value := make([]byte, 128)
	var i uint64
	for b.Loop() {
		i++
		key := binary.BigEndian.AppendUint64(nil, i)
		if err := s.Update(b.Context(), func(tx store.Tx) error {
			return tx.Put("bench", key, value)
		}); err != nil {
			b.Fatalf("Update(Put) = %v, want nil", err)
		}
	}
}

// BenchmarkUpdatePutParallel runs Updates from many goroutines; bbolt
// serializes them, so this shows the commit rate one file can sustain.
func BenchmarkUpdatePutParallel(b *testing.B) {
	s, _ := openTemp(b)
	value := make([]byte, 128)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Update(b.Context(), func(tx store.Tx) error {
				n, err := tx.NextSequence("bench")
				if err != nil {
					return err
				}
				return tx.Put("bench", binary.BigEndian.AppendUint64(nil, n), value)
			}); err != nil {
				b.Errorf("Update(Put) = %v, want nil", err)
				return
			}
		}
	})
}

// BenchmarkViewGet measures a read transaction for contrast: no disk I/O.
func BenchmarkViewGet(b *testing.B) {
	s, _ := openTemp(b)
	key := []byte("key")
	if err := s.Update(b.Context(), func(tx store.Tx) error {
		return tx.Put("bench", key, make([]byte, 128))
	}); err != nil {
		b.Fatalf("Update(Put) = %v, want nil", err)
	}
	for b.Loop() {
		if err := s.View(b.Context(), func(tx store.Tx) error {
			_, err := tx.Get("bench", key)
			return err
		}); err != nil {
			b.Fatalf("View(Get) = %v, want nil", err)
		}
	}
}
