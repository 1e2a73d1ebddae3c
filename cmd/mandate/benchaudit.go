package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
)

// benchAuditEntrySize is the encoded size of the entries appended.
const benchAuditEntrySize = 500

func runBenchAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench audit", "bench audit [flags]", stderr)
	dur := fs.Duration("duration", 5*time.Second, "how long to measure each concurrency")
	levels := fs.String("concurrency", "1,16,256,1024", "comma-separated writer counts")
	dir := fs.String("dir", "", "directory for the benchmark's own store (default: a temporary one, removed after)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkBenchDuration(*dur, time.Hour); err != nil {
		return err
	}
	var writers []int
	for _, f := range strings.Split(*levels, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n < 1 || n > 65536 {
			return usagef("--concurrency: %q is not a writer count", f)
		}
		writers = append(writers, n)
	}
	tuneGC()
	base := *dir
	if base == "" {
		tmp, err := os.MkdirTemp("", "mandate-bench-audit-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		base = tmp
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "writers\tentries\tentries/s\tdurable+checkpoint p50\tp99\terrors")
	var best float64
	for i, n := range writers {
		r, err := benchAuditLevel(ctx, filepath.Join(base, fmt.Sprintf("log-%d", i)), n, *dur)
		if err != nil {
			return err
		}
		best = max(best, r.rate)
		errs := fmt.Sprint(r.errors)
		if r.errors > 0 {
			errs += fmt.Sprintf(" (first: %v)", r.firstErr)
		}
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%s\t%s\t%s\n", n, r.n, r.rate, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), errs)
	}
	tw.Flush()
	raw, err := benchRawBolt(ctx, filepath.Join(base, "raw.db"), *dur)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "raw bbolt group commit (1024 × %d-byte entries per transaction), this machine: %.0f entries/s\n", benchAuditEntrySize, raw)
	fmt.Fprintf(stdout, "best audit log rate ÷ raw bbolt group commit = %.2f\n", best/raw)
	fmt.Fprintln(stdout, "(an entry is acknowledged only once it is durable and a checkpoint covering it is signed and stored: both latencies are the same)")
	return nil
}

type auditBenchResult struct {
	n        int
	rate     float64
	p50, p99 time.Duration
	errors   int // appends that failed before the run's end
	firstErr error
}

func benchAuditLevel(ctx context.Context, dir string, writers int, dur time.Duration) (auditBenchResult, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return auditBenchResult{}, err
	}
	st, err := bolt.Open(filepath.Join(dir, "bench.db"), bolt.Options{})
	if err != nil {
		return auditBenchResult{}, err
	}
	defer st.Close()
	skey, vkey, err := note.GenerateKey(nil, "bench/audit")
	if err != nil {
		return auditBenchResult{}, err
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	l, err := audit.Open(ctx, audit.Config{Store: st, Origin: "bench/audit", Signer: signer, Verifier: verifier})
	if err != nil {
		return auditBenchResult{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	defer func() { stop(); <-done }()

	details := []byte(`{"pad":"` + strings.Repeat("x", 360) + `"}`)
	r := appendLoad(ctx, l, writers, dur, details)
	if r.n == 0 {
		return r, fmt.Errorf("bench audit: no entry appended with %d writers: %v", writers, r.firstErr)
	}
	return r, nil
}

// appendLoad has writers goroutines append entries to l, each one at a
// time, for dur. Only the appends acknowledged count, with their latency;
// one that fails is an error (its writer stops). An append under way
// when dur ends is finished, as bench's requests are, not cut: each
// writer's last append counts too (an interrupt, ctx, cuts them).
func appendLoad(ctx context.Context, l *audit.Log, writers int, dur time.Duration, details []byte) auditBenchResult {
	deadline := time.Now().Add(dur)
	var mu sync.Mutex
	var lat []time.Duration
	var res auditBenchResult
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			var own []time.Duration
			var err error
			e := audit.Entry{Type: "bench.append", Actor: audit.ActorSystem, Subject: fmt.Sprint(w), Details: details}
			for ctx.Err() == nil && time.Now().Before(deadline) {
				e.Time = time.Now()
				t := time.Now()
				if _, err = l.Append(ctx, e); err != nil {
					break
				}
				own = append(own, time.Since(t))
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, own...)
			if err != nil && !cutByEnd(err) {
				res.errors++
				if res.firstErr == nil {
					res.firstErr = err
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.n = len(lat)
	res.rate = float64(len(lat)) / elapsed.Seconds()
	if len(lat) > 0 {
		slices.Sort(lat)
		res.p50, res.p99 = percentile(lat, 50), percentile(lat, 99)
	}
	return res
}

// benchRawBolt measures bbolt itself: transactions of 1024 puts of
// same-sized values, each committed (fsynced), through store/bolt, for
// dur or until ctx ends (an interrupt: then it measured nothing, and
// says so with ctx's error).
func benchRawBolt(ctx context.Context, path string, dur time.Duration) (float64, error) {
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	value := make([]byte, benchAuditEntrySize)
	var n uint64
	start := time.Now()
	for time.Since(start) < dur {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("bench audit: raw bbolt: %w", err)
		}
		err := st.Update(ctx, func(tx store.Tx) error {
			for j := range uint64(1024) {
				if err := tx.Put("raw", binary.BigEndian.AppendUint64(nil, n+j), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		n += 1024
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
