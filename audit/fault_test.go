package audit

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"mandate.dev/mandate/store"
)

var errInjected = errors.New("injected store failure")

// fault is what faultStore does with one Update.
type fault int

const (
	pass          fault = iota // run it normally
	failBefore                 // fail without calling fn: nothing written
	failInside                 // call fn, then fail the transaction: rolled back
	failPersisted              // commit, then report failure ("error but persisted")
	retried                    // call fn in a transaction that is rolled back, then again: succeeds
)

// faultStore is a fault-injecting fake store.Store: it passes everything
// to a real store, except the Updates its plan tells it to fail, and a
// number of Views it is told to fail.
type faultStore struct {
	store.Store

	mu        sync.Mutex
	plan      func() fault // nil: pass
	failViews int          // the next failViews Views fail
}

func (f *faultStore) setPlan(plan func() fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plan = plan
}

// once makes the next Update do x, and the later ones pass.
func (f *faultStore) once(x fault) {
	done := false
	f.setPlan(func() fault {
		if done {
			return pass
		}
		done = true
		return x
	})
}

// failNextViews makes n more Views fail. It adds to the failures still
// pending: a caller is woken before the sequencer's re-read after a failed
// commit, so that re-read may not have consumed its failure yet.
func (f *faultStore) failNextViews(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failViews += n
}

func (f *faultStore) View(ctx context.Context, fn func(store.Tx) error) error {
	f.mu.Lock()
	fail := f.failViews > 0
	if fail {
		f.failViews--
	}
	f.mu.Unlock()
	if fail {
		return errInjected
	}
	return f.Store.View(ctx, fn)
}

func (f *faultStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	f.mu.Lock()
	x := pass
	if f.plan != nil {
		x = f.plan()
	}
	f.mu.Unlock()
	switch x {
	case failBefore:
		return errInjected
	case failInside:
		return f.Store.Update(ctx, func(tx store.Tx) error {
			return errors.Join(fn(tx), errInjected)
		})
	case failPersisted:
		if err := f.Store.Update(ctx, fn); err != nil {
			return err
		}
		return errInjected
	case retried:
		errRetry := errors.New("serialization failure")
		err := f.Store.Update(ctx, func(tx store.Tx) error {
			return errors.Join(fn(tx), errRetry)
		})
		if !errors.Is(err, errRetry) {
			return err
		}
	}
	return f.Store.Update(ctx, fn)
}

// TestStoreFaultsSequential walks through each kind of failure: the
// failed append is not acknowledged, and the next one takes the right
// index.
func TestStoreFaultsSequential(t *testing.T) {
	s, path := tempStore(t)
	fs := &faultStore{Store: s}
	l := start(t, testConfig(fs))

	var cps [][]byte
	appendAt := func(n int, want uint64) {
		t.Helper()
		e := testEntry(n, 10)
		r, err := l.Append(t.Context(), e)
		if err != nil {
			t.Fatalf("Append(%d) = %v, want nil", n, err)
		}
		if r.Index != want {
			t.Fatalf("Append(%d) = index %d, want %d", n, r.Index, want)
		}
		checkReceipt(t, r, mustEncode(t, e))
		cps = append(cps, r.Checkpoint)
	}
	appendFails := func(n int) {
		t.Helper()
		if r, err := l.Append(t.Context(), testEntry(n, 10)); !errors.Is(err, errInjected) {
			t.Fatalf("Append(%d) = %+v, %v, want %v", n, r, err, errInjected)
		}
	}

	appendAt(0, 0)
	fs.once(failBefore)
	appendFails(1)
	appendAt(2, 1)
	fs.once(failInside)
	appendFails(3)
	appendAt(4, 2)
	fs.once(failPersisted)
	appendFails(5) // persisted at index 3
	appendAt(6, 4)
	fs.once(failPersisted)
	fs.failNextViews(1) // the re-read after the failure fails too
	appendFails(7)      // persisted at index 5
	fs.failNextViews(1) // so does the next round's
	appendFails(8)
	appendAt(9, 6)
	fs.once(retried)
	appendAt(10, 7)

	want := map[uint64]int{0: 0, 1: 2, 2: 4, 3: 5, 4: 6, 5: 7, 6: 9, 7: 10}
	for index, n := range want {
		got, err := l.Entry(t.Context(), index)
		if err != nil || !bytes.Equal(got, mustEncode(t, testEntry(n, 10))) {
			t.Errorf("Entry(%d) = %q, %v, want entry %d", index, got, err, n)
		}
	}
	if got := l.Size(); got != uint64(len(want)) {
		t.Errorf("Size() = %d, want %d", got, len(want))
	}
	checkAllConsistent(t, l.Log, cps)

	l.stop(t)
	l = start(t, testConfig(openAgain(t, s, path)))
	if got := l.Size(); got != uint64(len(want)) {
		t.Errorf("Size() after reopen = %d, want %d", got, len(want))
	}
	checkAllConsistent(t, l.Log, cps)
}

// TestStoreFaultsConcurrent appends from many goroutines while Updates
// fail at random in every way: every acknowledged entry is in the log at
// its index, and every checkpoint handed out is consistent with the last.
func TestStoreFaultsConcurrent(t *testing.T) {
	const writers, each = 32, 30
	s, path := tempStore(t)
	fs := &faultStore{Store: s}
	l := start(t, testConfig(fs))
	rnd := rand.New(rand.NewPCG(5, 6))
	fs.setPlan(func() fault {
		if rnd.IntN(3) == 0 {
			return fault(1 + rnd.IntN(4))
		}
		return pass
	})

	type acked struct {
		r    Receipt
		data []byte
	}
	var (
		mu     sync.Mutex
		ok     []acked
		failed int
		wg     sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := testEntry(w*each+i, 100)
				r, err := l.Append(t.Context(), e)
				mu.Lock()
				switch {
				case err == nil:
					ok = append(ok, acked{r, mustEncode(t, e)})
				case errors.Is(err, errInjected):
					failed++
				default:
					t.Errorf("Append() = %v, want nil or %v", err, errInjected)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fs.setPlan(nil)
	if failed == 0 || len(ok) == 0 {
		t.Fatalf("%d appends acknowledged, %d failed: want some of each", len(ok), failed)
	}

	seen := map[uint64]bool{}
	var cps [][]byte
	for _, a := range ok {
		checkReceipt(t, a.r, a.data)
		if seen[a.r.Index] {
			t.Fatalf("index %d acknowledged twice", a.r.Index)
		}
		seen[a.r.Index] = true
		got, err := l.Entry(t.Context(), a.r.Index)
		if err != nil || !bytes.Equal(got, a.data) {
			t.Fatalf("Entry(%d) = %q, %v, want the acknowledged entry", a.r.Index, got, err)
		}
		cps = append(cps, a.r.Checkpoint)
	}
	size := l.Size()
	if size < uint64(len(ok)) || size > uint64(len(ok)+failed) {
		t.Errorf("Size() = %d, want between %d acknowledged and %d appended", size, len(ok), len(ok)+failed)
	}
	for i := range size {
		if b, err := l.Entry(t.Context(), i); err != nil {
			t.Fatalf("Entry(%d) = %v, want nil", i, err)
		} else if _, err := Decode(b); err != nil {
			t.Fatalf("Decode(Entry(%d)) = %v, want nil", i, err)
		}
	}
	checkAllConsistent(t, l.Log, cps)
	t.Logf("%d acknowledged, %d failed, size %d", len(ok), failed, size)

	l.stop(t)
	l = start(t, testConfig(openAgain(t, s, path)))
	if got := l.Size(); got != size {
		t.Errorf("Size() after reopen = %d, want %d", got, size)
	}
	checkAllConsistent(t, l.Log, cps)
}

// openAgain closes s and opens the file at path again.
func openAgain(t *testing.T, s store.Store, path string) store.Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return openBolt(t, path)
}

// checkAllConsistent checks that each checkpoint is consistent with the
// log's latest.
func checkAllConsistent(t *testing.T, l *Log, cps [][]byte) {
	t.Helper()
	last := openCheckpoint(t, l.Checkpoint())
	for _, b := range cps {
		cp := openCheckpoint(t, b)
		checkConsistency(t, l, cp.Size, last.Size, cp.Hash, last.Hash)
		root, err := rootAt(t.Context(), l, cp.Size)
		if err != nil || !bytes.Equal(root, cp.Hash) {
			t.Errorf("rootAt(%d) = %x, %v, want %x, nil", cp.Size, root, err, cp.Hash)
		}
	}
}

// TestRunRefusesStateGoingBackwards rolls the stored log back (to a
// consistent earlier state) under a running log; at the next failed commit
// the sequencer re-reads it, and stops with ErrCorrupt instead of reusing
// acknowledged indexes.
func TestRunRefusesStateGoingBackwards(t *testing.T) {
	s, _ := tempStore(t)
	fs := &faultStore{Store: s}
	l, err := Open(t.Context(), testConfig(fs))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(t.Context()) }()
	var old map[string][]byte
	for i := range 10 {
		if _, err := l.Append(t.Context(), testEntry(i, 0)); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			old = rawState(t, s)
		}
	}
	err = s.Update(t.Context(), func(tx store.Tx) error {
		for k, v := range old {
			if err := tx.Put(bucketState, []byte(k), v); err != nil {
				return err
			}
		}
		for i := range uint64(5) {
			if err := tx.Delete(bucketEntries, entryKey(5+i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fs.once(failBefore)
	if _, err := l.Append(t.Context(), testEntry(10, 0)); !errors.Is(err, errInjected) {
		t.Fatalf("Append() = %v, want %v", err, errInjected)
	}
	if err := <-done; !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Run() = %v, want %v", err, ErrCorrupt)
	}
	if _, err := l.Append(t.Context(), testEntry(11, 0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append() after Run failed = %v, want %v", err, ErrClosed)
	}
	if got := l.Size(); got != 10 {
		t.Errorf("Size() = %d, want 10 (never backwards)", got)
	}
}

// TestFailedReReadIsAFailure: after a failed commit, rounds whose re-read
// of the stored log fails refuse their appends, and are counted as
// failures with their time (Stats.Failures, Stats.FailedAt), as a failed
// commit is: while the store cannot be read the log records nothing, and
// /healthz, which reads FailedAt, must keep saying so.
func TestFailedReReadIsAFailure(t *testing.T) {
	s, _ := tempStore(t)
	fs := &faultStore{Store: s}
	l := start(t, testConfig(fs))
	if _, err := l.Append(t.Context(), testEntry(0, 0)); err != nil {
		t.Fatal(err)
	}
	fs.once(failInside)
	fs.failNextViews(3) // the re-read after the failure, and the next two rounds'
	if _, err := l.Append(t.Context(), testEntry(1, 0)); !errors.Is(err, errInjected) {
		t.Fatalf("Append(1) = %v, want %v", err, errInjected)
	}
	first := l.Stats()
	if first.Failures != 1 || first.FailedAt.IsZero() {
		t.Fatalf("after a failed commit: Stats() = %+v, want 1 failure with its time", first)
	}
	prev := first
	for n := 2; n <= 3; n++ {
		if _, err := l.Append(t.Context(), testEntry(n, 0)); !errors.Is(err, errInjected) {
			t.Fatalf("Append(%d) = %v, want %v (the stored log cannot be re-read)", n, err, errInjected)
		}
		st := l.Stats()
		if st.Failures != prev.Failures+1 || !st.FailedAt.After(prev.FailedAt) {
			t.Errorf("after Append(%d) refused (re-read failed): Failures %d, FailedAt %v; want %d, after %v",
				n, st.Failures, st.FailedAt, prev.Failures+1, prev.FailedAt)
		}
		prev = st
	}
	// The store reads again: the next round re-reads it and commits.
	if r, err := l.Append(t.Context(), testEntry(4, 0)); err != nil || r.Index != 1 {
		t.Fatalf("Append(4) = index %d, %v; want index 1, nil", r.Index, err)
	}
	if st := l.Stats(); !st.FailedAt.IsZero() || st.Failures != 3 {
		t.Errorf("after a commit: Stats() = %+v, want 3 failures, FailedAt zero", st)
	}
}

// TestRefusedChangesClearTheFailure: after a failed commit, a round whose
// appends are all refused by their own changes (AppendWith) has reached
// the store (its transaction read the stored log as the sequencer holds
// it, and wrote the entries before the change refused): the store works
// again, and Stats.FailedAt, which /healthz reads, must say so by the
// time the refused callers hear of their refusal. A change's refusal is
// its caller's error, not the store's: it is not a failure.
func TestRefusedChangesClearTheFailure(t *testing.T) {
	refused := errors.New("no such thing")
	refuse := func(tx store.Tx) error {
		if err := tx.Put("changes", []byte("k"), []byte("v")); err != nil {
			return err
		}
		return refused
	}
	for _, tc := range []struct {
		name    string
		fault   fault
		refused int // appends in the round after the failure, all refused
	}{
		{"nothing written, one refused", failBefore, 1},
		{"rolled back, one refused", failInside, 1},
		{"kept though reported failed, one refused", failPersisted, 1},
		{"rolled back, two refused in one round", failInside, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := tempStore(t)
			fs := &faultStore{Store: s}
			cfg := testConfig(fs)
			cfg.GroupWait = forever
			l := start(t, cfg)
			if _, err := l.Append(appendCtx(t, t.Context()), testEntry(0, 0)); err != nil {
				t.Fatal(err)
			}
			fs.once(tc.fault)
			if _, err := l.Append(appendCtx(t, t.Context()), testEntry(1, 0)); !errors.Is(err, errInjected) {
				t.Fatalf("Append(1) = %v, want %v", err, errInjected)
			}
			failed := l.Stats()
			if failed.Failures != 1 || failed.FailedAt.IsZero() {
				t.Fatalf("after a failed commit: Stats() = %+v, want 1 failure with its time", failed)
			}

			// The round after: every append of it refused by its change.
			// The first ones are held in the round (GroupWait) until the
			// last, expected, appends.
			type answer struct {
				err error
				st  Stats
			}
			answers := make(chan answer, tc.refused)
			appendRefused := func(ctx context.Context, n int) {
				_, err := l.AppendWith(appendCtx(t, ctx), testEntry(n, 0), refuse)
				answers <- answer{err, l.Stats()}
			}
			last, end := l.Expect(t.Context())
			defer end()
			for n := range tc.refused - 1 {
				go appendRefused(t.Context(), 2+n)
			}
			if tc.refused > 1 {
				waitForWaiting(t, l)
			}
			appendRefused(last, 2+tc.refused-1)
			for range tc.refused {
				a := <-answers
				if !errors.Is(a.err, refused) {
					t.Fatalf("AppendWith() = %v, want its change's error", a.err)
				}
				if !a.st.FailedAt.IsZero() || a.st.Failures != 1 {
					t.Errorf("Stats() as a refused caller hears of it = %+v; want FailedAt zero (the round reached the store), 1 failure", a.st)
				}
			}
			if err := s.View(t.Context(), func(tx store.Tx) error {
				_, err := tx.Get("changes", []byte("k"))
				return err
			}); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a refused change was stored (Get = %v)", err)
			}
		})
	}
}
