package audit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/store"
)

var searchBase = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// searchEntry returns entry n of the search tests: actors, subjects,
// parties, types, decisions, delegations and times overlapping in
// various ways, times not quite in order.
func searchEntry(n int) Entry {
	t := searchBase.Add(time.Duration(n) * time.Second)
	if n%7 == 3 {
		t = t.Add(-5 * time.Second)
	}
	e := Entry{
		Time:  t,
		Type:  []string{"svid.issued", "node.attested", "agent.registered"}[n%3],
		Actor: fmt.Sprintf("spiffe://org-a.example/node/n%d", n%4),
	}
	if n%11 == 0 {
		e.Actor = ActorSystem
	}
	switch {
	case n%13 == 0:
		e.Subject = e.Actor
	case n%3 == 0:
		e.Subject = fmt.Sprintf("spiffe://org-a.example/agent/a%d", n%5)
	case n%3 == 1:
		e.Subject = fmt.Sprintf("token-%d", n)
	}
	if n%4 == 0 {
		e.Accountable = []Party{{SPIFFEID: spiffeid.RequireFromString(fmt.Sprintf("spiffe://org-a.example/agent/a%d", n%6)), Operator: "ops"}}
	}
	if n%5 == 0 {
		e.DecisionID = fmt.Sprintf("dec-%d", n%10)
	}
	if n%2 == 1 {
		e.DelegationID = fmt.Sprintf("del-%d", n%6)
	}
	return e
}

// appendAll appends entries from 8 goroutines (so their indexes are in
// no particular order) and returns the log's entries, decoded, by index.
func appendAll(t testing.TB, l *running, entries []Entry) []Entry {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(entries); i += 8 {
				if _, err := l.Append(t.Context(), entries[i]); err != nil {
					t.Errorf("Append(%d) = %v, want nil", i, err)
				}
			}
		})
	}
	wg.Wait()
	return logEntries(t, l.Log)
}

// logEntries reads and decodes every entry of the log.
func logEntries(t testing.TB, l *Log) []Entry {
	t.Helper()
	var out []Entry
	for i := range l.Size() {
		b, err := l.Entry(t.Context(), i)
		if err != nil {
			t.Fatalf("Entry(%d) = %v", i, err)
		}
		e, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Entry(%d)) = %v", i, err)
		}
		out = append(out, e)
	}
	return out
}

// want is the reference search: every entry checked against q, written
// independently of the package's matching.
func want(entries []Entry, q Query) []uint64 {
	var out []uint64
	for i, e := range entries {
		if q.SPIFFEID != "" {
			ok := e.Actor == q.SPIFFEID ||
				(e.Subject == q.SPIFFEID && strings.HasPrefix(e.Subject, "spiffe://"))
			for _, p := range e.Accountable {
				ok = ok || p.SPIFFEID.String() == q.SPIFFEID
			}
			if !ok {
				continue
			}
		}
		if (q.Type != "" && e.Type != q.Type) ||
			(q.DecisionID != "" && e.DecisionID != q.DecisionID) ||
			(q.DelegationID != "" && e.DelegationID != q.DelegationID) ||
			(!q.Since.IsZero() && e.Time.Before(q.Since)) ||
			(!q.Until.IsZero() && !e.Time.Before(q.Until)) {
			continue
		}
		out = append(out, uint64(i))
	}
	return out
}

// searchAll pages through q with the given limit and returns every index
// found and the number of calls. It checks that pages are ascending,
// within the limit, and that cursors move forward.
func searchAll(t *testing.T, l *Log, q Query, limit int) ([]uint64, int) {
	t.Helper()
	q.Limit = limit
	var all []uint64
	for calls := 1; ; calls++ {
		if calls > int(l.Size())+2 {
			t.Fatalf("Search(%+v): still paging after %d calls", q, calls)
		}
		got, next, err := l.Search(t.Context(), q)
		if err != nil {
			t.Fatalf("Search(%+v) = %v, want nil", q, err)
		}
		if max := cmp.Or(limit, DefaultSearchLimit); len(got) > max {
			t.Fatalf("Search(%+v) = %d indexes, more than the limit %d", q, len(got), max)
		}
		for _, i := range got {
			if (len(all) > 0 && i <= all[len(all)-1]) || (q.HasAfter && i <= q.After) {
				t.Fatalf("Search(%+v) = %v: not ascending after %v (cursor %d)", q, got, all, q.After)
			}
			all = append(all, i)
		}
		if next == nil {
			return all, calls
		}
		if (q.HasAfter && *next <= q.After) || (len(got) > 0 && *next < got[len(got)-1]) || *next >= l.Size() {
			t.Fatalf("Search(%+v) = %v, next %d: the cursor does not move forward", q, got, *next)
		}
		q.After, q.HasAfter = *next, true
	}
}

// checkQueries checks every query at several page sizes against want.
func checkQueries(t *testing.T, l *Log, entries []Entry, queries []Query) {
	t.Helper()
	for _, q := range queries {
		w := want(entries, q)
		for _, limit := range []int{1, 3, 7, 0, MaxSearchLimit} {
			got, _ := searchAll(t, l, q, limit)
			if !slices.Equal(got, w) {
				t.Errorf("Search(%+v) with limit %d = %v, want %v", q, limit, got, w)
			}
		}
	}
}

func searchQueries() []Query {
	at := func(s int) time.Time { return searchBase.Add(time.Duration(s) * time.Second) }
	td := "spiffe://org-a.example/"
	return []Query{
		{},
		{SPIFFEID: td + "node/n0"},
		{SPIFFEID: td + "node/n3"},
		{SPIFFEID: td + "agent/a0"},
		{SPIFFEID: td + "agent/a5"},
		{SPIFFEID: ActorSystem},
		{SPIFFEID: td + "nobody"},
		{Type: "svid.issued"},
		{Type: "agent.registered"},
		{Type: "never.happened"},
		{DecisionID: "dec-0"},
		{DecisionID: "dec-5"},
		{DecisionID: "dec-9"},
		{DelegationID: "del-1"},
		{DelegationID: "del-5"},
		{Since: at(50), Until: at(60)},
		{Since: at(50), Until: at(50)},
		{Since: at(10)},
		{Until: at(200)},
		{Since: at(-100), Until: at(10000)},
		{SPIFFEID: td + "node/n1", Type: "node.attested"},
		{SPIFFEID: td + "agent/a0", Type: "svid.issued"},
		{SPIFFEID: td + "node/n0", Type: "never.happened"},
		{DecisionID: "dec-0", Type: "svid.issued"},
		{DecisionID: "dec-5", SPIFFEID: td + "node/n1"},
		{SPIFFEID: td + "agent/a1", Since: at(20), Until: at(200)},
		{Type: "node.attested", DelegationID: "del-1", Since: at(30)},
		{SPIFFEID: td + "node/n1", DelegationID: "del-3"},
		{DecisionID: "dec-0", DelegationID: "del-1"},
		{Type: "svid.issued", Until: at(100)},
	}
}

func TestSearch(t *testing.T) {
	const n = 300
	s, path := tempStore(t)
	l := start(t, testConfig(s))
	var in []Entry
	for i := range n {
		in = append(in, searchEntry(i))
	}
	entries := appendAll(t, l, in)
	queries := searchQueries()
	checkQueries(t, l.Log, entries, queries)

	// Cursors in the middle, and at or past the end.
	q := Query{Type: "svid.issued", Limit: 5, After: 150, HasAfter: true}
	got, _ := searchAll(t, l.Log, q, 5)
	if w := want(entries, Query{Type: "svid.issued"}); !slices.Equal(got, slices.DeleteFunc(w, func(i uint64) bool { return i <= 150 })) {
		t.Errorf("Search(%+v) = %v, want %v", q, got, w)
	}
	for _, after := range []uint64{n - 1, n, n + 10, 1<<64 - 1} {
		got, next, err := l.Search(t.Context(), Query{After: after, HasAfter: true})
		if len(got) != 0 || next != nil || err != nil {
			t.Errorf("Search(After %d) = %v, %v, %v, want nothing", after, got, next, err)
		}
	}

	// The default page size, and a page ending at the end of the log.
	got, next, err := l.Search(t.Context(), Query{})
	if err != nil || len(got) != DefaultSearchLimit || next == nil || *next != DefaultSearchLimit-1 {
		t.Errorf("Search({}) = %d indexes, next %v, %v; want %d, %d", len(got), next, err, DefaultSearchLimit, DefaultSearchLimit-1)
	}
	got, next, err = l.Search(t.Context(), Query{After: n - 11, HasAfter: true, Limit: 10})
	if err != nil || len(got) != 10 || next != nil {
		t.Errorf("Search(last 10) = %v, next %v, %v; want 10 indexes, no next", got, next, err)
	}

	// The indexes are durable: they survive a reopen.
	l.stop(t)
	l = start(t, testConfig(openAgain(t, s, path)))
	checkQueries(t, l.Log, entries, queries[:12])
}

// TestSearchBoundedWork checks that a query whose candidates never match
// returns empty pages with a cursor instead of scanning the whole log,
// reading at most 10×Limit entries per call.
func TestSearchBoundedWork(t *testing.T) {
	s, _ := tempStore(t)
	cs := &countingStore{Store: s}
	l := start(t, testConfig(cs))
	var in []Entry
	for i := range 400 {
		in = append(in, searchEntry(i))
	}
	entries := appendAll(t, l, in)
	td := "spiffe://org-a.example/"
	at := func(s int) time.Time { return searchBase.Add(time.Duration(s) * time.Second) }
	// Per call, at most 10×Limit entries are read, and one more looked at
	// to stop a scan.
	const maxGets = scanEntries + 1
	for _, q := range []Query{
		{SPIFFEID: td + "node/n0", Type: "never.happened"},
		{Type: "svid.issued", Since: at(390)},
		{Since: at(390)}, // a narrow range: the time index
		{Since: at(1)},   // a wide one: log order
		{Until: at(10)},
		{Since: at(200), Until: at(205)},
	} {
		w := want(entries, q)
		got, calls := searchAll(t, l.Log, q, 1)
		if !slices.Equal(got, w) {
			t.Errorf("Search(%+v) = %v, want %v", q, got, w)
		}
		if n := cs.maxGets.Load(); n > maxGets {
			t.Errorf("Search(%+v): a call read %d entries, want at most %d", q, n, maxGets)
		}
		// The time index's keys (100×Limit, and one to stop), then as many
		// time spans, or the exact index's candidates.
		if n := cs.maxKeys.Load(); n > 2*(scanKeys+1) {
			t.Errorf("Search(%+v): a call scanned %d index keys, want at most %d", q, n, 2*(scanKeys+1))
		}
		t.Logf("%+v: %d results in %d calls; at most %d entries read, %d keys scanned in a call", q, len(got), calls, cs.maxGets.Load(), cs.maxKeys.Load())
		cs.reset()
	}
	// Two criteria that no entry has both: the one that never occurs
	// ends the search at once; two whose entries interleave are walked
	// together, a bounded number of look-ups per call, paging on.
	if got, calls := searchAll(t, l.Log, Query{SPIFFEID: td + "node/n0", Type: "never.happened"}, 1); len(got) != 0 || calls != 1 {
		t.Errorf("a query one of whose values no entry has: %v in %d calls, want nothing in one call", got, calls)
	}
	cs.reset()
	if got, calls := searchAll(t, l.Log, Query{Type: "svid.issued", DelegationID: "del-1"}, 1); len(got) != 0 || calls < 5 {
		t.Errorf("a query of two values ~130 entries each have, none both: %v in %d calls, want nothing, paged", got, calls)
	}
	if n := cs.maxKeys.Load(); n > scanEntries+4 {
		t.Errorf("a call of a query of two interleaving values scanned %d index keys, want at most %d", n, scanEntries+4)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := l.Search(ctx, Query{Since: at(1)}); !errors.Is(err, context.Canceled) {
		t.Errorf("Search(canceled) = %v, want %v", err, context.Canceled)
	}
}

// countingStore counts, per View, the entries read (by Get or Scan) and
// the other keys Scans hand out, and keeps the largest counts.
type countingStore struct {
	store.Store
	maxGets, maxKeys atomicMax
}

type atomicMax struct {
	mu sync.Mutex
	v  int64
}

func (m *atomicMax) observe(v int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.v = max(m.v, v)
}

func (m *atomicMax) Load() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.v
}

func (m *atomicMax) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.v = 0
}

func (c *countingStore) reset() {
	c.maxGets.reset()
	c.maxKeys.reset()
}

func (c *countingStore) View(ctx context.Context, fn func(store.Tx) error) error {
	return c.Store.View(ctx, func(tx store.Tx) error {
		ct := &countingTx{Tx: tx}
		err := fn(ct)
		c.maxGets.observe(ct.gets)
		c.maxKeys.observe(ct.keys)
		return err
	})
}

type countingTx struct {
	store.Tx
	gets, keys int64
}

func (t *countingTx) Get(bucket string, key []byte) ([]byte, error) {
	if bucket == bucketEntries {
		t.gets++
	}
	return t.Tx.Get(bucket, key)
}

func (t *countingTx) Scan(bucket string, prefix, start []byte, fn func(k, v []byte) error) error {
	return t.Tx.Scan(bucket, prefix, start, func(k, v []byte) error {
		if bucket == bucketEntries {
			t.gets++
		} else {
			t.keys++
		}
		return fn(k, v)
	})
}

func TestSearchBadQueries(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	if _, err := l.Append(t.Context(), searchEntry(1)); err != nil {
		t.Fatal(err)
	}
	long := "spiffe://org-a.example/" + strings.Repeat("a", MaxQueryLen)
	for _, q := range []Query{
		{Limit: -1},
		{Limit: MaxSearchLimit + 1},
		{Since: searchBase.Add(time.Second), Until: searchBase},
		{SPIFFEID: long},
		{DecisionID: strings.Repeat("d", MaxQueryLen+1)},
		{DelegationID: strings.Repeat("d", MaxQueryLen+1)},
		{Type: strings.Repeat("t", MaxQueryLen+1)},
		{DecisionID: "\xff"},
		{SPIFFEID: "not a spiffe id"},
		{SPIFFEID: "spiffe://Org-A.example/x"},
		{SPIFFEID: "spiffe://org-a.example/a/../b"},
		{Type: "Svid.Issued"},
		{Type: "svid..issued"},
		{After: 3},
	} {
		if got, next, err := l.Search(t.Context(), q); !errors.Is(err, ErrBadQuery) {
			t.Errorf("Search(%+v) = %v, %v, %v, want %v", q, got, next, err, ErrBadQuery)
		}
	}
	for _, q := range []Query{
		{Limit: MaxSearchLimit},
		{DecisionID: strings.Repeat("d", MaxQueryLen)},
		{Since: searchBase, Until: searchBase},
		{SPIFFEID: ActorSystem},
	} {
		if _, _, err := l.Search(t.Context(), q); err != nil {
			t.Errorf("Search(%+v) = %v, want nil", q, err)
		}
	}
}

// TestSearchFailedBatchNotIndexed checks that the entries of a failed
// commit leave nothing in the indexes, and that index keys beyond the
// checkpoint's size are ignored.
func TestSearchFailedBatchNotIndexed(t *testing.T) {
	s, _ := tempStore(t)
	fs := &faultStore{Store: s}
	l := start(t, testConfig(fs))
	td := "spiffe://org-a.example/"
	entry := func(n int, id string) Entry {
		e := searchEntry(n)
		e.Actor, e.DecisionID, e.DelegationID = td+"actor/"+id, "dec-"+id, "del-"+id
		return e
	}
	for i, x := range []fault{pass, failBefore, failInside, pass, retried, pass} {
		fs.once(x)
		_, err := l.Append(t.Context(), entry(i, fmt.Sprint(i)))
		if (err != nil) != (x == failBefore || x == failInside) {
			t.Fatalf("Append(%d) with fault %d = %v", i, x, err)
		}
		// What /healthz shows of it: the latest commit failed, until one
		// succeeds.
		if failed := !l.Stats().FailedAt.IsZero(); failed != (err != nil) {
			t.Errorf("after Append(%d) = %v: Stats().FailedAt set %v", i, err, failed)
		}
	}
	// What /metrics shows of it: the failed commits, and the entries
	// durable.
	if st := l.Stats(); st.Failures != 2 || st.Size != 4 {
		t.Errorf("Stats() = %+v, want 2 failures and size 4", st)
	}
	for i, wantIdx := range [][]uint64{{0}, nil, nil, {1}, {2}, {3}} {
		id := fmt.Sprint(i)
		e := entry(i, id)
		for _, q := range []Query{{SPIFFEID: td + "actor/" + id}, {DecisionID: "dec-" + id}, {DelegationID: "del-" + id},
			{Since: e.Time, Until: e.Time.Add(time.Nanosecond)}} {
			got, _, err := l.Search(t.Context(), q)
			if err != nil || !slices.Equal(got, wantIdx) {
				t.Errorf("Search(%+v) = %v, %v, want %v", q, got, err, wantIdx)
			}
		}
	}

	// Keys for entries the checkpoint does not cover (yet) are skipped.
	err := s.Update(t.Context(), func(tx store.Tx) error {
		return errors.Join(
			tx.Put(bucketIdxDecisionID, valueKey("dec-0", 4), nil),
			tx.Put(bucketIdxTime, timeKey(entry(0, "0").Time, 4), nil),
			tx.Put(bucketIdxSPIFFEID, valueKey(td+"actor/0", 9), nil))
	})
	if err != nil {
		t.Fatal(err)
	}
	e0 := entry(0, "0")
	for _, q := range []Query{{DecisionID: "dec-0"}, {SPIFFEID: td + "actor/0"}, {Since: e0.Time, Until: e0.Time.Add(time.Nanosecond)}} {
		if got, _, err := l.Search(t.Context(), q); err != nil || !slices.Equal(got, []uint64{0}) {
			t.Errorf("Search(%+v) = %v, %v, want [0]", q, got, err)
		}
	}
}

// TestSearchValues checks values that need escaping in index keys, and
// times at and beyond the ends of the time index's range.
func TestSearchValues(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	decisions := []string{"a", "a\x00", "a\x00b", "a\x01", "a\x01\x00", "\x00", "\x01", "ab", "a b"}
	times := []time.Time{
		time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Unix(0, 0).UTC(),
		time.Date(2262, 4, 11, 23, 47, 16, 854775807, time.UTC), // MaxInt64 ns
		time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	}
	var in []Entry
	for i, d := range decisions {
		e := searchEntry(i)
		e.DecisionID, e.Time = d, times[i%len(times)]
		in = append(in, e)
	}
	entries := appendAll(t, l, in)
	var queries []Query
	for _, d := range decisions {
		queries = append(queries, Query{DecisionID: d})
	}
	for _, a := range times {
		for _, b := range times {
			if !b.Before(a) {
				queries = append(queries, Query{Since: a, Until: b}, Query{Since: a.Add(time.Nanosecond), Until: b.Add(time.Nanosecond)})
			}
		}
		queries = append(queries, Query{Since: a}, Query{Until: a}, Query{Since: a, Type: "svid.issued"})
	}
	checkQueries(t, l.Log, entries, queries)
}

// TestSearchWithIndexHook checks that the built-in indexes and a caller's
// Config.Index are written together.
func TestSearchWithIndexHook(t *testing.T) {
	s, _ := tempStore(t)
	cfg := testConfig(s)
	calls := 0
	cfg.Index = func(tx store.Tx, index uint64, e Entry, _ []byte) error {
		calls++
		return tx.Put("test_extra", entryKey(index), []byte(e.Type))
	}
	l := start(t, cfg)
	entries := appendAll(t, l, []Entry{searchEntry(0), searchEntry(1), searchEntry(2)})
	checkQueries(t, l.Log, entries, []Query{{Type: "svid.issued"}, {SPIFFEID: ActorSystem}})
	if calls != 3 {
		t.Errorf("Config.Index called %d times, want 3", calls)
	}
}

// FuzzSearch checks that Search never panics, refuses only with
// ErrBadQuery, and that every page it returns is exactly the matching
// entries between the cursor and the next one.
func FuzzSearch(f *testing.F) {
	s, _ := tempStore(f)
	l := start(f, testConfig(s))
	var in []Entry
	for i := range 120 {
		in = append(in, searchEntry(i))
	}
	entries := appendAll(f, l, in)
	td := "spiffe://org-a.example/"
	f.Add(td+"node/n1", "", "", "", int64(0), int64(0), uint64(0), false, 0)
	f.Add("", "svid.issued", "", "", int64(10), int64(50), uint64(7), true, 3)
	f.Add(td+"agent/a0", "node.attested", "dec-0", "del-1", int64(-5), int64(0), uint64(0), false, 1)
	f.Add("", "", "", "", int64(100), int64(90), uint64(0), false, 0)
	f.Add("", "", "a\x00", "", int64(0), int64(1), uint64(1<<63), true, 500)
	f.Fuzz(func(t *testing.T, id, typ, dec, del string, since, until int64, after uint64, hasAfter bool, limit int) {
		at := func(s int64) time.Time {
			if s == 0 {
				return time.Time{}
			}
			return searchBase.Add(time.Duration(s%1_000_000) * time.Second)
		}
		q := Query{SPIFFEID: id, Type: typ, DecisionID: dec, DelegationID: del,
			Since: at(since), Until: at(until), After: after, HasAfter: hasAfter, Limit: limit}
		got, next, err := l.Search(t.Context(), q)
		if err != nil {
			if !errors.Is(err, ErrBadQuery) {
				t.Fatalf("Search(%+v) = %v, want nil or %v", q, err, ErrBadQuery)
			}
			return
		}
		if len(got) > cmp.Or(limit, DefaultSearchLimit) {
			t.Fatalf("Search(%+v) = %d indexes, more than the limit", q, len(got))
		}
		var w []uint64
		for _, i := range want(entries, q) {
			if (!hasAfter || i > after) && (next == nil || i <= *next) {
				w = append(w, i)
			}
		}
		if !slices.Equal(got, w) {
			t.Fatalf("Search(%+v) = %v, next %v, want %v", q, got, next, w)
		}
	})
}

// TestLongValuesDoNotFailTheCommit appends, with ordinary entries, one
// whose indexed values (actor, subject, accountable party, decision and
// delegation ids) are far longer than a search may ask for: every entry
// of the round is logged, and each is found by the values a search can
// name.
func TestLongValuesDoNotFailTheCommit(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	longID := "spiffe://org-a.example/" + strings.Repeat("a", 40000)
	var entries []Entry
	for i, set := range []func(*Entry){
		func(e *Entry) { e.Actor = longID },
		func(e *Entry) { e.Subject = longID },
		func(e *Entry) { e.Accountable = []Party{{SPIFFEID: spiffeid.RequireFromString(longID)}} },
		func(e *Entry) { e.DecisionID = strings.Repeat("d", 40000) },
		func(e *Entry) { e.DelegationID = strings.Repeat("d", 40000) },
	} {
		e := searchEntry(2 * i)
		set(&e)
		entries = append(entries, e, searchEntry(2*i+1))
	}
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Go(func() {
			if _, err := l.Append(t.Context(), e); err != nil {
				t.Errorf("Append(entry %d) = %v, want nil", i, err)
			}
		})
	}
	wg.Wait()
	if st := l.Stats(); st.Failures != 0 || l.Size() != uint64(len(entries)) {
		t.Fatalf("%d commits failed, log size %d; want none failed, size %d", st.Failures, l.Size(), len(entries))
	}
	stored := logEntries(t, l.Log)
	checkQueries(t, l.Log, stored, []Query{{Type: "svid.issued"}, {SPIFFEID: searchEntry(1).Actor}, {SPIFFEID: ActorSystem}, {DecisionID: "dec-0"}, {Since: searchBase}})
}

// TestSearchLongSPIFFEID finds the entries of a SPIFFE ID as long as the
// SPIFFE ID standard allows (2048 bytes), as a registration may have.
func TestSearchLongSPIFFEID(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	id := "spiffe://org-a.example/agent/" + strings.Repeat("a", 2048-len("spiffe://org-a.example/agent/"))
	var entries []Entry
	for i := range 6 {
		e := searchEntry(i)
		switch i % 3 {
		case 0:
			e.Actor = id
		case 1:
			e.Accountable = []Party{{SPIFFEID: spiffeid.RequireFromString(id)}}
		}
		entries = append(entries, e)
	}
	stored := appendAll(t, l, entries)
	checkQueries(t, l.Log, stored, []Query{{SPIFFEID: id}, {SPIFFEID: id, Type: "svid.issued"}})
}
