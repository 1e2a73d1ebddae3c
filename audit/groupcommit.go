package audit

import (
	"context"
	"sync/atomic"
)

// Expect tells the log that the work ctx carries is about to Append (a
// request that records what it does): while such work is under way and
// has not appended yet, a commit that has taken everything queued waits
// for it, up to Config.GroupWait in all, so that one commit, and its
// fsyncs, takes the entries of many concurrent requests instead of a
// few. A lone request waits for nothing: its own Append ends its
// expectation.
//
// Expect returns the context for that work and end, which the caller must
// call once the work is over, whether it appended or not (deferred: end
// does nothing once the expectation has ended). Append with that context
// (or one derived from it) ends the expectation as soon as its entry is
// queued. With GroupWait zero, Expect returns ctx and an end that does
// nothing.
func (l *Log) Expect(ctx context.Context) (context.Context, func()) {
	if l.cfg.GroupWait <= 0 {
		return ctx, func() {}
	}
	x := &expectation{l: l}
	l.expected.Add(1)
	return context.WithValue(ctx, expectKey{}, x), x.end
}

// Unexpect ends the expectation ctx carries (from Expect), if any: the
// work will not append soon after all (if at all, only after long work
// of its own, a backup say), and no round waits for it meanwhile. Its
// end then does nothing, and its Append, if any, is taken as any other.
func (l *Log) Unexpect(ctx context.Context) { l.expectationOf(ctx).end() }

type expectKey struct{}

// expectation is one Expect, ended once.
type expectation struct {
	l     *Log
	ended atomic.Bool
}

// end ends x and wakes a round waiting for it.
func (x *expectation) end() {
	if x.finish() {
		select {
		case x.l.nudge <- struct{}{}:
		default:
		}
	}
}

// finish ends x; it reports whether x was still under way.
func (x *expectation) finish() bool {
	if x == nil || !x.ended.CompareAndSwap(false, true) {
		return false
	}
	x.l.expected.Add(-1)
	return true
}

// expectationOf is the expectation of l that ctx carries, or nil.
func (l *Log) expectationOf(ctx context.Context) *expectation {
	if x, ok := ctx.Value(expectKey{}).(*expectation); ok && x.l == l {
		return x
	}
	return nil
}
