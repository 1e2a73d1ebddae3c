package delegation_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/delegation"
)

// org is a test authority: an X.509 CA for its agents' SVIDs and a JWT
// key for its tokens, published in its SPIFFE bundle.
type org struct {
	td     spiffeid.TrustDomain
	caCert *x509.Certificate
	caKey  crypto.Signer
	jwtKey crypto.Signer
	kid    string
	bundle *spiffebundle.Bundle
}

func newOrg(t testing.TB, name string) *org {
	t.Helper()
	return newOrgUntil(t, name, time.Now().Add(24*time.Hour))
}

// newOrgUntil is newOrg with a CA valid until caNotAfter.
func newOrgUntil(t testing.TB, name string, caNotAfter time.Time) *org {
	t.Helper()
	o := &org{td: spiffeid.RequireTrustDomainFromString(name), kid: name + "-k1"}
	o.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	o.jwtKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tdURI, _ := url.Parse(o.td.IDString())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, URIs: []*url.URL{tdURI},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: caNotAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, o.caKey.Public(), o.caKey)
	if err != nil {
		t.Fatal(err)
	}
	o.caCert, _ = x509.ParseCertificate(der)
	o.bundle = spiffebundle.New(o.td)
	o.bundle.AddX509Authority(o.caCert)
	if err := o.bundle.AddJWTAuthority(o.kid, o.jwtKey.Public()); err != nil {
		t.Fatal(err)
	}
	return o
}

// agent is an X509-SVID of org o.
type agent struct {
	id    spiffeid.ID
	chain []*x509.Certificate
	key   crypto.Signer
}

func (o *org) agent(t testing.TB, name string) agent {
	t.Helper()
	return o.agentWithKeyUsage(t, name, x509.KeyUsageDigitalSignature)
}

// agentWithKeyUsage is agent with an SVID of key usage ku.
func (o *org) agentWithKeyUsage(t testing.TB, name string, ku x509.KeyUsage) agent {
	t.Helper()
	id := spiffeid.RequireFromSegments(o.td, "agent", name)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: ku,
		BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, o.caCert, key.Public(), o.caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return agent{id: id, chain: []*x509.Certificate{leaf}, key: key}
}

// SignJWT makes org a delegation.Signer.
func (o *org) SignJWT(_ context.Context, typ string, claims any, _ time.Time) (string, string, error) {
	return signJWT(jose.ES256, o.jwtKey, o.kid, typ, claims)
}

// signJWT signs claims as a compact JWS of type typ with key (alg),
// naming it kid.
func signJWT(alg jose.SignatureAlgorithm, key any, kid, typ string, claims any) (string, string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid).WithType(jose.ContentType(typ)))
	if err != nil {
		return "", "", err
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		return "", "", err
	}
	tok, err := jws.CompactSerialize()
	return tok, kid, err
}

// hop issues a hop of o: from delegates scopes to to, below parent (nil
// for a root with principal).
func hop(t testing.TB, o *org, from, to agent, scopes []string, parent *delegation.Parent, parentClaims *delegation.Claims, mutate ...func(*delegation.Claims)) (string, *delegation.Claims) {
	t.Helper()
	c := hopClaims(t, o, from, to, scopes, parent, parentClaims, mutate...)
	tok, err := delegation.Issue(context.Background(), o, c)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return tok, c
}

// hopClaims are the claims hop issues, signed by the delegator.
func hopClaims(t testing.TB, o *org, from, to agent, scopes []string, parent *delegation.Parent, parentClaims *delegation.Claims, mutate ...func(*delegation.Claims)) *delegation.Claims {
	t.Helper()
	now := time.Now()
	c := &delegation.Claims{Issuer: o.td.IDString(), Subject: "alice@example.com", Audience: []string{to.id.String()},
		IssuedAt: now.Unix(), Expiry: now.Add(10 * time.Minute).Unix(), ID: "d-" + strings.ReplaceAll(to.id.Path(), "/", "_") + "-" + o.td.Name(),
		Scope: strings.Join(scopes, " "), Act: &delegation.Actor{Subject: to.id.String(), Actor: &delegation.Actor{Subject: from.id.String()}},
		Hop: delegation.Hop{Delegator: from.id.String(), Delegatee: to.id.String(), Depth: 1, Purpose: "book travel"}}
	if parent != nil {
		c.Hop.Parent, c.Hop.Depth = parent, parentClaims.Hop.Depth+1
		c.Act.Actor = parentClaims.Act
		c.Subject = parentClaims.Subject
		// As an issuer does: never beyond the parent (the clock may have
		// ticked into the next second since the parent was made).
		c.Expiry = min(c.Expiry, parentClaims.Expiry)
	}
	for _, m := range mutate {
		m(c)
	}
	st := delegation.Statement{Delegator: c.Hop.Delegator, Delegatee: c.Hop.Delegatee, Principal: c.Subject, Scopes: c.Scopes(), Purpose: c.Hop.Purpose}
	if c.Hop.Parent != nil {
		st.Parent, st.ParentIssuer = c.Hop.Parent.ID, c.Hop.Parent.Issuer
	}
	sig, err := delegation.SignStatement(st, from.key, from.chain)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hop.DelegatorSignature == "" {
		c.Hop.DelegatorSignature = sig
	}
	return c
}

func parentOf(tok string, c *delegation.Claims) *delegation.Parent {
	return &delegation.Parent{Issuer: c.Issuer, ID: c.ID, LeafHash: "00", LogIndex: 7, Token: tok}
}

type world struct {
	orgA, orgB *org
	a, b, c, d agent
	set        *spiffebundle.Set
}

func newWorld(t testing.TB) *world {
	w := &world{orgA: newOrg(t, "org-a.example"), orgB: newOrg(t, "org-b.example")}
	w.a, w.b = w.orgA.agent(t, "planner"), w.orgB.agent(t, "booker")
	w.c, w.d = w.orgB.agent(t, "payer"), w.orgB.agent(t, "notifier")
	w.set = spiffebundle.NewSet(w.orgA.bundle, w.orgB.bundle)
	return w
}

// chain issues A→B (org-a), B→C (org-b), C→D (org-b).
func (w *world) chain(t testing.TB) (tok string, claims []*delegation.Claims) {
	t1, c1 := hop(t, w.orgA, w.a, w.b, []string{"calendar:read", "payments:write", "mail:send"}, nil, nil)
	t2, c2 := hop(t, w.orgB, w.b, w.c, []string{"calendar:read", "payments:write"}, parentOf(t1, c1), c1)
	t3, c3 := hop(t, w.orgB, w.c, w.d, []string{"calendar:read"}, parentOf(t2, c2), c2)
	return t3, []*delegation.Claims{c1, c2, c3}
}

func TestCrossOrganisationChainVerifiesOffline(t *testing.T) {
	w := newWorld(t)
	tok, want := w.chain(t)
	chain, err := delegation.Verify(tok, w.set, delegation.VerifyOptions{Presenter: w.d.id, Audience: w.d.id.String()})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(chain) != 3 {
		t.Fatalf("%d hops, want 3", len(chain))
	}
	for i, c := range chain {
		if c.ID != want[i].ID || c.Hop.Delegatee != want[i].Hop.Delegatee || c.Issuer != want[i].Issuer {
			t.Errorf("hop %d = %+v, want %+v", i, c, want[i])
		}
	}
	// RFC 8693: the current actor outermost, earlier actors nested.
	last := chain[2]
	if last.Act.Subject != w.d.id.String() || last.Act.Actor.Subject != w.c.id.String() ||
		last.Act.Actor.Actor.Subject != w.b.id.String() || last.Act.Actor.Actor.Actor.Subject != w.a.id.String() {
		t.Fatalf("act chain: %+v", last.Act)
	}
}

func TestVerifyRefuses(t *testing.T) {
	w := newWorld(t)
	t1, c1 := hop(t, w.orgA, w.a, w.b, []string{"calendar:read", "payments:write"}, nil, nil)
	good, _ := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1)
	mallory := w.orgB.agent(t, "mallory")
	rogue := newOrg(t, "org-b.example") // same name, other keys

	cases := []struct {
		name string
		tok  func() string
		opts delegation.VerifyOptions
		want error
	}{
		{"scope escalation", func() string {
			tok, _ := hop(t, w.orgB, w.b, w.c, []string{"calendar:read", "mail:send"}, parentOf(t1, c1), c1)
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrChain},
		{"expiry beyond the parent's", func() string {
			tok, _ := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1, func(c *delegation.Claims) { c.Expiry = c1.Expiry + 60 })
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrChain},
		{"delegated by someone the parent was not given to", func() string {
			tok, _ := hop(t, w.orgB, w.c, w.d, []string{"calendar:read"}, parentOf(t1, c1), c1, func(c *delegation.Claims) {
				c.Act.Actor = &delegation.Actor{Subject: w.c.id.String(), Actor: c1.Act.Actor}
			})
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrChain},
		{"parent link names another delegation", func() string {
			p := parentOf(t1, c1)
			p.ID = "someone-else"
			tok, _ := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, p, c1)
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrChain},
		{"expired", func() string {
			return good
		}, delegation.VerifyOptions{Now: time.Now().Add(time.Hour)}, delegation.ErrExpired},
		{"wrong audience", func() string { return good }, delegation.VerifyOptions{Audience: "spiffe://org-b.example/agent/other"}, delegation.ErrAudience},
		{"presented by someone else", func() string { return good }, delegation.VerifyOptions{Presenter: mallory.id}, delegation.ErrNotHolder},
		{"bound to another certificate", func() string {
			tok, _ := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1, func(c *delegation.Claims) {
				c.Cnf = &delegation.Confirmation{X5tS256: delegation.Thumbprint(w.c.chain[0])}
			})
			return tok
		}, delegation.VerifyOptions{Presenter: w.c.id, PresenterCert: mallory.chain[0]}, delegation.ErrNotHolder},
		// A bound hop is continued by its holder's key: a continuation
		// signed with another SVID of the same agent is refused.
		{"a bound parent continued with another certificate", func() string {
			other := w.orgB.agent(t, "booker") // another X509-SVID of the booker
			tb, cb := hop(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil, func(c *delegation.Claims) {
				c.Cnf = &delegation.Confirmation{X5tS256: delegation.Thumbprint(other.chain[0])}
			})
			tok, _ := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(tb, cb), cb)
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrNotHolder},
		{"issuer not federated", func() string {
			orgZ := newOrg(t, "org-z.example")
			tok, _ := hop(t, orgZ, orgZ.agent(t, "z"), w.c, []string{"calendar:read"}, nil, nil)
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrUntrustedIssuer},
		{"issued for another trust domain's agent", func() string {
			// org-a (trusted) signs a hop whose delegator is org-b's.
			_, c := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1)
			c.Issuer = w.orgA.td.IDString()
			tok, _, err := w.orgA.SignJWT(context.Background(), delegation.JWTType, c, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrChain},
		// With an SVID key long expired (the delegator's signature is
		// checked at iat) and its issuer's key, a hop back-dated to
		// when it was valid and living on to today.
		{"a life over a day", func() string {
			_, c := hop(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil)
			c.IssuedAt -= 3600
			c.Expiry = c.IssuedAt + 86400 + 3600
			tok, _, err := w.orgA.SignJWT(context.Background(), delegation.JWTType, c, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrMalformed},
		{"a JWT-SVID-typed token", func() string {
			_, c := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1)
			tok, _, err := w.orgB.SignJWT(context.Background(), "JWT", c, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrMalformed},
		{"no presenter given", func() string { return good }, delegation.VerifyOptions{}, delegation.ErrNotHolder},
		{"re-signed by another key", func() string {
			tok, _ := hop(t, rogue, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1)
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrSignature},
		{"forged claims", func() string {
			parts := strings.Split(good, ".")
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			payload = []byte(strings.Replace(string(payload), "calendar:read", "payments:write", 1))
			return parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrSignature},
		{"a claim twice, signed", func() string {
			// Readers that keep the first and readers that keep the
			// last would see different principals.
			payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(good, ".")[1])
			twice := json.RawMessage(`{"sub":"mallory",` + string(payload[1:]))
			tok, _, err := w.orgB.SignJWT(context.Background(), delegation.JWTType, twice, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrMalformed},
		{"a claim twice in another case, signed", func() string {
			payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(good, ".")[1])
			twice := json.RawMessage(`{"SUB":"mallory",` + string(payload[1:]))
			tok, _, err := w.orgB.SignJWT(context.Background(), delegation.JWTType, twice, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrMalformed},
		{"alg none", func() string {
			parts := strings.Split(good, ".")
			hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"org-b.example-k1"}`))
			return hdr + "." + parts[1] + "."
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrMalformed},
		{"HS256 with the public key as secret", func() string {
			parts := strings.Split(good, ".")
			hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"org-b.example-k1"}`))
			pub, _ := x509.MarshalPKIXPublicKey(w.orgB.jwtKey.Public())
			mac := hmac.New(sha256.New, pub)
			mac.Write([]byte(hdr + "." + parts[1]))
			return hdr + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrMalformed},
		{"delegator signature over another hop", func() string {
			other, _ := delegation.SignStatement(delegation.Statement{Delegator: w.b.id.String(), Delegatee: w.c.id.String(),
				Principal: "alice@example.com", Scopes: []string{"payments:write"}, Parent: c1.ID, ParentIssuer: c1.Issuer}, w.b.key, w.b.chain)
			tok, _ := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1, func(c *delegation.Claims) { c.Hop.DelegatorSignature = other })
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrDelegatorSignature},
		{"delegator signature by another agent", func() string {
			st := delegation.Statement{Delegator: w.b.id.String(), Delegatee: w.c.id.String(), Principal: "alice@example.com",
				Scopes: []string{"calendar:read"}, Parent: c1.ID, ParentIssuer: c1.Issuer, Purpose: "book travel"}
			sig, _ := delegation.SignStatement(st, mallory.key, mallory.chain)
			tok, _ := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1, func(c *delegation.Claims) { c.Hop.DelegatorSignature = sig })
			return tok
		}, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrDelegatorSignature},
		{"garbage", func() string { return "not.a.token" }, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrMalformed},
		{"oversized", func() string { return strings.Repeat("a", delegation.MaxTokenSize+1) }, delegation.VerifyOptions{AnyHolder: true}, delegation.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := delegation.Verify(tc.tok(), w.set, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := delegation.Verify(good, w.set, delegation.VerifyOptions{Presenter: w.c.id, Audience: w.c.id.String()}); err != nil {
		t.Fatalf("the good token: %v", err)
	}
}

// TestDelegatorSVIDMustSign: a hop signed with an X509-SVID whose key
// usage leaves out digitalSignature (a key for key agreement or key
// transport only, or a certificate without the extension) is refused by
// every check of a delegator's signature; with digitalSignature, among
// others, it verifies.
func TestDelegatorSVIDMustSign(t *testing.T) {
	o := newOrg(t, "org-a.example")
	set := spiffebundle.NewSet(o.bundle)
	to := o.agent(t, "b")
	for _, tc := range []struct {
		name string
		ku   x509.KeyUsage
		ok   bool
	}{
		{"digitalSignature", x509.KeyUsageDigitalSignature, true},
		{"digitalSignature and keyEncipherment", x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, true},
		{"no key usage extension", 0, false},
		{"keyEncipherment only", x509.KeyUsageKeyEncipherment, false},
		{"keyAgreement only", x509.KeyUsageKeyAgreement, false},
		{"contentCommitment only", x509.KeyUsageContentCommitment, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := o.agentWithKeyUsage(t, "a", tc.ku)
			tok, c := hop(t, o, from, to, []string{"x"}, nil, nil)
			_, err := delegation.Verify(tok, set, delegation.VerifyOptions{AnyHolder: true})
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, delegation.ErrDelegatorSignature) {
				t.Errorf("Verify = %v, want ok=%v", err, tc.ok)
			}
			st := delegation.Statement{Delegator: from.id.String(), Delegatee: to.id.String(), Principal: c.Subject, Scopes: c.Scopes(), Purpose: c.Hop.Purpose}
			err = delegation.CheckStatementSignature(c.Hop.DelegatorSignature, st, set, time.Now())
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, delegation.ErrDelegatorSignature) {
				t.Errorf("CheckStatementSignature = %v, want ok=%v", err, tc.ok)
			}
			_, _, err = delegation.CheckStatementSignedBy(c.Hop.DelegatorSignature, st, time.Now())
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, delegation.ErrDelegatorSignature) {
				t.Errorf("CheckStatementSignedBy = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// rsaSigner issues tokens with an RSA JWT key (RS256), kid "rsa".
type rsaSigner struct{ key *rsa.PrivateKey }

func (r rsaSigner) SignJWT(_ context.Context, typ string, claims any, _ time.Time) (string, string, error) {
	return signJWT(jose.RS256, r.key, "rsa", typ, claims)
}

// TestRSAKeysOfFewerThan2048BitsVerifyNothing: RS256 needs a key of 2048
// bits or more (RFC 7518 §3.3). A delegator's signature made with the
// RSA key of its X509-SVID, and a token signed with an RSA JWT key of
// its issuer's bundle, verify with 2048 bits and are refused with 1024,
// though the SVID chains to the bundle and the key is in it.
func TestRSAKeysOfFewerThan2048BitsVerifyNothing(t *testing.T) {
	for _, tc := range []struct {
		bits int
		ok   bool
	}{{2048, true}, {1024, false}} {
		t.Run(fmt.Sprint(tc.bits), func(t *testing.T) {
			o := newOrg(t, "org-a.example")
			to := o.agent(t, "b")
			key, err := rsa.GenerateKey(rand.Reader, tc.bits)
			if err != nil {
				t.Fatal(err)
			}

			// The delegator's SVID holds the RSA key.
			id := spiffeid.RequireFromSegments(o.td, "agent", "a")
			u, _ := url.Parse(id.String())
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
				KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, o.caCert, key.Public(), o.caKey)
			if err != nil {
				t.Fatal(err)
			}
			st := delegation.Statement{Delegator: id.String(), Delegatee: to.id.String(), Principal: "alice@example.com", Scopes: []string{"x"}, Purpose: "book travel"}
			payload, _ := json.Marshal(st)
			s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
				(&jose.SignerOptions{}).WithHeader("x5c", []string{base64.StdEncoding.EncodeToString(der)}).WithType("mandate-hop+jws"))
			if err != nil {
				t.Fatal(err)
			}
			jws, err := s.Sign(payload)
			if err != nil {
				t.Fatal(err)
			}
			sig, _ := jws.CompactSerialize()
			set := spiffebundle.NewSet(o.bundle)
			err = delegation.CheckStatementSignature(sig, st, set, time.Now())
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, delegation.ErrDelegatorSignature) {
				t.Errorf("CheckStatementSignature = %v, want ok=%v", err, tc.ok)
			}
			if _, _, err := delegation.CheckStatementSignedBy(sig, st, time.Now()); tc.ok != (err == nil) {
				t.Errorf("CheckStatementSignedBy = %v, want ok=%v", err, tc.ok)
			}

			// The issuer's JWT key is the RSA key.
			if err := o.bundle.AddJWTAuthority("rsa", key.Public()); err != nil {
				t.Fatal(err)
			}
			c := hopClaims(t, o, o.agent(t, "a"), to, []string{"x"}, nil, nil)
			tok, err := delegation.Issue(context.Background(), rsaSigner{key}, c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = delegation.Verify(tok, set, delegation.VerifyOptions{AnyHolder: true})
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, delegation.ErrSignature) {
				t.Errorf("Verify of a token signed with the RSA key = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestVerifiedTokenStopsVerifyingWhenItsKeyGoes: a token verified once is
// remembered, but only for the key that verified it; a bundle that no
// longer holds that key (rotated away, replaced, or its CA gone) no longer
// verifies it.
func TestVerifiedTokenStopsVerifyingWhenItsKeyGoes(t *testing.T) {
	w := newWorld(t)
	tok, _ := w.chain(t)
	opts := delegation.VerifyOptions{Presenter: w.d.id}
	if _, err := delegation.Verify(tok, w.set, opts); err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCA := newOrg(t, "org-b.example").caCert
	orgB := func(x509Authority *x509.Certificate, jwtKey crypto.PublicKey) *spiffebundle.Set {
		b := spiffebundle.New(w.orgB.td)
		b.AddX509Authority(x509Authority)
		if jwtKey != nil {
			if err := b.AddJWTAuthority(w.orgB.kid, jwtKey); err != nil {
				t.Fatal(err)
			}
		}
		return spiffebundle.NewSet(w.orgA.bundle, b)
	}
	for _, tc := range []struct {
		name string
		set  *spiffebundle.Set
		want error
	}{
		// A key the bundle does not hold is told apart from a signature
		// that does not verify (refresh the bundles, or the key is gone).
		{"the same kid, another key", orgB(w.orgB.caCert, other.Public()), delegation.ErrSignature},
		{"the key removed", orgB(w.orgB.caCert, nil), delegation.ErrUnknownKey},
		{"the agents' CA replaced", orgB(otherCA, w.orgB.jwtKey.Public()), delegation.ErrDelegatorSignature},
		{"the bundles it was verified with", w.set, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // the second time from whatever the first remembered
				_, err := delegation.Verify(tok, tc.set, opts)
				if !errors.Is(err, tc.want) {
					t.Fatalf("Verify = %v, want %v", err, tc.want)
				}
				if unknown := errors.Is(err, delegation.ErrUnknownKey); unknown != (tc.want == delegation.ErrUnknownKey) {
					t.Fatalf("Verify = %v: errors.Is(ErrUnknownKey) = %v", err, unknown)
				}
				if tc.want == delegation.ErrUnknownKey && !errors.Is(err, delegation.ErrSignature) {
					t.Fatalf("Verify = %v: an unknown key is a signature error too", err)
				}
			}
		})
	}
}

// TestStatementEncodings: a delegator may sign its statement in any JSON
// encoding (key order, escapes), but nothing more, less or ambiguous.
func TestStatementEncodings(t *testing.T) {
	o := newOrg(t, "org-a.example")
	a := o.agent(t, "a")
	st := delegation.Statement{Delegator: a.id.String(), Delegatee: "spiffe://org-b.example/agent/b", Principal: "Ann & <Bob>",
		Scopes: []string{"x", "y"}, Purpose: "p"}
	sign := func(payload string) string {
		x5c := []string{base64.StdEncoding.EncodeToString(a.chain[0].Raw)}
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: a.key}, (&jose.SignerOptions{}).WithHeader("x5c", x5c).WithType("mandate-hop+jws"))
		if err != nil {
			t.Fatal(err)
		}
		jws, err := s.Sign([]byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := jws.CompactSerialize()
		return out
	}
	d, e := `"delegator":"`+a.id.String()+`"`, `"delegatee":"spiffe://org-b.example/agent/b"`
	thumb := delegation.Thumbprint(a.chain[0])
	for _, tc := range []struct {
		name, payload string
		ok            bool
	}{
		{"this package's encoding", "", true},
		{"another key order, scopes in another order", `{"scopes":["y","x"],"purpose":"p",` + e + `,"principal":"Ann & <Bob>",` + d + `}`, true},
		{"escaped characters, spaces", `{ ` + d + ` , ` + e + `, "principal": "Ann \u0026 \u003cBob\u003e", "scopes": ["x","y"], "purpose": "p" }`, true},
		{"an unknown field", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","admin":true}`, false},
		{"a key twice", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","principal":"eve","scopes":["x","y"],"purpose":"p"}`, false},
		{"a key in another case", `{"Delegator":"` + a.id.String() + `",` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p"}`, false},
		{"a null value", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":null}`, false},
		{"a scope twice", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y","x"],"purpose":"p"}`, false},
		{"another scope", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","z"],"purpose":"p"}`, false},
		{"a missing field", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"]}`, false},
		{"data after it", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p"} {}`, false},
		{"a null scope", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y",null],"purpose":"p"}`, false},
		{"an unpaired surrogate", `{` + d + `,` + e + `,"principal":"Ann & <Bob>\udc00","scopes":["x","y"],"purpose":"p"}`, false},
		{"scopes as a string", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":"x y","purpose":"p"}`, false},
		{"a not_after", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","not_after":4102444800}`, true},
		{"a not_after as a string", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","not_after":"4102444800"}`, false},
		{"a not_after with an exponent", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","not_after":4.1024448e9}`, false},
		{"a not_after of 0", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","not_after":0}`, false},
		{"a negative not_after", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","not_after":-1}`, false},
		{"a not_after beyond the year 9999", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","not_after":253402300800}`, false},
		{"a cnf", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","cnf":{"x5t#S256":"` + thumb + `"}}`, true},
		{"a cnf with another member", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","cnf":{"x5t#S256":"` + thumb + `","jkt":"x"}}`, false},
		{"a cnf member twice", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","cnf":{"x5t#S256":"` + thumb + `","x5t#S256":"` + thumb + `"}}`, false},
		{"an empty cnf", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","cnf":{}}`, false},
		{"a cnf as a string", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","cnf":"` + thumb + `"}`, false},
		{"a cnf thumbprint padded", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","cnf":{"x5t#S256":"` + thumb + `="}}`, false},
		{"a cnf thumbprint of 31 bytes", `{` + d + `,` + e + `,"principal":"Ann & <Bob>","scopes":["x","y"],"purpose":"p","cnf":{"x5t#S256":"` + thumb[:42] + `"}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig := ""
			if tc.payload == "" {
				var err error
				if sig, err = delegation.SignStatement(st, a.key, a.chain); err != nil {
					t.Fatal(err)
				}
			} else {
				sig = sign(tc.payload)
			}
			_, _, err := delegation.CheckStatementSignedBy(sig, st, time.Now())
			if (err == nil) != tc.ok {
				t.Fatalf("CheckStatementSignedBy = %v, want ok=%v", err, tc.ok)
			}
			if err := delegation.CheckStatementSignature(sig, st, spiffebundle.NewSet(o.bundle), time.Now()); (err == nil) != tc.ok {
				t.Fatalf("CheckStatementSignature = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	// A string that is not text is written as U+FFFD, which no reader
	// takes back as the statement: refused where the hop is issued too.
	for _, purpose := range []string{"p\xff", "p\ufffd"} {
		bad := st
		bad.Purpose = purpose
		sig, err := delegation.SignStatement(bad, a.key, a.chain)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := delegation.CheckStatementSignedBy(sig, bad, time.Now()); !errors.Is(err, delegation.ErrDelegatorSignature) {
			t.Errorf("purpose %q: CheckStatementSignedBy = %v, want ErrDelegatorSignature", purpose, err)
		}
	}
}

// TestBoundTokenHolder: a token bound to a certificate verifies for its
// holder with that certificate, not without it nor with another; an
// inspector (AnyHolder) without a certificate sees the chain, with one
// the binding is checked.
func TestBoundTokenHolder(t *testing.T) {
	w := newWorld(t)
	t1, c1 := hop(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil)
	tok, _ := hop(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1, func(c *delegation.Claims) {
		c.Cnf = &delegation.Confirmation{X5tS256: delegation.Thumbprint(w.c.chain[0])}
	})
	for _, tc := range []struct {
		name string
		opts delegation.VerifyOptions
		ok   bool
	}{
		{"the holder with its certificate", delegation.VerifyOptions{Presenter: w.c.id, PresenterCert: w.c.chain[0]}, true},
		{"the holder without a certificate", delegation.VerifyOptions{Presenter: w.c.id}, false},
		{"the holder with another certificate", delegation.VerifyOptions{Presenter: w.c.id, PresenterCert: w.d.chain[0]}, false},
		{"an inspector", delegation.VerifyOptions{AnyHolder: true}, true},
		{"an inspector with another certificate", delegation.VerifyOptions{AnyHolder: true, PresenterCert: w.d.chain[0]}, false},
		{"an inspector naming the holder, without its certificate", delegation.VerifyOptions{AnyHolder: true, Presenter: w.c.id}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := delegation.Verify(tok, w.set, tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify = %v, want ok=%v", err, tc.ok)
			}
			// Without a certificate, the error says one is needed.
			if err != nil && errors.Is(err, delegation.ErrPresenterCertNeeded) != (tc.opts.PresenterCert == nil) {
				t.Fatalf("Verify = %v: ErrPresenterCertNeeded is for a missing certificate only", err)
			}
		})
	}
}

// TestVerifyHandsOutCopies: what a caller does to a verified chain does
// not change what the next verification of the same token returns.
func TestVerifyHandsOutCopies(t *testing.T) {
	w := newWorld(t)
	tok, _ := w.chain(t)
	opts := delegation.VerifyOptions{Presenter: w.d.id}
	var want []byte
	for i := range 3 { // decoded, then recalled twice
		chain, err := delegation.Verify(tok, w.set, opts)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(chain)
		if i == 0 {
			want = got
		} else if string(got) != string(want) {
			t.Fatalf("verification %d returned what the caller wrote into an earlier one:\n%s\nwant\n%s", i+1, got, want)
		}
		for _, c := range chain {
			c.Subject, c.Audience[0], c.Act.Actor.Subject, c.Scope = "mallory", "x", "x", "everything"
			if c.Hop.Parent != nil {
				c.Hop.Parent.ID = "x"
			}
		}
	}
}

func TestIssueRefusesMalformedClaims(t *testing.T) {
	w := newWorld(t)
	for name, mutate := range map[string]func(*delegation.Claims){
		"act.sub is not the delegatee": func(c *delegation.Claims) { c.Act.Subject = w.c.id.String() },
		"depth without parent":         func(c *delegation.Claims) { c.Hop.Depth = 2 },
		"no scope":                     func(c *delegation.Claims) { c.Scope = " " },
		"exp before iat":               func(c *delegation.Claims) { c.Expiry = c.IssuedAt - 1 },
		"a life over a day":            func(c *delegation.Claims) { c.Expiry = c.IssuedAt + 86401 },
		"an iat far in the past":       func(c *delegation.Claims) { c.IssuedAt = math.MinInt64 },
		"a SPIFFE ID as principal":     func(c *delegation.Claims) { c.Subject = "Spiffe://org-a.example/agent/admin" },
		"a principal with a newline":   func(c *delegation.Claims) { c.Subject = "alice\nbob" },
		"a jti with a slash":           func(c *delegation.Claims) { c.ID = "d1/x" },
		"a scope twice":                func(c *delegation.Claims) { c.Scope = "a b a" },
		"two spaces between scopes":    func(c *delegation.Claims) { c.Scope = "a  b" },
		"a space before the scopes":    func(c *delegation.Claims) { c.Scope = " a b" },
		"a jti too long":               func(c *delegation.Claims) { c.ID = strings.Repeat("a", delegation.MaxIDLen+1) },
		"iss without its scheme":       func(c *delegation.Claims) { c.Issuer = "org-a.example" },
		"iss with a path":              func(c *delegation.Claims) { c.Issuer = "spiffe://org-a.example/x" },
	} {
		t.Run(name, func(t *testing.T) {
			c := &delegation.Claims{Issuer: w.orgA.td.IDString(), Subject: "alice", Audience: []string{"x"}, IssuedAt: 100, Expiry: 200, ID: "d1",
				Scope: "a", Act: &delegation.Actor{Subject: w.b.id.String(), Actor: &delegation.Actor{Subject: w.a.id.String()}},
				Hop: delegation.Hop{Delegator: w.a.id.String(), Delegatee: w.b.id.String(), Depth: 1}}
			mutate(c)
			if _, err := delegation.Issue(context.Background(), w.orgA, c); !errors.Is(err, delegation.ErrMalformed) {
				t.Fatalf("Issue = %v", err)
			}
		})
	}
}

// TestDelegatorSignatureAfterItsCAExpired: a delegator signature whose
// SVID chain was validated once is not accepted at a time its CA was no
// longer valid, though its leaf still was.
func TestDelegatorSignatureAfterItsCAExpired(t *testing.T) {
	now := time.Now()
	// The CA ends in 30 minutes, the agent's SVID in an hour.
	o := newOrgUntil(t, "org-a.example", now.Add(30*time.Minute))
	a := o.agent(t, "a")
	st := delegation.Statement{Delegator: a.id.String(), Delegatee: "spiffe://org-a.example/agent/b", Principal: "alice", Scopes: []string{"x"}}
	sig, err := delegation.SignStatement(st, a.key, a.chain)
	if err != nil {
		t.Fatal(err)
	}
	set := spiffebundle.NewSet(o.bundle)
	if err := delegation.CheckStatementSignature(sig, st, set, now); err != nil {
		t.Fatalf("while the CA is valid: %v", err)
	}
	if err := delegation.CheckStatementSignature(sig, st, set, now.Add(45*time.Minute)); !errors.Is(err, delegation.ErrDelegatorSignature) {
		t.Fatalf("after the CA expired, the leaf still valid: %v", err)
	}
}

// TestClaimsReadAsEncodingJSON: a claim name is matched as encoding/json
// matches it (strings.EqualFold): one that differs by more than case is
// another claim, ignored, not a second spelling of it.
func TestClaimsReadAsEncodingJSON(t *testing.T) {
	w := newWorld(t)
	good, c1 := hop(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil)
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(good, ".")[1])
	extra := json.RawMessage(`{"j_t_i":"other","mandate-hop":{"depth":3},` + string(payload[1:]))
	tok, _, err := w.orgA.SignJWT(context.Background(), delegation.JWTType, extra, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var std delegation.Claims
	if err := json.Unmarshal(extra, &std); err != nil {
		t.Fatal(err)
	}
	chain, err := delegation.Verify(tok, w.set, delegation.VerifyOptions{AnyHolder: true})
	if err != nil || chain[0].ID != c1.ID || chain[0].ID != std.ID || chain[0].Hop.Depth != std.Hop.Depth {
		t.Fatalf("Verify = %v, %v; want the claims encoding/json reads (jti %s, depth %d)", chain, err, std.ID, std.Hop.Depth)
	}
}

// TestIssueRefusesATokenTooLarge: a hop whose token, its parent inside,
// would be larger than a verifier reads is not issued.
func TestIssueRefusesATokenTooLarge(t *testing.T) {
	w := newWorld(t)
	_, c1 := hop(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil)
	for _, size := range []int{1 << 10, delegation.MaxTokenSize} {
		c := hopClaims(t, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(strings.Repeat("x", size), c1), c1)
		tok, err := delegation.Issue(context.Background(), w.orgB, c)
		if tooLarge := size == delegation.MaxTokenSize; tooLarge != errors.Is(err, delegation.ErrTooLarge) || (err == nil) == tooLarge {
			t.Errorf("a parent of %d bytes: Issue = %d bytes, %v", size, len(tok), err)
		}
	}
}

func TestCheckPrincipal(t *testing.T) {
	for p, ok := range map[string]bool{
		"alice@example.com": true, "user:42": true, "Zoë Müller": true,
		"": false, strings.Repeat("a", delegation.MaxPrincipalLen+1): false,
		" alice": false, "alice ": false, "a\x00b": false, "a\u0085b": false, "\xff": false, "a\ufffdb": false,
		"spiffe://org-a.example/agent/x": false, "SPIFFE://org-a.example": false, "spiffe:x": false,
		// "spiffe:" behind invisible (format) characters.
		"\u2060spiffe://org-a.example/agent/a": false, "\ufeffspiffe://x": false, "\u200bspiffe://x": false,
		// ... or behind the other characters that show nothing: a
		// combining grapheme joiner, a Hangul filler, a variation selector.
		"spiffe\u034f://org-b.example/agent/booker": false, "\u3164spiffe://org-b.example/agent/booker": false,
		"spi\ufe0fffe://x": false, "\U000e0100spiffe://x": false, "\u115fSPIFFE:x": false,
	} {
		if err := delegation.CheckPrincipal(p); (err == nil) != ok {
			t.Errorf("CheckPrincipal(%q) = %v, want ok=%v", p, err, ok)
		}
	}
	// A new chain's principal: no format characters but ZWNJ and ZWJ
	// (names, emoji), so that two principals cannot look alike; every
	// verifier still accepts the others (tokens already issued).
	for p, ok := range map[string]bool{
		"alice@example.com": true, "\u0639\u0644\u06cc\u200c\u0631\u0636\u0627": true, "\U0001F469\u200d\U0001F4BB": true,
		"alice@example.com\u200b": false, "\u202emoc.elpmaxe@ecila": false, "al\u00adice": false, "\u2060alice": false,
		"alice\u034f": false, "\u3164alice": false, "ali\u17b4ce": false, "\u2764\ufe0f": true,
	} {
		if err := delegation.CheckNewPrincipal(p); (err == nil) != ok {
			t.Errorf("CheckNewPrincipal(%q) = %v, want ok=%v", p, err, ok)
		}
		if err := delegation.CheckPrincipal(p); err != nil && !ok {
			t.Errorf("CheckPrincipal(%q) = %v: a verifier refuses a principal it accepted before", p, err)
		}
	}
}

// TestVerifyChainOfManyScopes: a hop's scopes are its issuer's word, as
// many as a token holds (some hundreds of short ones). Each link is
// judged with memory that grows with the tokens, not with the product
// of a hop's scopes and its parent's (which once made one verification
// of a 32 KiB chain allocate some 15 MB), and still refuses a scope the
// parent lacks.
func TestVerifyChainOfManyScopes(t *testing.T) {
	w := newWorld(t)
	const n = 900
	scopes := make([]string, n)
	for i := range scopes {
		scopes[i] = shortScope(i)
	}
	reversed := slices.Clone(scopes)
	slices.Reverse(reversed)
	t1, c1 := hop(t, w.orgB, w.b, w.c, scopes, nil, nil)
	for _, tc := range []struct {
		name   string
		scopes []string
		want   error
	}{
		{"every scope the parent's, in another order", reversed, nil},
		{"one scope the parent lacks", append(slices.Clone(scopes[1:]), "not-granted"), delegation.ErrChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, _ := hop(t, w.orgB, w.c, w.d, tc.scopes, parentOf(t1, c1), c1)
			verify := func() error {
				_, err := delegation.Verify(tok, w.set, delegation.VerifyOptions{Presenter: w.d.id})
				return err
			}
			if err := verify(); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			// Seen again (its signatures remembered): what it allocates is
			// the links' work and copies of the claims.
			var before, after runtime.MemStats
			const runs = 5
			runtime.ReadMemStats(&before)
			for range runs {
				_ = verify()
			}
			runtime.ReadMemStats(&after)
			if per, limit := (after.TotalAlloc-before.TotalAlloc)/runs, uint64(64*len(tok)); per > limit {
				t.Fatalf("a verification of a %d-byte token of %d scopes allocates %d bytes, more than %d", len(tok), n, per, limit)
			}
		})
	}
}

// shortScope is the i-th of the scopes a, b, ..., 9, aa, ab, ...
func shortScope(i int) string {
	const al = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	if i < len(al) {
		return al[i : i+1]
	}
	i -= len(al)
	return string([]byte{al[i/len(al)%len(al)], al[i%len(al)]})
}

// BenchmarkVerifyStatement is an issuer's check of a delegator's
// signature over a root hop, each a signature of its own (as every
// request to delegate brings), by an SVID already seen.
func BenchmarkVerifyStatement(b *testing.B) {
	w := newWorld(b)
	st := delegation.Statement{Delegator: w.a.id.String(), Delegatee: w.b.id.String(), Principal: "alice", Scopes: []string{"calendar:read"}, Purpose: "plan"}
	sigs := make([]string, b.N)
	for i := range sigs {
		var err error
		if sigs[i], err = delegation.SignStatement(st, w.a.key, w.a.chain); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, _, _, err := delegation.VerifyStatement(sigs[i], st, w.set, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyChain is the offline verification of a 3-hop chain: the
// same token again (as its holder presents it on every call), a new last
// hop below known parents, and a chain none of whose hops was seen.
func BenchmarkVerifyChain(b *testing.B) {
	w := newWorld(b)
	b.Run("same-token", func(b *testing.B) {
		tok, _ := w.chain(b)
		for b.Loop() {
			if _, err := delegation.Verify(tok, w.set, delegation.VerifyOptions{Presenter: w.d.id}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new-last-hop", func(b *testing.B) {
		t1, c1 := hop(b, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil)
		t2, c2 := hop(b, w.orgB, w.b, w.c, []string{"calendar:read"}, parentOf(t1, c1), c1)
		toks := make([]string, b.N)
		for i := range toks {
			toks[i], _ = hop(b, w.orgB, w.c, w.d, []string{"calendar:read"}, parentOf(t2, c2), c2)
		}
		b.ResetTimer()
		for i := range b.N {
			if _, err := delegation.Verify(toks[i], w.set, delegation.VerifyOptions{Presenter: w.d.id}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new-chain", func(b *testing.B) {
		toks := make([]string, b.N)
		for i := range toks {
			toks[i], _ = w.chain(b)
		}
		b.ResetTimer()
		for i := range b.N {
			if _, err := delegation.Verify(toks[i], w.set, delegation.VerifyOptions{Presenter: w.d.id}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A chain never seen whose delegators' SVIDs are new too: each SVID
	// chain is validated (go-spiffe) besides the six signatures.
	b.Run("new-chain-new-delegators", func(b *testing.B) {
		toks := make([]string, b.N)
		for i := range toks {
			fresh := &world{orgA: w.orgA, orgB: w.orgB, set: w.set, d: w.d}
			fresh.a, fresh.b, fresh.c = w.orgA.agent(b, "planner"), w.orgB.agent(b, "booker"), w.orgB.agent(b, "payer")
			toks[i], _ = fresh.chain(b)
		}
		b.ResetTimer()
		for i := range b.N {
			if _, err := delegation.Verify(toks[i], w.set, delegation.VerifyOptions{Presenter: w.d.id}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A delegator may sign the latest expiry it allows its hop (not_after):
// a hop its issuer made to last longer does not verify, one within it
// does, and a hop whose delegator signed none rests on its issuer.
func TestStatementNotAfter(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		name     string
		notAfter func(exp int64) int64
		ok       bool
	}{
		{"the hop expires at not_after", func(exp int64) int64 { return exp }, true},
		{"the hop expires before not_after", func(exp int64) int64 { return exp + 60 }, true},
		{"no not_after", func(int64) int64 { return 0 }, true},
		{"its issuer made it last longer", func(exp int64) int64 { return exp - 60 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, _ := hop(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil, func(c *delegation.Claims) {
				st := delegation.Statement{Delegator: c.Hop.Delegator, Delegatee: c.Hop.Delegatee, Principal: c.Subject, Scopes: c.Scopes(),
					Purpose: c.Hop.Purpose, NotAfter: tc.notAfter(c.Expiry)}
				sig, err := delegation.SignStatement(st, w.a.key, w.a.chain)
				if err != nil {
					t.Fatal(err)
				}
				c.Hop.DelegatorSignature = sig
			})
			_, err := delegation.Verify(tok, w.set, delegation.VerifyOptions{Presenter: w.b.id})
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, delegation.ErrDelegatorSignature) {
				t.Fatalf("Verify = %v, want ok=%v (or ErrDelegatorSignature)", err, tc.ok)
			}
		})
	}
}

// A delegator may sign the certificate its hop is bound to (cnf): a hop
// its issuer bound otherwise, or left unbound, does not verify.
func TestStatementCnf(t *testing.T) {
	w := newWorld(t)
	mine, other := &delegation.Confirmation{X5tS256: delegation.Thumbprint(w.b.chain[0])}, &delegation.Confirmation{X5tS256: delegation.Thumbprint(w.c.chain[0])}
	for _, tc := range []struct {
		name   string
		signed *delegation.Confirmation
		bound  *delegation.Confirmation
		ok     bool
	}{
		{"bound as signed", mine, mine, true},
		{"bound, no cnf signed", nil, mine, true},
		{"bound to another certificate", mine, other, false},
		{"left unbound", mine, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, _ := hop(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil, func(c *delegation.Claims) {
				c.Cnf = tc.bound
				st := delegation.Statement{Delegator: c.Hop.Delegator, Delegatee: c.Hop.Delegatee, Principal: c.Subject, Scopes: c.Scopes(),
					Purpose: c.Hop.Purpose, Cnf: tc.signed}
				sig, err := delegation.SignStatement(st, w.a.key, w.a.chain)
				if err != nil {
					t.Fatal(err)
				}
				c.Hop.DelegatorSignature = sig
			})
			opts := delegation.VerifyOptions{Presenter: w.b.id, PresenterCert: w.b.chain[0]}
			if tc.bound == other {
				opts.PresenterCert = w.c.chain[0] // the holder of the certificate it is bound to
			}
			_, err := delegation.Verify(tok, w.set, opts)
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, delegation.ErrDelegatorSignature) {
				t.Fatalf("Verify = %v, want ok=%v (or ErrDelegatorSignature)", err, tc.ok)
			}
		})
	}
}

// FuzzVerify feeds arbitrary tokens to the verifier: no panic, and
// nothing but the genuine token verifies.
func FuzzVerify(f *testing.F) {
	c := loadChain(f)
	tok := c.tok
	f.Add(tok)
	f.Add("a.b.c")
	f.Add("")
	parts := strings.Split(tok, ".")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := delegation.Verify(s, c.set, c.opts()); err == nil && s != tok {
			// ECDSA signatures are malleable (s and n-s): a different
			// encoding of the same signed claims is not a forgery.
			if strings.Split(s, ".")[1] != parts[1] {
				t.Fatalf("verified a token with other claims")
			}
		}
	})
}

// The clock options a resource server relies on: zero leeway means the
// default 30 s, NoLeeway none; a hop issued in the future is
// ErrNotYetValid (an ErrMalformed too), told apart from garbage.
func TestVerifyClock(t *testing.T) {
	w := newWorld(t)
	tok, c := hop(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil)
	exp, iat := time.Unix(c.Expiry, 0), time.Unix(c.IssuedAt, 0)
	for _, tc := range []struct {
		name   string
		now    time.Time
		leeway time.Duration
		want   error
	}{
		{"just after expiry, default leeway", exp.Add(10 * time.Second), 0, nil},
		{"just after expiry, no leeway", exp.Add(time.Second), delegation.NoLeeway, delegation.ErrExpired},
		// RFC 7519 §4.1.4: valid only before exp, as its issuer's status
		// answers "expired" from exp on.
		{"at expiry, no leeway", exp, delegation.NoLeeway, delegation.ErrExpired},
		{"just before expiry, no leeway", exp.Add(-time.Nanosecond), delegation.NoLeeway, nil},
		{"past the default leeway", exp.Add(31 * time.Second), 0, delegation.ErrExpired},
		{"before it was issued, within the leeway", iat.Add(-10 * time.Second), 0, nil},
		{"before it was issued, no leeway", iat.Add(-time.Second), delegation.NoLeeway, delegation.ErrNotYetValid},
		{"long before it was issued", iat.Add(-10 * time.Minute), 0, delegation.ErrNotYetValid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := delegation.Verify(tok, w.set, delegation.VerifyOptions{AnyHolder: true, Now: tc.now, Leeway: tc.leeway})
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if errors.Is(err, delegation.ErrNotYetValid) && !errors.Is(err, delegation.ErrMalformed) {
				t.Fatalf("%v is not an ErrMalformed", err)
			}
		})
	}
	// A trusted issuer's hop with nbf (RFC 7519 §4.1.5) is not valid
	// before it.
	later, lc := hop(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil, func(c *delegation.Claims) { c.NotBefore = c.IssuedAt + 600 })
	if _, err := delegation.Verify(later, w.set, delegation.VerifyOptions{AnyHolder: true}); !errors.Is(err, delegation.ErrNotYetValid) {
		t.Errorf("before its nbf: %v, want ErrNotYetValid", err)
	}
	if _, err := delegation.Verify(later, w.set, delegation.VerifyOptions{AnyHolder: true, Now: time.Unix(lc.NotBefore, 0)}); err != nil {
		t.Errorf("at its nbf: %v", err)
	}
	// Times past the year 9999 are no times every reader reads alike
	// (time.Unix wraps the largest into the year 0): such a hop is
	// malformed, however far its nbf.
	for _, nbf := range []int64{delegation.MaxNotAfter + 1, math.MaxInt64 - 62135596800 + 1, math.MaxInt64} {
		// Signed as a trusted issuer might (Issue refuses it too).
		tok, _, err := w.orgA.SignJWT(context.Background(), delegation.JWTType,
			hopClaims(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil, func(c *delegation.Claims) { c.NotBefore = nbf }), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := delegation.Verify(tok, w.set, delegation.VerifyOptions{AnyHolder: true}); !errors.Is(err, delegation.ErrMalformed) {
			t.Errorf("nbf %d: %v, want ErrMalformed", nbf, err)
		}
	}
	_, err := delegation.Issue(context.Background(), w.orgA, hopClaims(t, w.orgA, w.a, w.b, []string{"calendar:read"}, nil, nil,
		func(c *delegation.Claims) { c.Expiry = delegation.MaxNotAfter + 1 }))
	if !errors.Is(err, delegation.ErrMalformed) {
		t.Errorf("Issue of a hop expiring after the year 9999: %v, want ErrMalformed", err)
	}
}

// SignStatement refuses what no issuer would accept: no certificate, or
// a key that is not the certificate's.
func TestSignStatementRefusesMisuse(t *testing.T) {
	w := newWorld(t)
	st := delegation.Statement{Delegator: w.a.id.String(), Delegatee: w.b.id.String(), Principal: "alice", Scopes: []string{"x"}}
	if _, err := delegation.SignStatement(st, w.a.key, nil); err == nil {
		t.Error("signed with no certificate")
	}
	if _, err := delegation.SignStatement(st, w.b.key, w.a.chain); err == nil {
		t.Error("signed with another certificate's key")
	}
	if _, err := delegation.SignStatement(st, w.a.key, w.a.chain); err != nil {
		t.Errorf("the delegator's own SVID: %v", err)
	}
}

// A verifier whose bundles are not there yet (a nil Bundles, or a nil
// *spiffebundle.Set not yet made) refuses every token as from an
// untrusted issuer: it does not panic.
func TestVerifyWithoutBundles(t *testing.T) {
	w := newWorld(t)
	tok, c := w.chain(t)
	var unset *spiffebundle.Set
	for _, tc := range []struct {
		name    string
		bundles delegation.Bundles
	}{{"nil", nil}, {"a nil *spiffebundle.Set", unset}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := delegation.Verify(tok, tc.bundles, delegation.VerifyOptions{Presenter: w.d.id}); !errors.Is(err, delegation.ErrUntrustedIssuer) {
				t.Errorf("Verify = %v, want ErrUntrustedIssuer", err)
			}
			if err := delegation.CheckStatementSignature(c[2].Hop.DelegatorSignature, delegation.Statement{Delegator: w.c.id.String()}, tc.bundles, time.Now()); !errors.Is(err, delegation.ErrDelegatorSignature) {
				t.Errorf("CheckStatementSignature = %v, want ErrDelegatorSignature", err)
			}
		})
	}
}

// The certificate CheckStatementSignedBy returns is the caller's own:
// changing it changes nothing the next check sees.
func TestCheckStatementSignedByHandsOutItsOwnCertificate(t *testing.T) {
	w := newWorld(t)
	st := delegation.Statement{Delegator: w.a.id.String(), Delegatee: w.b.id.String(), Principal: "alice", Scopes: []string{"x"}}
	sig, err := delegation.SignStatement(st, w.a.key, w.a.chain)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		cert, _, err := delegation.CheckStatementSignedBy(sig, st, time.Now())
		if err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
		if !cert.Equal(w.a.chain[0]) {
			t.Fatalf("check %d: another certificate", i)
		}
		cert.PublicKey, cert.URIs = w.b.key.Public(), nil
	}
}

// A scope claim is split at its spaces (U+0020) only, as an OAuth
// library splits it: a no-break space is part of a scope, never a second
// scope that another reader of the same token would not see.
func TestScopesSplitAtSpacesOnly(t *testing.T) {
	w := newWorld(t)
	tok, _ := hop(t, w.orgA, w.a, w.b, nil, nil, nil, func(c *delegation.Claims) { c.Scope = "calendar:read\u00a0payments:write mail:send" })
	chain, err := delegation.Verify(tok, w.set, delegation.VerifyOptions{AnyHolder: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := chain[0].Scopes(), []string{"calendar:read\u00a0payments:write", "mail:send"}; !slices.Equal(got, want) {
		t.Errorf("scopes %q, want %q", got, want)
	}
}
