package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

// pendingJoin tells a join's own unfinished write (join.key of its token,
// and a valid credential holding its key) from a join.key an expired credential
// holds (never asked with again) and from anything else.
func TestPendingJoin(t *testing.T) {
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	cred := func(dir string, key *ecdsa.PrivateKey, notAfter time.Time) {
		id, _ := url.Parse("spiffe://mandate.localhost/node/join/n1")
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{id}, NotBefore: notAfter.Add(-2 * time.Hour), NotAfter: notAfter,
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		if err := credfile.Write(credfile.In(dir), []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
			t.Fatal(err)
		}
	}
	const token = "d1" // the digest of the join's token
	joinKeyFile := func(dir string, key *ecdsa.PrivateKey, tokens ...string) {
		b, err := encodeJoinKey(key, append(tokens, token)[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "join.key"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name              string
		setup             func(dir string)
		wantHeld, wantOld bool
	}{
		{"nothing there", func(string) {}, false, false},
		{"join.key alone", func(dir string) { joinKeyFile(dir, newKey()) }, false, false},
		{"a valid credential alone", func(dir string) { cred(dir, newKey(), time.Now().Add(time.Hour)) }, false, false},
		{"a valid credential of join.key", func(dir string) {
			k := newKey()
			cred(dir, k, time.Now().Add(time.Hour))
			joinKeyFile(dir, k)
		}, true, false},
		{"a valid credential of join.key, asked with another token", func(dir string) {
			k := newKey()
			cred(dir, k, time.Now().Add(time.Hour))
			joinKeyFile(dir, k, "d2")
		}, false, false},
		{"a valid credential of a join.key naming no token (a version before)", func(dir string) {
			k := newKey()
			cred(dir, k, time.Now().Add(time.Hour))
			b, err := credfile.EncodeKeyPEM(k)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "join.key"), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, true, false},
		{"a valid credential of another key", func(dir string) {
			cred(dir, newKey(), time.Now().Add(time.Hour))
			joinKeyFile(dir, newKey())
		}, false, false},
		{"an expired credential of join.key", func(dir string) {
			k := newKey()
			cred(dir, k, time.Now().Add(-time.Hour))
			joinKeyFile(dir, k)
		}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(dir)
			if held, stale := pendingJoin(dir, token); held != tc.wantHeld || stale != tc.wantOld {
				t.Fatalf("pendingJoin = held %v, stale %v; want %v, %v", held, stale, tc.wantHeld, tc.wantOld)
			}
		})
	}
}

// joinKey keeps a join's key for the same token (a retry), and makes a
// new one for another token: an attempt given up leaves no key that two
// nodes would share.
func TestJoinKeyFollowsItsToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	first, path, err := joinKey(dir, "d1")
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := joinKey(dir, "d1")
	if err != nil || !first.Public().(*ecdsa.PublicKey).Equal(again.Public()) {
		t.Fatalf("the same token again: %v; want the same key", err)
	}
	other, _, err := joinKey(dir, "d2")
	if err != nil || first.Public().(*ecdsa.PublicKey).Equal(other.Public()) {
		t.Fatalf("another token: %v; want a new key", err)
	}
	if _, digest, err := readJoinKey(path); err != nil || digest != "d2" {
		t.Fatalf("join.key names %q (%v), want d2", digest, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("join.key: %v %v, want mode 0600", fi, err)
	}
	// A join.key of the version before, naming no token, is the key of
	// a join that may be this one: kept, so that the same command
	// finishes it as it did then.
	old, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := credfile.EncodeKeyPEM(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	kept, _, err := joinKey(dir, "d3")
	if err != nil || !old.PublicKey.Equal(kept.Public()) {
		t.Fatalf("a join.key naming no token: %v; want it kept", err)
	}
}

// node run renews at a random point between 40 and 50% of an SVID's
// life (of what is left of it, when less): never later than half of it,
// and not at the same point for every node renewed together.
func TestRenewalWaitIsJittered(t *testing.T) {
	for _, tc := range []struct {
		name                string
		notBefore, notAfter time.Duration // from now
	}{
		{"an hour", -10 * time.Second, time.Hour},
		{"a minute", -10 * time.Second, time.Minute},
		{"less left than half of its life (cut short by its CA's expiry)", -50 * time.Minute, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			cert := selfSigned(t, "spiffe://mandate.localhost/node/join/x", now.Add(tc.notBefore), now.Add(tc.notAfter), false).cert
			ans := &client.SVIDAnswer{X509SVID: string(credfile.EncodeCertsPEM([]*x509.Certificate{cert})), ExpiresAt: cert.NotAfter}
			left := func() time.Duration { return min(time.Until(cert.NotAfter), cert.NotAfter.Sub(cert.NotBefore)) }
			first := left()
			earliest := first
			for range 200 {
				before := left()
				w := renewalWait(ans)
				after := left()
				if w > before/2 || w < after*2/5 {
					t.Fatalf("renewalWait = %s with %s left: want 40 to 50%% of it", w, before)
				}
				earliest = min(earliest, w)
			}
			if earliest > first*12/25 {
				t.Errorf("renewalWait never under 48%% of the %s left in 200 draws (earliest %s): not jittered", first, earliest)
			}
		})
	}
	for _, d := range []time.Duration{0, time.Second, 30 * time.Second} {
		for range 100 {
			if j := jittered(d); j > d || j < d*4/5 {
				t.Fatalf("jittered(%s) = %s, want 80 to 100%% of it", d, j)
			}
		}
	}
}

// A failed renewal is tried again before the credential expires (within
// a quarter of what is left of it, 30 s at most), but never sooner than a
// second later: a credential about to expire must not make node run try
// again at once, over and over.
func TestRenewalRetryWait(t *testing.T) {
	for _, left := range []time.Duration{-time.Second, 0, 100 * time.Millisecond, 3 * time.Second, 8 * time.Second, time.Minute, time.Hour} {
		for range 100 {
			w := renewalRetryWait(left)
			if w < time.Second || w > 30*time.Second || left >= 4*time.Second && w > left/4 {
				t.Fatalf("renewalRetryWait(%s) = %s, want 1 s to 30 s, within a quarter of what is left when that is 1 s or more", left, w)
			}
		}
	}
}

// node run says why a node credential that is there cannot be used
// (here a key others may read), not to join first: joining again would
// make another node.
func TestNodeRunSaysWhyItsCredentialIsUnusable(t *testing.T) {
	node := selfSigned(t, "spiffe://org-a.example/node/join/0123456789abcdef", time.Now().Add(-time.Minute), time.Now().Add(time.Hour), false)
	dir := filepath.Join(t.TempDir(), "node")
	if err := credfile.Write(credfile.In(dir), []*x509.Certificate{node.cert}, node.key, []*x509.Certificate{node.cert}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(credfile.In(dir).Key, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"node", "run", "--out", dir, "--server", "https://127.0.0.1:1"}, &out, &errOut)
	if err == nil || strings.Contains(err.Error(), "join first") || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("node run with a key others may read = %v, want the key's mode said, not to join first", err)
	}
}

// node run stops, with what to do, when the join-token node's credential
// has expired unrenewed: said as node run's stop, of this node, with
// the last renewal's failure when one was tried, not as the generic
// refusal of any expired credential.
func TestNodeRunSaysTheNodeCredentialExpired(t *testing.T) {
	const id = "spiffe://org-a.example/node/join/0123456789abcdef"
	for _, tc := range []struct {
		name     string
		notAfter time.Time
		want     []string
	}{
		{"expired before node run starts", time.Now().Add(-time.Minute), nil},
		// The authority unreachable (nothing listens at port 1): each
		// renewal fails until the credential expires.
		{"expired while renewals fail", time.Now().Add(5 * time.Second), []string{"the last renewal failed", "127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := selfSigned(t, id, time.Now().Add(-time.Hour), tc.notAfter, false)
			dir := filepath.Join(t.TempDir(), "node")
			if err := credfile.Write(credfile.In(dir), []*x509.Certificate{node.cert}, node.key, []*x509.Certificate{node.cert}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out, errOut bytes.Buffer
			err := run(ctx, []string{"node", "run", "--out", dir, "--server", "https://127.0.0.1:1"}, &out, &errOut)
			if err == nil {
				t.Fatal("node run with an expired credential went on")
			}
			want := append([]string{"node run stopped", id, "expired at", "join again with a new join token", "mandate node join --out " + dir}, tc.want...)
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("node run = %v, want it to say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "an agent's") {
				t.Errorf("node run = %v, want the node's case alone, not every credential's", err)
			}
		})
	}
}

// node run's wait between renewals ends when the wall clock says it has
// passed, not only when Go's timer does (it stands still while the host
// is suspended): a node resumed after its renewal was due renews then,
// not that much later, when its credential may have expired.
func TestSleepFollowsTheWallClock(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		wall   func(read int) time.Time // the wall clock at its nth reading
		d      time.Duration
		cancel int // ctx is cancelled at this reading (0: never)
		want   bool
	}{
		{"the host was suspended past the wait", func(n int) time.Time {
			if n == 0 {
				return start
			}
			return start.Add(2 * time.Hour)
		}, time.Hour, 0, true},
		{"the clock was stepped forward past it", func(n int) time.Time { return start.Add(time.Duration(n) * 30 * time.Minute) }, time.Hour, 0, true},
		{"the wall clock stands: only the timer ends it", func(int) time.Time { return start }, time.Hour, 50, false},
		{"the wall clock went back: the timer ends it", func(n int) time.Time { return start.Add(-time.Duration(n) * time.Hour) }, time.Millisecond, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var mu sync.Mutex
			reads := 0
			now := func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				if tc.cancel != 0 && reads == tc.cancel {
					cancel()
				}
				reads++
				return tc.wall(reads - 1)
			}
			if got, woken := sleep(ctx, tc.d, now, time.Millisecond, nil); got != tc.want || woken {
				t.Errorf("sleep = %v, want %v", got, tc.want)
			}
		})
	}
}

// node run's Workload API keeps one client to the authority (and its
// connections) while the node's credential stays as it is, and makes a
// new one once a renewal rewrites it (svid.pem or bundle.pem), or once
// it has expired (dial then says so).
func TestReusedClientFollowsTheCredential(t *testing.T) {
	dir := t.TempDir()
	write := func(notAfter time.Time) {
		t.Helper()
		leaf := selfSigned(t, "spiffe://mandate.localhost/node/join/0123456789abcdef", time.Now().Add(-time.Hour), notAfter, false)
		root := selfSigned(t, "spiffe://mandate.localhost", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), true)
		if err := credfile.Write(credfile.In(dir), []*x509.Certificate{leaf.cert}, leaf.key, []*x509.Certificate{root.cert}); err != nil {
			t.Fatal(err)
		}
	}
	dials, root := 0, selfSigned(t, "spiffe://mandate.localhost", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), true)
	r := &reusedClient{dir: dir, dial: func() (*client.Client, error) {
		dials++
		return client.New(client.Config{Server: "https://127.0.0.1:1", Bundle: []*x509.Certificate{root.cert}})
	}}
	get := func(wantDials int) *client.Client {
		t.Helper()
		c, err := r.get()
		if err != nil || dials != wantDials {
			t.Fatalf("get() = %v after %d dials, want a client after %d", err, dials, wantDials)
		}
		return c
	}
	write(time.Now().Add(time.Hour))
	first := get(1)
	if again := get(1); again != first {
		t.Error("get() made a new client for the same credential")
	}
	write(time.Now().Add(time.Hour)) // renewed
	if renewed := get(2); renewed == first {
		t.Error("get() kept the client of the credential renewed since")
	}
	get(2)
	write(time.Now().Add(-time.Minute)) // expired: dial says so each time
	get(3)
	get(4)
}

// A renewal or attestation the authority refused asking to be left
// alone for a while (429 with Retry-After) is tried again no sooner,
// but while half of what is left of the credential remains: it must
// not expire for the wait.
func TestHeedRetryAfter(t *testing.T) {
	busy := func(after time.Duration) error {
		return fmt.Errorf("renew: %w", &client.Problem{Type: "https://mandate.dev/problems/rate-limited", Status: 429, RetryAfter: after})
	}
	for _, c := range []struct {
		name        string
		err         error
		wait, limit time.Duration
		want        time.Duration
	}{
		{"no Retry-After", busy(0), 20 * time.Second, time.Hour, 20 * time.Second},
		{"a Retry-After longer than the wait", busy(5 * time.Minute), 20 * time.Second, time.Hour, 5 * time.Minute},
		{"a Retry-After shorter than the wait", busy(time.Second), 20 * time.Second, time.Hour, 20 * time.Second},
		{"a Retry-After past half the credential's life left", busy(time.Hour), 20 * time.Second, 10 * time.Minute, 10 * time.Minute},
		{"no problem answered", errors.New("connection refused"), 20 * time.Second, time.Hour, 20 * time.Second},
	} {
		if got := heedRetryAfter(c.err, c.wait, c.limit); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
