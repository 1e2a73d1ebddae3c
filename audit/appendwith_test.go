package audit

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"mandate.dev/mandate/store"
)

// AppendWith makes a change durable with its entry, in the same commit;
// a change that cannot be made fails its own append only: the other
// entries of its round are committed without it, and nothing of it is
// stored.
func TestAppendWithChangeAndEntryTogether(t *testing.T) {
	s, _ := tempStore(t)
	cfg := testConfig(s)
	cfg.GroupWait = forever
	l := start(t, cfg)
	refused := errors.New("no such thing")
	put := func(key string, err error) func(store.Tx) error {
		return func(tx store.Tx) error {
			if e := tx.Put("changes", []byte(key), []byte("v")); e != nil {
				return e
			}
			return err // after a write: rolled back with the round's first try
		}
	}
	// A is held in its round until B, expected, appends: one round.
	ctxB, endB := l.Expect(t.Context())
	defer endB()
	aDone := make(chan error, 1)
	go func() {
		_, err := l.AppendWith(appendCtx(t, t.Context()), testEntry(0, 0), put("a", refused))
		aDone <- err
	}()
	waitForWaiting(t, l)
	rc, err := l.AppendWith(appendCtx(t, ctxB), testEntry(1, 0), put("b", nil))
	if err != nil {
		t.Fatalf("B: %v", err)
	}
	if err := <-aDone; !errors.Is(err, refused) {
		t.Fatalf("A = %v, want its change's error", err)
	}
	if rc.Index != 0 || l.Size() != 1 {
		t.Fatalf("B at index %d in a log of %d, want B alone, at 0", rc.Index, l.Size())
	}
	stored, err := l.Entry(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	want, _, _ := encode(testEntry(1, 0))
	if !bytes.Equal(stored, want) {
		t.Fatalf("entry 0 is %s, want B's", stored)
	}
	if err := s.View(t.Context(), func(tx store.Tx) error {
		if _, err := tx.Get("changes", []byte("b")); err != nil {
			return err
		}
		if _, err := tx.Get("changes", []byte("a")); !errors.Is(err, store.ErrNotFound) {
			return errors.New("A's change was stored")
		}
		return nil
	}); err != nil {
		t.Fatalf("the changes: %v; want B's, not A's", err)
	}
}

// An append with a change answers when its round is over, even when its
// ctx ends while the change is being committed: its caller learns the
// change was made, not "the entry may still be logged".
func TestAppendWithAnswersTheOutcome(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := l.AppendWith(ctx, testEntry(0, 0), func(tx store.Tx) error {
			once.Do(func() { close(started) })
			<-release
			return tx.Put("changes", []byte("a"), []byte("v"))
		})
		done <- err
	}()
	<-started // the change is being committed
	cancel()
	select {
	case err := <-done:
		close(release) // let the round end
		t.Fatalf("AppendWith answered (%v) while its change was being committed", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("AppendWith = %v, want the committed change acknowledged", err)
	}
	if err := s.View(t.Context(), func(tx store.Tx) error {
		_, err := tx.Get("changes", []byte("a"))
		return err
	}); err != nil {
		t.Fatalf("the change: %v", err)
	}
}

// doneWatch is a context that says when its Done is first asked for
// (an append is then waiting on it).
type doneWatch struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func (c *doneWatch) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

// An append that finds the queue full waits for room until its ctx
// ends, and is then refused: its change is not made, its entry never
// logged, and no round waits for it (Expect) any more.
func TestAppendQueueFull(t *testing.T) {
	s, _ := tempStore(t)
	cfg := testConfig(s)
	cfg.MaxBatch = 1 // a queue of one
	cfg.GroupWait = time.Hour
	l := start(t, cfg)

	// The first append's round is held inside its commit.
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	first := make(chan error, 1)
	go func() {
		_, err := l.AppendWith(t.Context(), testEntry(0, 0), func(tx store.Tx) error {
			once.Do(func() { close(started) })
			<-release
			return nil
		})
		first <- err
	}()
	<-started
	// The second fills the queue.
	second := make(chan error, 1)
	go func() {
		_, err := l.Append(t.Context(), testEntry(1, 0))
		second <- err
	}()
	for len(l.queue) == 0 {
		time.Sleep(time.Millisecond)
	}
	// The third finds no room.
	parent, cancel := context.WithCancel(t.Context())
	ctx := &doneWatch{Context: parent, waiting: make(chan struct{})}
	xctx, end := l.Expect(ctx)
	defer end()
	applied := false
	third := make(chan error, 1)
	go func() {
		_, err := l.AppendWith(xctx, testEntry(2, 0), func(tx store.Tx) error {
			applied = true
			return tx.Put("changes", []byte("third"), []byte("v"))
		})
		third <- err
	}()
	<-ctx.waiting
	cancel()
	if err := <-third; !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendWith on a full queue, its ctx canceled = %v, want %v", err, context.Canceled)
	}
	if n := l.expected.Load(); n != 0 {
		t.Errorf("%d expectations under way after the refused append, want 0", n)
	}

	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	// Appended after the refusal, this one follows the first two.
	r, err := l.Append(t.Context(), testEntry(3, 0))
	if err != nil || r.Index != 2 {
		t.Fatalf("Append() after the refusal = index %d, %v, want 2, nil", r.Index, err)
	}
	if applied {
		t.Error("the refused append's change was made")
	}
	for i := range r.TreeSize {
		b, err := l.Entry(t.Context(), i)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(b, mustEncode(t, testEntry(2, 0))) {
			t.Errorf("the refused entry is logged at %d", i)
		}
	}
	if err := s.View(t.Context(), func(tx store.Tx) error {
		_, err := tx.Get("changes", []byte("third"))
		return err
	}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused change: %v, want %v", err, store.ErrNotFound)
	}
}
