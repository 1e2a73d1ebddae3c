package api_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
)

// federate makes e federate with peer over the https_spiffe profile,
// bootstrapped with the peer's bundle.
func (e *env) federate(peer *env) { e.federateVia(peer, peer.url) }

// federateVia is federate with the peer reached at base (a proxy).
func (e *env) federateVia(peer *env, base string) {
	e.t.Helper()
	doc, err := peer.fetchBundle().Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = e.admin.AddFederation(ctxT(e.t), &client.Federation{
		TrustDomain: peer.td.String(), BundleEndpointURL: base + "/v1/bundle", Profile: "https_spiffe", Bundle: doc,
	})
	if err != nil {
		e.t.Fatalf("AddFederation(%s) = %v", peer.td, err)
	}
}

// bundleSet turns the bundles of an SVID answer into a go-spiffe source.
func bundleSet(t *testing.T, ans *client.SVIDAnswer) *spiffebundle.Set {
	t.Helper()
	m, err := ans.ParseBundles()
	if err != nil {
		t.Fatal(err)
	}
	set := spiffebundle.NewSet()
	for _, b := range m {
		set.Add(b)
	}
	return set
}

func svidOf(id identity) *x509svid.SVID {
	return &x509svid.SVID{ID: id.id, Certificates: id.chain, PrivateKey: id.key}
}

// TestFederatedAgentsMTLS starts org-a and org-b, federates them, and has
// an org-a agent and an org-b agent complete an mTLS handshake using only
// what their authorities handed them.
func TestFederatedAgentsMTLS(t *testing.T) {
	a, b := start(t, "org-a.example"), start(t, "org-b.example")
	a.federate(b)
	b.federate(a)
	nodeA, nodeB := a.joinNode(), b.joinNode()
	alice := a.agentSVID(nodeA, a.registerAgent("alice", nodeA.id))
	bob := b.agentSVID(nodeB, b.registerAgent("bob", nodeB.id))
	for _, id := range []identity{alice, bob} {
		if len(id.ans.Bundles) != 2 {
			t.Fatalf("%s got bundles for %d trust domains, want 2 (own and federated)", id.id, len(id.ans.Bundles))
		}
	}

	ctx := ctxT(t)
	ln, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0",
		spiffetls.MTLSServerWithRawConfig(tlsconfig.AuthorizeID(bob.id), svidOf(alice), bundleSet(t, alice.ans)))
	if err != nil {
		t.Fatalf("spiffetls.Listen() = %v", err)
	}
	defer ln.Close()
	greeting := "hello from " + alice.id.String()
	go func() { // alice answers every connection with a greeting
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(conn, greeting)
			conn.Close()
		}
	}()
	conn, err := spiffetls.DialWithMode(ctx, "tcp", ln.Addr().String(),
		spiffetls.MTLSClientWithRawConfig(tlsconfig.AuthorizeID(alice.id), svidOf(bob), bundleSet(t, bob.ans)))
	if err != nil {
		t.Fatalf("spiffetls.Dial() = %v", err)
	}
	defer conn.Close()
	msg, err := io.ReadAll(conn)
	if err != nil || string(msg) != greeting {
		t.Errorf("read %q, %v; want %q", msg, err, greeting)
	}
	peer, err := spiffetls.PeerIDFromConn(conn)
	if err != nil || peer != alice.id {
		t.Errorf("PeerIDFromConn() = %v, %v; want %s", peer, err, alice.id)
	}

	// An agent of a trust domain neither side federates with cannot
	// complete the handshake.
	a2 := start(t, "org-c.example")
	nodeC := a2.joinNode()
	carol := a2.agentSVID(nodeC, a2.registerAgent("carol", nodeC.id))
	c, err := spiffetls.DialWithMode(ctx, "tcp", ln.Addr().String(),
		spiffetls.MTLSClientWithRawConfig(tlsconfig.AuthorizeAny(), svidOf(carol), bundleSet(t, carol.ans)))
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		msg, err := io.ReadAll(c) // TLS 1.3: the server's refusal arrives after the client's handshake
		c.Close()
		if err == nil || string(msg) == greeting {
			t.Errorf("unfederated agent read %q, %v; want the handshake refused", msg, err)
		}
	}
}

// TestFederationPersistsAndRefreshes checks that the peer's bundle is
// fetched from its endpoint, that the relationship survives a restart,
// and that a peer being down keeps the last bundle in use.
func TestFederationPersistsAndRefreshes(t *testing.T) {
	b := start(t, "org-b.example")
	dataDir := t.TempDir()
	a := start(t, "org-a.example", func(c *authority.Config) { c.DataDir = dataDir })
	a.federate(b)
	waitRefreshed(t, a, b.td)

	a.stop()
	b.stop()
	a = start(t, "org-a.example", func(c *authority.Config) { c.DataDir = dataDir })
	feds, err := a.admin.ListFederations(ctxT(t))
	if err != nil || len(feds) != 1 || feds[0].TrustDomain != b.td.String() {
		t.Fatalf("ListFederations() after restart = %+v, %v; want the org-b relationship", feds, err)
	}
	// org-b is down, yet its last bundle is still handed to agents.
	node := a.joinNode()
	agent := a.agentSVID(node, a.registerAgent("alice", node.id))
	if _, ok := agent.ans.Bundles[b.td.String()]; !ok {
		t.Errorf("bundles after restart with peer down = %v, want org-b's", agent.ans.Bundles)
	}
	if err := a.admin.DeleteFederation(ctxT(t), b.td.String()); err != nil {
		t.Fatalf("DeleteFederation() = %v", err)
	}
	agent = a.agentSVID(node, spiffeid.RequireFromSegments(a.td, "agent", "alice").String())
	if _, ok := agent.ans.Bundles[b.td.String()]; ok {
		t.Error("bundles after DeleteFederation still carry org-b's")
	}
}

func TestFederationRefusals(t *testing.T) {
	a, b := start(t, "org-a.example"), start(t, "org-b.example")
	ctx := ctxT(t)
	// org-b's bundle with every key of a use no SVID has: a reader
	// ignores them all (SPIFFE Trust Domain and Bundle §4.2.2).
	unknownUses := bytes.ReplaceAll(bytes.ReplaceAll(mustMarshal(t, b.fetchBundle()),
		[]byte(`"use":"x509-svid"`), []byte(`"use":"x-svid"`)), []byte(`"use":"jwt-svid"`), []byte(`"use":"x-svid"`))
	tests := []struct {
		name string
		f    client.Federation
	}{
		{"https_spiffe without bundle", client.Federation{TrustDomain: b.td.String(), BundleEndpointURL: b.url + "/v1/bundle"}},
		{"plain http", client.Federation{TrustDomain: b.td.String(), BundleEndpointURL: "http://127.0.0.1:1/v1/bundle", Profile: "https_web"}},
		{"unknown profile", client.Federation{TrustDomain: b.td.String(), BundleEndpointURL: b.url, Profile: "ftp"}},
		{"own trust domain", client.Federation{TrustDomain: a.td.String(), BundleEndpointURL: b.url, Profile: "https_web"}},
		{"bad trust domain", client.Federation{TrustDomain: "Not A Domain", BundleEndpointURL: b.url, Profile: "https_web"}},
		{"garbage bundle", client.Federation{TrustDomain: b.td.String(), BundleEndpointURL: b.url, Bundle: []byte(`{"keys":"x"}`)}},
		// A bundle that trusts no key, which clients could not read back
		// among the bundles of every answer.
		{"bundle without keys", client.Federation{TrustDomain: b.td.String(), BundleEndpointURL: b.url, Profile: "https_web", Bundle: []byte(`{"keys":[]}`)}},
		{"bundle of keys of unknown uses only", client.Federation{TrustDomain: b.td.String(), BundleEndpointURL: b.url, Profile: "https_web", Bundle: unknownUses}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.admin.AddFederation(ctx, &tt.f)
			if got := problemName(err); got != "invalid-federation" {
				t.Errorf("AddFederation() = %v, want problem invalid-federation", err)
			}
		})
	}
	if feds, err := a.admin.ListFederations(ctx); err != nil || len(feds) != 0 {
		t.Errorf("ListFederations() = %d, %v; want none after refusals", len(feds), err)
	}
	// A trust domain written with a path names none, when deleting as
	// when adding: it is refused, not cut short to the trust domain.
	a.federate(b)
	for _, td := range []string{"spiffe://org-b.example/x", "spiffe://org-b.example/"} {
		if err := a.admin.DeleteFederation(ctx, td); problemName(err) != "invalid-request" {
			t.Errorf("DeleteFederation(%q) = %v, want problem invalid-request", td, err)
		}
	}
	if feds, err := a.admin.ListFederations(ctx); err != nil || len(feds) != 1 {
		t.Errorf("ListFederations() = %d, %v; want org-b's relationship kept", len(feds), err)
	}
}

// mustMarshal encodes b as go-spiffe does.
func mustMarshal(t *testing.T, b *spiffebundle.Bundle) []byte {
	t.Helper()
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// A stored relationship that does not load at start (here one stored
// with a bundle of no keys, as earlier versions took it) is still
// listed, with why it was not loaded, and its bundle is handed to no
// client; adding it again replaces it.
func TestUnloadedFederationIsListedWithItsError(t *testing.T) {
	dataDir := t.TempDir()
	cfg := func(c *authority.Config) { c.DataDir = dataDir }
	a, b := start(t, "org-a.example", cfg), start(t, "org-b.example")
	a.federate(b)
	a.stop()
	st, err := bolt.Open(filepath.Join(dataDir, "mandate.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(ctxT(t), func(tx store.Tx) error {
		v, err := tx.Get("federations", []byte("org-b.example"))
		if err != nil {
			return err
		}
		var rec map[string]any
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		rec["bundle"] = map[string]any{"keys": nil}
		v, err = json.Marshal(rec)
		if err != nil {
			return err
		}
		return tx.Put("federations", []byte("org-b.example"), v)
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	a = start(t, "org-a.example", cfg)
	feds, err := a.admin.ListFederations(ctxT(t))
	if err != nil || len(feds) != 1 || feds[0].TrustDomain != "org-b.example" || !strings.Contains(feds[0].LastError, "not loaded") {
		t.Fatalf("ListFederations() = %+v, %v; want org-b's relationship with why it was not loaded", feds, err)
	}
	node := a.joinNode()
	if _, ok := node.ans.Bundles["org-b.example"]; ok || len(node.ans.Bundles) != 1 {
		t.Errorf("join answer bundles = %v, want org-a's only", node.ans.Bundles)
	}
	a.federate(b)
	if feds, err := a.admin.ListFederations(ctxT(t)); err != nil || len(feds) != 1 || strings.Contains(feds[0].LastError, "not loaded") {
		t.Errorf("ListFederations() after adding it again = %+v, %v; want it loaded", feds, err)
	}
}

// A peer's bundle given with keys of an unknown type or use, or of a
// curve go-jose does not read, is taken without them (SPIFFE Trust Domain
// and Bundle §4.1.3, §4.2.1, §4.2.2), and handed to clients as the
// authorities kept.
func TestFederationIgnoresUnknownKeys(t *testing.T) {
	a, b := start(t, "org-a.example"), start(t, "org-b.example")
	peer := b.fetchBundle()
	unknown := `{"kty":"FUTURE","use":"x509-svid"},{"kty":"OKP","crv":"Ed448","use":"jwt-svid","kid":"ed448","x":"` +
		strings.Repeat("A", 76) + `"},`
	doc := bytes.Replace(mustMarshal(t, peer), []byte(`"keys":[`), []byte(`"keys":[`+unknown), 1)
	if _, err := a.admin.AddFederation(ctxT(t), &client.Federation{
		TrustDomain: b.td.String(), BundleEndpointURL: b.url + "/v1/bundle", Profile: "https_spiffe", Bundle: doc,
	}); err != nil {
		t.Fatalf("AddFederation(a bundle with keys to ignore) = %v", err)
	}
	node := a.joinNode()
	bundles, err := node.ans.ParseBundles()
	if err != nil {
		t.Fatalf("ParseBundles() = %v", err)
	}
	if got := bundles[b.td]; got == nil || !got.X509Bundle().Equal(peer.X509Bundle()) || !got.JWTBundle().Equal(peer.JWTBundle()) {
		t.Errorf("org-b's bundle handed out = %v, want its authorities without the ignored keys", got)
	}
}

// A peer bundle's refresh hint below 0 or above a year is stored and
// handed to clients as 0 or a year: never as a hint go-spiffe's encoding
// overflowed (9223372036 s read back as -9223372036) or moved (-5 as -4).
func TestFederationRefreshHintIsBounded(t *testing.T) {
	a, b := start(t, "org-a.example"), start(t, "org-b.example")
	doc := mustMarshal(t, b.fetchBundle())
	hint := regexp.MustCompile(`"spiffe_refresh_hint":-?[0-9]+`)
	if !hint.Match(doc) {
		t.Fatalf("org-b's bundle %s has no refresh hint", doc)
	}
	for _, tt := range []struct{ given, want string }{
		{"-5", "0"},
		{"9223372036", "31536000"},
	} {
		t.Run(tt.given, func(t *testing.T) {
			given := hint.ReplaceAll(doc, []byte(`"spiffe_refresh_hint":`+tt.given))
			if _, err := a.admin.AddFederation(ctxT(t), &client.Federation{
				TrustDomain: b.td.String(), BundleEndpointURL: "https://127.0.0.1:1/v1/bundle", Profile: "https_web", Bundle: given,
			}); err != nil {
				t.Fatalf("AddFederation() = %v", err)
			}
			handed := a.joinNode().ans.Bundles["org-b.example"]
			if got := hint.Find(handed); string(got) != `"spiffe_refresh_hint":`+tt.want {
				t.Errorf("hint %s handed out as %s, want %s", tt.given, got, tt.want)
			}
		})
	}
}

// waitRefreshed polls until e has fetched td's bundle from its endpoint.
func waitRefreshed(t *testing.T, e *env, td spiffeid.TrustDomain) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		feds, err := e.admin.ListFederations(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range feds {
			if f.TrustDomain == td.String() && f.LastRefresh != nil {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never fetched the bundle of %s", e.td, td)
}

// federatedAdmin starts org-b.example and org-a.example, federated, and
// returns org-a's authority, org-b's, and an agent of org-b (ops) that
// org-a makes an admin.
func federatedAdmin(t *testing.T) (a, b *env, ops identity) {
	t.Helper()
	b = start(t, "org-b.example")
	opsID := spiffeid.RequireFromSegments(b.td, "agent", "ops")
	a = start(t, "org-a.example", func(c *authority.Config) { c.Admins = []string{opsID.String()} })
	a.federate(b)
	nodeB := b.joinNode()
	return a, b, b.agentSVID(nodeB, b.registerAgent("ops", nodeB.id))
}

// TestEndedTrustStopsOpenAndResumedConnections: an admin of a federated
// trust domain loses access as soon as the federation ends — on its open
// keep-alive connection and on a resumed TLS session alike.
func TestEndedTrustStopsOpenAndResumedConnections(t *testing.T) {
	a, b, opsID := federatedAdmin(t)

	c := a.rawClient(opsID.chain, opsID.key)
	tr := c.Transport.(*http.Transport)
	tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	resumed := false
	get := func() (int, error) {
		resp, err := c.Get(a.url + "/v1/admin/nodes")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		resumed = resp.TLS.DidResume
		return resp.StatusCode, nil
	}
	if code, err := get(); err != nil || code != 200 {
		t.Fatalf("federated admin before: %d, %v; want 200", code, err)
	}
	tr.CloseIdleConnections()
	if code, err := get(); err != nil || code != 200 { // a resumed session, still trusted
		t.Fatalf("federated admin on a resumed session: %d, %v; want 200", code, err)
	}
	if !resumed {
		t.Fatal("the client did not resume its TLS session; the test needs it to")
	}
	if err := a.admin.DeleteFederation(ctxT(t), b.td.String()); err != nil {
		t.Fatal(err)
	}
	if code, err := get(); err != nil || code != 401 {
		t.Errorf("federated admin on an open connection after the federation ended: %d, %v; want 401", code, err)
	}
	tr.CloseIdleConnections()
	if code, err := get(); err == nil {
		t.Errorf("federated admin resuming a session after the federation ended: %d, want a refused handshake", code)
	}
}

// TestFederationChangesKeepState: re-posting a relationship without its
// bundle keeps the bundle (and the authority restarts fine), a refused
// change leaves the existing relationship as it was, and "spiffe://x" and
// "x" name one relationship.
func TestFederationChangesKeepState(t *testing.T) {
	b := start(t, "org-b.example")
	dataDir := t.TempDir()
	cfg := func(c *authority.Config) { c.DataDir = dataDir }
	a := start(t, "org-a.example", cfg)
	ctx := ctxT(t)
	a.federate(b)
	b.stop() // the peer is down from now on

	again := &client.Federation{TrustDomain: "spiffe://org-b.example", BundleEndpointURL: b.url + "/v1/bundle", Profile: "https_spiffe", Bundle: []byte("null")}
	if _, err := a.admin.AddFederation(ctx, again); err != nil {
		t.Fatalf("AddFederation(same relationship, no bundle) = %v", err)
	}
	refused := &client.Federation{TrustDomain: "org-b.example", BundleEndpointURL: "http://insecure.example/", Profile: "https_web"}
	if _, err := a.admin.AddFederation(ctx, refused); problemName(err) != "invalid-federation" {
		t.Fatalf("AddFederation(plain http) = %v, want invalid-federation", err)
	}
	feds, err := a.admin.ListFederations(ctx)
	if err != nil || len(feds) != 1 || feds[0].TrustDomain != "org-b.example" || feds[0].BundleEndpointURL != b.url+"/v1/bundle" || len(feds[0].Bundle) == 0 {
		t.Fatalf("ListFederations() = %+v, %v; want the one org-b relationship, unchanged, with its bundle", feds, err)
	}

	a.stop()
	a = start(t, "org-a.example", cfg)
	node := a.joinNode()
	agent := a.agentSVID(node, a.registerAgent("alice", node.id))
	if _, ok := agent.ans.Bundles["org-b.example"]; !ok {
		t.Errorf("after restart, bundles = %v, want org-b's", agent.ans.Bundles)
	}
	if err := a.admin.DeleteFederation(ctx, "spiffe://org-b.example"); err != nil {
		t.Fatalf("DeleteFederation(spiffe://org-b.example) = %v", err)
	}
	if feds, err := a.admin.ListFederations(ctx); err != nil || len(feds) != 0 {
		t.Errorf("ListFederations() after delete = %+v, %v; want none", feds, err)
	}
}

// TestFederatedBundleUpdatesAreLogged: a peer bundle fetched with other
// trust anchors than the one held is logged, in the commit that stores
// it, with each anchor named; the next start names the same anchors for
// the relationship.
func TestFederatedBundleUpdatesAreLogged(t *testing.T) {
	b := start(t, "org-b.example")
	dataDir := t.TempDir()
	cfg := func(c *authority.Config) { c.DataDir = dataDir }
	a := start(t, "org-a.example", cfg)

	// Bootstrapped with org-b's X.509 authorities only: the fetched
	// bundle adds its JWT keys.
	peer := b.fetchBundle()
	partial := spiffebundle.New(b.td)
	partial.SetX509Authorities(peer.X509Authorities())
	doc, err := partial.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.admin.AddFederation(ctxT(t), &client.Federation{
		TrustDomain: b.td.String(), BundleEndpointURL: b.url + "/v1/bundle", Profile: "https_spiffe", Bundle: doc,
	}); err != nil {
		t.Fatalf("AddFederation() = %v", err)
	}
	var updates []map[string]any
	for deadline := time.Now().Add(20 * time.Second); len(updates) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		updates = a.auditOf("federation.bundle_updated", "org-b.example")
	}
	if len(updates) != 1 {
		t.Fatalf("federation.bundle_updated entries = %v, want one", updates)
	}
	got := updates[0]

	var x509s []any
	for _, c := range peer.X509Authorities() {
		sum := sha256.Sum256(c.Raw)
		x509s = append(x509s, hex.EncodeToString(sum[:]))
	}
	slices.SortFunc(x509s, func(p, q any) int { return strings.Compare(p.(string), q.(string)) })
	var kids []any
	for kid := range peer.JWTAuthorities() {
		kids = append(kids, kid)
	}
	slices.SortFunc(kids, func(p, q any) int { return strings.Compare(p.(string), q.(string)) })
	var gotKids []any
	for _, k := range got["jwt_authorities"].([]any) {
		key := k.(map[string]any)
		if key["jwk_thumbprint"] != key["kid"] { // Mandate's kids are their thumbprints
			t.Errorf("logged JWT key %v: thumbprint is not the key's", key)
		}
		gotKids = append(gotKids, key["kid"])
	}
	seq, _ := peer.SequenceNumber()
	if !reflect.DeepEqual(got["x509_authorities"], x509s) || len(kids) == 0 || !reflect.DeepEqual(gotKids, kids) ||
		got["sequence_number"] != float64(seq) || got["anchors_sha256"] == nil || got["digest_only"] != nil {
		t.Errorf("federation.bundle_updated = %v, want X.509 authorities %v, JWT keys %v, sequence %d", got, x509s, kids, seq)
	}
	feds, err := a.admin.ListFederations(ctxT(t))
	if err != nil || len(feds) != 1 {
		t.Fatalf("ListFederations() = %+v, %v", feds, err)
	}
	if stored, err := spiffebundle.Parse(b.td, feds[0].Bundle); err != nil || !stored.Equal(peer) {
		t.Errorf("stored bundle = %s, %v; want the one fetched", feds[0].Bundle, err)
	}

	a.stop()
	a = start(t, "org-a.example", cfg)
	var started []map[string]any
	for deadline := time.Now().Add(10 * time.Second); len(started) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		started = a.auditOf("authority.started", "")
	}
	if len(started) != 2 {
		t.Fatalf("authority.started entries = %d, want 2", len(started))
	}
	want := []any{map[string]any{"trust_domain": "org-b.example", "bundle_endpoint_url": b.url + "/v1/bundle",
		"anchors_sha256": got["anchors_sha256"], "sequence_number": got["sequence_number"]}}
	if fs := started[1]["federations"]; !reflect.DeepEqual(fs, want) {
		t.Errorf("authority.started federations = %v, want %v", fs, want)
	}
	if fs := started[0]["federations"]; !reflect.DeepEqual(fs, []any{}) {
		t.Errorf("first authority.started federations = %v, want none", fs)
	}
}

// A peer bundle fetched with the same trust anchors under another
// sequence number and refresh hint (the peer restarted with another
// federation.bundle_refresh_hint) is stored, but not logged as
// federation.bundle_updated, which is for other trust anchors.
func TestFederatedBundleWithOnlyANewHintIsStoredUnlogged(t *testing.T) {
	aDir, bDir := t.TempDir(), t.TempDir()
	b := start(t, "org-b.example", func(c *authority.Config) { c.DataDir = bDir })
	a := start(t, "org-a.example", func(c *authority.Config) { c.DataDir = aDir })
	a.federate(b)
	waitRefreshed(t, a, b.td)
	b.stop()
	b = start(t, "org-b.example", func(c *authority.Config) {
		c.DataDir = bDir
		c.Federation.BundleRefreshHint = authority.Duration(7 * time.Minute)
	})
	peer := b.fetchBundle()
	if hint, _ := peer.RefreshHint(); hint != 7*time.Minute {
		t.Fatalf("org-b's bundle hint = %s, want 7m", hint)
	}
	seq, _ := peer.SequenceNumber()
	// The relationship again, at org-b's new address, keeping its bundle.
	if _, err := a.admin.AddFederation(ctxT(t), &client.Federation{
		TrustDomain: b.td.String(), BundleEndpointURL: b.url + "/v1/bundle", Profile: "https_spiffe",
	}); err != nil {
		t.Fatalf("AddFederation() = %v", err)
	}
	var feds []client.Federation
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var err error
		if feds, err = a.admin.ListFederations(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if len(feds) == 1 && feds[0].BundleSequence != nil && *feds[0].BundleSequence == seq {
			break
		}
	}
	if len(feds) != 1 || feds[0].BundleSequence == nil || *feds[0].BundleSequence != seq {
		t.Fatalf("ListFederations() = %+v, want org-b's bundle of sequence %d", feds, seq)
	}
	if stored, err := spiffebundle.Parse(b.td, feds[0].Bundle); err != nil || !stored.Equal(peer) {
		t.Errorf("bundle held = %s, %v; want the one fetched", feds[0].Bundle, err)
	}
	if got := a.auditOf("federation.bundle_updated", "org-b.example"); len(got) != 0 {
		t.Errorf("federation.bundle_updated entries = %v, want none: the trust anchors are the same", got)
	}
	// Stored: with org-b down, a restart holds the bundle fetched.
	b.stop()
	a.stop()
	a = start(t, "org-a.example", func(c *authority.Config) { c.DataDir = aDir })
	if feds, err := a.admin.ListFederations(ctxT(t)); err != nil || len(feds) != 1 || feds[0].BundleSequence == nil || *feds[0].BundleSequence != seq {
		t.Errorf("ListFederations() after a restart = %+v, %v; want the bundle of sequence %d stored", feds, err, seq)
	}
}

// A federation from the config file with a bundle_file: the file
// authenticates the peer the first time; once the relationship is
// stored, the authority starts without it.
func TestConfiguredFederationRestartsWithoutItsBundleFile(t *testing.T) {
	b := start(t, "org-b.example")
	doc, err := b.fetchBundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(t.TempDir(), "org-b.json")
	if err := os.WriteFile(bundleFile, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	cfg := func(c *authority.Config) {
		c.DataDir = dataDir
		c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: b.url + "/v1/bundle", BundleFile: bundleFile}}
	}
	a := start(t, "org-a.example", cfg)
	if feds, err := a.admin.ListFederations(ctxT(t)); err != nil || len(feds) != 1 {
		t.Fatalf("federations after the first start: %v, %v", feds, err)
	}
	a.stop()
	if err := os.Remove(bundleFile); err != nil {
		t.Fatal(err)
	}
	a = start(t, "org-a.example", cfg)
	if feds, err := a.admin.ListFederations(ctxT(t)); err != nil || len(feds) != 1 || feds[0].TrustDomain != "org-b.example" {
		t.Fatalf("federations after a restart without the bundle file: %v, %v", feds, err)
	}
}

// /metrics tells, per federated trust domain, whether its bundle is being
// fetched: a peer that is down shows its failed refreshes and when its
// bundle was last fetched, with nothing fetched since the start.
func TestFederationRefreshMetrics(t *testing.T) {
	b := start(t, "org-b.example")
	dataDir := t.TempDir()
	a := start(t, "org-a.example", func(c *authority.Config) { c.DataDir = dataDir })
	a.federate(b)
	waitRefreshed(t, a, b.td)
	failures := `mandate_federation_bundle_refresh_failures{trust_domain="org-b.example"}`
	last := `mandate_federation_bundle_last_refresh_timestamp_seconds{trust_domain="org-b.example"}`
	m := a.metricsOf("mandate_federation_")
	if f, ok := m[failures]; !ok || f != 0 {
		t.Errorf("%s = %v (%v), want 0", failures, f, ok)
	}
	if ts, ok := m[last]; !ok || ts < float64(a.a.Now().Add(-time.Hour).Unix()) {
		t.Errorf("%s = %v (%v), want the time of the fetch", last, ts, ok)
	}

	// Restarted with org-b down: the refresh at start fails.
	a.stop()
	b.stop()
	a = start(t, "org-a.example", func(c *authority.Config) { c.DataDir = dataDir })
	deadline := time.Now().Add(20 * time.Second)
	for m = a.metricsOf("mandate_federation_"); m[failures] < 1; m = a.metricsOf("mandate_federation_") {
		if time.Now().After(deadline) {
			t.Fatalf("no failed refresh of org-b in /metrics: %v", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ts, ok := m[last]; !ok || ts != 0 {
		t.Errorf("%s = %v (%v), want 0: nothing fetched since the start", last, ts, ok)
	}
}
