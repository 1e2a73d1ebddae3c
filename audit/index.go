package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/store"
)

// The search index buckets; see the package documentation.
const (
	bucketIdxSPIFFEID     = "audit_idx_spiffe_id"
	bucketIdxType         = "audit_idx_type"
	bucketIdxTime         = "audit_idx_time"
	bucketIdxTimeTiles    = "audit_idx_time_tiles"
	bucketIdxDecisionID   = "audit_idx_decision_id"
	bucketIdxDelegationID = "audit_idx_delegation_id"
)

// timeTileWidth is how many consecutive entries one audit_idx_time_tiles
// record summarizes (the width of a tlog tile, though nothing depends on
// that).
const timeTileWidth = 256

// spiffeValues returns the values an entry has in the spiffe_id index,
// without duplicates: its actor (a SPIFFE ID or ActorSystem), its subject
// if that is a SPIFFE ID in normal form, and the SPIFFE ID of each
// accountable party. Search matches an entry on SPIFFEID exactly when the
// ID is one of these.
func spiffeValues(e Entry) []string {
	vs := make([]string, 0, 2+len(e.Accountable))
	vs = append(vs, e.Actor)
	if isSPIFFEID(e.Subject) && e.Subject != e.Actor {
		vs = append(vs, e.Subject)
	}
	for _, p := range e.Accountable {
		if id := p.SPIFFEID.String(); !slices.Contains(vs, id) {
			vs = append(vs, id)
		}
	}
	return vs
}

// isSPIFFEID reports whether s is a SPIFFE ID in normal form.
func isSPIFFEID(s string) bool {
	id, err := spiffeid.FromString(s)
	return err == nil && id.String() == s
}

// valuePrefix returns the prefix of every key of value in an exact-match
// index: the value with the bytes 0x00 and 0x01 escaped as 0x01 0x01 and
// 0x01 0x02 (so it holds no 0x00), then 0x00. No value's prefix is a
// prefix of another's, so a prefix scan finds exactly value's keys, in
// the order of their entry indexes.
func valuePrefix(value string) []byte {
	k := make([]byte, 0, len(value)+1+8)
	for i := range len(value) {
		switch c := value[i]; c {
		case 0x00, 0x01:
			k = append(k, 0x01, c+1)
		default:
			k = append(k, c)
		}
	}
	return append(k, 0x00)
}

// valueKey is the key of the entry at index in value's part of an
// exact-match index.
func valueKey(value string, index uint64) []byte {
	return binary.BigEndian.AppendUint64(valuePrefix(value), index)
}

// timeNanos is t in Unix nanoseconds, clamped to [0, MaxInt64] (1970 to
// 2262): the order of times is kept, though not strictly at the ends, so
// the time index yields a superset of a range, which Search narrows by
// reading the entries.
func timeNanos(t time.Time) uint64 {
	switch {
	case t.Before(time.Unix(0, 0)):
		return 0
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

// timeKey is the key of the entry at index in the time index.
func timeKey(t time.Time, index uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), timeNanos(t))
	return binary.BigEndian.AppendUint64(k, index)
}

// keyIndex returns the entry index at the end of an index key whose value
// part is n bytes long.
func keyIndex(k []byte, n int) (uint64, error) {
	if len(k) != n+8 {
		return 0, corrupt("index key %x: want %d bytes", k, n+8)
	}
	return binary.BigEndian.Uint64(k[n:]), nil
}

// putIndexes writes the search index keys of the entry at index (values
// are empty). Putting a key twice is harmless, so a retried transaction
// writes the same.
//
// A value longer than MaxQueryLen is not indexed: no query can name it,
// and its key could exceed what a store accepts (bbolt: 32 KiB), which
// would fail the whole commit, every entry of the round with it.
func putIndexes(tx store.Tx, index uint64, e Entry) error {
	putValue := func(bucket, v string) error {
		if v == "" || len(v) > MaxQueryLen {
			return nil
		}
		return tx.Put(bucket, valueKey(v, index), nil)
	}
	for _, v := range spiffeValues(e) {
		if err := putValue(bucketIdxSPIFFEID, v); err != nil {
			return err
		}
	}
	if err := putValue(bucketIdxType, e.Type); err != nil {
		return err
	}
	if err := tx.Put(bucketIdxTime, timeKey(e.Time, index), nil); err != nil {
		return err
	}
	if err := putValue(bucketIdxDecisionID, e.DecisionID); err != nil {
		return err
	}
	return putValue(bucketIdxDelegationID, e.DelegationID)
}

// timeSpan is the range of entry times (timeNanos) of one group of
// timeTileWidth entries, as stored in audit_idx_time_tiles: 8-byte
// big-endian min, then max.
type timeSpan struct{ min, max uint64 }

func (s timeSpan) bytes() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), s.min)
	return binary.BigEndian.AppendUint64(b, s.max)
}

func parseTimeSpan(b []byte) (timeSpan, error) {
	if len(b) != 16 {
		return timeSpan{}, corrupt("time span of %d bytes", len(b))
	}
	return timeSpan{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}, nil
}

func (s timeSpan) union(o timeSpan) timeSpan {
	return timeSpan{min(s.min, o.min), max(s.max, o.max)}
}

// putTimeSpans widens the stored time span of each group of entries that
// reqs (starting at index first) fall in. It reads before writing, but
// only within tx, so a retried transaction writes the same.
func putTimeSpans(tx store.Tx, first uint64, reqs []*request) error {
	for i := 0; i < len(reqs); {
		index := first + uint64(i)
		group := index / timeTileWidth
		n := min(len(reqs)-i, int(timeTileWidth-index%timeTileWidth))
		t := timeNanos(reqs[i].entry.Time)
		span := timeSpan{t, t}
		for _, r := range reqs[i : i+n] {
			t := timeNanos(r.entry.Time)
			span = span.union(timeSpan{t, t})
		}
		key := entryKey(group)
		switch old, err := tx.Get(bucketIdxTimeTiles, key); {
		case err == nil:
			o, err := parseTimeSpan(old)
			if err != nil {
				return err
			}
			span = span.union(o)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		if err := tx.Put(bucketIdxTimeTiles, key, span.bytes()); err != nil {
			return fmt.Errorf("time span of entries %d+: %w", group*timeTileWidth, err)
		}
		i += n
	}
	return nil
}

// entryPrefix is how every encoded entry begins, up to its time.
var entryPrefix = fmt.Appendf(nil, `{"v":%d,"time":"`, Version)

// entryTime returns the time of an encoded entry, read from its fixed
// place in the canonical encoding (Decode if it is not there).
func entryTime(b []byte) (time.Time, error) {
	rest, ok := bytes.CutPrefix(b, entryPrefix)
	if ok && len(rest) > len(timeLayout) && rest[len(timeLayout)] == '"' {
		if t, err := time.Parse(timeLayout, string(rest[:len(timeLayout)])); err == nil {
			return t, nil
		}
	}
	e, err := Decode(b)
	return e.Time, err
}
