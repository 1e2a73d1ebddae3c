package api_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

type caAuthority struct {
	ID          string    `json:"id"`
	Kind        string    `json:"kind"`
	State       string    `json:"state"`
	NotAfter    time.Time `json:"not_after"`
	ActivatesAt time.Time `json:"activates_at"`
}

type caRotated struct {
	Authority   caAuthority `json:"authority"`
	ActivatesAt time.Time   `json:"activates_at"`
}

func (e *env) caAuthorities() []caAuthority {
	e.t.Helper()
	var st struct{ Authorities []caAuthority }
	if err := e.admin.Do(ctxT(e.t), http.MethodGet, "/v1/admin/ca", nil, &st); err != nil {
		e.t.Fatal(err)
	}
	return st.Authorities
}

func (e *env) rotateCA(body map[string]any) (*caRotated, error) {
	e.t.Helper()
	out := new(caRotated)
	return out, e.admin.Do(ctxT(e.t), http.MethodPost, "/v1/admin/ca/rotate", body, out)
}

// An admin replaces the JWT key at once: the JWT-SVIDs minted after are
// signed by the new key and validate with the bundle, which keeps the
// old key for what it signed; the rotation is logged with the admin and
// the reason.
func TestRotateTheJWTKeyAtOnce(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	agent := e.agentSVID(node, e.registerAgent("a", node.id))
	ac := e.client(agent.chain, agent.key)
	before, err := ac.JWTSVID(ctxT(t), "", []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.rotateCA(map[string]any{"kind": "jwt", "reason": "key handled by a departed operator", "immediately": true})
	if err != nil {
		t.Fatalf("rotate = %v", err)
	}
	if got.Authority.State != "active" || got.Authority.Kind != "jwt" || time.Since(got.ActivatesAt) > time.Minute {
		t.Fatalf("rotate = %+v; want a JWT key active now", got)
	}
	after, err := ac.JWTSVID(ctxT(t), "", []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	keys := jwtbundle.FromJWTAuthorities(e.td, e.fetchBundle().JWTAuthorities())
	for name, tok := range map[string]string{"before": before.Token, "after": after.Token} {
		svid, err := jwtsvid.ParseAndValidate(tok, keys, []string{"x"})
		if err != nil {
			t.Fatalf("the JWT-SVID minted %s the rotation does not validate: %v", name, err)
		}
		if kid := kidOf(t, svid.Marshal()); name == "after" && kid != got.Authority.ID {
			t.Errorf("the JWT-SVID minted after the rotation is signed by %s, not %s", kid, got.Authority.ID)
		}
	}
	var out struct {
		Entries []struct {
			Entry struct {
				Actor   string `json:"actor"`
				Details struct {
					Requested struct {
						Reason      string `json:"reason"`
						Immediately bool   `json:"immediately"`
					} `json:"requested"`
				} `json:"details"`
			} `json:"entry"`
		} `json:"entries"`
	}
	if err := e.admin.Do(ctxT(t), http.MethodGet, "/v1/audit/search?type=ca.rotated&limit=100", nil, &out); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, en := range out.Entries {
		r := en.Entry.Details.Requested
		found = found || en.Entry.Actor == authority.AdminID(e.td).String() && r.Reason == "key handled by a departed operator" && r.Immediately
	}
	if !found {
		t.Errorf("no ca.rotated entry names the admin and the reason: %+v", out.Entries)
	}
}

// An X.509 CA is replaced once every holder of the bundle can have
// fetched it: its successor is published at once and takes over after
// the refresh hint, or the longest X509-SVID life (a
// registration's counts), whichever is longer; it is never activated
// at once.
func TestRotateTheX509CA(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.Federation.BundleRefreshHint = authority.Duration(time.Minute)
		c.CA.X509SVIDTTL = authority.Duration(10 * time.Minute)
	})
	node := e.joinNode()
	var p *client.Problem
	if _, err := e.rotateCA(map[string]any{"kind": "x509", "reason": "r", "immediately": true}); !errors.As(err, &p) || p.Status != http.StatusBadRequest {
		t.Errorf("rotate x509 immediately = %v; want 400", err)
	}
	for _, body := range []map[string]any{{"kind": "rsa", "reason": "r"}, {"kind": "jwt"}, {"kind": "jwt", "reason": "\u202e"}} {
		if _, err := e.rotateCA(body); !errors.As(err, &p) || p.Status != http.StatusBadRequest || p.Name() != "invalid-request" {
			t.Errorf("rotate %v = %v; want 400 invalid-request", body, err)
		}
	}
	_, err := e.admin.CreateAgent(ctxT(t), &client.Agent{SPIFFEID: "spiffe://org-a.example/agent/long", NodeIDs: []string{node.id.String()}, X509TTLSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	got, err := e.rotateCA(map[string]any{"kind": "x509", "reason": "scheduled compliance rotation"})
	if err != nil {
		t.Fatalf("rotate = %v", err)
	}
	// The registration's hour, longer than the hint and than the
	// default lifetime.
	if wait := got.ActivatesAt.Sub(asked); got.Authority.State != "prepared" || wait < 59*time.Minute || wait > 61*time.Minute {
		t.Fatalf("rotate = %+v: activates in %v; want prepared, activating in an hour", got, wait)
	}
	var prepared, active int
	for _, a := range e.caAuthorities() {
		switch {
		case a.Kind == "x509" && a.State == "prepared" && a.ID == got.Authority.ID && a.ActivatesAt.Equal(got.ActivatesAt):
			prepared++
		case a.Kind == "x509" && a.State == "active":
			active++
		}
	}
	if prepared != 1 || active != 1 {
		t.Errorf("GET /v1/admin/ca shows %d prepared (with its activation time) and %d active X.509 CAs; want one each", prepared, active)
	}
	found := false
	for _, c := range e.fetchBundle().X509Authorities() {
		found = found || hex.EncodeToString(c.SubjectKeyId) == got.Authority.ID
	}
	if !found {
		t.Error("the successor is not in the bundle")
	}
}

// kidOf is the key ID in a JWS's header.
func kidOf(t *testing.T, tok string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256, jose.ES384})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

// A JWT key replaced is revoked only with force (what it signed is not
// renewed): then the JWT-SVIDs it signed no longer validate with the
// bundle. The active key, and an unknown one, are refused.
func TestRevokeAReplacedJWTKey(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	agent := e.agentSVID(node, e.registerAgent("a", node.id))
	before, err := e.client(agent.chain, agent.key).JWTSVID(ctxT(t), "", []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	old := kidOf(t, before.Token)
	revoke := func(body map[string]any) (map[string]caAuthority, error) {
		var out map[string]caAuthority
		return out, e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/ca/revoke", body, &out)
	}
	var p *client.Problem
	if _, err := revoke(map[string]any{"id": old, "reason": "leaked", "force": true}); !errors.As(err, &p) || p.Status != http.StatusConflict || p.Name() != "authority-in-use" {
		t.Errorf("revoke the active key = %v; want 409 authority-in-use", err)
	}
	if _, err := revoke(map[string]any{"id": "nope", "reason": "leaked"}); !errors.As(err, &p) || p.Status != http.StatusNotFound {
		t.Errorf("revoke an unknown key = %v; want 404", err)
	}
	if _, err := e.rotateCA(map[string]any{"kind": "jwt", "reason": "leaked", "immediately": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := revoke(map[string]any{"id": old, "reason": "leaked"}); !errors.As(err, &p) || p.Status != http.StatusConflict || !strings.Contains(p.Detail, "force") {
		t.Errorf("revoke the replaced key without force = %v; want 409 saying force revokes it", err)
	}
	got, err := revoke(map[string]any{"id": old, "reason": "leaked", "force": true})
	if err != nil || got["revoked"].ID != old {
		t.Fatalf("revoke the replaced key = %v, %v", got, err)
	}
	keys := jwtbundle.FromJWTAuthorities(e.td, e.fetchBundle().JWTAuthorities())
	if _, err := jwtsvid.ParseAndValidate(before.Token, keys, []string{"x"}); err == nil {
		t.Error("a JWT-SVID the revoked key signed still validates with the bundle")
	}
	for _, a := range e.caAuthorities() {
		if a.ID == old {
			t.Error("GET /v1/admin/ca still lists the key revoked")
		}
	}
}

// After a key exposure, the successor already prepared (its key beside
// the active one's) is revoked without force, before it ever signs: it
// leaves the bundle and the CA's status, and the rotation that follows
// makes a key then. The revocation is logged with its reason.
func TestRevokeAPreparedKeyBeforeRotating(t *testing.T) {
	e := start(t, "org-a.example")
	prepared, err := e.rotateCA(map[string]any{"kind": "jwt", "reason": "yearly"})
	if err != nil || prepared.Authority.State != "prepared" {
		t.Fatalf("rotate = %+v, %v; want a prepared key", prepared, err)
	}
	id := prepared.Authority.ID
	var out map[string]caAuthority
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/ca/revoke", map[string]any{"id": id, "reason": "keys/ copied"}, &out); err != nil || out["revoked"].ID != id {
		t.Fatalf("revoke the prepared key without force = %v, %v; want it revoked", out, err)
	}
	for _, a := range e.caAuthorities() {
		if a.ID == id {
			t.Errorf("GET /v1/admin/ca still lists the key revoked, %s", a.State)
		}
	}
	if _, ok := e.fetchBundle().JWTAuthorities()[id]; ok {
		t.Error("the bundle still holds the key revoked")
	}
	again, err := e.rotateCA(map[string]any{"kind": "jwt", "reason": "keys/ copied", "immediately": true})
	if err != nil || again.Authority.ID == id || again.Authority.State != "active" {
		t.Fatalf("rotate after the revocation = %+v, %v; want another key, active", again, err)
	}
	if !slices.ContainsFunc(e.auditOf("ca.rotated", ""), func(details map[string]any) bool {
		req, _ := details["requested"].(map[string]any)
		return req["revoked"] == id && req["reason"] == "keys/ copied"
	}) {
		t.Error("no ca.rotated entry records the revocation and its reason")
	}
}

// Once the X.509 CA that signed the authority's own certificate is
// revoked, the authority presents another, which the bundle verifies:
// the admin credential's bundle.pem, rewritten without the CA revoked.
func TestServerCertificateOfARevokedCA(t *testing.T) {
	t.Parallel() // it waits for the rotation's steps (every 10 s)
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.Federation.BundleRefreshHint = authority.Duration(time.Second)
	})
	first := e.caAuthorities()[0]
	if _, err := e.rotateCA(map[string]any{"kind": "x509", "reason": "exposed"}); err != nil {
		t.Fatal(err)
	}
	presented := func() []*x509.Certificate {
		t.Helper()
		conn, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates
	}
	// Past half of the server certificate's hour, before the successor's
	// activation (the X509-SVIDs' hour): a handshake has it renewed, by
	// the old CA still.
	e.skew.Store(int64(50 * time.Minute))
	for deadline := time.Now().Add(30 * time.Second); presented()[0].NotAfter.Before(time.Now().Add(90 * time.Minute)); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server certificate was not renewed past half its life")
		}
	}
	// Past the activation: the server's certificate is the old CA's.
	// (From here the admin asks the authority in-process: a new
	// connection's handshake would check the server's certificate,
	// renewed at the authority's time, at this host's, before it.)
	e.skew.Store(int64(61 * time.Minute))
	admin := &authority.Caller{ID: spiffeid.RequireFromSegments(e.td, "mandate", "admin"), Cert: e.adminChain()[0]}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err := e.a.CAStatus(admin)
		if err != nil {
			t.Fatal(err)
		}
		if st.(map[string]any)["authorities"].([]ca.AuthorityInfo)[0].State == ca.StateOld {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the successor was not activated")
		}
	}
	if _, err := e.a.RevokeCA(ctxT(t), admin, first.ID, "exposed", true); err != nil {
		t.Fatalf("revoke = %v", err)
	}
	_, _, roots, err := credfile.Load(authority.AdminPaths(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roots {
		if hex.EncodeToString(r.SubjectKeyId) == first.ID {
			t.Fatal("the admin credential's bundle.pem still holds the CA revoked")
		}
	}
	// What the server presents now, verified with that bundle at the
	// authority's time.
	at := x509svid.WithTime(time.Now().Add(61 * time.Minute))
	if _, _, err := x509svid.Verify(presented(), x509bundle.FromX509Authorities(e.td, roots), at); err != nil {
		t.Errorf("the server's certificate does not verify with the bundle once its CA was revoked: %v", err)
	}
}

// A JWT key living less than the wait a rotation asks (the longest
// X509-SVID life) is taken over by the schedule first, before its
// predecessor expires: the answer says that time, not the wait's.
func TestRotateSaysTheScheduleWhenItComesFirst(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.CA.JWTKeyTTL = authority.Duration(30 * time.Minute)
	})
	var active caAuthority
	for _, a := range e.caAuthorities() {
		if a.Kind == "jwt" && a.State == "active" {
			active = a
		}
	}
	got, err := e.rotateCA(map[string]any{"kind": "jwt", "reason": "r"})
	if err != nil {
		t.Fatalf("rotate = %v", err)
	}
	if got.Authority.State != "prepared" || !got.ActivatesAt.Before(active.NotAfter) || got.ActivatesAt.Before(time.Now()) {
		t.Fatalf("rotate = %+v; want prepared, activating before its predecessor expires at %v", got, active.NotAfter)
	}
}
