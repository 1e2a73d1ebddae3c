package federation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	spiffefed "github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func mustSet(t *testing.T, m *Manager, rel Relationship, b *spiffebundle.Bundle) {
	t.Helper()
	if err := m.Set(rel, b); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

func mustBundle(t *testing.T, m *Manager, td spiffeid.TrustDomain) *spiffebundle.Bundle {
	t.Helper()
	b, ok := m.Bundle(td)
	if !ok {
		t.Fatalf("no bundle for %s", td)
	}
	return b
}

func mustStatus(t *testing.T, m *Manager, td spiffeid.TrustDomain) Status {
	t.Helper()
	s, ok := m.Status(td)
	if !ok {
		t.Fatalf("no status for %s", td)
	}
	return s
}

func seqOf(b *spiffebundle.Bundle) uint64 {
	s, _ := b.SequenceNumber()
	return s
}

func TestSPIFFEFetchWithInitialBundle(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 1, 300*time.Second, caB)
	p := startPeer(t, tdB, served, caB.serverCert(t, endpointB))

	var updates []*spiffebundle.Bundle
	var mu sync.Mutex
	cfg := fastConfig()
	cfg.OnUpdate = func(_ context.Context, td spiffeid.TrustDomain, b *spiffebundle.Bundle) error {
		mu.Lock()
		defer mu.Unlock()
		if td != tdB {
			t.Errorf("OnUpdate td = %s", td)
		}
		updates = append(updates, b)
		return nil
	}
	m := NewManager(cfg)
	mustSet(t, m, spiffeRel(p), bundleOf(tdB, 0, -1, caB)) // out-of-band initial bundle

	if err := m.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	got := mustBundle(t, m, tdB)
	if !got.Equal(served) {
		t.Fatalf("bundle = %+v, want the served one", got)
	}
	st := mustStatus(t, m, tdB)
	if st.LastError != "" || st.ConsecutiveFailures != 0 || st.LastSuccess.IsZero() || !st.HasSequence || st.Sequence != 1 {
		t.Fatalf("status = %+v", st)
	}
	if d := st.NextRefresh.Sub(st.LastSuccess); d != 300*time.Second {
		t.Fatalf("next refresh in %v, want the 300s hint", d)
	}

	// Unchanged bundle: success, but no second OnUpdate.
	if err := m.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("second Refresh: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(updates) != 1 || !updates[0].Equal(served) {
		t.Fatalf("OnUpdate calls = %d, want 1 with the served bundle", len(updates))
	}
	if p.hits.Load() != 2 {
		t.Fatalf("peer hits = %d, want 2", p.hits.Load())
	}
}

func TestSPIFFEFetchRefusesWrongServer(t *testing.T) {
	caB := newTestCA(t, tdB)
	otherCA := newTestCA(t, tdB) // same trust domain, not in our bundle
	tests := []struct {
		name    string
		ca      *testCA
		id      spiffeid.ID
		wantErr string
	}{
		{"different spiffe id", caB, spiffeid.RequireFromString("spiffe://org-b.example/not-the-endpoint"), "unexpected ID"},
		{"untrusted ca", otherCA, endpointB, "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startPeer(t, tdB, bundleOf(tdB, 7, -1, caB, otherCA), tt.ca.serverCert(t, tt.id))
			var updated atomic.Bool
			cfg := fastConfig()
			cfg.OnUpdate = func(context.Context, spiffeid.TrustDomain, *spiffebundle.Bundle) error {
				updated.Store(true)
				return nil
			}
			m := NewManager(cfg)
			initial := bundleOf(tdB, 1, -1, caB)
			mustSet(t, m, spiffeRel(p), initial)

			err := m.Refresh(context.Background(), tdB)
			if err == nil {
				t.Fatal("Refresh succeeded against an unauthorized endpoint")
			}
			if !strings.HasPrefix(err.Error(), "federation: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q: want prefix \"federation: \" and %q", err, tt.wantErr)
			}
			if updated.Load() {
				t.Error("OnUpdate called for a refused fetch")
			}
			if got := mustBundle(t, m, tdB); !got.Equal(initial) {
				t.Error("bundle changed after a refused fetch")
			}
			st := mustStatus(t, m, tdB)
			if st.LastError == "" || st.ConsecutiveFailures != 1 || !st.LastSuccess.IsZero() {
				t.Fatalf("status = %+v", st)
			}
			if p.hits.Load() != 0 {
				t.Fatalf("bundle was served %d times to an unauthenticated fetch", p.hits.Load())
			}
		})
	}
}

func TestWebPKIFetch(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 3, -1, caB)
	h, err := spiffefed.NewHandler(tdB, served)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.StartTLS()
	t.Cleanup(srv.Close)
	rel := Relationship{TrustDomain: tdB, BundleEndpointURL: srv.URL + "/bundle", Profile: ProfileHTTPSWeb}

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	cfg := fastConfig()
	cfg.WebRoots = roots
	m := NewManager(cfg)
	mustSet(t, m, rel, nil) // no initial bundle needed for https_web
	if _, ok := m.Bundle(tdB); ok {
		t.Fatal("bundle before first fetch")
	}
	if err := m.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := mustBundle(t, m, tdB); !got.Equal(served) {
		t.Fatal("fetched bundle differs from the served one")
	}
	if d := mustStatus(t, m, tdB); d.NextRefresh.Sub(d.LastSuccess) != time.Hour {
		t.Fatalf("without a hint the next refresh should be DefaultRefresh, got %v", d.NextRefresh.Sub(d.LastSuccess))
	}

	// The test server's certificate is not trusted by the system roots.
	cfg.WebRoots = nil
	m2 := NewManager(cfg)
	mustSet(t, m2, rel, nil)
	if err := m2.Refresh(context.Background(), tdB); err == nil {
		t.Fatal("Refresh succeeded without trusting the server's root")
	}
	if _, ok := m2.Bundle(tdB); ok {
		t.Fatal("bundle installed from an untrusted server")
	}
}

func TestPeerDownKeepsBundleAndRecovers(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 1, 300*time.Second, caB)
	p := startPeer(t, tdB, served, caB.serverCert(t, endpointB))

	cfg := fastConfig()
	m := NewManager(cfg)
	mustSet(t, m, spiffeRel(p), bundleOf(tdB, 0, -1, caB))
	runManager(t, m)

	waitFor(t, "first fetch", func() bool {
		s, _ := m.Status(tdB)
		return !s.LastSuccess.IsZero()
	})

	p.stop()
	if err := m.Refresh(context.Background(), tdB); err == nil {
		t.Fatal("Refresh succeeded with the peer down")
	}
	// Run retries on its own, with growing delays.
	var st Status
	waitFor(t, "three consecutive failures", func() bool {
		st, _ = m.Status(tdB)
		return st.ConsecutiveFailures >= 3
	})
	if st.LastError == "" || !strings.Contains(st.LastError, "federation: ") {
		t.Fatalf("status error = %q", st.LastError)
	}
	if want := cfg.RetryBackoff << (st.ConsecutiveFailures - 1); st.NextRefresh.Sub(st.LastAttempt) != want {
		t.Fatalf("after %d failures retry in %v, want %v", st.ConsecutiveFailures, st.NextRefresh.Sub(st.LastAttempt), want)
	}
	if got := mustBundle(t, m, tdB); !got.Equal(served) {
		t.Fatal("last-known bundle not served while the peer is down")
	}
	if b, err := m.GetBundleForTrustDomain(tdB); err != nil || !b.Equal(served) {
		t.Fatalf("combined source while down: %v", err)
	}

	rotated := bundleOf(tdB, 2, 300*time.Second, caB, newTestCA(t, tdB))
	p.setBundle(rotated)
	p.start()
	waitFor(t, "recovery", func() bool {
		s, _ := m.Status(tdB)
		return s.ConsecutiveFailures == 0 && s.Sequence == 2
	})
	st = mustStatus(t, m, tdB)
	if st.LastError != "" || st.NextRefresh.Sub(st.LastSuccess) != 300*time.Second {
		t.Fatalf("status after recovery = %+v", st)
	}
	if got := mustBundle(t, m, tdB); !got.Equal(rotated) {
		t.Fatal("bundle after recovery is not the peer's current one")
	}
}

func TestRotationPickedUpAtRefreshHint(t *testing.T) {
	caB := newTestCA(t, tdB)
	// Refresh hints are whole seconds on the wire, so 1s is the smallest
	// non-zero hint a peer can send; DefaultRefresh is 1h, so a refresh
	// within the test's deadline can only come from the hint.
	const hint = time.Second
	p := startPeer(t, tdB, bundleOf(tdB, 1, hint, caB), caB.serverCert(t, endpointB))

	var seqs []uint64
	var mu sync.Mutex
	cfg := fastConfig()
	cfg.OnUpdate = func(_ context.Context, _ spiffeid.TrustDomain, b *spiffebundle.Bundle) error {
		mu.Lock()
		defer mu.Unlock()
		seqs = append(seqs, seqOf(b))
		return nil
	}
	m := NewManager(cfg)
	mustSet(t, m, spiffeRel(p), bundleOf(tdB, 0, -1, caB))
	runManager(t, m)

	waitFor(t, "first fetch", func() bool {
		b, _ := m.Bundle(tdB)
		return b != nil && seqOf(b) == 1
	})
	st := mustStatus(t, m, tdB)
	if d := st.NextRefresh.Sub(st.LastSuccess); d != hint {
		t.Fatalf("next refresh in %v, want the %v hint", d, hint)
	}

	newRoot := newTestCA(t, tdB)
	p.setBundle(bundleOf(tdB, 2, hint, caB, newRoot))
	waitFor(t, "rotated bundle", func() bool {
		b, _ := m.Bundle(tdB)
		return b != nil && b.HasX509Authority(newRoot.cert)
	})
	b := mustBundle(t, m, tdB)
	if seqOf(b) != 2 || !b.HasX509Authority(caB.cert) {
		t.Fatalf("rotated bundle: seq %d, old root kept %v", seqOf(b), b.HasX509Authority(caB.cert))
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seqs) != "[1 2]" {
		t.Fatalf("OnUpdate sequences = %v, want [1 2]", seqs)
	}
}

func TestOnUpdateErrorKeepsOldBundle(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 2, -1, caB, newTestCA(t, tdB))
	p := startPeer(t, tdB, served, caB.serverCert(t, endpointB))

	errStore := errors.New("disk full")
	var fail atomic.Bool
	fail.Store(true)
	var m *Manager
	initial := bundleOf(tdB, 1, -1, caB)
	cfg := fastConfig()
	cfg.OnUpdate = func(ctx context.Context, td spiffeid.TrustDomain, b *spiffebundle.Bundle) error {
		// Called before the new bundle becomes visible.
		if cur, _ := m.Bundle(td); !cur.Equal(initial) {
			t.Error("new bundle visible before OnUpdate returned")
		}
		if fail.Load() {
			return errStore
		}
		return nil
	}
	m = NewManager(cfg)
	mustSet(t, m, spiffeRel(p), initial)

	err := m.Refresh(context.Background(), tdB)
	if !errors.Is(err, errStore) {
		t.Fatalf("Refresh error = %v, want it to wrap %v", err, errStore)
	}
	if got := mustBundle(t, m, tdB); !got.Equal(initial) {
		t.Fatal("bundle replaced although OnUpdate failed")
	}
	st := mustStatus(t, m, tdB)
	if !strings.Contains(st.LastError, "disk full") || st.ConsecutiveFailures != 1 || st.NextRefresh.Sub(st.LastAttempt) != cfg.RetryBackoff {
		t.Fatalf("status = %+v", st)
	}

	fail.Store(false)
	if err := m.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := mustBundle(t, m, tdB); !got.Equal(served) {
		t.Fatal("bundle not updated once OnUpdate succeeded")
	}
}

func TestRemoveStopsRefreshing(t *testing.T) {
	caB := newTestCA(t, tdB)
	// A zero hint is clamped up to MinRefresh (10ms here): frequent refreshes.
	p := startPeer(t, tdB, bundleOf(tdB, 1, 0, caB), caB.serverCert(t, endpointB))
	cfg := fastConfig()
	m := NewManager(cfg)
	mustSet(t, m, spiffeRel(p), bundleOf(tdB, 0, -1, caB))
	runManager(t, m)

	waitFor(t, "several refreshes", func() bool { return p.hits.Load() >= 3 })
	if st := mustStatus(t, m, tdB); st.NextRefresh.Sub(st.LastSuccess) != cfg.MinRefresh {
		t.Fatalf("zero hint gave interval %v, want MinRefresh", st.NextRefresh.Sub(st.LastSuccess))
	}

	m.Remove(tdB)
	after := p.hits.Load()
	if _, ok := m.Bundle(tdB); ok {
		t.Fatal("bundle still served after Remove")
	}
	if _, ok := m.Status(tdB); ok {
		t.Fatal("status still present after Remove")
	}
	if len(m.Relationships()) != 0 {
		t.Fatal("relationship still listed after Remove")
	}
	if err := m.Refresh(context.Background(), tdB); !errors.Is(err, ErrUnknownTrustDomain) {
		t.Fatalf("Refresh after Remove = %v, want ErrUnknownTrustDomain", err)
	}
	// Proving a negative needs a window: 20 refresh intervals.
	time.Sleep(20 * cfg.MinRefresh)
	// One request may still reach the server after the client gave up on it.
	if got := p.hits.Load(); got > after+1 {
		t.Fatalf("peer got %d requests after Remove", got-after)
	}
}

func TestValidate(t *testing.T) {
	good := Relationship{TrustDomain: tdB, BundleEndpointURL: "https://b.example:8443/bundle", Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: endpointB}
	tests := []struct {
		name    string
		mod     func(*Relationship)
		wantErr string
	}{
		{"valid https_spiffe", func(*Relationship) {}, ""},
		{"valid https_web", func(r *Relationship) { r.Profile = ProfileHTTPSWeb; r.EndpointSPIFFEID = spiffeid.ID{} }, ""},
		{"endpoint in other trust domain", func(r *Relationship) { r.EndpointSPIFFEID = spiffeid.RequireFromString("spiffe://org-a.example/x") }, ""},
		{"zero trust domain", func(r *Relationship) { r.TrustDomain = spiffeid.TrustDomain{} }, "trust domain is empty"},
		{"empty url", func(r *Relationship) { r.BundleEndpointURL = "" }, "url is empty"},
		{"http scheme", func(r *Relationship) { r.BundleEndpointURL = "http://b.example/bundle" }, "https scheme"},
		{"no scheme", func(r *Relationship) { r.BundleEndpointURL = "b.example/bundle" }, "https scheme"},
		{"unparsable url", func(r *Relationship) { r.BundleEndpointURL = "https://b.example/%zz" }, "bundle endpoint url"},
		{"no host", func(r *Relationship) { r.BundleEndpointURL = "https:///bundle" }, "no host"},
		{"a port and no host", func(r *Relationship) { r.BundleEndpointURL = "https://:8443/bundle" }, "no host"},
		{"a port out of range", func(r *Relationship) { r.BundleEndpointURL = "https://b.example:99999/bundle" }, "port"},
		{"port 0", func(r *Relationship) { r.BundleEndpointURL = "https://b.example:0/bundle" }, "port"},
		{"a port", func(r *Relationship) { r.BundleEndpointURL = "https://b.example:8443/bundle" }, ""},
		{"an empty port, the scheme's", func(r *Relationship) { r.BundleEndpointURL = "https://b.example:/bundle" }, ""},
		{"an IPv6 host and port", func(r *Relationship) { r.BundleEndpointURL = "https://[2001:db8::1]:8443/bundle" }, ""},
		{"user info", func(r *Relationship) { r.BundleEndpointURL = "https://u:p@b.example/bundle" }, "user info"},
		{"unparsable url with a password", func(r *Relationship) { r.BundleEndpointURL = "https://u:s3cr3t-pass@b.example%zz/bundle" }, "bundle endpoint url"},
		{"unknown profile", func(r *Relationship) { r.Profile = "https_magic" }, "unknown bundle endpoint profile"},
		{"empty profile", func(r *Relationship) { r.Profile = "" }, "unknown bundle endpoint profile"},
		{"https_spiffe without endpoint id", func(r *Relationship) { r.EndpointSPIFFEID = spiffeid.ID{} }, "requires an endpoint spiffe id"},
		{"https_web with endpoint id", func(r *Relationship) { r.Profile = ProfileHTTPSWeb }, "only used with profile https_spiffe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.mod(&r)
			err := r.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidRelationship) {
				t.Fatalf("error %v does not wrap ErrInvalidRelationship", err)
			}
			// The error reaches the admin's answer and the log: never a
			// URL's password.
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("Validate = %v: quotes the password", err)
			}
		})
	}
}

func TestSetChecks(t *testing.T) {
	caA := newTestCA(t, tdA)
	caB := newTestCA(t, tdB)
	local := bundleOf(tdA, 0, -1, caA)
	m := NewManager(Config{LocalBundle: func() *spiffebundle.Bundle { return local }, Logger: slog.New(slog.DiscardHandler)})
	rel := Relationship{TrustDomain: tdB, BundleEndpointURL: "https://b.example/bundle", Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: endpointB}

	if err := m.Set(rel, nil); err == nil || !strings.Contains(err.Error(), "needs an initial bundle") {
		t.Fatalf("Set https_spiffe without bundle = %v, want refusal", err)
	}
	jwtOnly := spiffebundle.New(tdB)
	if err := jwtOnly.AddJWTAuthority("k1", newKey(t).Public()); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(rel, jwtOnly); err == nil {
		t.Fatal("Set https_spiffe with a bundle without x509 authorities succeeded")
	}
	if err := m.Set(rel, bundleOf(tdC, 0, -1, caB)); err == nil || !strings.Contains(err.Error(), "not \"org-b.example\"") {
		t.Fatalf("Set with another trust domain's bundle = %v", err)
	}
	if err := m.Set(Relationship{TrustDomain: tdA, BundleEndpointURL: "https://a.example", Profile: ProfileHTTPSWeb}, nil); err == nil {
		t.Fatal("Set for the local trust domain succeeded")
	}
	web := Relationship{TrustDomain: tdB, BundleEndpointURL: "https://b.example/bundle", Profile: ProfileHTTPSWeb}
	if err := m.Set(web, spiffebundle.New(tdB)); !errors.Is(err, ErrNoAuthorities) {
		t.Fatalf("Set with a bundle without authorities = %v, want ErrNoAuthorities", err)
	}
	if err := m.Set(Relationship{TrustDomain: tdB}, nil); !errors.Is(err, ErrInvalidRelationship) {
		t.Fatalf("Set invalid = %v", err)
	}
	if len(m.Relationships()) != 0 {
		t.Fatal("a refused Set added a relationship")
	}

	// Endpoint in the local trust domain: authenticated with the local bundle.
	relC := Relationship{TrustDomain: tdC, BundleEndpointURL: "https://c.example/bundle", Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: spiffeid.RequireFromString("spiffe://org-a.example/proxy")}
	mustSet(t, m, relC, nil)
	// https_web needs no bundle.
	mustSet(t, m, Relationship{TrustDomain: tdB, BundleEndpointURL: "https://b.example/bundle", Profile: ProfileHTTPSWeb}, nil)
	if rels := m.Relationships(); len(rels) != 2 || rels[0].TrustDomain != tdB || rels[1].TrustDomain != tdC {
		t.Fatalf("Relationships = %v", rels)
	}

	// Replacing with a nil bundle keeps the last-known one, which also
	// satisfies the https_spiffe requirement.
	initial := bundleOf(tdB, 4, -1, caB)
	mustSet(t, m, rel, initial)
	rel.BundleEndpointURL = "https://b2.example/bundle"
	mustSet(t, m, rel, nil)
	if got := mustBundle(t, m, tdB); !got.Equal(initial) {
		t.Fatal("replacing the relationship lost the bundle")
	}
	if got := m.Relationships()[0]; got.BundleEndpointURL != "https://b2.example/bundle" {
		t.Fatalf("relationship not replaced: %+v", got)
	}
	// The caller's bundle was cloned.
	initial.AddX509Authority(newTestCA(t, tdB).cert)
	if got := mustBundle(t, m, tdB); len(got.X509Authorities()) != 1 {
		t.Fatal("Set kept the caller's bundle instead of a clone")
	}
}

func TestEndpointInLocalTrustDomain(t *testing.T) {
	caA := newTestCA(t, tdA)
	caB := newTestCA(t, tdB)
	proxyID := spiffeid.RequireFromString("spiffe://org-a.example/bundle-proxy")
	served := bundleOf(tdB, 1, -1, caB)
	p := startPeer(t, tdB, served, caA.serverCert(t, proxyID))

	cfg := fastConfig()
	cfg.LocalBundle = func() *spiffebundle.Bundle { return bundleOf(tdA, 0, -1, caA) }
	m := NewManager(cfg)
	mustSet(t, m, Relationship{TrustDomain: tdB, BundleEndpointURL: p.url(), Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: proxyID}, nil)
	if err := m.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := mustBundle(t, m, tdB); !got.Equal(served) {
		t.Fatal("wrong bundle")
	}

	// Without the local bundle the endpoint cannot be authenticated.
	cfg.LocalBundle = nil
	m2 := NewManager(cfg)
	mustSet(t, m2, Relationship{TrustDomain: tdB, BundleEndpointURL: p.url(), Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: proxyID}, nil)
	if err := m2.Refresh(context.Background(), tdB); err == nil {
		t.Fatal("Refresh succeeded without a bundle for the endpoint's trust domain")
	}
}

func TestCombinedSource(t *testing.T) {
	caA := newTestCA(t, tdA)
	caB := newTestCA(t, tdB)
	local := bundleOf(tdA, 9, -1, caA)
	m := NewManager(Config{LocalBundle: func() *spiffebundle.Bundle { return local }, Logger: slog.New(slog.DiscardHandler)})
	peerB := bundleOf(tdB, 1, -1, caB)
	if err := peerB.AddJWTAuthority("kb", newKey(t).Public()); err != nil {
		t.Fatal(err)
	}
	mustSet(t, m, Relationship{TrustDomain: tdB, BundleEndpointURL: "https://b.example/bundle", Profile: ProfileHTTPSWeb}, peerB)
	mustSet(t, m, Relationship{TrustDomain: tdC, BundleEndpointURL: "https://c.example/bundle", Profile: ProfileHTTPSWeb}, nil)

	src := m.CombinedSource()
	if b, err := src.GetBundleForTrustDomain(tdA); err != nil || !b.Equal(local) {
		t.Fatalf("local: %v", err)
	}
	if b, err := m.GetBundleForTrustDomain(tdB); err != nil || !b.Equal(peerB) {
		t.Fatalf("peer: %v", err)
	}
	if xb, err := m.GetX509BundleForTrustDomain(tdB); err != nil || !xb.HasX509Authority(caB.cert) {
		t.Fatalf("x509: %v", err)
	}
	if jb, err := src.GetJWTBundleForTrustDomain(tdB); err != nil || !jb.HasJWTAuthority("kb") {
		t.Fatalf("jwt: %v", err)
	}
	// org-c has a relationship but no bundle yet; org-d is unknown.
	for _, td := range []spiffeid.TrustDomain{tdC, spiffeid.RequireTrustDomainFromString("org-d.example")} {
		if _, err := src.GetBundleForTrustDomain(td); !errors.Is(err, ErrUnknownTrustDomain) {
			t.Fatalf("%s: err = %v", td, err)
		}
		if _, err := m.GetX509BundleForTrustDomain(td); !errors.Is(err, ErrUnknownTrustDomain) {
			t.Fatalf("%s x509: err = %v", td, err)
		}
	}
	// Bundle (federated only) does not answer for the local trust domain.
	if _, ok := m.Bundle(tdA); ok {
		t.Fatal("Bundle answered for the local trust domain")
	}
	// Returned bundles are clones.
	b, _ := src.GetBundleForTrustDomain(tdB)
	b.AddX509Authority(caA.cert)
	l, _ := src.GetBundleForTrustDomain(tdA)
	l.AddX509Authority(caB.cert)
	if again, _ := src.GetBundleForTrustDomain(tdB); again.HasX509Authority(caA.cert) {
		t.Fatal("mutating a returned peer bundle changed the manager's")
	}
	if local.HasX509Authority(caB.cert) {
		t.Fatal("mutating a returned local bundle changed LocalBundle's")
	}
	if bs := m.Bundles(); len(bs) != 1 || bs[0].TrustDomain() != tdB {
		t.Fatalf("Bundles = %v", bs)
	}
}

func TestLowerSequenceAcceptedWithWarning(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 3, -1, caB)
	p := startPeer(t, tdB, served, caB.serverCert(t, endpointB))
	m, logs := loggingManager()
	mustSet(t, m, spiffeRel(p), bundleOf(tdB, 5, -1, caB))
	if err := m.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := mustBundle(t, m, tdB); seqOf(got) != 3 {
		t.Fatalf("sequence = %d, want the served 3", seqOf(got))
	}
	if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "lower sequence number") {
		t.Fatalf("no warning logged:\n%s", s)
	}
}

func TestFetchedBundleWithoutX509AuthoritiesRefused(t *testing.T) {
	caB := newTestCA(t, tdB)
	jwtOnly := spiffebundle.New(tdB)
	if err := jwtOnly.AddJWTAuthority("k", newKey(t).Public()); err != nil {
		t.Fatal(err)
	}
	p := startPeer(t, tdB, jwtOnly, caB.serverCert(t, endpointB))
	m := NewManager(fastConfig())
	initial := bundleOf(tdB, 1, -1, caB)
	mustSet(t, m, spiffeRel(p), initial)
	err := m.Refresh(context.Background(), tdB)
	if err == nil || !strings.Contains(err.Error(), "no x509 authorities") {
		t.Fatalf("Refresh = %v, want refusal", err)
	}
	if got := mustBundle(t, m, tdB); !got.Equal(initial) {
		t.Fatal("bundle replaced by one that cannot authenticate its endpoint")
	}
}

func TestRefreshIntervalAndBackoff(t *testing.T) {
	m := NewManager(Config{DefaultRefresh: time.Second, MinRefresh: 10 * time.Millisecond, MaxRefresh: 10 * time.Second, RetryBackoff: 100 * time.Millisecond})
	for _, tt := range []struct {
		hint time.Duration // <0: none
		want time.Duration
	}{
		{-1, time.Second},
		{0, 10 * time.Millisecond},
		{time.Millisecond, 10 * time.Millisecond},
		{50 * time.Millisecond, 50 * time.Millisecond},
		{time.Minute, 10 * time.Second},
	} {
		if got := m.interval(bundleOf(tdB, 0, tt.hint)); got != tt.want {
			t.Errorf("interval(hint %v) = %v, want %v", tt.hint, got, tt.want)
		}
	}
	if got := m.interval(nil); got != time.Second {
		t.Errorf("interval(nil) = %v", got)
	}
	for failures, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 100: time.Second} {
		if got := m.backoff(failures); got != want {
			t.Errorf("backoff(%d) = %v, want %v", failures, got, want)
		}
	}

	d := NewManager(Config{})
	if d.cfg.DefaultRefresh != DefaultRefreshInterval || d.cfg.MinRefresh != DefaultMinRefresh || d.cfg.MaxRefresh != DefaultMaxRefresh ||
		d.cfg.RetryBackoff != DefaultRetryBackoff || d.cfg.FetchTimeout != DefaultFetchTimeout || d.cfg.Now == nil || d.cfg.Logger == nil {
		t.Fatalf("defaults not applied: %+v", d.cfg)
	}
}

func TestRunLifecycle(t *testing.T) {
	m := NewManager(fastConfig())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, "Run to start", func() bool {
		m.mu.RLock()
		defer m.mu.RUnlock()
		return m.running
	})
	if err := m.Run(context.Background()); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Run = %v, want ErrAlreadyRunning", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	// It can run again afterwards.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := m.Run(ctx2); err != nil {
		t.Fatalf("Run after restart = %v", err)
	}
}

// TestConcurrentUse exercises every method concurrently with Run, for the
// race detector.
func TestConcurrentUse(t *testing.T) {
	caB := newTestCA(t, tdB)
	p := startPeer(t, tdB, bundleOf(tdB, 1, 0, caB), caB.serverCert(t, endpointB))
	cfg := fastConfig()
	cfg.OnUpdate = func(context.Context, spiffeid.TrustDomain, *spiffebundle.Bundle) error { return nil }
	m := NewManager(cfg)
	mustSet(t, m, spiffeRel(p), bundleOf(tdB, 0, -1, caB))
	runManager(t, m)

	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 25 {
				switch (i + j) % 6 {
				case 0:
					_ = m.Refresh(context.Background(), tdB)
				case 1:
					// Keeps the held bundle; between another goroutine's
					// Remove and its Set there is none, and Set says so.
					if err := m.Set(spiffeRel(p), nil); err != nil && !strings.Contains(err.Error(), "needs an initial bundle") {
						t.Error(err)
					}
				case 2:
					_, _ = m.Status(tdB)
					_ = m.Relationships()
				case 3:
					_ = m.Bundles()
					_, _ = m.GetX509BundleForTrustDomain(tdB)
				case 4:
					if j%12 == 4 {
						m.Remove(tdB)
						if err := m.Set(spiffeRel(p), bundleOf(tdB, 0, -1, caB)); err != nil {
							t.Error(err)
						}
					}
				case 5:
					p.setBundle(bundleOf(tdB, uint64(j+1), 0, caB))
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, "a successful refresh after the churn", func() bool {
		s, ok := m.Status(tdB)
		return ok && !s.LastSuccess.IsZero() && s.LastError == ""
	})
}

// RefreshSoon has Run fetch again at once, not after the backoff: also
// when it is asked while the refresh that fails is in progress.
func TestRefreshSoon(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 2, -1, caB, newTestCA(t, tdB))
	p := startPeer(t, tdB, served, caB.serverCert(t, endpointB))
	var calls atomic.Int32
	var m *Manager
	cfg := fastConfig()
	cfg.RetryBackoff = time.Hour // a retry within the test is RefreshSoon's
	cfg.OnUpdate = func(_ context.Context, td spiffeid.TrustDomain, _ *spiffebundle.Bundle) error {
		if calls.Add(1) == 1 {
			m.RefreshSoon(td) // asked again while this refresh is failing
			return errors.New("no record yet")
		}
		return nil
	}
	m = NewManager(cfg)
	mustSet(t, m, spiffeRel(p), bundleOf(tdB, 1, -1, caB))
	runManager(t, m)
	waitFor(t, "the bundle fetched again and installed", func() bool {
		b, _ := m.Bundle(tdB)
		return b.Equal(served)
	})
	if n := calls.Load(); n != 2 {
		t.Errorf("OnUpdate calls = %d, want 2", n)
	}
}

// A peer that is down is retried with growing delays, but never less
// often than its bundle's refresh hint asks: the hint is how soon the peer
// may publish keys it signs with, and the backoff is only to spare it.
func TestBackoffNeverExceedsRefreshInterval(t *testing.T) {
	caB := newTestCA(t, tdB)
	for _, tt := range []struct {
		name string
		hint time.Duration // <0: none
		want []time.Duration
	}{
		{"hint 30s", 30 * time.Second, []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 30 * time.Second, 30 * time.Second}},
		{"hint 0 (MinRefresh)", 0, []time.Duration{5 * time.Second, 10 * time.Second, 10 * time.Second}},
		{"no hint (DefaultRefresh)", -1, []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}},
		{"hint 2h (MaxRefresh 1h, capped at DefaultRefresh)", 2 * time.Hour, []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startPeer(t, tdB, bundleOf(tdB, 1, tt.hint, caB), caB.serverCert(t, endpointB))
			p.stop() // down from the start: every refresh fails
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			m := NewManager(Config{Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)})
			mustSet(t, m, spiffeRel(p), bundleOf(tdB, 1, tt.hint, caB))
			for i, want := range tt.want {
				if err := m.Refresh(context.Background(), tdB); err == nil {
					t.Fatal("Refresh succeeded with the peer down")
				}
				st := mustStatus(t, m, tdB)
				if got := st.NextRefresh.Sub(st.LastAttempt); got != want {
					t.Errorf("after %d failures: retry in %v, want %v", i+1, got, want)
				}
				now = now.Add(time.Hour)
			}
		})
	}
}

// A bundle that differs only by its refresh hint from the held one, under
// the same sequence number, is taken without a warning: the peer did not
// change its keys. The held one may be an export without a hint (SPIRE's
// "bundle show -format spiffe"), and the endpoint serves it with one.
func TestSequenceKeptForHintOnlyNotWarned(t *testing.T) {
	caB := newTestCA(t, tdB)
	p := startPeer(t, tdB, bundleOf(tdB, 1, 10*time.Second, caB), caB.serverCert(t, endpointB))
	m, logs := loggingManager()
	mustSet(t, m, spiffeRel(p), bundleOf(tdB, 1, -1, caB))
	if err := m.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if hint, ok := mustBundle(t, m, tdB).RefreshHint(); !ok || hint != 10*time.Second {
		t.Fatalf("held refresh hint = %v (%v), want the served 10s", hint, ok)
	}
	if s := logs.String(); strings.Contains(s, "level=WARN") {
		t.Fatalf("unexpected warning:\n%s", s)
	}
}

// A changed bundle is accepted whatever its sequence number, but one whose
// sequence number did not move forward is logged as a warning.
func TestSequenceNotIncreasedWarned(t *testing.T) {
	caB := newTestCA(t, tdB)
	for _, tt := range []struct {
		name     string
		held     uint64 // 0: none
		served   uint64 // 0: none
		wantWarn string // "": no warning
	}{
		{"higher", 5, 6, ""},
		{"lower", 5, 3, "lower sequence number"},
		{"same", 5, 5, "without a new sequence number"},
		{"dropped", 5, 0, "has no sequence number"},
		{"none before", 0, 2, ""},
		{"none either", 0, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rotated := newTestCA(t, tdB)
			p := startPeer(t, tdB, bundleOf(tdB, tt.served, -1, caB, rotated), caB.serverCert(t, endpointB))
			m, logs := loggingManager()
			mustSet(t, m, spiffeRel(p), bundleOf(tdB, tt.held, -1, caB))
			if err := m.Refresh(context.Background(), tdB); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if got := mustBundle(t, m, tdB); !got.HasX509Authority(rotated.cert) {
				t.Fatal("the peer's changed bundle was not accepted")
			}
			s := logs.String()
			if tt.wantWarn == "" {
				if strings.Contains(s, "level=WARN") {
					t.Fatalf("unexpected warning:\n%s", s)
				}
				return
			}
			if !strings.Contains(s, "level=WARN") || !strings.Contains(s, tt.wantWarn) {
				t.Fatalf("no warning %q logged:\n%s", tt.wantWarn, s)
			}
		})
	}
}

// A bundle whose WIT-SVID keys changed under the held bundle's sequence
// number changed its authorities: it is warned about as any other.
func TestSequenceNotIncreasedForWITKeysWarned(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 5, -1, caB)
	if err := served.AddWITAuthority("wit-1", newKey(t).Public()); err != nil {
		t.Fatal(err)
	}
	p := startPeer(t, tdB, served, caB.serverCert(t, endpointB))
	m, logs := loggingManager()
	mustSet(t, m, spiffeRel(p), bundleOf(tdB, 5, -1, caB))
	if err := m.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := mustBundle(t, m, tdB); len(got.WITAuthorities()) != 1 {
		t.Fatal("the peer's changed bundle was not accepted")
	}
	if s := logs.String(); !strings.Contains(s, "without a new sequence number") {
		t.Fatalf("no warning logged:\n%s", s)
	}
}
