package store

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// NewID returns a new unique id of 128 bits laid out as a UUIDv7 (RFC
// 9562 §5.7): 48 bits of Unix milliseconds, the version and variant
// bits, and 74 random bits. Ids made later sort after ids made in an
// earlier millisecond, so records and index entries keyed by them are
// added at the end of their B-tree instead of on a random page of it: a
// commit of many of them writes a few pages, not one page each. The
// random bits keep ids unguessable.
func NewID() [16]byte {
	var id [16]byte
	_, _ = rand.Read(id[6:]) // never fails (crypto/rand.Read)
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(time.Now().UnixMilli()))
	copy(id[:6], ms[2:])
	id[6] = id[6]&0x0f | 0x70 // version 7
	id[8] = id[8]&0x3f | 0x80 // variant 10
	return id
}
