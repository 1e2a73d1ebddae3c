package main

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/store/bolt"
)

// TestBenchAuditCountsFailedAppends: an append the audit log refuses is
// an error the bench reports, not an entry, and not silently dropped.
func TestBenchAuditCountsFailedAppends(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stopped bool
	}{{"running log", false}, {"stopped log", true}} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := bolt.Open(filepath.Join(t.TempDir(), "bench.db"), bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			skey, vkey, err := note.GenerateKey(nil, "bench/audit")
			if err != nil {
				t.Fatal(err)
			}
			signer, _ := note.NewSigner(skey)
			verifier, _ := note.NewVerifier(vkey)
			l, err := audit.Open(t.Context(), audit.Config{Store: st, Origin: "bench/audit", Signer: signer, Verifier: verifier})
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- l.Run(runCtx) }()
			defer func() { stop(); <-done }()
			if tc.stopped {
				stop()
				<-done
				done <- nil
			}
			r := appendLoad(t.Context(), l, 4, 100*time.Millisecond, []byte(`{"pad":"x"}`))
			if tc.stopped {
				if r.n != 0 || r.errors != 4 || !errors.Is(r.firstErr, audit.ErrClosed) {
					t.Errorf("appends to a stopped log: %d entries, %d errors (first %v); want 0 entries, 4 errors, %v",
						r.n, r.errors, r.firstErr, audit.ErrClosed)
				}
				return
			}
			if r.n == 0 || r.errors != 0 {
				t.Errorf("appends to a running log: %d entries, %d errors (first %v); want entries and no error", r.n, r.errors, r.firstErr)
			}
		})
	}
}

// TestBenchRawBoltStopsWhenInterrupted: the raw bbolt measurement, the
// last of bench audit, ends with the run's context (an interrupt) and
// says it measured nothing, rather than go on for its whole duration
// (a second interrupt meanwhile would end the process, leaving its
// temporary store behind).
func TestBenchRawBoltStopsWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rate, err := benchRawBolt(ctx, filepath.Join(t.TempDir(), "raw.db"), 3*time.Second)
	if !errors.Is(err, context.Canceled) || rate != 0 {
		t.Errorf("benchRawBolt after an interrupt = %.0f entries/s, %v; want none, %v", rate, err, context.Canceled)
	}
}
