package audit

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// forever is a GroupWait no test outlives: a test that passes did not
// wait it out.
const forever = time.Hour

// groupLog is a running log with GroupWait forever.
func groupLog(t *testing.T) *running {
	s, _ := tempStore(t)
	cfg := testConfig(s)
	cfg.GroupWait = forever
	return start(t, cfg)
}

// waitForGroupWaits yields until the log has started n group waits.
func waitForGroupWaits(l *running, n uint64) {
	for l.Stats().GroupWaits < n {
		runtime.Gosched()
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
		_, err := l.Append(t.Context(), testEntry(0, 0))
		aDone <- err
	}()
	waitForGroupWaits(l, 1) // the round holding A waits for B
	select {
	case err := <-aDone:
		t.Fatalf("A was answered (%v) while B, expected, had not appended", err)
	default:
	}
	if _, err := l.Append(ctxB, testEntry(1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Commits != 1 || st.Entries != 2 {
		t.Fatalf("stats %+v: want both entries in one commit", st)
	}
}

// TestGroupCommitEndWithoutAppend: work that ends without appending
// stops the wait for it.
func TestGroupCommitEndWithoutAppend(t *testing.T) {
	l := groupLog(t)
	_, endB := l.Expect(t.Context())
	aDone := make(chan error, 1)
	go func() {
		_, err := l.Append(t.Context(), testEntry(0, 0))
		aDone <- err
	}()
	waitForGroupWaits(l, 1)
	endB()
	endB() // again: nothing more
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Commits != 1 || st.Entries != 1 || l.expected.Load() != 0 {
		t.Fatalf("stats %+v, %d expected: want one commit of A and nothing expected", st, l.expected.Load())
	}
}

// TestGroupCommitLoneWriter: a lone request's own Append ends its
// expectation: its commit waits for nothing.
func TestGroupCommitLoneWriter(t *testing.T) {
	l := groupLog(t)
	for i := range 3 {
		ctx, end := l.Expect(context.WithoutCancel(t.Context()))
		if _, err := l.Append(ctx, testEntry(i, 0)); err != nil {
			t.Fatal(err)
		}
		end()
	}
	if st := l.Stats(); st.Commits != 3 || st.GroupWaits != 0 {
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
				ctx, end := l.Expect(t.Context())
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
