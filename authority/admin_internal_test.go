package authority

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// putNode records a node of a's trust domain, /node/join/<name>, attested
// now, and returns its SPIFFE ID.
func putNode(t testing.TB, a *Authority, name string) string {
	t.Helper()
	id := a.td.IDString() + "/node/join/" + name
	putNodes(t, a, &registry.Node{SPIFFEID: id, AttestedAt: time.Now()})
	return id
}

// putNodes stores the records nodes in a's store, in one transaction.
func putNodes(t testing.TB, a *Authority, nodes ...*registry.Node) {
	t.Helper()
	if err := a.store.Update(t.Context(), func(tx store.Tx) error {
		for _, n := range nodes {
			if err := registry.PutNode(tx, n); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// testClock is a clock a test moves on, safe for concurrent use.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *testClock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// newCSR is a PEM CSR for a fresh P-256 key, with no names (as a node's
// join, or an agent's SVID request, may send).
func newCSR(t testing.TB) []byte {
	t.Helper()
	_, csr := newKeyAndCSR(t)
	return csr
}

// newKeyAndCSR is newCSR, and the key.
func newKeyAndCSR(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func adminOf(t testing.TB, a *Authority) *Caller {
	t.Helper()
	for id := range a.admins {
		return &Caller{ID: spiffeid.RequireFromString(id)}
	}
	t.Fatal("no administrator configured")
	return nil
}

// entriesOf counts the audit entries of a type.
func entriesOf(t *testing.T, a *Authority, typ string) int {
	t.Helper()
	got, _, err := a.SearchAudit(t.Context(), adminOf(t, a), audit.Query{Type: typ, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return len(got)
}

// A change whose audit entry the log would refuse is refused before it
// is made: never made and left unlogged (an agent registered, then a 500
// for its entry, its retry a 409).
func TestChangesTheLogWouldRefuseAreNotMade(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	agentID := func(n int) string { return a.td.IDString() + "/agent/" + strings.Repeat("d", n) }
	// 64 node ids of almost 2 KiB: each within the SPIFFE bound, the
	// registration's entry far beyond audit.MaxEntrySize.
	var nodes []string
	for i := range registry.MaxListLen {
		nodes = append(nodes, fmt.Sprintf("%s/node/join/%04d%s", a.td.IDString(), i, strings.Repeat("n", 1990)))
	}
	for _, tc := range []struct {
		name string
		ag   registry.Agent
		want string
	}{
		{"an id beyond the SPIFFE bound", registry.Agent{SPIFFEID: agentID(32700)}, "at most 2048 bytes"},
		{"a node id beyond the SPIFFE bound", registry.Agent{SPIFFEID: agentID(8), NodeIDs: []string{nodes[0] + strings.Repeat("n", 100)}}, "at most 2048 bytes"},
		{"an entry beyond the log's bound", registry.Agent{SPIFFEID: agentID(8), NodeIDs: nodes}, "audit entry would be refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ag := tc.ag
			if _, err := a.CreateAgent(ctx, admin, &ag); !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CreateAgent = %v, want registry.ErrInvalid saying %q", err, tc.want)
			}
			if list, _, err := a.ListAgents(ctx, admin, Page{}); err != nil || len(list) != 0 {
				t.Fatalf("agents after the refusal: %d, %v; want none", len(list), err)
			}
		})
	}
	// An update is held to the same bound, and leaves the registration as
	// it was.
	ag := &registry.Agent{SPIFFEID: agentID(8)}
	created, err := a.CreateAgent(ctx, admin, ag)
	if err != nil {
		t.Fatal(err)
	}
	big := &registry.Agent{SPIFFEID: agentID(8), NodeIDs: nodes}
	if _, err := a.UpdateAgent(ctx, admin, created.ID, big); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("UpdateAgent = %v, want registry.ErrInvalid", err)
	}
	if got, err := a.GetAgent(ctx, admin, created.ID); err != nil || len(got.NodeIDs) != 0 {
		t.Fatalf("after the refused update: %+v, %v; want the registration unchanged", got, err)
	}
	if n := entriesOf(t, a, "agent.registered"); n != 1 {
		t.Errorf("%d agent.registered entries, want 1", n)
	}
	// A federation whose trust domain is beyond its bound stores nothing.
	long := strings.Repeat(strings.Repeat("a", 60)+".", 540) + "example"
	if _, err := a.AddFederation(ctx, admin, &Federation{TrustDomain: long, BundleEndpointURL: "https://127.0.0.1:1"}); !errors.Is(err, ErrFederation) {
		t.Fatalf("AddFederation(a %d-byte trust domain) = %v, want ErrFederation", len(long), err)
	}
	// Nor one named with a path: it names no trust domain.
	if _, err := a.AddFederation(ctx, admin, &Federation{TrustDomain: "spiffe://org-b.example/x", BundleEndpointURL: "https://127.0.0.1:1"}); !errors.Is(err, ErrFederation) || !strings.Contains(err.Error(), "no path") {
		t.Fatalf("AddFederation(a trust domain with a path) = %v, want ErrFederation: no path", err)
	}
	// Nor one whose URL is beyond its bound (its entry, escaped, would
	// grow past the log's).
	url := "https://127.0.0.1:1/?" + strings.Repeat("&", 65000)
	if _, err := a.AddFederation(ctx, admin, &Federation{TrustDomain: "org-b.example", BundleEndpointURL: url}); !errors.Is(err, ErrFederation) {
		t.Fatalf("AddFederation(a %d-byte URL) = %v, want ErrFederation", len(url), err)
	}
	if list, err := a.ListFederations(ctx, admin); err != nil || len(list) != 0 {
		t.Fatalf("federations after the refusals: %d, %v; want none", len(list), err)
	}
}

// Banning a banned node keeps the first ban. Every ban asked is logged
// with the ban that stands (a retry after an entry that could not be
// written logs it then), and a ban asked again says so and what it asked.
// A reason is text.
func TestBanAgainLogsTheBanThatStands(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	node := putNode(t, a, "n1")
	if _, err := a.BanNode(ctx, admin, node, "x\u202ey\x00"); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("BanNode(a reason with control and format characters) = %v, want ErrInvalidRequest", err)
	}
	for _, reason := range []string{"stolen", "again", ""} {
		n, err := a.BanNode(ctx, admin, node, reason)
		if err != nil || n.BanReason != "stolen" {
			t.Fatalf("BanNode(%q) = %+v, %v; want the first ban", reason, n, err)
		}
	}
	got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "node.banned", Limit: 100})
	if err != nil || len(got) != 3 {
		t.Fatalf("%d node.banned entries after three bans (%v), want 3", len(got), err)
	}
	for i, asked := range []string{"stolen", "again", ""} {
		e, err := audit.Decode(got[i].Entry)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Reason        string `json:"reason"`
			AlreadyBanned bool   `json:"already_banned"`
			AskedReason   string `json:"asked_reason"`
		}
		if err := json.Unmarshal(e.Details, &d); err != nil || d.Reason != "stolen" || d.AlreadyBanned != (i > 0) || i > 0 && d.AskedReason != asked {
			t.Errorf("entry %d for the ban asked with %q: %s, want the standing reason, and the asked one when already banned", i, asked, e.Details)
		}
	}
}

// An agent whose whole agent.deleted entry the log would refuse (stored
// before registrations were held to the log's bound) is still deleted,
// and logged by its id, its SPIFFE ID and a digest: never deleted
// unlogged, never undeletable.
func TestDeleteAgentTooLargeToLogWhole(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	var nodes []string
	for i := range registry.MaxListLen {
		nodes = append(nodes, fmt.Sprintf("%s/node/join/%04d%s", a.td.IDString(), i, strings.Repeat("n", 1990)))
	}
	for _, ag := range []*registry.Agent{
		{ID: registry.NewID(), SPIFFEID: a.td.IDString() + "/agent/legacy", NodeIDs: nodes},
		{ID: registry.NewID(), SPIFFEID: a.td.IDString() + "/agent/" + strings.Repeat("d", 32700)},
	} {
		if err := a.store.Update(ctx, func(tx store.Tx) error { return registry.CreateAgent(tx, ag) }); err != nil {
			t.Fatal(err)
		}
		if err := a.DeleteAgent(ctx, admin, ag.ID); err != nil {
			t.Fatalf("DeleteAgent = %v", err)
		}
	}
	if list, _, err := a.ListAgents(ctx, admin, Page{}); err != nil || len(list) != 0 {
		t.Fatalf("agents after the deletes: %d, %v", len(list), err)
	}
	got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "agent.deleted", Limit: 10})
	if err != nil || len(got) != 2 {
		t.Fatalf("%d agent.deleted entries (%v), want 2", len(got), err)
	}
	for i, want := range []string{a.td.IDString() + "/agent/legacy", (a.td.IDString() + "/agent/" + strings.Repeat("d", 32700))[:registry.MaxSPIFFEIDLen]} {
		e, err := audit.Decode(got[i].Entry)
		if err != nil || e.Subject != want || !strings.Contains(string(e.Details), `"registration_sha256"`) {
			t.Fatalf("entry %d: %.80s… %s (%v), want the agent's SPIFFE ID (cut to 2048 bytes) and a digest", i, e.Subject, e.Details, err)
		}
	}
}

// An admin change and its entry are durable together or not at all: with
// the audit log stopped, no change is made (none made and then left
// unlogged, as a crash between two commits would leave it).
func TestAdminChangesWithoutTheirEntryAreNotMade(t *testing.T) {
	a, stop := runAuthority(t)
	admin := adminOf(t, a)
	node := putNode(t, a, "n1")
	created, err := a.CreateAgent(t.Context(), admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/x"})
	if err != nil {
		t.Fatal(err)
	}
	federation := func(td string) *Federation {
		doc, _ := peerBundle(t, spiffeid.RequireTrustDomainFromString(td)).Marshal()
		return &Federation{TrustDomain: td, BundleEndpointURL: "https://127.0.0.1:1/bundle", Bundle: doc}
	}
	peerB := federation("org-b.example")
	if _, err := a.AddFederation(t.Context(), admin, peerB); err != nil {
		t.Fatal(err)
	}
	secret, _, err := a.CreateJoinToken(t.Context(), admin, 0)
	if err != nil {
		t.Fatal(err)
	}
	stop() // the audit log stops; the store stays open
	ctxT := t.Context()
	if _, err := a.CreateAgent(ctxT, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/y"}); err == nil {
		t.Fatal("CreateAgent with the log stopped succeeded")
	}
	if _, err := a.UpdateAgent(ctxT, admin, created.ID, &registry.Agent{SPIFFEID: created.SPIFFEID, Scopes: []string{"new"}}); err == nil {
		t.Fatal("UpdateAgent with the log stopped succeeded")
	}
	if err := a.DeleteAgent(ctxT, admin, created.ID); err == nil {
		t.Fatal("DeleteAgent with the log stopped succeeded")
	}
	if _, err := a.BanNode(ctxT, admin, node, "stolen"); err == nil {
		t.Fatal("BanNode with the log stopped succeeded")
	}
	if _, _, err := a.CreateJoinToken(ctxT, admin, 0); err == nil {
		t.Fatal("CreateJoinToken with the log stopped succeeded")
	}
	if _, err := a.AddFederation(ctxT, admin, federation("org-c.example")); err == nil {
		t.Fatal("AddFederation with the log stopped succeeded")
	}
	if err := a.DeleteFederation(ctxT, admin, "org-b.example"); err == nil {
		t.Fatal("DeleteFederation with the log stopped succeeded")
	}
	// A bundle fetched from the peer is not stored (nor, the hook
	// failing, used).
	tdB := spiffeid.RequireTrustDomainFromString("org-b.example")
	fetched, err := spiffebundle.Parse(tdB, federation("org-b.example").Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.saveFederatedBundle(ctxT, tdB, fetched); err == nil {
		t.Fatal("a fetched bundle was stored with the log stopped")
	}
	if feds, err := a.loadFederations(ctxT); err != nil || len(feds) != 1 || feds[0].TrustDomain != "org-b.example" || !bytes.Equal(feds[0].Bundle, peerB.Bundle) {
		t.Fatalf("federations %v (%v), want org-b's only, with the bundle it was added with", feds, err)
	}
	// A join: no node, and the token still usable.
	if _, err := a.JoinNode(ctxT, secret, newCSR(t)); err == nil {
		t.Fatal("JoinNode with the log stopped succeeded")
	}
	if err := a.store.View(ctxT, func(tx store.Tx) error {
		if _, err := attest.PeekJoinToken(tx, secret, a.td, time.Now()); err != nil {
			return fmt.Errorf("the token: %w", err)
		}
		if nodes, err := registry.ListNodes(tx); err != nil || len(nodes) != 1 {
			return fmt.Errorf("nodes %v (%v), want the one made here only", nodes, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.store.View(ctxT, func(tx store.Tx) error {
		list, err := registry.ListAgents(tx)
		if err != nil || len(list) != 1 || list[0].ID != created.ID || len(list[0].Scopes) != 0 {
			return fmt.Errorf("agents %v (%v), want the first one only, unchanged", list, err)
		}
		n, err := registry.GetNode(tx, node)
		if err != nil || n.Banned {
			return fmt.Errorf("node %+v (%v), want it not banned", n, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A key planted as the administrator's, one another user could read or
// have written, is not certified as the administrator: the credential is
// refused until it is private.
func TestAdminKeyMustBePrivate(t *testing.T) {
	a := startAuthority(t)
	p := AdminPaths(a.cfg.DataDir)
	// Run's first write of the credential is done before a key is
	// planted (the next is a minute away).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(p.Cert); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run wrote no admin credential")
		}
	}
	a.credMu.Lock()
	//lint:ignore SA2001 an empty critical section: it waits for the write under way
	a.credMu.Unlock()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, err := credfile.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p.Key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Key, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteAdminCredential(t.Context(), true); !errors.Is(err, credfile.ErrNotPrivate) {
		t.Fatalf("WriteAdminCredential over a 0644 key = %v, want ErrNotPrivate", err)
	}
	if err := os.Chmod(p.Key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteAdminCredential(t.Context(), true); err != nil {
		t.Fatalf("WriteAdminCredential over a private key = %v", err)
	}
	// A fresh credential whose key became readable by others: refused at
	// once (serve's start), not at its next renewal.
	if err := os.Chmod(p.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteAdminCredential(t.Context(), false); !errors.Is(err, credfile.ErrNotPrivate) {
		t.Fatalf("WriteAdminCredential with a fresh credential and a 0644 key = %v, want ErrNotPrivate", err)
	}
	// Its key gone: a new credential.
	if err := os.Remove(p.Key); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteAdminCredential(t.Context(), false); err != nil {
		t.Fatalf("WriteAdminCredential with a fresh credential and no key = %v", err)
	}
	if _, _, _, err := credfile.Load(p); err != nil {
		t.Fatalf("the admin credential after its key was lost: %v", err)
	}
}

// A fetched bundle whose anchors do not all fit in one entry is logged
// by their digest and counts, and still stored.
func TestBundleUpdateTooLargeToListIsLoggedByDigest(t *testing.T) {
	a := startAuthority(t)
	td := spiffeid.RequireTrustDomainFromString("org-b.example")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(td.IDString())
	b := spiffebundle.New(td)
	const n = 1100 // 1,100 SHA-256s in hex: past audit.MaxEntrySize
	for i := range n {
		tpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), URIs: []*url.URL{u}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		b.AddX509Authority(cert)
	}
	small := spiffebundle.New(td)
	small.AddX509Authority(b.X509Authorities()[0])
	// Fetched before its relationship's record is written: refused (the
	// manager keeps it unused, and fetches again), never used unlogged.
	if err := a.saveFederatedBundle(t.Context(), td, small); err == nil {
		t.Fatal("a bundle fetched for a relationship with no record was accepted")
	}
	doc, _ := small.Marshal()
	if _, err := a.AddFederation(t.Context(), adminOf(t, a), &Federation{TrustDomain: td.Name(), BundleEndpointURL: "https://127.0.0.1:1/bundle", Bundle: doc}); err != nil {
		t.Fatal(err)
	}
	full := a.bundleUpdated(td, b).details
	if err := a.saveFederatedBundle(t.Context(), td, b); err != nil {
		t.Fatalf("saveFederatedBundle = %v", err)
	}
	got, _, err := a.SearchAudit(t.Context(), adminOf(t, a), audit.Query{Type: "federation.bundle_updated", Limit: 10})
	if err != nil || len(got) != 1 {
		t.Fatalf("federation.bundle_updated entries: %d, %v; want 1", len(got), err)
	}
	var e struct {
		Details map[string]any `json:"details"`
	}
	if err := json.Unmarshal(got[0].Entry, &e); err != nil {
		t.Fatal(err)
	}
	d := e.Details
	if d["digest_only"] != true || d["x509_authorities"] != nil || d["x509_authority_count"] != float64(n) ||
		d["jwt_authority_count"] != float64(0) || d["anchors_sha256"] != bundleAnchors(b)["anchors_sha256"] {
		t.Errorf("entry details %v, want the anchors' digest and counts only", d)
	}
	if full["digest_only"] != true {
		t.Errorf("bundleUpdated details %v, want digest_only", full)
	}
	feds, err := a.loadFederations(t.Context())
	if err != nil || len(feds) != 1 {
		t.Fatal(feds, err)
	}
	if stored, err := spiffebundle.Parse(td, feds[0].Bundle); err != nil || len(stored.X509Authorities()) != n {
		t.Errorf("stored bundle: %v; want all %d authorities", err, n)
	}
}

// Federated bundles that together would make every SVID answer too large
// to read (clients read 4 MiB) are refused, added or fetched: the bundles
// handed out stay within maxBundlesBytes.
func TestFederatedBundlesStayWithinTheAnswer(t *testing.T) {
	a := startAuthority(t)
	ctx := t.Context()
	bundleOf, add := largeBundles(t, a, 1400)
	for _, td := range []string{"org-b.example", "org-c.example", "org-d.example"} {
		if err := add(td, 1400); err != nil { // about 0.95 MiB each
			t.Fatalf("AddFederation(%s) = %v", td, err)
		}
	}
	if err := add("org-e.example", 1400); !errors.Is(err, ErrFederation) || !strings.Contains(err.Error(), "handed out with every SVID") {
		t.Fatalf("a fourth large bundle = %v, want ErrFederation", err)
	}
	if err := add("org-e.example", 1); err != nil {
		t.Fatalf("a small fourth bundle = %v", err)
	}
	td := spiffeid.RequireTrustDomainFromString("org-e.example")
	if err := a.saveFederatedBundle(ctx, td, bundleOf("org-e.example", 1400)); !errors.Is(err, ErrFederation) {
		t.Fatalf("a fetched bundle past the limit = %v, want ErrFederation", err)
	}
	if got := len(a.bundles.Load().json); got > maxBundlesBytes {
		t.Errorf("bundles handed out: %d bytes, past %d", got, maxBundlesBytes)
	}
}

// A search page ends once its entries reach SearchPageBytes, and its
// cursor continues after the last of them: fifty entries of 60 KB (a page
// of 50 would be a 7 MB answer, beyond what clients read) come in pages of
// about a MiB, and every one of them comes, once.
func TestSearchPagesAreBoundedInBytes(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	big, _ := json.Marshal(map[string]string{"note": strings.Repeat("x", 60_000)})
	for range 50 {
		if _, err := a.audit.Append(ctx, audit.Entry{Time: time.Now(), Type: "test.big", Actor: audit.ActorSystem, Details: big}); err != nil {
			t.Fatal(err)
		}
	}
	q := audit.Query{Type: "test.big"}
	var got []uint64
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatal("the search never ends")
		}
		page, next, err := a.SearchAudit(ctx, admin, q)
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, e := range page {
			got = append(got, e.Index)
			b, _ := json.Marshal(e)
			size += len(b)
		}
		if max := SearchPageBytes + 200_000; size > max {
			t.Errorf("a page of %d entries is %d bytes in JSON, more than %d", len(page), size, max)
		}
		if next == nil {
			break
		}
		q.After, q.HasAfter = *next, true
	}
	if len(got) != 50 {
		t.Fatalf("the pages held %d entries, want the 50", len(got))
	}
	for k := 1; k < len(got); k++ {
		if got[k] <= got[k-1] {
			t.Fatalf("entries out of order or twice: %v", got)
		}
	}
}

// A fresh admin certificate beside a key that is not its own (the
// server stopped between writing a new key and the certificate for it)
// is replaced at the next write, not kept until its half-life: the
// credential on disk is one the CLI can use.
func TestAdminCredentialOfAnotherKeyIsReplaced(t *testing.T) {
	a := startAuthority(t)
	p := AdminPaths(a.cfg.DataDir)
	if err := a.WriteAdminCredential(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := credfile.Load(p); err != nil {
		t.Fatalf("the first admin credential: %v", err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, err := credfile.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := credfile.WriteFileAtomic(p.Key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteAdminCredential(t.Context(), false); err != nil {
		t.Fatalf("WriteAdminCredential beside another key = %v", err)
	}
	chain, got, _, err := credfile.Load(p)
	if err != nil {
		t.Fatalf("the admin credential after a new key was left beside the certificate: %v", err)
	}
	if !key.PublicKey.Equal(got.Public()) || !key.PublicKey.Equal(chain[0].PublicKey) {
		t.Error("the credential was not made for the key on disk")
	}
}

// A registration's entries hold every field that decides where the agent
// may run: an auditor can tell when require_hardware_attestation was
// turned on or off, and by whom.
func TestRegistrationEntriesHoldHardwareRequirement(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	created, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/hw", RequireHardwareAttestation: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateAgent(ctx, admin, created.ID, &registry.Agent{SPIFFEID: created.SPIFFEID}); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteAgent(ctx, admin, created.ID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		typ  string
		want bool
	}{{"agent.registered", true}, {"agent.updated", false}, {"agent.deleted", false}} {
		got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: tc.typ, Limit: 10})
		if err != nil || len(got) != 1 {
			t.Fatalf("%d %s entries (%v), want 1", len(got), tc.typ, err)
		}
		e, err := audit.Decode(got[0].Entry)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Require *bool `json:"require_hardware_attestation"`
		}
		if err := e.ReadDetails(&d); err != nil || d.Require == nil || *d.Require != tc.want {
			t.Errorf("%s details %s (%v): want require_hardware_attestation %v", tc.typ, e.Details, err, tc.want)
		}
	}
}

// A relationship added or replaced is logged with the trust anchors it
// makes trusted at once: those of the bundle given, or of the bundle a
// replacement keeps. An admin cannot swap a peer's anchors with an entry
// that does not say so.
func TestFederationAddedEntriesNameTheAnchors(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	td := spiffeid.RequireTrustDomainFromString("org-b.example")
	first, second := peerBundle(t, td), peerBundle(t, td)
	for _, tc := range []struct {
		name   string
		bundle *spiffebundle.Bundle // sent (nil: none)
		want   *spiffebundle.Bundle // trusted after
	}{
		{"added with a bundle", first, first},
		{"replaced with another bundle", second, second},
		{"replaced without a bundle, keeping the one held", nil, second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &Federation{TrustDomain: td.Name(), BundleEndpointURL: "https://127.0.0.1:1/bundle"}
			if tc.bundle != nil {
				doc, err := tc.bundle.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				f.Bundle = doc
			}
			if _, err := a.AddFederation(ctx, admin, f); err != nil {
				t.Fatal(err)
			}
			got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "federation.added", Limit: 100})
			if err != nil || len(got) == 0 {
				t.Fatalf("federation.added entries: %d, %v", len(got), err)
			}
			e, err := audit.Decode(got[len(got)-1].Entry)
			if err != nil {
				t.Fatal(err)
			}
			var d struct {
				Anchors string   `json:"anchors_sha256"`
				X509    []string `json:"x509_authorities"`
			}
			want := bundleAnchors(tc.want)
			if err := e.ReadDetails(&d); err != nil || d.Anchors != want["anchors_sha256"] || len(d.X509) != 1 || d.X509[0] != want["x509_authorities"].([]string)[0] {
				t.Errorf("federation.added details %s (%v), want the anchors %v", e.Details, err, want["anchors_sha256"])
			}
		})
	}
}

// An admin key file that holds no key (damaged, or something else put
// there) stops the write with an error naming the file and what to do,
// and nothing of the file's content.
func TestAdminKeyMalformedIsNamed(t *testing.T) {
	a := startAuthority(t)
	p := AdminPaths(a.cfg.DataDir)
	// The credential written first: from then on a key file is only
	// read (a key is made only where none is), so the maintenance loop's
	// first write, if it comes after this, cannot replace the test's.
	if err := a.WriteAdminCredential(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{"not a key at all: s3cr3t\n", "-----BEGIN PRIVATE KEY-----\nczNjcjN0\n-----END PRIVATE KEY-----\n"} {
		if err := os.MkdirAll(filepath.Dir(p.Key), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := credfile.WriteFileAtomic(p.Key, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		err := a.WriteAdminCredential(t.Context(), true)
		if err == nil || !strings.Contains(err.Error(), p.Key) || !strings.Contains(err.Error(), "remove it") ||
			strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "czNjcjN0") {
			t.Errorf("WriteAdminCredential over a key file holding %q = %v; want an error naming %s and saying to remove it, without its content", content, err, p.Key)
		}
	}
}

// Evicting a node is for admins, with a reason that is text; a node
// renewed between the eviction's reading of its record and its commit is
// not evicted (the entry would log a record other than the one removed):
// the eviction is refused, to be asked again, and nothing is logged.
func TestEvictNodeRefusals(t *testing.T) {
	holdRecords(t)
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	node := putNode(t, a, "n1")
	if _, err := a.EvictNode(ctx, &Caller{ID: spiffeid.RequireFromString(node)}, node, "", false); !errors.Is(err, ErrForbidden) {
		t.Errorf("EvictNode by the node = %v, want ErrForbidden", err)
	}
	if _, err := a.EvictNode(ctx, admin, node, "x\u202ey", false); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("EvictNode(a reason with a format character) = %v, want ErrInvalidRequest", err)
	}
	renew := func() {
		if err := a.store.Update(ctx, func(tx store.Tx) error {
			n, err := registry.GetNode(tx, node)
			if err != nil {
				return err
			}
			n.PrevSVIDSerial, n.SVIDSerial = n.SVIDSerial, "02"
			return registry.PutNode(tx, n)
		}); err != nil {
			t.Error(err)
		}
	}
	err := whileHeld(ctx, func(ctx context.Context) error {
		_, err := a.EvictNode(ctx, admin, node, "gone", false)
		return err
	}, renew)
	if !errors.Is(err, ErrChangedMeanwhile) {
		t.Fatalf("EvictNode of a node renewed meanwhile = %v, want ErrChangedMeanwhile", err)
	}
	if n, _, err := a.ListNodes(ctx, admin, Page{}); err != nil || len(n) != 1 || n[0].SVIDSerial != "02" {
		t.Fatalf("nodes after the refused eviction: %+v, %v; want the renewed record", n, err)
	}
	if n := entriesOf(t, a, "node.evicted"); n != 0 {
		t.Fatalf("%d node.evicted entries after refusals only", n)
	}
	if _, err := a.EvictNode(ctx, admin, node, "gone", false); err != nil {
		t.Fatalf("EvictNode asked again: %v", err)
	}
	if n := entriesOf(t, a, "node.evicted"); n != 1 {
		t.Fatalf("%d node.evicted entries after one eviction, want 1", n)
	}
}

// With attestation.prune_lapsed_nodes_after set, a node whose latest SVID
// expired longer ago than that is evicted by the authority (logged as
// such, with why), but not a banned one, nor one still at work or whose
// record has no expiry; and only once the authority has run for an
// X509-SVID's life: until then a node at work may not have renewed the
// record a restore brought back.
func TestPruneLapsedNodes(t *testing.T) {
	a, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.Attestation.PruneLapsedNodesAfter = Duration(2 * time.Hour) })
	ctx, admin, now := t.Context(), adminOf(t, a), time.Now()
	id := func(name string) string { return a.td.IDString() + "/node/join/" + name }
	for _, n := range []*registry.Node{
		{SPIFFEID: id("lapsed"), SVIDExpiresAt: now.Add(-3 * time.Hour)},
		{SPIFFEID: id("lapsed-banned"), SVIDExpiresAt: now.Add(-3 * time.Hour), Banned: true, BanReason: "stolen"},
		{SPIFFEID: id("lapsed-lately"), SVIDExpiresAt: now.Add(-time.Hour)},
		{SPIFFEID: id("at-work"), SVIDExpiresAt: now.Add(time.Hour)},
		{SPIFFEID: id("no-expiry")},
	} {
		putNodes(t, a, n)
	}
	left := func() []string {
		var ids []string
		for _, n := range nodesListed(t, a) {
			ids = append(ids, strings.TrimPrefix(n, id("")))
		}
		return ids
	}
	a.pruneLapsedNodes(ctx, pruneFrom(now, 59*time.Minute))
	if got := left(); len(got) != 5 {
		t.Fatalf("nodes after a prune within an X509-SVID's life of the start: %v, want all five", got)
	}
	a.pruneLapsedNodes(ctx, pruneFrom(now, time.Hour))
	if got, want := left(), []string{"at-work", "lapsed-banned", "lapsed-lately", "no-expiry"}; !slices.Equal(got, want) {
		t.Fatalf("nodes after a prune: %v, want %v", got, want)
	}
	got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "node.evicted", Limit: 10})
	if err != nil || len(got) != 1 {
		t.Fatalf("%d node.evicted entries (%v), want 1", len(got), err)
	}
	e, err := audit.Decode(got[0].Entry)
	if err != nil {
		t.Fatal(err)
	}
	if e.Actor != audit.ActorSystem || e.Subject != id("lapsed") || !strings.Contains(string(e.Details), "attestation.prune_lapsed_nodes_after (2h0m0s)") {
		t.Errorf("the prune's entry: actor %s, subject %s, details %s; want the authority's eviction of %s, saying why", e.Actor, e.Subject, e.Details, id("lapsed"))
	}
	if byAdmin, byPrune := a.NodeEvictions(); byAdmin != 0 || byPrune != 1 {
		t.Errorf("evictions counted: %d by an admin, %d by the prune; want 0 and 1", byAdmin, byPrune)
	}
}

// attestation.prune_lapsed_nodes_after is off (0s), or from 1h.
func TestPruneLapsedNodesAfterBounds(t *testing.T) {
	for d, ok := range map[time.Duration]bool{0: true, time.Hour: true, time.Minute: false, -time.Hour: false, maxAuthorityTTL + time.Hour: false} {
		cfg := Config{TrustDomain: "org-a.example", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
		cfg.SetDefaults()
		cfg.Attestation.PruneLapsedNodesAfter = Duration(d)
		if err := cfg.Validate(); (err == nil) != ok || err != nil && !strings.Contains(err.Error(), "attestation.prune_lapsed_nodes_after") {
			t.Errorf("Validate() with attestation.prune_lapsed_nodes_after %s = %v, want ok %v", d, err, ok)
		}
	}
}

// A join-token node whose SVID lapsed may still join again with its
// token until the token expires (a join whose answer was lost): the
// prune leaves it listed until then, and evicts it once its token has
// expired too.
func TestPruneKeepsNodeWhileItsTokenRejoins(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tokenTTL time.Duration
		kept     bool
	}{
		{"token still valid", 24 * time.Hour, true},
		{"token expired", time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &testClock{now: time.Now().Truncate(time.Second)}
			a, _ := runAuthorityWith(t, Options{Now: clock.Now}, func(c *Config) { c.Attestation.PruneLapsedNodesAfter = Duration(time.Hour) })
			ctx, admin := t.Context(), adminOf(t, a)
			secret, _, err := a.CreateJoinToken(ctx, admin, tc.tokenTTL)
			if err != nil {
				t.Fatal(err)
			}
			csr := newCSR(t)
			joined, err := a.JoinNode(ctx, secret, csr)
			if err != nil {
				t.Fatal(err)
			}
			clock.Advance(joined.ExpiresAt.Sub(clock.Now()) + 2*time.Hour)
			a.pruneLapsedNodes(ctx, pruneFrom(clock.Now(), 2*time.Hour))
			err = a.store.View(ctx, func(tx store.Tx) error {
				_, err := registry.GetNode(tx, joined.ID.String())
				return err
			})
			if kept := err == nil; kept != tc.kept {
				t.Fatalf("node listed after the prune: %v (%v), want %v", kept, err, tc.kept)
			}
			if !tc.kept {
				return
			}
			again, err := a.JoinNode(ctx, secret, csr)
			if err != nil || again.ID != joined.ID {
				t.Fatalf("join asked again with the unexpired token after the prune = %v, want a new SVID for %s", err, joined.ID)
			}
		})
	}
}

// nodesListed is the SPIFFE IDs of the nodes an admin lists.
func nodesListed(t *testing.T, a *Authority) []string {
	t.Helper()
	nodes, _, err := a.ListNodes(t.Context(), adminOf(t, a), Page{})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, n := range nodes {
		ids = append(ids, n.SPIFFEID)
	}
	return ids
}

// pruneFrom is a prune's count begun ago before now (the authority's
// clock), as the monotonic clock counts too: no step.
func pruneFrom(now time.Time, ago time.Duration) *pruneSince {
	return &pruneSince{wall: now.Add(-ago), mono: time.Now().Add(-ago)}
}

// A clock stepped forward (or back) since the prune began counting makes
// no node lapsed: the prune counts an X509-SVID's life anew from the
// step, as from a start, and prunes after that.
func TestPruneLapsedNodesAfterAClockStep(t *testing.T) {
	clock := &testClock{now: time.Now().Truncate(time.Second)}
	a, _ := runAuthorityWith(t, Options{Now: clock.Now}, func(c *Config) { c.Attestation.PruneLapsedNodesAfter = Duration(2 * time.Hour) })
	ctx := t.Context()
	id := a.td.IDString() + "/node/join/0123456789abcdef"
	putNodes(t, a, &registry.Node{SPIFFEID: id, SVIDExpiresAt: clock.Now().Add(time.Hour)})
	listed := func() bool { return len(nodesListed(t, a)) == 1 }
	// Counting for two hours as both clocks say, then the wall clock is
	// set a day forward: the node's SVID looks expired for 23 hours.
	since := &pruneSince{wall: clock.Now().Add(-2 * time.Hour), mono: time.Now().Add(-2 * time.Hour)}
	clock.Advance(24 * time.Hour)
	a.pruneLapsedNodes(ctx, since)
	if !listed() || !since.wall.Equal(clock.Now()) {
		t.Fatalf("after a step of the clock: node listed %v, counting from %v; want it kept, and the count begun anew at %v", listed(), since.wall, clock.Now())
	}
	// An X509-SVID's life after the step (as both clocks count), it is
	// pruned: nothing renewed it meanwhile.
	since.wall, since.mono = since.wall.Add(-time.Hour), since.mono.Add(-time.Hour)
	a.pruneLapsedNodes(ctx, since)
	if listed() {
		t.Fatal("node still listed an X509-SVID's life after the step")
	}
}

// A record naming a node SVID that lives longer than the X509-SVIDs made
// now (ca.x509_svid_ttl lowered since, say at the restart after a
// restore) holds the prune of that node off for that life: the node, at
// work with a newer SVID of that life the record does not know, renews
// within it. Another node's record, of a shorter life, is not held.
func TestPruneLapsedNodesWaitsEachNodesSVIDLife(t *testing.T) {
	a, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.Attestation.PruneLapsedNodesAfter = Duration(2 * time.Hour) })
	ctx, now := t.Context(), time.Now()
	id := a.td.IDString() + "/node/join/0123456789abcdef"
	short := a.td.IDString() + "/node/join/fedcba9876543210"
	putNodes(t, a, &registry.Node{SPIFFEID: short, SVIDIssuedAt: now.Add(-5 * time.Hour), SVIDExpiresAt: now.Add(-4 * time.Hour)},
		&registry.Node{SPIFFEID: id, SVIDIssuedAt: now.Add(-10 * time.Hour), SVIDExpiresAt: now.Add(-4 * time.Hour)})
	a.pruneLapsedNodes(ctx, pruneFrom(now, 5*time.Hour))
	if got := nodesListed(t, a); !slices.Equal(got, []string{id}) {
		t.Fatalf("5h after the start: %v listed; want the node whose record names a 6h SVID kept, the one of a 1h SVID pruned", got)
	}
	a.pruneLapsedNodes(ctx, pruneFrom(now, 6*time.Hour+time.Minute))
	if got := nodesListed(t, a); len(got) != 0 {
		t.Fatalf("%v still listed once the authority has run for that SVID's life", got)
	}
}

// A banned node's record, kept for good and naming an SVID of a longer
// ca.x509_svid_ttl in force long ago, does not hold the prune off: a
// banned node renews nothing, so none at work holds an SVID of that life.
func TestPruneLapsedNodesIsNotHeldByABannedRecord(t *testing.T) {
	a, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.Attestation.PruneLapsedNodesAfter = Duration(time.Hour) })
	ctx, now := t.Context(), time.Now()
	banned, lapsed := a.td.IDString()+"/node/join/0123456789abcdef", a.td.IDString()+"/node/join/fedcba9876543210"
	putNodes(t, a, &registry.Node{SPIFFEID: banned, Banned: true, BanReason: "stolen",
		SVIDIssuedAt: now.Add(-400 * 24 * time.Hour), SVIDExpiresAt: now.Add(-370 * 24 * time.Hour)},
		&registry.Node{SPIFFEID: lapsed, SVIDIssuedAt: now.Add(-10 * time.Hour), SVIDExpiresAt: now.Add(-9 * time.Hour)})
	a.pruneLapsedNodes(ctx, pruneFrom(now, 2*time.Hour))
	if got := nodesListed(t, a); !slices.Equal(got, []string{banned}) {
		t.Fatalf("listed after a prune 2h after the start: %v; want only the banned node (the lapsed one pruned, not held off by the banned record's 30-day SVID)", got)
	}
}

// A SPIFFE ID revoked is never given to a registration: one created
// under it, or changed to it, would be refused every SVID for ever. The
// refusal stores and logs nothing; a registration whose own ID was
// revoked after it was made may still be changed (its accountability,
// say) as it stands.
func TestRegistrationOfARevokedIDIsRefused(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	node := putNode(t, a, "0123456789abcdef")
	revoked, kept := a.td.IDString()+"/agent/revoked", a.td.IDString()+"/agent/kept"
	if _, err := a.Revoke(ctx, admin, "", revoked, "compromised"); err != nil {
		t.Fatal(err)
	}
	registered := entriesOf(t, a, "agent.registered")
	if _, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: revoked, NodeIDs: []string{node}}); !errors.Is(err, ErrIDRevoked) {
		t.Errorf("CreateAgent(a revoked ID) = %v, want ErrIDRevoked", err)
	}
	if got := entriesOf(t, a, "agent.registered"); got != registered {
		t.Errorf("agent.registered entries = %d after the refusal, want %d", got, registered)
	}
	reg, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: kept, NodeIDs: []string{node}})
	if err != nil {
		t.Fatal(err)
	}
	updated := entriesOf(t, a, "agent.updated")
	if _, err := a.UpdateAgent(ctx, admin, reg.ID, &registry.Agent{SPIFFEID: revoked, NodeIDs: []string{node}}); !errors.Is(err, ErrIDRevoked) {
		t.Errorf("UpdateAgent(to a revoked ID) = %v, want ErrIDRevoked", err)
	}
	if got, err := a.GetAgent(ctx, admin, reg.ID); err != nil || got.SPIFFEID != kept {
		t.Errorf("registration after the refused update = %+v, %v; want it under %s still", got, err, kept)
	}
	if got := entriesOf(t, a, "agent.updated"); got != updated {
		t.Errorf("agent.updated entries = %d after the refusal, want %d", got, updated)
	}
	list, _, err := a.ListAgents(ctx, admin, Page{})
	if err != nil || len(list) != 1 || list[0].SPIFFEID != kept {
		t.Errorf("ListAgents() = %v, %v; want only %s", list, err, kept)
	}
	// Revoked after it was made: it may still be changed as it stands.
	if _, err := a.Revoke(ctx, admin, "", kept, "retired"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateAgent(ctx, admin, reg.ID, &registry.Agent{SPIFFEID: kept, NodeIDs: []string{node}, Accountability: registry.Accountability{Operator: "ops"}}); err != nil {
		t.Errorf("UpdateAgent(its own revoked ID, kept) = %v, want it changed", err)
	}
}
