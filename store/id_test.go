package store_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"mandate.dev/mandate/store"
)

// TestNewID checks the UUIDv7 layout (time first, version 7, variant
// 10), that ids of later milliseconds sort after, and that ids differ.
func TestNewID(t *testing.T) {
	before := time.Now().UnixMilli()
	a := store.NewID()
	time.Sleep(2 * time.Millisecond)
	b := store.NewID()
	after := time.Now().UnixMilli()
	for _, id := range [][16]byte{a, b} {
		var ms [8]byte
		copy(ms[2:], id[:6])
		if got := int64(binary.BigEndian.Uint64(ms[:])); got < before || got > after {
			t.Errorf("id %x carries time %d, outside [%d, %d]", id, got, before, after)
		}
		if id[6]>>4 != 7 || id[8]>>6 != 2 {
			t.Errorf("id %x: version %d variant %b, want 7 and 10", id, id[6]>>4, id[8]>>6)
		}
	}
	if bytes.Compare(a[:], b[:]) >= 0 {
		t.Errorf("id %x made later does not sort after %x", b, a)
	}
	seen := map[[16]byte]bool{}
	for range 10000 {
		id := store.NewID()
		if seen[id] {
			t.Fatalf("id %x made twice", id)
		}
		seen[id] = true
	}
}
