package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/credfile"
)

// orgACA is a CA of org-a.example that issues the certificates these
// tests need: an authority's server SVID, an agent's.
type orgACA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newOrgACA(t *testing.T) *orgACA { return newOrgACAUntil(t, time.Now().Add(time.Hour)) }

// newOrgACAUntil is newOrgACA, the CA valid until notAfter.
func newOrgACAUntil(t *testing.T, notAfter time.Time) *orgACA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	td, _ := url.Parse(tdA)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{td}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &orgACA{cert, key}
}

func (ca *orgACA) issue(t *testing.T, id string, serial int64) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(serial), URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert
}

// serve serves h over TLS on 127.0.0.1 as org-a.example's authority.
func (ca *orgACA) serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	key, cert := ca.issue(t, tdA+"/mandate/server", 2)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestDelegateRequestRefusesAnAnswerWithoutItsToken: an authority's 201
// that carries no delegation token, or one that is not the token of the
// delegation it names, fails delegate request (exit status not 0, and
// why), and writes no token file, rather than report a delegation and
// leave a file that holds none.
func TestDelegateRequestRefusesAnAnswerWithoutItsToken(t *testing.T) {
	ca := newOrgACA(t)
	dir := t.TempDir()
	key, cert := ca.issue(t, tdA+"/agent/a", 3)
	if err := credfile.Write(credfile.In(filepath.Join(dir, "agent")), []*x509.Certificate{cert}, key, []*x509.Certificate{ca.cert}); err != nil {
		t.Fatal(err)
	}
	claims := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct{ name, answer string }{
		{"no token", `{"id":"d-1","expires_at":"2030-01-01T00:00:00Z","chain":[],"receipt":{"index":4}}`},
		{"not a JWT", `{"id":"d-1","token":"not a token\nat all","expires_at":"2030-01-01T00:00:00Z","chain":[],"receipt":{"index":4}}`},
		{"another delegation's token", `{"id":"d-1","token":"eyJhbGciOiJFUzI1NiJ9.` + claims(`{"jti":"d-2"}`) + `.c2ln","expires_at":"2030-01-01T00:00:00Z","chain":[],"receipt":{"index":4}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := ca.serve(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, tc.answer)
			})
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".jwt")
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"delegate", "request", "--server", server, "--creds", filepath.Join(dir, "agent"),
				"--delegatee", tdA + "/agent/b", "--scope", "read", "--principal", "alice", "--out", out}, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), "token") {
				t.Errorf("delegate request = %v (printed %q); want an error about the token", err, stdout.String())
			}
			if _, statErr := os.Stat(out); statErr == nil {
				b, _ := os.ReadFile(out)
				t.Errorf("delegate request wrote %s: %q", out, b)
			}
		})
	}
}

// TestSVIDX509RefusesAnotherIdentity: svid x509 --spiffe-id A fails,
// and writes nothing into --out, when the authority answers with a
// certificate of another identity (whatever its answer's spiffe_id
// says), or with one that its own trust bundle does not verify: it never
// reports A's credential while it would write another. A's certificate
// from an authority whose clock is ahead of this host's (its NotBefore,
// ten seconds before the authority's now, still to come here) is
// written: the authority, which checks it with its own clock, takes it.
func TestSVIDX509RefusesAnotherIdentity(t *testing.T) {
	ca := newOrgACA(t)
	other := newOrgACA(t)
	dir := t.TempDir()
	nodeKey, nodeCert := ca.issue(t, tdA+"/node/join/n1", 3)
	if err := credfile.Write(credfile.In(filepath.Join(dir, "node")), []*x509.Certificate{nodeCert}, nodeKey, []*x509.Certificate{ca.cert}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		issuer   *orgACA
		certID   string
		answerID string
		ahead    time.Duration // the authority's clock ahead of this host's
		ok       bool
	}{
		{"a certificate of another agent", ca, tdA + "/agent/b", tdA + "/agent/a", 0, false},
		{"an answer naming another agent", ca, tdA + "/agent/b", tdA + "/agent/b", 0, false},
		{"a certificate its bundle does not verify", other, tdA + "/agent/a", tdA + "/agent/a", 0, false},
		{"a certificate from an authority whose clock is a minute ahead", ca, tdA + "/agent/a", tdA + "/agent/a", time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := ca.serve(t, svidAnswer(t, tc.issuer, tc.certID, tc.answerID, time.Now().Add(tc.ahead-10*time.Second), time.Now().Add(tc.ahead+time.Hour), ca.cert))
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"svid", "x509", "--server", server, "--creds", filepath.Join(dir, "node"),
				"--spiffe-id", tdA + "/agent/a", "--out", out}, &stdout, &stderr)
			_, statErr := os.Stat(credfile.In(out).Cert)
			switch {
			case tc.ok && (err != nil || statErr != nil):
				t.Errorf("svid x509 = %v, writing %s: %v; want the credential written", err, credfile.In(out).Cert, statErr)
			case !tc.ok && err == nil:
				t.Errorf("svid x509 succeeded, printing %q; want refused", stdout.String())
			case !tc.ok && statErr == nil:
				t.Errorf("svid x509 wrote %s", credfile.In(out).Cert)
			}
		})
	}
}

// TestNodeRenewalWaitsHalfTheSVIDLife: node run renews a node credential
// from an authority whose clock is ahead of this host's (a device whose
// clock is behind, not yet set) after half of the new SVID's life, not
// half of the time until its expiry as this host counts it: that would
// come after the SVID expired at the authority, and the node would lapse.
func TestNodeRenewalWaitsHalfTheSVIDLife(t *testing.T) {
	const ahead, life = 24 * time.Hour, time.Hour
	ca := newOrgACAUntil(t, time.Now().Add(ahead+2*life))
	node := tdA + "/node/join/n1"
	dir := t.TempDir()
	nodeKey, nodeCert := ca.issue(t, node, 3)
	if err := credfile.Write(credfile.In(dir), []*x509.Certificate{nodeCert}, nodeKey, []*x509.Certificate{ca.cert}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(ahead) // the authority's clock
	server := ca.serve(t, svidAnswer(t, ca, node, node, now.Add(-10*time.Second), now.Add(life), ca.cert))
	wait, err := renewNodeOnce(context.Background(), &clientFlags{server: server, creds: dir}, dir, spiffeid.RequireFromString(node))
	if err != nil {
		t.Fatalf("renewal from an authority a day ahead = %v, want the credential written", err)
	}
	if wait > life/2+time.Minute {
		t.Errorf("next renewal in %s: after the SVID expires at the authority (it lives %s); want about %s", wait, life, life/2)
	}
}

// TestNodeRenewalTakesTheOutLock: a join-token node's renewal (node run)
// does not write while another command holds --out's lock: it fails, to
// be tried again, and asks nothing of the authority; the credential in
// --out is left as it was.
func TestNodeRenewalTakesTheOutLock(t *testing.T) {
	ca := newOrgACA(t)
	node := tdA + "/node/join/n1"
	dir := t.TempDir()
	nodeKey, nodeCert := ca.issue(t, node, 3)
	if err := credfile.Write(credfile.In(dir), []*x509.Certificate{nodeCert}, nodeKey, []*x509.Certificate{ca.cert}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(credfile.In(dir).Cert)
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	answer := svidAnswer(t, ca, node, node, time.Now().Add(-10*time.Second), time.Now().Add(time.Hour), ca.cert)
	server := ca.serve(t, func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		answer(w, r)
	})
	unlock, err := lockOut(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = renewNodeOnce(context.Background(), &clientFlags{server: server, creds: dir}, dir, spiffeid.RequireFromString(node))
	if !errors.Is(err, errOutBusy) {
		t.Errorf("renewal while --out is locked = %v, want %v", err, errOutBusy)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the authority was asked %d times while --out was locked", n)
	}
	if after, err := os.ReadFile(credfile.In(dir).Cert); err != nil || !bytes.Equal(after, before) {
		t.Errorf("the credential in --out changed while another command held it (%v)", err)
	}
	unlock()
	if _, err := renewNodeOnce(context.Background(), &clientFlags{server: server, creds: dir}, dir, spiffeid.RequireFromString(node)); err != nil {
		t.Errorf("renewal once --out is free = %v", err)
	}
}

// svidAnswer answers an SVID request (its CSR) as an authority does: with
// a certificate of certID that issuer signs, valid from notBefore to
// notAfter, in an answer that names answerID and carries bundleCA as
// org-a.example's bundle.
func svidAnswer(t *testing.T, issuer *orgACA, certID, answerID string, notBefore, notAfter time.Time, bundleCA *x509.Certificate) http.HandlerFunc {
	bundle := x509BundleJSON(t, bundleCA)
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct{ CSR string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
			return
		}
		blk, _ := pem.Decode([]byte(req.CSR))
		if blk == nil {
			t.Error("no CSR in the request")
			return
		}
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			t.Error(err)
			return
		}
		u, _ := url.Parse(certID)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(9), URIs: []*url.URL{u},
			KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: notBefore, NotAfter: notAfter}, issuer.cert, csr.PublicKey, issuer.key)
		if err != nil {
			t.Error(err)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"spiffe_id": answerID, "expires_at": notAfter,
			"x509_svid": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			"bundles":   map[string]json.RawMessage{"org-a.example": json.RawMessage(bundle)}})
	}
}

// x509BundleJSON is a SPIFFE bundle document holding c, a P-256 CA, as
// its one X.509 authority.
func x509BundleJSON(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	raw, err := c.PublicKey.(*ecdsa.PublicKey).Bytes() // 0x04 || X || Y
	if err != nil || len(raw) != 65 {
		t.Fatalf("the CA's key: %v", err)
	}
	return `{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256","x5c":["` + base64.StdEncoding.EncodeToString(c.Raw) + `"],"x":"` +
		base64.RawURLEncoding.EncodeToString(raw[1:33]) + `","y":"` + base64.RawURLEncoding.EncodeToString(raw[33:]) + `"}]}`
}
