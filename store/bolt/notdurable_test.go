package bolt

import (
	"context"
	"errors"
	"io"
	"testing"

	"mandate.dev/mandate/store"
)

// A commit that reached the file but whose sync failed is shown by bbolt
// from then on, though a crash may undo it: that Update, and every later
// View and Update, fails with store.ErrNotDurable and store.ErrUnwritable
// (an answer given from such a state could rest on what the disk does not
// hold), until the file is opened again. An Update whose own function
// failed leaves the store usable.
func TestCommitWhoseSyncFailedStopsTheStore(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	put := func(s *Store, key string) error {
		return s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", []byte(key), []byte("v")) })
	}
	has := func(s *Store, key string) error {
		return s.View(ctx, func(tx store.Tx) error {
			_, err := tx.Get("b", []byte(key))
			return err
		})
	}
	if err := put(s, "a"); err != nil {
		t.Fatalf("Update = %v, want nil", err)
	}
	errFn := errors.New("fn refused")
	if err := s.Update(ctx, func(store.Tx) error { return errFn }); !errors.Is(err, errFn) || errors.Is(err, store.ErrNotDurable) {
		t.Fatalf("Update whose fn failed = %v, want %v alone", err, errFn)
	}

	if err := s.Stopped(); err != nil {
		t.Fatalf("Stopped() = %v before any sync failed, want nil", err)
	}
	errSync := errors.New("input/output error")
	syncFault = func() error { return errSync }
	err := put(s, "b")
	syncFault = func() error { return nil }
	for _, want := range []error{store.ErrUnwritable, store.ErrNotDurable, errSync} {
		if !errors.Is(err, want) {
			t.Errorf("Update whose sync failed = %v, want it to match %v", err, want)
		}
	}

	ran := false
	err = s.Update(ctx, func(store.Tx) error { ran = true; return nil })
	if !errors.Is(err, store.ErrNotDurable) || !errors.Is(err, store.ErrUnwritable) || ran {
		t.Errorf("later Update = %v (fn ran: %v), want store.ErrNotDurable and store.ErrUnwritable, fn not run", err, ran)
	}
	if err := has(s, "a"); !errors.Is(err, store.ErrNotDurable) || !errors.Is(err, store.ErrUnwritable) {
		t.Errorf("later View = %v, want store.ErrNotDurable and store.ErrUnwritable", err)
	}
	if _, err := s.Backup(ctx, io.Discard); !errors.Is(err, store.ErrNotDurable) {
		t.Errorf("later Backup = %v, want store.ErrNotDurable", err)
	}

	if err := s.Stopped(); !errors.Is(err, store.ErrNotDurable) {
		t.Errorf("Stopped() = %v, want store.ErrNotDurable", err)
	}

	// Opened again, the store reads the file as it is, and takes writes.
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	s2 := mustOpen(t, path)
	defer s2.Close()
	for _, key := range []string{"a", "b"} {
		if err := has(s2, key); err != nil {
			t.Errorf("after reopening, %s: %v, want nil", key, err)
		}
	}
	if err := s2.Stopped(); err != nil {
		t.Errorf("Stopped() after reopening = %v, want nil", err)
	}
	if err := put(s2, "c"); err != nil {
		t.Errorf("Update after reopening = %v, want nil", err)
	}
}

// Transactions under way when a commit's sync fails do not go on from
// that commit: an Update that was waiting for its turn is refused
// (though bbolt releases its write lock before the failed sync is
// known), and a View or Backup that may have read that commit fails
// rather than give out what it read.
func TestTransactionsUnderWayWhenASyncFails(t *testing.T) {
	ctx := context.Background()
	defer func() { syncFault = func() error { return nil }; txStarting = func(string) {} }()
	type result struct {
		err error
		ran bool
	}
	for _, op := range []string{"update", "view", "backup"} {
		t.Run(op, func(t *testing.T) {
			s, _ := openTemp(t)
			if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", []byte("a"), []byte("v")) }); err != nil {
				t.Fatal(err)
			}
			other := make(chan result, 1)
			passed, proceed := make(chan struct{}), make(chan struct{})
			syncFault = func() error {
				syncFault = func() error { return nil }
				// Another transaction passes the check of the store before
				// the failed sync is known; an Update goes on at once, a
				// read once the failing Update has returned.
				txStarting = func(string) {
					close(passed)
					if op != "update" {
						<-proceed
					}
				}
				go func() {
					var r result
					switch op {
					case "update":
						r.err = s.Update(ctx, func(tx store.Tx) error {
							r.ran = true
							return tx.Put("b", []byte("c"), []byte("v"))
						})
					case "view":
						r.err = s.View(ctx, func(tx store.Tx) error {
							r.ran = true
							_, err := tx.Get("b", []byte("b"))
							return err
						})
					case "backup":
						_, r.err = s.Backup(ctx, io.Discard)
					}
					other <- r
				}()
				<-passed
				txStarting = func(string) {}
				return errors.New("input/output error")
			}
			err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", []byte("b"), []byte("v")) })
			if !errors.Is(err, store.ErrNotDurable) {
				t.Fatalf("Update whose sync failed = %v, want store.ErrNotDurable", err)
			}
			close(proceed)
			r := <-other
			if !errors.Is(r.err, store.ErrNotDurable) || op == "update" && r.ran {
				t.Errorf("%s under way when a sync failed = %v (its function ran: %v), want store.ErrNotDurable", op, r.err, r.ran)
			}
		})
	}
}
