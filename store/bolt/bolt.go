// Package bolt implements [store.Store] on a single bbolt file
// (go.etcd.io/bbolt), for single-node deployments.
//
// The file is locked while open, so only one process can use it at a time.
// Every successful Update is fsynced before it returns. Updates are
// serialized (bbolt allows one writer at a time); Views run concurrently
// with each other and with the writer.
//
// Each store bucket is a top-level bbolt bucket of the same name; bucket
// names must not be empty. No bbolt type is exposed by this package.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"mandate.dev/mandate/store"
)

// DefaultTimeout is how long Open waits for the data file's lock when
// Options.Timeout is not set.
const DefaultTimeout = time.Second

// fileMode is the permission of a data file Open creates. An existing
// file keeps its mode.
const fileMode = 0o600

// ErrLocked is matched (with errors.Is) by the error Open returns when
// another process holds the data file's lock.
var ErrLocked = errors.New("store/bolt: data file is locked by another process")

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Timeout is how long Open waits to acquire the data file's exclusive
	// lock before failing with ErrLocked. Zero or negative means
	// DefaultTimeout.
	Timeout time.Duration
}

// Store is a store.Store kept in one bbolt file. It is safe for concurrent
// use by many goroutines.
type Store struct {
	db *bbolt.DB
}

var _ store.Store = (*Store)(nil)

// Open opens the data file at path, creating it with mode 0600 if it does
// not exist; an existing file keeps its mode. The parent directory must
// exist. If the file is already open (in another process, or through
// another Store of this one), Open waits up to opts.Timeout and then
// returns an error matching ErrLocked.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	bopts := *bbolt.DefaultOptions
	bopts.Timeout = timeout
	db, err := bbolt.Open(path, fileMode, &bopts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, &lockedError{path: path, timeout: timeout}
	}
	if err != nil {
		return nil, fmt.Errorf("store/bolt: open %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// lockedError reports that Open gave up waiting for the file lock.
type lockedError struct {
	path    string
	timeout time.Duration
}

func (e *lockedError) Error() string {
	return fmt.Sprintf("store/bolt: data file %s is locked by another process (waited %v)", e.path, e.timeout)
}

func (e *lockedError) Is(target error) bool { return target == ErrLocked }

// View runs fn in a read-only transaction; see store.Store.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error
	err := s.db.View(func(btx *bbolt.Tx) error {
		fnErr = run(btx, fn)
		return fnErr
	})
	return txResult("view", err, fnErr)
}

// Update runs fn in a read-write transaction and fsyncs the commit before
// returning nil; see store.Store. fn runs exactly once unless ctx is done
// first, either before Update starts or while it waits for another Update to
// finish.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error
	err := s.db.Update(func(btx *bbolt.Tx) error {
		if fnErr = ctx.Err(); fnErr != nil {
			return fnErr
		}
		fnErr = run(btx, fn)
		return fnErr
	})
	return txResult("update", err, fnErr)
}

// Close waits for running transactions to end, then releases the data file
// and its lock. View and Update fail after Close; calling Close again
// returns nil.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store/bolt: close: %w", err)
	}
	return nil
}

// run calls fn with a Tx over btx and invalidates the Tx when fn returns.
func run(btx *bbolt.Tx, fn func(store.Tx) error) error {
	t := &tx{btx: btx}
	defer func() { t.btx = nil }()
	return fn(t)
}

// txResult returns fn's error as is, and wraps errors of bbolt itself
// (begin, commit).
func txResult(op string, err, fnErr error) error {
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return fmt.Errorf("store/bolt: %s: %w", op, err)
	}
	return nil
}
