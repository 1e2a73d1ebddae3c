package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
)

// attestBench holds honest device answers made once with the simulator,
// so that only the server's side is measured.
type attestBench struct {
	v            *attest.TPMVerifier
	ekPub, akPub []byte
	sessionIDs   []string // sealed, as the device sends them back
	evidence     []attest.Evidence
}

func runBenchAttest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench attest", "bench attest [flags]", stderr)
	conc := fs.Int("concurrency", 8, "attestations verified concurrently")
	dur := fs.Duration("duration", 5*time.Second, "how long to measure each row")
	eks := fs.String("ek", "rsa,ecc", "EK types to measure: rsa, ecc or rsa,ecc")
	n := fs.Int("transcripts", 64, "distinct device answers made with the simulator beforehand (reused in turn)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *conc < 1 || *conc > 1024 || *n < 1 || *n > 10000 {
		return usagef("--concurrency must be 1..1024 and --transcripts 1..10000")
	}
	if err := checkBenchDuration(*dur, time.Hour); err != nil {
		return err
	}
	tuneGC()
	tmp, err := os.MkdirTemp("", "mandate-bench-attest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	st, err := bolt.Open(filepath.Join(tmp, "bench.db"), bolt.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ek\tserver work\tconcurrency\tattestations\tattestations/s\tp50\tp99\tserver CPU per attestation\ttarget")
	for _, ek := range splitList(*eks) {
		if ek != tpmdevice.EKRSA && ek != tpmdevice.EKECC {
			return usagef("--ek: %q is not rsa or ecc", ek)
		}
		b, err := newAttestBench(ek, *n)
		if err != nil {
			return err
		}
		for _, withStore := range []bool{false, true} {
			r := b.measure(ctx, st, withStore, *conc, *dur)
			work := "challenge + verify (CPU only)"
			if withStore {
				work = "+ the answer's use stored (one bbolt commit, fsync)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\n", ek, work, *conc, r.ops, float64(r.ops)/r.elapsed.Seconds(),
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.cpuPerOp.Round(time.Microsecond), attestVerdict(r))
		}
	}
	tw.Flush()
	fmt.Fprintln(stdout, "(device answers come from the TPM simulator beforehand: the device's TPM time is not measured;")
	fmt.Fprintln(stdout, " server CPU is this process's user+system time over the run, divided by the attestations)")
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// newAttestBench opens the simulator and makes n challenges and their
// honest answers.
func newAttestBench(ek string, n int) (*attestBench, error) {
	tpm, err := tpmdevice.OpenSimulator(1)
	if err != nil {
		return nil, err
	}
	defer tpm.Close()
	dev, err := tpmdevice.Open(tpm, tpmdevice.Options{EK: ek})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7, 16}
	vals, err := dev.ReadPCRs(pcrs)
	if err != nil {
		return nil, err
	}
	ekp, err := attest.ParseTPM2BPublic("ek", dev.EKPublic())
	if err != nil {
		return nil, err
	}
	v, err := attest.NewTPMVerifier(attest.TPMConfig{EKAllowlist: []string{ekp.SHA256Hex()},
		Profiles: []attest.PCRProfile{{Name: "edge-v1", SHA256: vals}}, Allowed: []string{"edge-v1"}})
	if err != nil {
		return nil, err
	}
	b := &attestBench{v: v, ekPub: dev.EKPublic(), akPub: dev.AKPublic()}
	for range n {
		ch, err := b.challenge()
		if err != nil {
			return nil, err
		}
		secret, err := dev.Activate(ch.CredentialBlob, ch.EncryptedSecret)
		if err != nil {
			return nil, err
		}
		q, sig, err := dev.Quote(ch.Session.Nonce, ch.Session.PCRs)
		if err != nil {
			return nil, err
		}
		got := map[string][]byte{}
		for i, val := range vals {
			got[strconv.Itoa(i)] = val
		}
		ev := attest.Evidence{Secret: secret, Quote: q, Signature: sig, PCRs: got}
		if _, err := v.Verify(ch.Session, ev); err != nil {
			return nil, fmt.Errorf("bench transcript does not verify: %w", err)
		}
		b.sessionIDs = append(b.sessionIDs, ch.SessionID)
		b.evidence = append(b.evidence, ev)
	}
	return b, nil
}

// challenge is the server's first half: trust the EK, check the AK, make
// the credential.
func (b *attestBench) challenge() (*attest.Challenge, error) {
	ek, err := b.v.CheckEK(b.ekPub, nil)
	if err != nil {
		return nil, err
	}
	ak, err := attest.CheckAK(b.akPub)
	if err != nil {
		return nil, err
	}
	return b.v.NewChallenge(ek, ak, "", time.Now())
}

// attestVerdict judges a row against the target (server CPU ≤ 1 ms per
// attestation): a row with no attestation (an interrupt, a run too
// short for one) measured nothing, and one with failures is not judged.
func attestVerdict(r attestBenchResult) string {
	switch {
	case r.errors > 0:
		return fmt.Sprintf("%d ERRORS: %v", r.errors, r.firstErr)
	case r.ops == 0:
		return "NOT MEASURED: no attestation made"
	case r.cpuPerOp > time.Millisecond:
		return "MISSED (≤ 1ms)"
	}
	return "met (≤ 1ms)"
}

type attestBenchResult struct {
	ops, errors int
	firstErr    error
	elapsed     time.Duration
	p50, p99    time.Duration
	cpuPerOp    time.Duration
}

// measure runs attestations (challenge, then the verification of a
// prepared answer) from conc goroutines for dur. Only those that
// succeed count as attestations and have their latency taken; the
// others are counted in errors.
func (b *attestBench) measure(ctx context.Context, st store.Store, withStore bool, conc int, dur time.Duration) attestBenchResult {
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var res attestBenchResult
	cpu0 := cpuTime()
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var mine []time.Duration
			errs, first := 0, error(nil)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := next.Add(1)
				t0 := time.Now()
				if err := b.once(ctx, st, withStore, i); err != nil {
					// A failed attestation is counted apart: neither
					// an attestation made nor a latency.
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			res.errors += errs
			if res.firstErr == nil {
				res.firstErr = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ops = len(lat)
	if res.ops > 0 {
		slices.Sort(lat)
		res.p50, res.p99 = percentile(lat, 50), percentile(lat, 99)
		res.cpuPerOp = (cpuTime() - cpu0) / time.Duration(res.ops)
	}
	return res
}

func (b *attestBench) once(ctx context.Context, st store.Store, withStore bool, i int64) error {
	if _, err := b.challenge(); err != nil {
		return err
	}
	// The answer's side as the authority runs it: open the sealed
	// session, check its EK's trust as configured now, then (below) the
	// evidence.
	k := int(i % int64(len(b.sessionIDs)))
	opened, err := b.v.OpenSession(b.sessionIDs[k], benchTD)
	if err != nil {
		return err
	}
	if err := b.v.CheckSessionTrust(opened, time.Now()); err != nil {
		return err
	}
	s := *opened
	if withStore {
		// The challenge is sealed in its id: the store holds only the
		// mark of its answer, written in one commit.
		s.ID = s.ID[:16] + fmt.Sprintf("%032x", i)
		if err := st.Update(ctx, func(tx store.Tx) error { return attest.ConsumeTPMSession(tx, &s, time.Now()) }); err != nil {
			return err
		}
	}
	_, err = b.v.Verify(&s, b.evidence[k])
	return err
}

// benchTD is the trust domain the bench's sessions are opened in.
var benchTD = spiffeid.RequireTrustDomainFromString("bench.localhost")
