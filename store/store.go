package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Tx.Get when the key does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrReadOnly is returned by mutating Tx methods inside View.
var ErrReadOnly = errors.New("store: read-only transaction")

// ErrUnwritable is matched (with errors.Is) by the error of an Update
// whose changes fn made could not be written to stable storage: a full
// disk, a read-only file system, a file that lost its write permission,
// an I/O error. The Update is not acknowledged. When nothing of it reached
// the file, the store stays usable, and a later Update succeeds once the
// cause is gone. When its commit reached the file but the file system
// failed to confirm it (its sync), what the store would show from then
// on may not be on the disk: the error matches ErrNotDurable too, and so
// does every later View and Update of that store.
var ErrUnwritable = errors.New("store: the data file could not be written")

// ErrNotDurable is matched (with errors.Is), beside ErrUnwritable, by the
// error of an Update whose commit reached the data file but whose sync
// failed, and by every later View and Update of the same store, and of
// those under way then (an Update waiting for its turn is not run on top
// of that commit; a read still under way once the failure is known
// fails): the file shows that commit, which a crash may undo (after a failed sync, a file
// system may drop the pages it could not write, and a later sync does
// not report it again). The store refuses to read or write until it is
// opened again, rather than hand out, or build on, a state the disk may
// not hold. A caller reads the state again once it is reopened.
var ErrNotDurable = errors.New("store: a commit's sync failed, so the data file may show what the disk does not hold; every transaction is refused until the data file is opened again (check the disk, then restart)")

// ErrStopScan may be returned by a Scan callback to end the scan early;
// Scan then returns nil.
var ErrStopScan = errors.New("store: stop scan")

// Store is the authority's whole persistent state: named buckets of
// byte keys and values, read and written only inside transactions.
//
// Implementations must be safe for concurrent use by many goroutines.
type Store interface {
	// View runs fn in a read-only transaction that sees one consistent
	// snapshot. Mutating calls on its Tx return ErrReadOnly.
	View(ctx context.Context, fn func(Tx) error) error

	// Update runs fn in a read-write transaction. When Update returns nil,
	// every write fn made is durable (on stable storage, e.g. fsynced).
	// When fn returns an error, nothing it wrote is kept and Update returns
	// that error (wrapped or as is, so errors.Is works). When fn succeeded
	// but its writes could not be made durable, the error matches
	// ErrUnwritable.
	//
	// fn may be called more than once (an implementation may retry on a
	// serialization conflict), so it must have no effects outside the Tx
	// other than on values it recomputes on each call.
	Update(ctx context.Context, fn func(Tx) error) error

	// Close releases the store. Calls after Close fail.
	Close() error
}

// Tx is one transaction. It is only valid inside the View or Update
// callback that received it and must not be used from other goroutines.
// Buckets are created on first write; reading a bucket that has never been
// written behaves as reading an empty bucket.
type Tx interface {
	// Get returns a copy of the value stored under key, or ErrNotFound.
	Get(bucket string, key []byte) ([]byte, error)

	// Put stores value under key, replacing any earlier value. Empty keys
	// are refused. The store keeps its own copy of key and value.
	Put(bucket string, key, value []byte) error

	// Delete removes key. Deleting an absent key is not an error.
	Delete(bucket string, key []byte) error

	// Scan calls fn for every key that starts with prefix, in ascending
	// byte order, beginning at the first key >= start (a nil start, or one
	// below prefix, begins at prefix). key and value are copies fn may keep.
	// An error from fn ends the scan and is returned, except ErrStopScan,
	// which ends it with nil.
	Scan(bucket string, prefix, start []byte, fn func(key, value []byte) error) error

	// NextSequence returns the next value of the bucket's counter: 1, 2, 3...
	// Within an Update it is undone with the transaction if fn fails.
	NextSequence(bucket string) (uint64, error)
}

// PageAfter scans bucket from the first key after after ("": from the
// first), decoding at most limit entries (0: all), and says whether more
// follow: a page of a list ordered by key.
func PageAfter[T any](tx Tx, bucket, after string, limit int, decode func(k, v []byte) (T, error)) ([]T, bool, error) {
	out := []T{}
	more := false
	var start []byte
	if after != "" {
		start = []byte(after)
	}
	err := tx.Scan(bucket, nil, start, func(k, v []byte) error {
		if after != "" && string(k) == after {
			return nil
		}
		if limit > 0 && len(out) == limit {
			more = true
			return ErrStopScan
		}
		x, err := decode(k, v)
		if err != nil {
			return err
		}
		out = append(out, x)
		return nil
	})
	return out, more, err
}
