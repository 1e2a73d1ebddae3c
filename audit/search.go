package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"mandate.dev/mandate/store"
)

// Search limits.
const (
	// DefaultSearchLimit is the page size of a Query without Limit.
	DefaultSearchLimit = 50
	// MaxSearchLimit is the largest Query.Limit.
	MaxSearchLimit = 500
	// MaxQueryLen is the longest string criterion of a Query, in bytes:
	// the SPIFFE ID standard's bound on an ID, so that every ID an
	// authority accepts (an agent's, a node's) can be searched for.
	MaxQueryLen = 2048
)

// Work bounds of one Search call, per result asked for (Limit): it reads
// at most scanEntries×Limit entries and scans at most scanKeys×Limit keys
// of the time index before it returns what it found and a cursor.
const (
	scanEntries = 10
	scanKeys    = 100
)

// ErrBadQuery is matched by the error of Search for a query it refuses
// (callers map it to "bad request").
var ErrBadQuery = errors.New("audit: bad search query")

// Query selects entries for Search. Every criterion given must match
// (AND); the zero Query selects every entry.
type Query struct {
	// SPIFFEID matches entries whose actor, subject or the SPIFFE ID of
	// one of whose accountable parties is this SPIFFE ID (in normal form).
	// ActorSystem matches the entries the authority caused by itself.
	SPIFFEID string
	// Type, DecisionID and DelegationID match those fields exactly.
	Type         string
	DecisionID   string
	DelegationID string
	// Since and Until select entries with Since <= Time < Until; a zero
	// value leaves that end open.
	Since, Until time.Time
	// After, if HasAfter, is a cursor: only entries with an index above it
	// are returned. Pass the next value of the previous page. A non-zero
	// After without HasAfter is refused.
	After    uint64
	HasAfter bool
	// Limit is the most indexes to return: 1 to MaxSearchLimit, or 0 for
	// DefaultSearchLimit.
	Limit int
}

// check validates q and returns its page size.
func (q *Query) check() (int, error) {
	for _, s := range []struct{ name, v string }{
		{"spiffe_id", q.SPIFFEID}, {"type", q.Type},
		{"decision_id", q.DecisionID}, {"delegation_id", q.DelegationID},
	} {
		if len(s.v) > MaxQueryLen {
			return 0, fmt.Errorf("%w: %s of %d bytes, more than %d", ErrBadQuery, s.name, len(s.v), MaxQueryLen)
		}
		if !utf8.ValidString(s.v) {
			return 0, fmt.Errorf("%w: %s is not valid UTF-8", ErrBadQuery, s.name)
		}
	}
	switch {
	case q.Limit < 0 || q.Limit > MaxSearchLimit:
		return 0, fmt.Errorf("%w: limit %d, want 1 to %d", ErrBadQuery, q.Limit, MaxSearchLimit)
	case q.SPIFFEID != "" && q.SPIFFEID != ActorSystem && !isSPIFFEID(q.SPIFFEID):
		return 0, fmt.Errorf("%w: spiffe_id %q is not a SPIFFE ID in normal form", ErrBadQuery, q.SPIFFEID)
	case q.Type != "" && validateType(q.Type) != nil:
		return 0, fmt.Errorf("%w: type %q is not an event type", ErrBadQuery, q.Type)
	case !q.Since.IsZero() && !q.Until.IsZero() && q.Since.After(q.Until):
		return 0, fmt.Errorf("%w: since %v is after until %v", ErrBadQuery, q.Since, q.Until)
	case q.After != 0 && !q.HasAfter:
		return 0, fmt.Errorf("%w: After set without HasAfter", ErrBadQuery)
	}
	if q.Limit == 0 {
		return DefaultSearchLimit, nil
	}
	return q.Limit, nil
}

// exact returns the most selective exact-match criterion, as the bucket
// of its index and its value ("" if the query has none).
func (q *Query) exact() (bucket, value string) {
	switch {
	case q.DecisionID != "":
		return bucketIdxDecisionID, q.DecisionID
	case q.DelegationID != "":
		return bucketIdxDelegationID, q.DelegationID
	case q.SPIFFEID != "":
		return bucketIdxSPIFFEID, q.SPIFFEID
	case q.Type != "":
		return bucketIdxType, q.Type
	}
	return "", ""
}

// exacts returns the exact-match criteria of q, each as the bucket of
// its index and the prefix of its value's keys there, the most
// selective first (as exact).
func (q *Query) exacts() []exactIndex {
	var out []exactIndex
	for _, c := range []struct{ bucket, value string }{
		{bucketIdxDecisionID, q.DecisionID}, {bucketIdxDelegationID, q.DelegationID},
		{bucketIdxSPIFFEID, q.SPIFFEID}, {bucketIdxType, q.Type},
	} {
		if c.value != "" {
			out = append(out, exactIndex{c.bucket, valuePrefix(c.value)})
		}
	}
	return out
}

// exactIndex is the keys of one value in one exact-match index: the
// value's prefix, then each index of an entry that has it.
type exactIndex struct {
	bucket string
	prefix []byte
}

func (q *Query) hasTime() bool { return !q.Since.IsZero() || !q.Until.IsZero() }

// criteria counts the criteria of q (a time range counting once).
func (q *Query) criteria() int {
	n := 0
	for _, s := range []string{q.SPIFFEID, q.Type, q.DecisionID, q.DelegationID} {
		if s != "" {
			n++
		}
	}
	if q.hasTime() {
		n++
	}
	return n
}

// timeBounds returns the range of timeNanos values of the entries that may
// match the time criteria, both ends included.
func (q *Query) timeBounds() (lo, hi uint64) {
	lo, hi = 0, math.MaxInt64
	if !q.Since.IsZero() {
		lo = timeNanos(q.Since)
	}
	if !q.Until.IsZero() {
		hi = timeNanos(q.Until)
	}
	return lo, hi
}

func (q *Query) matchesTime(t time.Time) bool {
	return (q.Since.IsZero() || !t.Before(q.Since)) && (q.Until.IsZero() || t.Before(q.Until))
}

// Matches reports whether e meets every criterion of q: whether Search
// may return it (so that a reader of a log it does not trust can check
// each hit it is given).
func (q *Query) Matches(e Entry) bool {
	return (q.SPIFFEID == "" || slices.Contains(spiffeValues(e), q.SPIFFEID)) &&
		(q.Type == "" || e.Type == q.Type) &&
		(q.DecisionID == "" || e.DecisionID == q.DecisionID) &&
		(q.DelegationID == "" || e.DelegationID == q.DelegationID) &&
		q.matchesTime(e.Time)
}

// Search returns the indexes of the entries that match q, in ascending
// order, at most q.Limit of them, among the entries of the latest
// checkpoint (below Size()). next is the cursor of the next page (pass it
// as Query.After, with HasAfter), or nil when there is nothing more.
//
// A call does bounded work: it scans one index (the most selective of the
// query's: decision_id or delegation_id, then spiffe_id, then type, then
// time), or the indexes of all its exact criteria together (intersect),
// reads or looks up at most 10×Limit candidate entries to check the
// other criteria and stops there, so a page may hold fewer than Limit
// indexes, or none, and still have a next cursor. A non-nil next may also lead to
// an empty last page.
//
// A query Search refuses (see Query) fails with an error matching
// ErrBadQuery.
func (l *Log) Search(ctx context.Context, q Query) (indexes []uint64, next *uint64, err error) {
	limit, err := q.check()
	if err != nil {
		return nil, nil, err
	}
	s := &search{ctx: ctx, q: q, limit: limit, size: l.Size(), entriesLeft: scanEntries * limit}
	if q.HasAfter {
		if q.After >= s.size {
			return nil, nil, nil
		}
		s.from = q.After + 1
	}
	if s.from >= s.size {
		return nil, nil, nil
	}
	if q.criteria() == 0 {
		s.all()
		return s.res, s.next, nil
	}
	err = l.cfg.Store.View(ctx, func(tx store.Tx) error {
		s.tx, s.res, s.next = tx, nil, nil // View may retry
		s.entriesLeft = scanEntries * limit
		if ex := q.exacts(); len(ex) > 1 {
			return s.intersect(ex)
		}
		if bucket, value := q.exact(); bucket != "" {
			return s.exact(bucket, value)
		}
		return s.byTime()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("audit: search: %w", err)
	}
	return s.res, s.next, nil
}

// search is the state of one Search call.
type search struct {
	ctx   context.Context
	tx    store.Tx
	q     Query
	limit int
	// Candidates are the entries in [from, size).
	from, size uint64

	res  []uint64
	next *uint64
	// entriesLeft is how many more entries the call may read.
	entriesLeft int
	ops         int // for checking ctx now and then
}

// tick checks ctx every so often.
func (s *search) tick() error {
	s.ops++
	if s.ops%64 == 0 {
		return s.ctx.Err()
	}
	return nil
}

// cursor sets the next cursor to index.
func (s *search) cursor(index uint64) { s.next = &index }

// full reports whether the page is full, setting the cursor if so.
func (s *search) full() bool {
	if len(s.res) < s.limit {
		return false
	}
	s.cursor(s.res[len(s.res)-1])
	return true
}

// all pages through every entry: no store access is needed.
func (s *search) all() {
	end := min(s.size, s.from+uint64(s.limit))
	for i := s.from; i < end; i++ {
		s.res = append(s.res, i)
	}
	if end < s.size {
		s.cursor(end - 1)
	}
}

// exact drives the search from the exact-match index bucket, whose keys
// are in index order for one value. With other criteria, each candidate
// entry is read and checked.
func (s *search) exact(bucket, value string) error {
	prefix := valuePrefix(value)
	start := binary.BigEndian.AppendUint64(bytes.Clone(prefix), s.from)
	check := s.q.criteria() > 1
	return s.tx.Scan(bucket, prefix, start, func(k, _ []byte) error {
		if err := s.tick(); err != nil {
			return err
		}
		index, err := keyIndex(k, len(prefix))
		if err != nil {
			return err
		}
		if index >= s.size {
			return store.ErrStopScan
		}
		if s.full() {
			return store.ErrStopScan
		}
		if check {
			if s.entriesLeft == 0 {
				s.cursor(index - 1)
				return store.ErrStopScan
			}
			s.entriesLeft--
			ok, err := s.check(index)
			if err != nil || !ok {
				return err
			}
		}
		s.res = append(s.res, index)
		return nil
	})
}

// intersect drives the search from several exact-match indexes at once:
// each is asked for its first entry at or after the lowest index all may
// still share, which moves up to the highest answer, until all give the
// same (a match, then checked for the time range, if any, by reading
// it) or one has none left. Entries the first index has and the others
// do not are skipped by the others' answers, not read one by one. Each
// look-up counts as a read against the call's bound.
func (s *search) intersect(ex []exactIndex) error {
	at := s.from // no entry below at matches
	for {
		agreed := 0
		for i := 0; agreed < len(ex); i = (i + 1) % len(ex) {
			if err := s.tick(); err != nil {
				return err
			}
			if s.entriesLeft <= 0 && at > s.from { // (a call always moves on)
				s.cursor(at - 1)
				return nil
			}
			s.entriesLeft--
			next, ok, err := s.first(ex[i], at)
			if err != nil {
				return err
			}
			if !ok || next >= s.size {
				return nil
			}
			if next == at {
				agreed++
			} else {
				at, agreed = next, 1
			}
		}
		if s.q.hasTime() {
			s.entriesLeft--
			ok, err := s.check(at)
			if err != nil {
				return err
			}
			if !ok {
				at++
				continue
			}
		}
		s.res = append(s.res, at)
		at++
		if s.full() {
			return nil
		}
	}
}

// first returns the first index at or after from that index x has.
func (s *search) first(x exactIndex, from uint64) (index uint64, ok bool, err error) {
	start := binary.BigEndian.AppendUint64(bytes.Clone(x.prefix), from)
	err = s.tx.Scan(x.bucket, x.prefix, start, func(k, _ []byte) error {
		if index, err = keyIndex(k, len(x.prefix)); err != nil {
			return err
		}
		ok = true
		return store.ErrStopScan
	})
	return index, ok, err
}

// check reads the entry at index and reports whether it matches.
func (s *search) check(index uint64) (bool, error) {
	b, err := s.tx.Get(bucketEntries, entryKey(index))
	if err != nil {
		return false, fmt.Errorf("read entry %d: %w", index, err)
	}
	if s.q.criteria() == 2 && s.q.hasTime() { // the time is all to check
		t, err := entryTime(b)
		if err != nil {
			return false, fmt.Errorf("entry %d: %w", index, err)
		}
		return s.q.matchesTime(t), nil
	}
	e, err := Decode(b)
	if err != nil {
		return false, fmt.Errorf("entry %d: %w", index, err)
	}
	return s.q.Matches(e), nil
}

// byTime searches by time alone. The time index is in time order, not
// log order, so it answers a range only when the whole range is small
// (at most scanKeys×Limit keys): then the candidates are sorted. A larger
// range is searched in log order instead, skipping the groups of entries
// whose time span (audit_idx_time_tiles) is outside it.
func (s *search) byTime() error {
	cands, ok, err := s.timeRange()
	if err != nil {
		return err
	}
	if !ok {
		return s.timeSpans()
	}
	for i, index := range cands {
		if s.full() {
			return nil
		}
		if s.entriesLeft == 0 {
			s.cursor(cands[i-1]) // i > 0: entriesLeft >= 10 at the start
			return nil
		}
		s.entriesLeft--
		if err := s.tick(); err != nil {
			return err
		}
		b, err := s.tx.Get(bucketEntries, entryKey(index))
		if err != nil {
			return fmt.Errorf("read entry %d: %w", index, err)
		}
		t, err := entryTime(b)
		if err != nil {
			return fmt.Errorf("entry %d: %w", index, err)
		}
		if s.q.matchesTime(t) {
			s.res = append(s.res, index)
		}
	}
	return nil
}

// timeRange returns the sorted indexes in [from, size) of the time index's
// keys in the query's range, or ok false if there are more than
// scanKeys×Limit keys in the range.
func (s *search) timeRange() (cands []uint64, ok bool, err error) {
	lo, hi := s.q.timeBounds()
	keysLeft := scanKeys * s.limit
	ok = true
	err = s.tx.Scan(bucketIdxTime, nil, binary.BigEndian.AppendUint64(nil, lo), func(k, _ []byte) error {
		if err := s.tick(); err != nil {
			return err
		}
		index, err := keyIndex(k, 8)
		if err != nil {
			return err
		}
		if binary.BigEndian.Uint64(k) > hi {
			return store.ErrStopScan
		}
		if keysLeft == 0 {
			ok = false
			return store.ErrStopScan
		}
		keysLeft--
		if s.from <= index && index < s.size {
			cands = append(cands, index)
		}
		return nil
	})
	if err != nil || !ok {
		return nil, false, err
	}
	slices.Sort(cands)
	return cands, true, nil
}

// timeSpans searches in log order from s.from, reading the entries of
// each group whose time span meets the query's range.
func (s *search) timeSpans() error {
	lo, hi := s.q.timeBounds()
	// last is the last index examined (so the cursor when the work runs
	// out); groups count as examined without reading when skipped.
	last := s.from - 1 // s.from > 0 whenever it is used below
	groupsLeft := scanKeys * s.limit
	err := s.tx.Scan(bucketIdxTimeTiles, nil, entryKey(s.from/timeTileWidth), func(k, v []byte) error {
		if err := s.tick(); err != nil {
			return err
		}
		group, err := keyIndex(k, 0)
		if err != nil {
			return err
		}
		span, err := parseTimeSpan(v)
		if err != nil {
			return err
		}
		first, end := max(s.from, group*timeTileWidth), min(s.size, (group+1)*timeTileWidth)
		if first >= s.size {
			return store.ErrStopScan
		}
		if groupsLeft == 0 {
			s.cursor(last)
			return store.ErrStopScan
		}
		groupsLeft--
		if span.max < lo || span.min > hi {
			last = end - 1
			return nil
		}
		return s.tx.Scan(bucketEntries, nil, entryKey(first), func(k, v []byte) error {
			index, err := keyIndex(k, 0)
			if err != nil {
				return err
			}
			if index >= end {
				return store.ErrStopScan
			}
			if s.full() {
				return errPageDone
			}
			if s.entriesLeft == 0 {
				s.cursor(last)
				return errPageDone
			}
			s.entriesLeft--
			if err := s.tick(); err != nil {
				return err
			}
			t, err := entryTime(v)
			if err != nil {
				return fmt.Errorf("entry %d: %w", index, err)
			}
			last = index
			if s.q.matchesTime(t) {
				s.res = append(s.res, index)
			}
			return nil
		})
	})
	if errors.Is(err, errPageDone) {
		return nil
	}
	return err // at the end of the scan, every candidate was examined
}

// errPageDone ends the outer scan of timeSpans from the inner one.
var errPageDone = errors.New("page done")
