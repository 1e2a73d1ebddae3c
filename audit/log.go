package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/store"
)

// DefaultMaxBatch is Config.MaxBatch when it is not set.
const DefaultMaxBatch = 4096

// maxBatchBytes ends a batch early once its entries reach this many bytes,
// so that one transaction stays bounded whatever the entry sizes.
const maxBatchBytes = 16 << 20

// ErrClosed is returned by Append when the log's Run has returned.
var ErrClosed = errors.New("audit: log is not running")

// Config configures Open. Store, Origin, Signer and Verifier are required.
type Config struct {
	// Store holds the log (see the package documentation for its buckets).
	// The log does not close it.
	Store store.Store

	// Origin is the first line of every checkpoint, identifying the log.
	// Conventionally DefaultOrigin(trust domain): "<trust domain>/audit".
	// It must not change over the log's life.
	Origin string

	// Signer signs checkpoints (an Ed25519 note signer, see
	// LoadOrCreateSigner); its key name is conventionally Origin.
	// Verifier is its verifier: Open checks the stored checkpoint with it.
	Signer   note.Signer
	Verifier note.Verifier

	// MaxBatch caps how many entries one commit takes. Zero means
	// DefaultMaxBatch.
	MaxBatch int

	// GroupWait is the longest a commit waits, once it has taken every
	// queued Append, for work that said it is about to append (see
	// Log.Expect). Zero: a commit never waits.
	GroupWait time.Duration

	// Index, if set, is called inside the commit's store transaction once
	// for each entry of the batch, in index order, with the entry as Decode
	// would return it and its leaf hash (the RFC 6962 hash of its
	// encoding, as its receipt gives it; shared with the receipt: read
	// only), so that a caller's own indexes are written
	// atomically with the entries (the log's search indexes, see Search,
	// are written regardless). It must only use tx (the transaction may be retried, see
	// store.Store.Update), must not use buckets whose names start with
	// "audit_" (they belong to the log), and should fail only on store
	// errors: an error fails the whole batch, and every entry of it is
	// refused.
	Index func(tx store.Tx, index uint64, e Entry, leafHash []byte) error

	// Logger receives errors about failed commits (the first of a run
	// of failures, then at most one a minute while it goes on; the
	// others at debug level), and a line when commits succeed again.
	// Nil discards them.
	Logger *slog.Logger
}

// validate checks c and fills in defaults.
func (c *Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("audit: config: Store is required")
	case c.Signer == nil || c.Verifier == nil:
		return errors.New("audit: config: Signer and Verifier are required")
	case c.Signer.Name() != c.Verifier.Name() || c.Signer.KeyHash() != c.Verifier.KeyHash():
		return fmt.Errorf("audit: config: Verifier (%s+%08x) is not the Signer's (%s+%08x)",
			c.Verifier.Name(), c.Verifier.KeyHash(), c.Signer.Name(), c.Signer.KeyHash())
	case c.MaxBatch < 0:
		return fmt.Errorf("audit: config: MaxBatch %d is negative", c.MaxBatch)
	case c.GroupWait < 0:
		return fmt.Errorf("audit: config: GroupWait %v is negative", c.GroupWait)
	}
	if err := ValidateOrigin(c.Origin); err != nil {
		return err
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// ValidateOrigin checks a log origin: non-empty printable UTF-8 without
// spaces (a signed note's first line, and its signer's name).
func ValidateOrigin(o string) error {
	if o == "" || !utf8.ValidString(o) || strings.ContainsFunc(o, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r)
	}) {
		return fmt.Errorf("audit: config: Origin %q must be non-empty printable UTF-8 without spaces", o)
	}
	return nil
}

// Log is an append-only Merkle log of audit entries kept in a store.Store.
// Appends are sequenced by Run; reads may be made from any goroutine.
type Log struct {
	cfg   Config
	queue chan *request // Append → Run

	started atomic.Bool   // Run was called
	stopped chan struct{} // closed when Run returns

	// head is the latest durable state, published by Run after each
	// commit for readers. Its values are never modified.
	head atomic.Pointer[treeState]

	// expected counts the Expects not yet ended; nudge wakes a commit
	// waiting for them when one ends.
	expected   atomic.Int64
	nudge      chan struct{}
	waitsBegun atomic.Uint64 // rounds that started to wait for them (tests watch it)

	// Counted by Run after each successful commit (see Stats).
	commits, entries, commitNanos, groupWaits, failures atomic.Uint64
	failedAt                                            atomic.Int64 // UnixNano of the latest commit if it failed, else 0

	// Owned by the Run goroutine (and by Open before Run starts):
	tree  treeState // the durable state the next batch extends
	stale bool      // tree must be re-read from the store first
	// failing counts the rounds failed since one last reached the
	// store; failLogged is when one of them was last logged as an error.
	failing    uint64
	failLogged time.Time
}

// request is one Append waiting for Run.
type request struct {
	ctx   context.Context
	data  []byte
	leaf  []byte
	entry Entry                // as Decode would return it, for the indexes
	apply func(store.Tx) error // the change it records (AppendWith), or nil
	done  chan struct{}
	// expect is the expectation (Expect) this append ends, or nil.
	expect *expectation

	// Set by Run before done is closed: on success index and batch, on
	// failure err.
	index uint64
	batch *batch
	err   error
}

// Receipt is the proof that an entry is durably in the log: its index and
// leaf hash, a signed checkpoint covering it, and its inclusion proof for
// the checkpoint's tree size.
type Receipt struct {
	Index          uint64
	LeafHash       []byte
	TreeSize       uint64   // the checkpoint's tree size
	Checkpoint     []byte   // C2SP tlog-checkpoint, a signed note
	InclusionProof [][]byte // RFC 9162 inclusion proof for TreeSize
}

// Open loads the log from cfg.Store, checking that its tree state, stored
// nodes, last entry and checkpoint agree (an error matching ErrCorrupt if
// not), or creates an empty log with a signed checkpoint of size 0.
// Appends wait until Run is started.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &Log{
		cfg:     cfg,
		queue:   make(chan *request, cfg.MaxBatch),
		nudge:   make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	st, found, err := l.read(ctx)
	if err != nil {
		return nil, err
	}
	if !found {
		if st, err = l.create(ctx); err != nil {
			return nil, err
		}
	}
	l.tree = st
	l.head.Store(&st)
	return l, nil
}

// Stored reports whether st holds a log (its tree state), without
// checking it (Open does).
func Stored(ctx context.Context, st store.Store) (bool, error) {
	found := false
	err := st.View(ctx, func(tx store.Tx) error {
		_, err := tx.Get(bucketState, keyTree)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("audit: read tree state: %w", err)
	}
	return found, nil
}

// CheckCopy checks that st holds a copy of this log, as Open checks a
// store (its tree state, nodes, last entry and checkpoint agree, and the
// checkpoint is signed for this log's origin with its key), and returns
// the copy's tree size. It writes nothing: a store holding no log is an
// error matching ErrCorrupt.
func (l *Log) CheckCopy(ctx context.Context, st store.Store) (uint64, error) {
	c := &Log{cfg: l.cfg}
	c.cfg.Store = st
	ts, found, err := c.read(ctx)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, corrupt("the store holds no log")
	}
	return ts.size, nil
}

// read reads and checks the stored state.
func (l *Log) read(ctx context.Context) (st treeState, found bool, err error) {
	err = l.cfg.Store.View(ctx, func(tx store.Tx) error {
		st, found, err = readState(tx, l.cfg.Origin, l.cfg.Verifier)
		return err
	})
	return st, found, err
}

// create writes the state and checkpoint of the empty tree.
func (l *Log) create(ctx context.Context) (treeState, error) {
	st := treeState{root: hasher.EmptyRoot()}
	cp, err := signCheckpoint(l.cfg.Origin, l.cfg.Signer, 0, st.root)
	if err != nil {
		return treeState{}, err
	}
	st.checkpoint = cp
	err = l.cfg.Store.Update(ctx, func(tx store.Tx) error {
		if _, found, err := readState(tx, l.cfg.Origin, l.cfg.Verifier); err != nil || found {
			return errors.Join(err, errMoved)
		}
		return putState(tx, st)
	})
	if err != nil {
		return treeState{}, fmt.Errorf("audit: create log: %w", err)
	}
	return st, nil
}

// Append adds e to the log and returns once it is durable, with a signed
// checkpoint covering it. Run must be running. An entry Encode refuses is
// refused with its error (matching ErrInvalidEntry).
//
// On any error the entry is not acknowledged: it may or may not be in the
// log (a commit the store reported as failed may still have persisted,
// and an entry whose ctx ends while it is being committed is committed).
func (l *Log) Append(ctx context.Context, e Entry) (Receipt, error) {
	return l.AppendWith(ctx, e, nil)
}

// AppendWith is Append, with the change e records: apply runs in the
// store transaction that makes e durable, so that the change and its
// entry are durable together or not at all (nothing done unlogged, even
// across a crash). When apply fails, this append alone fails, with
// apply's error: the round's other entries are committed without it.
// apply must read and write only through tx, and may run more than once
// (each time in a new transaction, a failed one rolled back). Once
// queued, AppendWith answers only when its round is over (or the log has
// stopped), whatever ctx does: an error then means the change was not
// made, unless the store reported as failed a commit that it kept.
func (l *Log) AppendWith(ctx context.Context, e Entry, apply func(tx store.Tx) error) (Receipt, error) {
	// Queued or refused, no round waits for this append any more.
	x := l.expectationOf(ctx)
	data, norm, err := encode(e)
	if err != nil {
		x.end()
		return Receipt{}, err
	}
	if err := ctx.Err(); err != nil {
		x.end()
		return Receipt{}, fmt.Errorf("audit: append: %w", err)
	}
	r := &request{ctx: ctx, data: data, leaf: hasher.HashLeaf(data), entry: norm, apply: apply, done: make(chan struct{}), expect: x}
	select {
	case l.queue <- r:
		x.end()
	case <-ctx.Done():
		x.end()
		return Receipt{}, fmt.Errorf("audit: append: %w", ctx.Err())
	case <-l.stopped:
		x.end()
		return Receipt{}, ErrClosed
	}
	// An append with a change waits for its round even once ctx ends:
	// its caller must learn whether the change was made (a round drops
	// requests whose ctx has ended before it commits, so the wait is one
	// commit at most).
	ctxDone := ctx.Done()
	if apply != nil {
		ctxDone = nil
	}
	select {
	case <-r.done:
	case <-ctxDone:
		return Receipt{}, fmt.Errorf("audit: append: %w (the entry may still be logged)", ctx.Err())
	case <-l.stopped:
		select {
		case <-r.done: // committed (or failed) before Run returned
		default:
			return Receipt{}, ErrClosed
		}
	}
	if r.err != nil {
		return Receipt{}, r.err
	}
	return l.receipt(ctx, r)
}

// receipt builds r's receipt from its batch.
func (l *Log) receipt(ctx context.Context, r *request) (Receipt, error) {
	b := r.batch
	p, err := b.inclusionProof(r.index)
	if err != nil { // not expected: the batch holds every node needed
		if p, err = l.InclusionProof(ctx, r.index, b.size); err != nil {
			return Receipt{}, err
		}
	}
	return Receipt{
		Index:          r.index,
		LeafHash:       r.leaf,
		TreeSize:       b.size,
		Checkpoint:     bytes.Clone(b.checkpoint),
		InclusionProof: p,
	}, nil
}
