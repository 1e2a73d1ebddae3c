package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"

	"mandate.dev/mandate/store"
)

// applyError is a commit that failed because the change one append
// records (AppendWith) could not be made.
type applyError struct {
	req *request
	err error
}

func (e *applyError) Error() string { return "the change an entry records: " + e.err.Error() }

// errMoved is the error of a commit that found the stored log other than
// the state it extends (another writer, or an earlier commit reported as
// failed that persisted). The sequencer then re-reads the stored state.
var errMoved = errors.New("the stored log changed under the sequencer")

// batch is what one commit hands its waiters. It is read-only once
// published.
type batch struct {
	size       uint64 // tree size after the batch
	checkpoint []byte // signed, for size
	// nodes holds the compact range before the batch and every node the
	// batch created: all that inclusion proofs of its entries need.
	nodes map[compact.NodeID][]byte
}

// nodeHash is a tree node to store.
type nodeHash struct {
	id   compact.NodeID
	hash []byte
}

// Run sequences appends until ctx is done, then returns nil. Each round
// takes every queued Append (up to Config.MaxBatch), writes the entries,
// their tree nodes, index entries, the new tree state and a checkpoint
// signed for the new size in one store Update, and then wakes the callers
// with their receipts. A round starts as soon as the previous one has
// returned.
//
// If the Update fails, every caller of the round gets the error, and the
// sequencer re-reads the stored state before the next round, so that it
// neither reuses nor skips an index. Run returns an error matching
// ErrCorrupt (and stops appending) only if the stored state is
// inconsistent or went backwards. Run must be called once.
func (l *Log) Run(ctx context.Context) error {
	if !l.started.CompareAndSwap(false, true) {
		return errors.New("audit: Run called twice")
	}
	defer l.stop()
	for {
		reqs, waited, ok := l.next(ctx)
		if !ok {
			return nil
		}
		// A round that has started finishes even if ctx ends meanwhile.
		if err := l.round(context.WithoutCancel(ctx), reqs, waited); err != nil {
			return err
		}
	}
}

// Stats are a log's counters since Open.
type Stats struct {
	Commits    uint64        // store transactions that appended entries
	Entries    uint64        // entries they appended
	CommitTime time.Duration // spent in those rounds: writing, the fsyncs, signing the checkpoint
	GroupWaits uint64        // of those commits, the ones that first waited for appends under way (Expect)
	Failures   uint64        // commits that failed, or could not start because the stored log could not be re-read after one (every append of theirs failed; nothing of them acknowledged)
	FailedAt   time.Time     // when the latest of those failed, if it did (zero once a round reaches the store: a commit succeeds, or every append of it is refused by its own change, see AppendWith)
	Size       uint64        // the tree size: entries durable in the log
}

// Stats returns the log's counters: Entries/Commits is the mean group
// commit, CommitTime/Commits its mean duration.
func (l *Log) Stats() Stats {
	s := Stats{Commits: l.commits.Load(), Entries: l.entries.Load(), CommitTime: time.Duration(l.commitNanos.Load()), GroupWaits: l.groupWaits.Load(),
		Failures: l.failures.Load()}
	if at := l.failedAt.Load(); at != 0 {
		s.FailedAt = time.Unix(0, at)
	}
	if h := l.head.Load(); h != nil {
		s.Size = h.size
	}
	return s
}

// stop refuses every queued request; Append refuses new ones.
func (l *Log) stop() {
	close(l.stopped)
	for {
		select {
		case r := <-l.queue:
			r.err = ErrClosed
			close(r.done)
		default:
			return
		}
	}
}

// next waits for a request, then takes what else is queued, up to the
// batch limits; while work that said it is about to append (Expect) has
// not, it waits for more, up to Config.GroupWait (waited says it did).
// ok is false when ctx is done.
func (l *Log) next(ctx context.Context) (reqs []*request, waited, ok bool) {
	select {
	case <-ctx.Done():
		return nil, false, false
	case r := <-l.queue:
		r.expect.finish()
		reqs = append(reqs, r)
	}
	n := len(reqs[0].data)
	var wait <-chan time.Time
	for len(reqs) < l.cfg.MaxBatch && n < maxBatchBytes {
		select {
		case r := <-l.queue:
			r.expect.finish()
			reqs = append(reqs, r)
			n += len(r.data)
			continue
		default:
		}
		if l.expected.Load() <= 0 {
			return reqs, wait != nil, true
		}
		if wait == nil {
			t := time.NewTimer(l.cfg.GroupWait)
			defer t.Stop()
			wait = t.C
			l.waitsBegun.Add(1)
		}
		select {
		case r := <-l.queue:
			r.expect.finish()
			reqs = append(reqs, r)
			n += len(r.data)
		case <-l.nudge: // an expectation ended: look again
		case <-wait:
			return reqs, true, true
		case <-ctx.Done():
			return reqs, true, true
		}
	}
	return reqs, wait != nil, true
}

// round commits reqs and wakes their callers. Its error is fatal to the
// log.
func (l *Log) round(ctx context.Context, reqs []*request, waited bool) error {
	reqs = dropDone(reqs)
	if len(reqs) == 0 {
		return nil
	}
	if l.stale {
		if err := l.resync(ctx); err != nil {
			// A round that cannot start is a failed commit to Stats (and
			// so to /healthz): nothing can be recorded meanwhile.
			l.failures.Add(1)
			l.failedAt.Store(time.Now().UnixNano())
			l.logFailure("audit: re-reading the stored log failed; its appends are refused", len(reqs), err)
			fail(reqs, fmt.Errorf("audit: append: re-read the stored log: %w", err))
			return fatal(err)
		}
	}
	start := time.Now()
	b, next, err := l.commit(ctx, reqs)
	// A change that could not be made fails its own append only: the
	// round is committed again without it (its transaction rolled back,
	// the stored log is as it was). Its caller hears of it once the round
	// is over, with the others: the Stats it then reads are the round's.
	var refused []*request
	defer func() {
		for _, r := range refused {
			close(r.done)
		}
	}()
	for ae := (*applyError)(nil); errors.As(err, &ae); {
		ae.req.err = ae.err
		refused = append(refused, ae.req)
		if reqs = slices.DeleteFunc(reqs, func(r *request) bool { return r == ae.req }); len(reqs) == 0 {
			// The round reached the store: its transaction found the
			// stored log as the sequencer holds it and wrote the entries
			// until a change refused, the caller's error, not the store's.
			l.failedAt.Store(0)
			l.logRecovered()
			return nil
		}
		b, next, err = l.commit(ctx, reqs)
	}
	if err != nil {
		// Counted before the callers hear of it: a caller that reads
		// Stats after its refusal sees its commit failed.
		l.failures.Add(1)
		l.failedAt.Store(time.Now().UnixNano())
		l.logFailure("audit: commit failed; its appends are refused, and the stored log is read again", len(reqs), err)
		fail(reqs, fmt.Errorf("audit: append: %w", err))
		l.stale = true
		return fatal(l.resync(ctx))
	}
	l.tree = next
	l.head.Store(&next)
	l.commits.Add(1)
	l.failedAt.Store(0) // before the callers hear of it (below), as a failure is
	l.logRecovered()
	l.entries.Add(uint64(len(reqs)))
	l.commitNanos.Add(uint64(time.Since(start)))
	if waited {
		l.groupWaits.Add(1)
	}
	first := next.size - uint64(len(reqs))
	for i, r := range reqs {
		r.index, r.batch = first+uint64(i), b
		close(r.done)
	}
	return nil
}

// failureLogEvery is how often, at most, failed commits are logged as
// errors (a variable for tests).
var failureLogEvery = time.Minute

// logFailure logs a failed round as an error: the first of a run of
// failures (a full disk fails every commit until there is room again),
// then, while the run goes on, one at most once per failureLogEvery,
// with how many failed; the others at debug level. Their callers are
// answered (each of their requests refused), so every request need not
// be logged too.
func (l *Log) logFailure(msg string, entries int, err error) {
	l.failing++
	now := time.Now()
	attrs := []any{"size", l.tree.size, "entries", entries, "err", err}
	if l.failing > 1 && now.Sub(l.failLogged) < failureLogEvery {
		l.cfg.Logger.Debug(msg, attrs...)
		return
	}
	if l.failing > 1 {
		msg += " (still failing)"
		attrs = append(attrs, "failed_commits", l.failing)
	}
	l.cfg.Logger.Error(msg, attrs...)
	l.failLogged = now
}

// logRecovered ends a run of failed rounds (a round reached the store),
// and says so.
func (l *Log) logRecovered() {
	if l.failing == 0 {
		return
	}
	l.cfg.Logger.Info("audit: commits succeed again", "failed_commits", l.failing, "size", l.tree.size)
	l.failing = 0
}

// dropDone answers requests whose caller has given up and returns the
// others.
func dropDone(reqs []*request) []*request {
	return slices.DeleteFunc(reqs, func(r *request) bool {
		if err := r.ctx.Err(); err != nil {
			r.err = fmt.Errorf("audit: append: %w", err)
			close(r.done)
			return true
		}
		return false
	})
}

func fail(reqs []*request, err error) {
	for _, r := range reqs {
		r.err = err
		close(r.done)
	}
}

// fatal returns err if it is fatal to the log (ErrCorrupt), else nil.
func fatal(err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	return nil
}

// resync replaces the in-memory state with the stored one, which must not
// be behind it. Until it succeeds, rounds keep retrying it.
func (l *Log) resync(ctx context.Context) error {
	st, found, err := l.read(ctx)
	if err != nil {
		return err
	}
	if !found || st.size < l.tree.size {
		return corrupt("stored tree size %d is below the last committed size %d", st.size, l.tree.size)
	}
	if st.size > l.tree.size {
		l.cfg.Logger.Warn("audit: the stored log is ahead of the sequencer (a commit reported as failed persisted)", "size", l.tree.size, "stored_size", st.size)
	}
	l.tree, l.stale = st, false
	l.head.Store(&st)
	return nil
}

// commit appends reqs to a copy of the tree, signs the new checkpoint and
// writes everything in one Update. l.tree is left untouched.
func (l *Log) commit(ctx context.Context, reqs []*request) (*batch, treeState, error) {
	base := l.tree
	r, err := factory.NewRange(0, base.size, slices.Clone(base.hashes))
	if err != nil {
		return nil, treeState{}, err
	}
	b := &batch{nodes: make(map[compact.NodeID][]byte, 2*len(reqs)+len(base.hashes))}
	for i, id := range compact.RangeNodes(0, base.size, nil) {
		b.nodes[id] = base.hashes[i]
	}
	written := make([]nodeHash, 0, 2*len(reqs))
	visit := func(id compact.NodeID, h []byte) {
		b.nodes[id] = h
		written = append(written, nodeHash{id, h})
	}
	for _, req := range reqs {
		if err := r.Append(req.leaf, visit); err != nil {
			return nil, treeState{}, err
		}
	}
	next := treeState{size: r.End(), hashes: r.Hashes(), root: rootOf(r)}
	if next.checkpoint, err = signCheckpoint(l.cfg.Origin, l.cfg.Signer, next.size, next.root); err != nil {
		return nil, treeState{}, err
	}
	b.size, b.checkpoint = next.size, next.checkpoint
	err = l.cfg.Store.Update(ctx, func(tx store.Tx) error {
		return l.write(tx, base, next, reqs, written)
	})
	if err != nil {
		return nil, treeState{}, err
	}
	return b, next, nil
}

// write is the body of a commit's transaction. It only writes values
// computed before (or, for the time spans of the search index, read in the
// same transaction), so running it again writes the same.
func (l *Log) write(tx store.Tx, base, next treeState, reqs []*request, nodes []nodeHash) error {
	cp, err := tx.Get(bucketState, keyCheckpoint)
	if err != nil || !bytes.Equal(cp, base.checkpoint) {
		return errors.Join(err, errMoved)
	}
	for i, r := range reqs {
		index := base.size + uint64(i)
		if err := tx.Put(bucketEntries, entryKey(index), r.data); err != nil {
			return err
		}
		if err := putIndexes(tx, index, r.entry); err != nil {
			return fmt.Errorf("search index of entry %d: %w", index, err)
		}
		if l.cfg.Index != nil {
			if err := l.cfg.Index(tx, index, r.entry, r.leaf); err != nil {
				return fmt.Errorf("index entry %d: %w", index, err)
			}
		}
		if r.apply != nil {
			if err := r.apply(tx); err != nil {
				return &applyError{req: r, err: err}
			}
		}
	}
	if err := putTimeSpans(tx, base.size, reqs); err != nil {
		return fmt.Errorf("search index: %w", err)
	}
	for _, n := range nodes {
		if err := tx.Put(bucketNodes, nodeKey(n.id), n.hash); err != nil {
			return err
		}
	}
	return putState(tx, next)
}

// inclusionProof returns the inclusion proof of index for the batch's
// tree size from the batch's nodes.
func (b *batch) inclusionProof(index uint64) ([][]byte, error) {
	p, err := proof.Inclusion(index, b.size)
	if err != nil {
		return nil, err
	}
	hashes := make([][]byte, len(p.IDs))
	for i, id := range p.IDs {
		h, ok := b.nodes[id]
		if !ok {
			return nil, fmt.Errorf("audit: tree node %d.%d not in the batch", id.Level, id.Index)
		}
		hashes[i] = h
	}
	return p.Rehash(hashes, hasher.HashChildren)
}
