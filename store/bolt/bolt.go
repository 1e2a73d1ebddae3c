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
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"mandate.dev/mandate/credfile"
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

// ErrDamaged is matched by the error of Open, View or Update when the data
// file's pages are not what bbolt wrote (a truncated or overwritten file,
// or one that is no data file at all): bbolt refuses such a file at
// Open, or panics (or faults, reading past the end of the file) on such
// pages, and that is returned as this error. After Open fails so, the
// file may stay locked until the process ends.
var ErrDamaged = errors.New("store/bolt: data file is damaged; restore it from a backup")

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Timeout is how long Open waits to acquire the data file's exclusive
	// lock before failing with ErrLocked. Zero or negative means
	// DefaultTimeout.
	Timeout time.Duration
	// Check, if set, makes Open read every page of the file once (its
	// tree walked from the file, and its freelist) and fail with
	// ErrDamaged on the first problem, rather than let a damaged page be
	// found by a later request: what bbolt's own consistency check
	// finds (keys out of order, a page reached twice, free and
	// reachable, or neither), and a page id past the file, or one that
	// leads back up its tree, not a crash or a check that never ends.
	// The pages are read with reads of the check's own, not through
	// the store's memory map, which they would fill.
	Check bool
}

// Store is a store.Store kept in one bbolt file. It is safe for concurrent
// use by many goroutines.
type Store struct {
	db *bbolt.DB
	// damaged is set once a transaction met a damaged page: bbolt may
	// then hold its write lock for good (a rollback that met the page
	// again), so every later transaction fails at once rather than wait.
	damaged atomic.Bool
	// notDurable is set once a commit reached the file but its sync
	// failed (store.ErrNotDurable): every later transaction fails at
	// once, as bbolt shows that commit from then on.
	notDurable atomic.Bool
	// updating holds a token while an Update runs, from before bbolt's
	// write lock is taken until its commit is known durable or
	// notDurable is set: bbolt releases its lock before an Update can
	// tell whether its sync failed, and another Update taking it then
	// would build on that commit, and be acknowledged.
	updating chan struct{}
}

var _ store.Store = (*Store)(nil)

// Open opens the data file at path, creating it with mode 0600 if it does
// not exist; an existing file keeps its mode. The parent directory must
// exist. If the file is already open (in another process, or through
// another Store of this one), Open waits up to opts.Timeout and then
// returns an error matching ErrLocked.
//
// A new file is made whole under a temporary name (.tmp-<name>-*, in the
// same directory) and only then linked at path: a creation cut short (a
// full disk, a crash) leaves no file at path, never a partial one that
// every later Open would refuse as damaged.
func Open(path string, opts Options) (st *Store, err error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	bopts := *bbolt.DefaultOptions
	bopts.Timeout = timeout
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		if err := create(path, &bopts); err != nil {
			return nil, fmt.Errorf("store/bolt: create %s: %w", path, err)
		}
	}
	var db *bbolt.DB
	func() {
		defer guard()()
		defer damaged("open "+path, &err)
		db, err = bbolt.Open(path, fileMode, &bopts)
	}()
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, &lockedError{path: path, timeout: timeout}
	}
	if unreadable(err) {
		err = fmt.Errorf("%w (%v)", ErrDamaged, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store/bolt: open %s: %w", path, err)
	}
	st = &Store{db: db, updating: make(chan struct{}, 1)}
	if opts.Check {
		if err := st.check(); err != nil {
			db.Close()
			return nil, fmt.Errorf("store/bolt: %s: %w", path, err)
		}
	}
	return st, nil
}

// unreadable reports whether err is bbolt's refusal of a file that is
// not one it wrote: neither meta page valid (a file overwritten at its
// start, or not a data file at all), or one cut shorter than two pages.
func unreadable(err error) bool {
	return errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) ||
		errors.Is(err, bolterrors.ErrVersionMismatch) ||
		err != nil && strings.HasPrefix(err.Error(), "file size too small")
}

// create makes a new, initialized data file at path, which does not
// exist: bbolt writes and syncs its first pages in a temporary file,
// which is then linked at path. If another process created path
// meanwhile (and removed the temporary file as one a crash left), that
// one is kept.
func create(path string, bopts *bbolt.Options) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = f.Chmod(fileMode)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	db, err := bbolt.Open(tmp, fileMode, bopts) // an empty file: bbolt writes its first pages and syncs them
	if err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	beforeLink(tmp, path)
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		// Another process that created path first may have removed this
		// temporary file as one a crash left (an authority's start
		// does): its file is the one kept.
		if _, serr := os.Lstat(path); serr != nil {
			return err
		}
	}
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return credfile.SyncDir(dir)
}

// beforeLink is called by create before it links the new file at path
// (a variable for tests: what another process may do meanwhile).
var beforeLink = func(tmp, path string) {}

// check reads every page of the file once (checkPages), through reads
// of its own: the store's memory map is left as it was, holding no page
// a transaction has not read.
func (s *Store) check() (err error) {
	defer guard()()
	defer damaged("check", &err)
	fi, err := os.Stat(s.db.Path())
	if err != nil {
		return fmt.Errorf("store/bolt: check: %w", err)
	}
	return s.db.View(func(btx *bbolt.Tx) error {
		// The file is read as the meta of this transaction describes
		// it. The page count is read from the meta itself, as bbolt's
		// Size (count × page size) wraps past 2^63: a count of
		// 2^52 + 4 would pass for four pages. A file shorter than its
		// pages is refused first.
		f, err := os.Open(s.db.Path())
		if err != nil {
			return fmt.Errorf("store/bolt: check: %w", err)
		}
		defer f.Close()
		pageSize := s.db.Info().PageSize
		m, err := readMeta(f, pageSize, uint64(btx.ID()))
		if err != nil {
			return fmt.Errorf("%w (%v)", ErrDamaged, err)
		}
		if m.pages > uint64(fi.Size())/uint64(pageSize) {
			return fmt.Errorf("%w (the file holds %d bytes, its meta %d pages of %d)", ErrDamaged, fi.Size(), m.pages, pageSize)
		}
		if err := checkPages(f, pageSize, m); err != nil {
			return fmt.Errorf("%w (%v)", ErrDamaged, err)
		}
		return nil
	})
}

// guard makes a fault on the memory-mapped file (a page past the end of a
// truncated file) a panic rather than a crash, for damaged to recover,
// until the returned function is called (deferred after damaged).
func guard() func() {
	old := debug.SetPanicOnFault(true)
	return func() { debug.SetPanicOnFault(old) }
}

// damaged turns a panic raised in bbolt's code, on a page that is not
// what it wrote, into ErrDamaged in *err. Any other panic (in a caller's
// function) goes on.
func damaged(op string, err *error) {
	p := recover()
	if p == nil {
		return
	}
	// A fault at a real address (debug.SetPanicOnFault's panic has
	// Addr) is a read of the memory-mapped file, in bbolt or in the copy
	// this package makes of a value; any other panic is bbolt's only if
	// raised in its code.
	if _, fault := p.(interface{ Addr() uintptr }); !fault && !panickedInBolt() {
		panic(p)
	}
	*err = fmt.Errorf("%w (%s: %v)", ErrDamaged, op, p)
}

// panickedInBolt reports whether the panic being recovered was raised in
// bbolt: the first frame below runtime.gopanic that is not the runtime's
// own (an index out of range goes through runtime.goPanicIndex) is
// bbolt's.
func panickedInBolt() bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	below := false
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			below = true
		case below && !strings.HasPrefix(f.Function, "runtime."):
			return strings.HasPrefix(f.Function, "go.etcd.io/bbolt")
		}
		if !more {
			return false
		}
	}
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
	return s.transact(ctx, "view", s.db.View, fn)
}

// Update runs fn in a read-write transaction and fsyncs the commit before
// returning nil; see store.Store. A commit that reached the file but
// whose sync failed stops the store (store.ErrNotDurable, see Stopped). fn runs exactly once unless ctx is done
// first, either before Update starts or while it waits for another Update to
// finish.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.transact(ctx, "update", s.db.Update, fn)
}

// transact runs fn in the transaction begin (db.View or db.Update) makes,
// unless ctx is done before fn would start. A damaged page met on the way
// is ErrDamaged, and every later transaction then fails at once (bbolt
// may hold its write lock for good after one).
func (s *Store) transact(ctx context.Context, op string, begin func(func(*bbolt.Tx) error) error, fn func(store.Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.Stopped(); err != nil {
		return err
	}
	txStarting(op)
	if op == "update" {
		// One Update at a time, as bbolt runs them, but until its
		// outcome is known: one that waited for an Update whose sync
		// failed is refused, not run on top of that commit.
		select {
		case s.updating <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-s.updating }()
		if err := s.Stopped(); err != nil {
			return err
		}
	}
	defer func() {
		if errors.Is(err, ErrDamaged) {
			s.damaged.Store(true)
		}
	}()
	defer guard()()
	defer damaged(op, &err)
	var fnErr error
	ran := false
	txid := 0
	err = begin(func(btx *bbolt.Tx) error {
		if fnErr = ctx.Err(); fnErr != nil {
			return fnErr
		}
		txid = btx.ID()
		fnErr = run(btx, fn)
		ran = true
		return fnErr
	})
	if op == "update" && ran && fnErr == nil {
		if err == nil {
			err = syncFault()
		}
		if err != nil && s.shows(txid) {
			// bbolt writes the meta page, then syncs: the meta page is
			// in the file (and in the memory map every transaction
			// reads) whatever the sync said, and bbolt goes on from it.
			s.notDurable.Store(true)
			return fmt.Errorf("store/bolt: %s: %w: %w (%w)", op, store.ErrUnwritable, store.ErrNotDurable, err)
		}
	}
	if op != "update" && err == nil && fnErr == nil && s.notDurable.Load() {
		// A read that overlapped an Update whose sync failed may have
		// read that commit: what it read is not given out.
		return s.Stopped()
	}
	return txResult(op, err, fnErr, ran)
}

// txStarting is called by every transaction once it has passed the
// check of Stopped, before it waits for its turn (a variable for tests).
var txStarting = func(op string) {}

// Stopped returns the error every transaction now fails with at once (a
// damaged page met, or a commit whose sync failed: store.ErrNotDurable),
// or nil while the store is in use. Only opening the file again ends it.
func (s *Store) Stopped() error {
	switch {
	case s.damaged.Load():
		return fmt.Errorf("%w (met by an earlier transaction)", ErrDamaged)
	case s.notDurable.Load():
		return fmt.Errorf("store/bolt: %w: %w", store.ErrUnwritable, store.ErrNotDurable)
	}
	return nil
}

// syncFault is called after an Update's commit succeeded, and its error
// taken for the commit's (a variable for tests: a commit that reached the
// file, whose sync failed).
var syncFault = func() error { return nil }

// shows reports whether the store now shows the write transaction txid
// as committed, or cannot tell.
func (s *Store) shows(txid int) bool {
	cur := 0
	if err := s.db.View(func(btx *bbolt.Tx) error {
		cur = btx.ID()
		return nil
	}); err != nil {
		return true
	}
	return cur >= txid
}

// Backup writes a copy of the whole data file to w as of one read
// transaction (bbolt's Tx.WriteTo): a file Open takes as it is, holding
// every Update committed before the copy began and none after. Updates go
// on meanwhile (a long copy may delay one that must grow the file's
// memory map). It returns the bytes written.
func (s *Store) Backup(ctx context.Context, w io.Writer) (n int64, err error) {
	err = s.transact(ctx, "backup", s.db.View, func(t store.Tx) error {
		var werr error
		n, werr = t.(*tx).btx.WriteTo(w)
		return werr
	})
	return n, err
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
// (begin, commit). An Update whose fn ran and succeeded failed in its
// commit, writing or syncing the file (ran says fn returned):
// store.ErrUnwritable.
func txResult(op string, err, fnErr error, ran bool) error {
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil && ran && op == "update":
		return fmt.Errorf("store/bolt: %s: %w: %w", op, store.ErrUnwritable, err)
	case err != nil:
		return fmt.Errorf("store/bolt: %s: %w", op, err)
	}
	return nil
}
