package audit

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// forever is a GroupWait no test waits out: a test that passes did not
// wait for it, and one that would have fails at its appends' deadline.
const forever = time.Hour

// appendCtx bounds an Append of these tests: longer than any honest
// round, far shorter than forever.
func appendCtx(t *testing.T, parent context.Context) context.Context {
	ctx, cancel := context.WithTimeout(parent, 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// groupLog is a running log with GroupWait forever.
func groupLog(t *testing.T) *running {
	s, _ := tempStore(t)
	cfg := testConfig(s)
	cfg.GroupWait = forever
	return start(t, cfg)
}

// waitForWaiting yields until a round of l has started to wait for
// expected appends.
func waitForWaiting(t *testing.T, l *running) {
	for deadline := time.Now().Add(30 * time.Second); l.waitsBegun.Load() == 0; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("no round waited for the expected append")
		}
	}
}

// TestGroupCommitWaitsForExpectedAppends: a commit that has taken what is
// queued waits for the work that said it is about to append, and then
// commits both entries at once.
func TestGroupCommitWaitsForExpectedAppends(t *testing.T) {
	l := groupLog(t)
	ctxB, endB := l.Expect(t.Context())
	defer endB()
	aDone := make(chan error, 1)
	go func() {
		_, err := l.Append(appendCtx(t, t.Context()), testEntry(0, 0))
		aDone <- err
	}()
	waitForWaiting(t, l) // the round holding A waits for B
	select {
	case err := <-aDone:
		t.Fatalf("A was answered (%v) while B, expected, had not appended", err)
	default:
	}
	if _, err := l.Append(appendCtx(t, ctxB), testEntry(1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Commits != 1 || st.Entries != 2 || st.GroupWaits != 1 {
		t.Fatalf("stats %+v: want both entries in one commit, which waited", st)
	}
}

// TestGroupCommitEndWithoutAppend: work that ends without appending
// stops the wait for it.
func TestGroupCommitEndWithoutAppend(t *testing.T) {
	l := groupLog(t)
	_, endB := l.Expect(t.Context())
	aDone := make(chan error, 1)
	go func() {
		_, err := l.Append(appendCtx(t, t.Context()), testEntry(0, 0))
		aDone <- err
	}()
	waitForWaiting(t, l)
	endB()
	endB() // again: nothing more
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Commits != 1 || st.Entries != 1 || st.GroupWaits != 1 || l.expected.Load() != 0 {
		t.Fatalf("stats %+v, %d expected: want one commit of A and nothing expected", st, l.expected.Load())
	}
}

// TestGroupCommitLoneWriter: a lone request's own Append ends its
// expectation: its commit waits for nothing.
func TestGroupCommitLoneWriter(t *testing.T) {
	l := groupLog(t)
	for i := range 3 {
		ctx, end := l.Expect(appendCtx(t, t.Context()))
		if _, err := l.Append(ctx, testEntry(i, 0)); err != nil {
			t.Fatal(err)
		}
		end()
	}
	if st := l.Stats(); st.Commits != 3 || st.GroupWaits != 0 || l.waitsBegun.Load() != 0 {
		t.Fatalf("stats %+v: want three commits that waited for nothing", st)
	}
}

// TestGroupCommitOff: with GroupWait zero, Expect changes nothing.
func TestGroupCommitOff(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	ctx, end := l.Expect(t.Context())
	defer end()
	if ctx != t.Context() || l.expected.Load() != 0 {
		t.Fatal("Expect with GroupWait zero changed the context or counted")
	}
	if _, err := l.Append(t.Context(), testEntry(0, 0)); err != nil {
		t.Fatal(err)
	}
}

// TestGroupCommitConcurrent: many requests, some expected, some ending
// without appending: every Append is answered, in fewer commits than
// entries, and nothing stays expected.
func TestGroupCommitConcurrent(t *testing.T) {
	s, _ := tempStore(t)
	cfg := testConfig(s)
	cfg.GroupWait = forever
	l := start(t, cfg)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 20 {
				ctx, end := l.Expect(appendCtx(t, t.Context()))
				if (w+i)%5 != 0 { // one in five ends without appending
					if _, err := l.Append(ctx, testEntry(w*100+i, 0)); err != nil {
						t.Error(err)
					}
				}
				end()
			}
		})
	}
	wg.Wait()
	if st := l.Stats(); st.Entries != 16*16 || st.Commits >= st.Entries || l.expected.Load() != 0 {
		t.Fatalf("stats %+v, %d expected: want %d entries in fewer commits, nothing expected", st, l.expected.Load(), 16*16)
	}
}

// TestGroupCommitRefusedAppend: an append the log refuses (an entry it
// cannot encode) ends its expectation: no round waits for it.
func TestGroupCommitRefusedAppend(t *testing.T) {
	l := groupLog(t)
	ctx, end := l.Expect(t.Context())
	defer end()
	if _, err := l.Append(ctx, Entry{}); err == nil {
		t.Fatal("Append of an empty entry: nil, want refused")
	}
	if n := l.expected.Load(); n != 0 {
		t.Fatalf("%d appends expected after the refusal, want 0", n)
	}
}

// TestGroupCommitUnexpect: work that will not append soon after all
// (Unexpect) is no longer waited for; its later Append commits.
func TestGroupCommitUnexpect(t *testing.T) {
	l := groupLog(t)
	ctxB, endB := l.Expect(t.Context())
	defer endB()
	l.Unexpect(ctxB)
	l.Unexpect(ctxB) // again: nothing more
	if n := l.expected.Load(); n != 0 {
		t.Fatalf("%d appends expected after Unexpect, want 0", n)
	}
	if _, err := l.Append(appendCtx(t, t.Context()), testEntry(0, 0)); err != nil {
		t.Fatal(err) // a round waiting for B would wait out the append's deadline
	}
	if _, err := l.Append(appendCtx(t, ctxB), testEntry(1, 0)); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Commits != 2 || st.GroupWaits != 0 || l.expected.Load() != 0 {
		t.Fatalf("stats %+v, %d expected: want two commits that waited for nothing", st, l.expected.Load())
	}
}
