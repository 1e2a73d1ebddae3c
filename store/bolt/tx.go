package bolt

import (
	"bytes"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"

	"mandate.dev/mandate/store"
)

var (
	errTxDone      = errors.New("store/bolt: transaction used after its callback returned")
	errEmptyBucket = errors.New("store/bolt: empty bucket name")
	errEmptyKey    = errors.New("store/bolt: empty key")
)

// tx is a store.Tx over one bbolt transaction. Values handed out are
// copies, and Put copies its arguments: bbolt memory is only valid while the
// transaction is open and must not be modified.
type tx struct {
	btx *bbolt.Tx // nil once the callback has returned

	// writes counts Put, Delete and NextSequence calls, so that Scan
	// notices when its callback changed the data under its cursor.
	writes uint64
}

// Get returns a copy of the value under key, or store.ErrNotFound.
func (t *tx) Get(bucket string, key []byte) ([]byte, error) {
	b, err := t.readBucket(bucket)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, store.ErrNotFound
	}
	// A cursor, unlike Bucket.Get, tells an empty value from a missing key.
	k, v := b.Cursor().Seek(key)
	if k == nil || !bytes.Equal(k, key) {
		return nil, store.ErrNotFound
	}
	return bytes.Clone(v), nil
}

// Put stores copies of key and value, creating the bucket if needed.
func (t *tx) Put(bucket string, key, value []byte) error {
	if err := t.checkWrite("put", bucket); err != nil {
		return err
	}
	if len(key) == 0 {
		return errEmptyKey
	}
	b, err := t.createBucket(bucket)
	if err != nil {
		return err
	}
	// bbolt copies the key itself but keeps a reference to the value.
	if err := b.Put(key, bytes.Clone(value)); err != nil {
		return fmt.Errorf("store/bolt: put in bucket %q: %w", bucket, err)
	}
	return nil
}

// Delete removes key; an absent key or bucket is not an error.
func (t *tx) Delete(bucket string, key []byte) error {
	if err := t.checkWrite("delete", bucket); err != nil {
		return err
	}
	b := t.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	t.writes++
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("store/bolt: delete in bucket %q: %w", bucket, err)
	}
	return nil
}

// NextSequence increments and returns the bucket's counter, creating the
// bucket if needed. bbolt keeps the counter in the bucket header, so it is
// rolled back with the transaction.
func (t *tx) NextSequence(bucket string) (uint64, error) {
	if err := t.checkWrite("next sequence", bucket); err != nil {
		return 0, err
	}
	b, err := t.createBucket(bucket)
	if err != nil {
		return 0, err
	}
	n, err := b.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("store/bolt: next sequence of bucket %q: %w", bucket, err)
	}
	return n, nil
}

// Scan calls fn with copies of the keys and values under prefix, from
// max(prefix, start) on, in ascending order.
func (t *tx) Scan(bucket string, prefix, start []byte, fn func(key, value []byte) error) error {
	b, err := t.readBucket(bucket)
	if err != nil || b == nil {
		return err
	}
	from := prefix
	if bytes.Compare(start, prefix) > 0 {
		from = start
	}
	c := b.Cursor()
	for k, v := c.Seek(from); k != nil && bytes.HasPrefix(k, prefix); {
		writes := t.writes
		if err := fn(bytes.Clone(k), bytes.Clone(v)); err != nil {
			if errors.Is(err, store.ErrStopScan) {
				return nil
			}
			return err
		}
		k, v = t.advance(c, k, writes)
	}
	return nil
}

// advance moves c past k. bbolt cursors are invalidated by writes to their
// bucket, so when fn wrote anything the cursor is repositioned by seeking k
// again. k stays readable: bbolt never changes stored bytes in place, and
// pages are only remapped at commit.
func (t *tx) advance(c *bbolt.Cursor, k []byte, writes uint64) ([]byte, []byte) {
	if t.writes == writes {
		return c.Next()
	}
	nk, nv := c.Seek(k)
	if bytes.Equal(nk, k) {
		return c.Next()
	}
	return nk, nv
}

// readBucket returns the named bucket, or nil if it was never written.
func (t *tx) readBucket(bucket string) (*bbolt.Bucket, error) {
	if t.btx == nil {
		return nil, errTxDone
	}
	if bucket == "" {
		return nil, errEmptyBucket
	}
	return t.btx.Bucket([]byte(bucket)), nil
}

// createBucket returns the named bucket for writing, creating it if
// needed. The caller has checked the write with checkWrite.
func (t *tx) createBucket(bucket string) (*bbolt.Bucket, error) {
	t.writes++
	b, err := t.btx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return nil, fmt.Errorf("store/bolt: create bucket %q: %w", bucket, err)
	}
	return b, nil
}

// checkWrite reports whether a write to bucket is allowed in t.
func (t *tx) checkWrite(op, bucket string) error {
	switch {
	case t.btx == nil:
		return errTxDone
	case bucket == "":
		return errEmptyBucket
	case len(bucket) > bbolt.MaxKeySize:
		// bbolt would make it, but no key of a page it writes is longer:
		// the start's check takes one for damage.
		return fmt.Errorf("store/bolt: %s: a bucket name of %d bytes, more than %d", op, len(bucket), bbolt.MaxKeySize)
	case !t.btx.Writable():
		return fmt.Errorf("store/bolt: %s in bucket %q: %w", op, bucket, store.ErrReadOnly)
	}
	return nil
}
