package api_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

// testCA is an upstream CA whose key the test holds, so that it can make
// client certificates of any SPIFFE ID the authority's bundle verifies
// (the authority itself only issues node and agent IDs).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// files writes the CA's certificate and key as upstream CA files.
func (ca *testCA) files(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	kb, err := credfile.EncodeKeyPEM(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, credfile.EncodeCertsPEM([]*x509.Certificate{ca.cert}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// leaf issues an X509-SVID for the URI id (written as given, so that
// look-alikes not in canonical form can be made), valid until notAfter,
// with the Subject OUs ous.
func (ca *testCA) leaf(t *testing.T, id string, notAfter time.Time, ous ...string) ([]*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{OrganizationalUnit: ous}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return []*x509.Certificate{cert}, key
}

// tlsClient is a plain HTTPS client of e presenting chain/key, whatever
// they are (rawClient insists on a parseable SPIFFE ID).
func (e *env) tlsClient(chain []*x509.Certificate, key crypto.Signer) *http.Client {
	roots := x509.NewCertPool()
	for _, c := range e.bundle {
		roots.AddCert(c)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert},
	}}}
	e.t.Cleanup(c.CloseIdleConnections)
	return c
}

// The shapes of a refusal.
const (
	shapeProblem = iota // application/problem+json
	shapeOPA            // OPA's error shape
	shapeOAuth          // RFC 6749 error
)

// Who may call what: the outcome a caller of each kind gets.
const (
	allowed   = iota // the caller's role may call it: no 401 or 403 for who it is, no 5xx
	refused          // 401 or 403 (who it is: unregistered, deleted, banned), never 2xx or 5xx
	notIssued        // a 4xx (TestStaleDelegatorsAreRefused sends them requests that would succeed)
	anon401          // 401 unauthenticated
	role403          // 403 forbidden
)

// TestWhoMayCallWhat calls every endpoint as every kind of caller and
// checks the answer against the endpoint summary of docs/api.md: a caller
// without the role gets 401 (no certificate) or 403 (another role)
// before anything else, as a problem (the Data API in OPA's shape, the
// token endpoint as RFC 6749 says), never data and never a 5xx.
func TestWhoMayCallWhat(t *testing.T) {
	const td = "org-a.example"
	upstream := newTestCA(t, "Org A Root CA")
	certFile, keyFile := upstream.files(t)
	b := start(t, "org-b.example")
	nodeB := b.joinNode()
	fedAgent := b.agentSVID(nodeB, b.registerAgent("bob", nodeB.id))
	fedAuditor := b.agentSVID(nodeB, b.registerAgent("auditor", nodeB.id))
	e := start(t, td, func(c *authority.Config) {
		c.CA.UpstreamCertFile, c.CA.UpstreamKeyFile = certFile, keyFile
		c.Audit.Auditors = []string{"spiffe://org-a.example/auditor/alice", fedAuditor.id.String()}
		c.Policy.DecisionCallers = []string{"spiffe://org-a.example/platform/gateway"}
	})
	e.federate(b)
	ctx := ctxT(t)

	node := e.joinNode()
	agentID := e.registerAgent("alice", node.id)
	agent := e.agentSVID(node, agentID)
	// An agent whose registration was deleted, one whose ID was revoked,
	// a node that was banned: each still holds a valid certificate.
	goneID := e.registerAgent("gone", node.id)
	gone := e.agentSVID(node, goneID)
	revokedID := e.registerAgent("revoked", node.id)
	revoked := e.agentSVID(node, revokedID)
	banned := e.joinNode()
	onBannedID := e.registerAgent("stranded", banned.id)
	onBanned := e.agentSVID(banned, onBannedID)
	regs, err := e.admin.ListAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range regs {
		if r.SPIFFEID == goneID {
			if err := e.admin.DeleteAgent(ctx, r.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := e.admin.BanNode(ctx, banned.id.String(), "test"); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/admin/revocations", strings.NewReader(mustJSON(t, map[string]string{"spiffe_id": revokedID, "reason": "test"})))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := e.adminRaw().Do(req); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("revoke %s: %v %v", revokedID, resp, err)
	} else {
		resp.Body.Close()
	}

	month := time.Now().Add(30 * 24 * time.Hour)
	made := func(id string, ous ...string) *http.Client {
		chain, key := upstream.leaf(t, id, month, ous...)
		return e.tlsClient(chain, key)
	}
	hostOU := "mandate-host-node=" + node.id.String()
	fedAuditorC := e.rawClient(fedAuditor.chain, fedAuditor.key)
	type caller struct {
		name string
		c    *http.Client
		// role: "none", "admin", "node", "agent", "auditor",
		// "decider", or "stale" (a node or agent in name only).
		role string
		id   string
	}
	callers := []caller{
		{"anonymous", e.rawClient(nil, nil), "anon", ""},
		{"bootstrap admin", e.adminRaw(), "admin", authority.AdminID(e.td).String()},
		{"node", e.rawClient(node.chain, node.key), "node", node.id.String()},
		{"agent", e.rawClient(agent.chain, agent.key), "agent", agentID},
		{"auditor", made("spiffe://org-a.example/auditor/alice"), "auditor", ""},
		{"federated auditor", fedAuditorC, "auditor", ""},
		{"decision caller", made("spiffe://org-a.example/platform/gateway"), "decider", ""},
		{"federated agent", e.rawClient(fedAgent.chain, fedAgent.key), "none", ""},
		{"server id", made("spiffe://org-a.example/mandate/server"), "none", ""},
		{"admin look-alike below", made("spiffe://org-a.example/mandate/admin/x"), "none", ""},
		{"admin look-alike, other case", made("spiffe://org-a.example/Mandate/admin"), "none", ""},
		{"node look-alike", made("spiffe://org-a.example/nodes/x"), "none", ""},
		{"agent look-alike", made("spiffe://org-a.example/agents/x", hostOU), "none", ""},
		{"auditor look-alike", made("spiffe://org-a.example/auditor/alice/x"), "none", ""},
		{"decision caller look-alike", made("spiffe://org-a.example/platform/gateway/x"), "none", ""},
		{"unregistered agent", made("spiffe://org-a.example/agent/ghost", hostOU), "stale-agent", "spiffe://org-a.example/agent/ghost"},
		{"deleted agent", e.rawClient(gone.chain, gone.key), "stale-agent", goneID},
		// Revoking an ID revokes its delegations, not its SVIDs.
		{"revoked agent", e.rawClient(revoked.chain, revoked.key), "agent", revokedID},
		{"agent on a banned node", e.rawClient(onBanned.chain, onBanned.key), "stale-agent", onBannedID},
		{"banned node", e.rawClient(banned.chain, banned.key), "stale-node", banned.id.String()},
		{"unrecorded node", made("spiffe://org-a.example/node/join/ffffffffffffffff"), "stale-node", "spiffe://org-a.example/node/join/ffffffffffffffff"},
	}

	csrKey, _, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	csrNoSAN, err := client.CSRFor(csrKey, spiffeid.ID{})
	if err != nil {
		t.Fatal(err)
	}
	// The SVID asked for: a node asks for its agent, anyone else for
	// itself.
	x509Body := func(c caller) string {
		id := c.id
		if id == "" || c.role == "node" || c.role == "stale-node" {
			id = agentID
		}
		return mustJSON(t, map[string]string{"spiffe_id": id, "csr": string(csrNoSAN)})
	}
	jwtBody := func(c caller) string {
		m := map[string]any{"audience": []string{"spiffe://org-a.example/svc"}}
		if c.role == "node" || c.role == "stale-node" {
			m["spiffe_id"] = agentID
		}
		return mustJSON(t, m)
	}
	fixed := func(s string) func(caller) string { return func(caller) string { return s } }

	// who maps a caller's role to the outcome; roles not listed are
	// refused as the endpoint's problem says (401 without a certificate,
	// else 403).
	type who map[string]int
	var (
		public    = who{"*": allowed}
		adminOnly = who{"admin": allowed}
		readers   = who{"admin": allowed, "auditor": allowed}
		deciders  = who{"admin": allowed, "decider": allowed}
		agents    = who{"agent": allowed, "stale-agent": notIssued}
		svids     = who{"agent": allowed, "node": allowed, "stale-agent": refused, "stale-node": refused}
	)
	endpoints := []struct {
		method, path, ctype string
		body                func(caller) string
		who                 who
		shape               int
	}{
		{"GET", "/healthz", "", nil, public, shapeProblem},
		{"GET", "/metrics", "", nil, public, shapeProblem},
		{"GET", "/v1/bundle", "", nil, public, shapeProblem},
		{"GET", "/.well-known/jwks.json", "", nil, public, shapeProblem},
		{"GET", "/.well-known/oauth-authorization-server", "", nil, public, shapeProblem},
		{"GET", "/v1/audit/verifier-key", "", nil, public, shapeProblem},
		{"GET", "/v1/delegations/0123456789abcdef/status", "", nil, public, shapeProblem},
		{"POST", "/v1/nodes/join", "application/json", fixed(`{}`), public, shapeProblem},
		{"POST", "/v1/nodes/attest/tpm/challenge", "application/json", fixed(`{}`), public, shapeProblem},
		{"POST", "/v1/nodes/attest/tpm/verify", "application/json", fixed(`{}`), public, shapeProblem},

		{"POST", "/v1/admin/join-tokens", "application/json", fixed(`{}`), adminOnly, shapeProblem},
		{"DELETE", "/v1/admin/join-tokens/0123456789abcdef", "", nil, adminOnly, shapeProblem},
		{"POST", "/v1/admin/agents", "application/json", fixed(`{}`), adminOnly, shapeProblem},
		{"GET", "/v1/admin/agents", "", nil, adminOnly, shapeProblem},
		{"GET", "/v1/admin/agents/nope", "", nil, adminOnly, shapeProblem},
		{"PUT", "/v1/admin/agents/nope", "application/json", fixed(`{}`), adminOnly, shapeProblem},
		{"DELETE", "/v1/admin/agents/nope", "", nil, adminOnly, shapeProblem},
		{"GET", "/v1/admin/nodes", "", nil, adminOnly, shapeProblem},
		{"GET", "/v1/admin/nodes/" + url.PathEscape("spiffe://org-a.example/node/join/nope"), "", nil, adminOnly, shapeProblem},
		{"POST", "/v1/admin/nodes/" + url.PathEscape("spiffe://org-a.example/node/join/nope") + "/ban", "application/json", fixed(`{}`), adminOnly, shapeProblem},
		{"POST", "/v1/admin/nodes/" + url.PathEscape("spiffe://org-a.example/node/join/nope") + "/evict", "application/json", fixed(`{}`), adminOnly, shapeProblem},
		{"POST", "/v1/admin/federations", "application/json", fixed(`{}`), adminOnly, shapeProblem},
		{"GET", "/v1/admin/federations", "", nil, adminOnly, shapeProblem},
		{"DELETE", "/v1/admin/federations/nope.example", "", nil, adminOnly, shapeProblem},
		{"GET", "/v1/admin/ca", "", nil, adminOnly, shapeProblem},
		{"POST", "/v1/admin/ca/rotate", "application/json", fixed(`{}`), adminOnly, shapeProblem},
		{"POST", "/v1/admin/ca/revoke", "application/json", fixed(`{}`), adminOnly, shapeProblem},
		{"POST", "/v1/admin/backups", "application/json", fixed(`{"x":1}`), adminOnly, shapeProblem},
		{"POST", "/v1/admin/policy/reload", "application/json", fixed(`{"x":1}`), adminOnly, shapeProblem},
		{"GET", "/v1/admin/policy", "", nil, adminOnly, shapeProblem},
		{"POST", "/v1/admin/policy/test", "application/json", fixed(`{"x":1}`), adminOnly, shapeProblem},
		{"POST", "/v1/admin/revocations", "application/json", fixed(`{}`), adminOnly, shapeProblem},
		{"GET", "/v1/admin/revocations", "", nil, adminOnly, shapeProblem},

		{"GET", "/v1/audit/checkpoint", "", nil, readers, shapeProblem},
		{"GET", "/v1/audit/entries/0", "", nil, readers, shapeProblem},
		{"GET", "/v1/audit/proofs/consistency?from=1&to=1", "", nil, readers, shapeProblem},
		{"GET", "/v1/audit/search", "", nil, readers, shapeProblem},
		{"GET", "/v1/audit/chains/0123456789abcdef", "", nil, readers, shapeProblem},
		{"GET", "/checkpoint", "", nil, readers, shapeProblem},
		{"GET", "/tile/0/000", "", nil, readers, shapeProblem},

		{"POST", "/v1/data/mandate/authzen/decision", "application/json", fixed(`{}`), deciders, shapeOPA},
		{"GET", "/v1/data/mandate/authzen/decision", "", nil, deciders, shapeOPA},
		{"POST", "/access/v1/evaluation", "application/json", fixed(`{}`), deciders, shapeProblem},
		{"POST", "/access/v1/evaluations", "application/json", fixed(`{}`), deciders, shapeProblem},

		{"POST", "/v1/delegations", "application/json", fixed(`{}`), agents, shapeProblem},
		{"POST", "/v1/token", "application/x-www-form-urlencoded", fixed("grant_type=urn:ietf:params:oauth:grant-type:token-exchange"), agents, shapeOAuth},
		{"POST", "/v1/svid/x509", "application/json", x509Body, svids, shapeProblem},
		{"POST", "/v1/svid/jwt", "application/json", jwtBody, svids, shapeProblem},
		{"POST", "/v1/nodes/sync", "application/json", fixed(mustJSON(t, map[string][]string{"spiffe_ids": {agentID}})), who{"node": allowed, "stale-node": refused}, shapeProblem},
	}

	for _, ep := range endpoints {
		for _, c := range callers {
			callAs := endpointCheck(ctx, e, c.c)
			t.Run(ep.method+" "+ep.path+"/"+c.name, func(t *testing.T) {
				want, ok := ep.who[c.role]
				if !ok {
					want, ok = ep.who["*"]
				}
				switch {
				case ok:
				case c.role == "anon":
					want = anon401
				default:
					want = role403
				}
				bodies := []string{""}
				if ep.body != nil {
					bodies[0] = ep.body(c)
					// Who may call is checked before the body is read:
					// a caller without the role learns nothing of the
					// endpoint's validation.
					// (The token endpoint answers as RFC 6749 says, a
					// form without its grant_type first.)
					if (want == anon401 || want == role403) && ep.shape != shapeOAuth {
						bodies = append(bodies, "x")
					}
				}
				for _, b := range bodies {
					callAs(t, ep.method, ep.path, ep.ctype, b, ep.body != nil, want, ep.shape)
				}
			})
		}
	}

	// No HTTP answer at all for a certificate the bundles do not verify:
	// another CA's, or one whose URI is not a SPIFFE ID in canonical form.
	refusedInHandshake := map[string]*http.Client{
		"untrusted CA":             e.tlsClient(newTestCA(t, "Other CA").leaf(t, "spiffe://org-a.example/mandate/admin", month)),
		"trust domain in capitals": made("spiffe://ORG-A.example/mandate/admin"),
		"trailing slash":           made("spiffe://org-a.example/mandate/admin/"),
		"dot segment":              made("spiffe://org-a.example/mandate/./admin"),
	}
	for name, c := range refusedInHandshake {
		resp, err := c.Get(e.url + "/v1/admin/agents")
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: answered %d, want the handshake refused", name, resp.StatusCode)
		}
	}

	// A certificate that expires on a kept-alive connection stops
	// authenticating it; so does one whose trust domain is no longer
	// federated.
	callAs := endpointCheck(ctx, e, e.tlsClient(upstream.leaf(t, "spiffe://org-a.example/auditor/alice", time.Now().Add(10*time.Minute))))
	fed := endpointCheck(ctx, e, fedAuditorC)
	t.Run("kept-alive", func(t *testing.T) {
		callAs(t, "GET", "/v1/audit/checkpoint", "", "", false, allowed, shapeProblem)
		fed(t, "GET", "/v1/audit/checkpoint", "", "", false, allowed, shapeProblem)
		e.skew.Store(int64(20 * time.Minute))
		callAs(t, "GET", "/v1/audit/checkpoint", "", "", false, anon401, shapeProblem)
		e.skew.Store(0)
		if err := e.admin.DeleteFederation(ctx, b.td.String()); err != nil {
			t.Fatal(err)
		}
		fed(t, "GET", "/v1/audit/checkpoint", "", "", false, anon401, shapeProblem)
	})
}

// endpointCheck is the check of one call of TestWhoMayCallWhat.
func endpointCheck(ctx context.Context, e *env, c *http.Client) func(t *testing.T, method, path, ctype, b string, hasBody bool, want, shape int) {
	return func(t *testing.T, method, path, ctype, b string, hasBody bool, want, shape int) {
		t.Helper()
		var body io.Reader
		if hasBody {
			body = strings.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, e.url+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		var doc map[string]any
		_ = json.Unmarshal(got, &doc)
		typ, _ := doc["type"].(string)
		ptype := strings.TrimPrefix(typ, "https://mandate.dev/problems/")
		whoRefusal := resp.StatusCode == 401 || (resp.StatusCode == 403 && (ptype == "forbidden" || doc["code"] == "unauthorized"))
		if shape == shapeOAuth {
			whoRefusal = doc["error"] == "invalid_client"
		}
		if resp.StatusCode >= 500 {
			t.Fatalf("status %d, want no server fault; body %s", resp.StatusCode, got)
		}
		switch want {
		case allowed:
			if whoRefusal {
				t.Fatalf("status %d, want the caller let through; body %s", resp.StatusCode, got)
			}
			return
		case notIssued:
			if resp.StatusCode < 400 {
				t.Fatalf("status %d, want a refusal; body %s", resp.StatusCode, got)
			}
			return
		case refused:
			if resp.StatusCode != 401 && resp.StatusCode != 403 {
				t.Fatalf("status %d, want 401 or 403; body %s", resp.StatusCode, got)
			}
		case anon401, role403:
			wantStatus, wantType := 401, "unauthenticated"
			if want == role403 {
				wantStatus, wantType = 403, "forbidden"
			}
			switch shape {
			case shapeProblem:
				if resp.StatusCode != wantStatus || ptype != wantType {
					t.Fatalf("status %d type %q, want %d %s; body %s", resp.StatusCode, typ, wantStatus, wantType, got)
				}
			case shapeOPA:
				if resp.StatusCode != wantStatus || doc["code"] == nil || doc["result"] != nil {
					t.Fatalf("status %d, want %d in OPA's shape; body %s", resp.StatusCode, wantStatus, got)
				}
				return
			case shapeOAuth:
				// RFC 6749 §5.2: without an Authorization header,
				// a failed client authentication is a 400.
				if resp.StatusCode != 400 || !whoRefusal {
					t.Fatalf("status %d, want 400 invalid_client; body %s", resp.StatusCode, got)
				}
				return
			}
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("Content-Type %q, want application/problem+json; body %s", ct, got)
		}
	}
}
