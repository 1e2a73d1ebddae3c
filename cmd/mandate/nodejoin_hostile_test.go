package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/credfile"
)

// joinPKI is a trust domain's root, signing what a test authority answers.
type joinPKI struct {
	root *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newJoinPKI(t *testing.T) *joinPKI {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{{Scheme: "spiffe", Host: "org-a.example"}}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &joinPKI{root: c, key: k}
}

// sign makes an X509-SVID for id with pub, valid from nb to na.
func (p *joinPKI) sign(t *testing.T, id string, pub any, nb, na time.Time) *x509.Certificate {
	t.Helper()
	u, _ := url.Parse(id)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, p.root, pub, p.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// joinAuthority serves POST /v1/nodes/join over TLS on 127.0.0.1 as an
// authority of org-a.example, whose server certificate p signs, and
// returns its URL and a bundle file of p's root. It answers with the
// certificate answer makes for the CSR's key, naming answer's ID, and
// with a bundle of roots (nil: p's root).
func joinAuthority(t *testing.T, p *joinPKI, roots []*x509.Certificate, answer func(pub any) (id string, cert *x509.Certificate)) (string, string) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("org-a.example")
	h := func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Token, CSR string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		blk, _ := pem.Decode([]byte(req.CSR))
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		id, cert := answer(csr.PublicKey)
		if roots == nil {
			roots = []*x509.Certificate{p.root}
		}
		doc, err := spiffebundle.FromX509Authorities(td, roots).Marshal()
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"spiffe_id": id, "x509_svid": string(credfile.EncodeCertsPEM([]*x509.Certificate{cert})),
			"expires_at": cert.NotAfter.UTC().Format(time.RFC3339), "bundles": map[string]json.RawMessage{"org-a.example": doc}})
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sc := p.sign(t, "spiffe://org-a.example/mandate/server", k.Public(), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	s := httptest.NewUnstartedServer(http.HandlerFunc(h))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{sc.Raw}, PrivateKey: k, Leaf: sc}}}
	s.StartTLS()
	t.Cleanup(s.Close)
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(bundle, credfile.EncodeCertsPEM([]*x509.Certificate{p.root}), 0o644); err != nil {
		t.Fatal(err)
	}
	return s.URL, bundle
}

// node join writes only the credential of a join-token node of the
// authority's trust domain: an answer carrying another identity (an
// administrator's, an agent's, a TPM node's), though it names it and
// the authority's bundle verifies it, is not what a join makes, and is
// refused with nothing written.
func TestNodeJoinWritesOnlyAJoinNodeCredential(t *testing.T) {
	p := newJoinPKI(t)
	cases := []struct {
		id     string
		refuse bool
	}{
		{"spiffe://org-a.example/node/join/0123456789abcdef", false},
		{"spiffe://org-a.example/mandate/admin", true},
		{"spiffe://org-a.example/agent/x", true},
		{"spiffe://org-a.example/node/tpm/ab", true},
		{"spiffe://org-a.example/node/join/0123456789abcdef/more", true},
		{"spiffe://org-a.example/node/join/not-a-token-id", true},
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			url, bundle := joinAuthority(t, p, nil, func(pub any) (string, *x509.Certificate) {
				return tc.id, p.sign(t, tc.id, pub, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
			})
			out := filepath.Join(t.TempDir(), "node")
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"node", "join", "--server", url, "--bundle", bundle, "--token", "tok", "--out", out}, &stdout, &stderr)
			_, statErr := os.Stat(filepath.Join(out, "svid.pem"))
			if tc.refuse && (err == nil || !strings.Contains(err.Error(), "nothing written") || statErr == nil) {
				t.Errorf("node join answered with %s = %v (svid.pem written: %v), want it refused, nothing written", tc.id, err, statErr == nil)
			}
			if !tc.refuse && (err != nil || statErr != nil) {
				t.Errorf("node join answered with %s = %v (svid.pem: %v), want the credential written", tc.id, err, statErr)
			}
		})
	}
}

// node join writes no credential whose trust bundle would not
// authenticate the authority that answered: the node could not reach it
// again (node run, svid x509). A bundle of the authority's new CA beside
// the one its certificate is of (a CA rotation) is written.
func TestNodeJoinKeepsABundleThatReachesTheAuthority(t *testing.T) {
	p, next := newJoinPKI(t), newJoinPKI(t)
	const id = "spiffe://org-a.example/node/join/0123456789abcdef"
	cases := []struct {
		name   string
		roots  []*x509.Certificate
		refuse bool
	}{
		{"only another CA", []*x509.Certificate{next.root}, true},
		{"the authority's CA and a new one", []*x509.Certificate{p.root, next.root}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url, bundle := joinAuthority(t, p, tc.roots, func(pub any) (string, *x509.Certificate) {
				return id, next.sign(t, id, pub, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
			})
			out := filepath.Join(t.TempDir(), "node")
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"node", "join", "--server", url, "--bundle", bundle, "--token", "tok", "--out", out}, &stdout, &stderr)
			_, statErr := os.Stat(filepath.Join(out, "bundle.pem"))
			if tc.refuse && (err == nil || !strings.Contains(err.Error(), "nothing written") || statErr == nil) {
				t.Errorf("node join answered with a bundle of %s = %v (bundle.pem written: %v), want it refused, nothing written", tc.name, err, statErr == nil)
			}
			if !tc.refuse && (err != nil || statErr != nil) {
				t.Errorf("node join answered with a bundle of %s = %v (bundle.pem: %v), want the credential written", tc.name, err, statErr)
			}
		})
	}
}

// A join refused for its token (used, unknown, withdrawn) says what to
// do: no other try with that token will do.
func TestNodeJoinRefusedTokenSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	create := func() (token, id string) {
		out, err := cli(t, url, dir, "admin", "join-token", "create")
		if err != nil {
			t.Fatal(err)
		}
		var tok struct{ Token, ID string }
		if err := json.Unmarshal([]byte(out), &tok); err != nil {
			t.Fatal(err)
		}
		return tok.Token, tok.ID
	}
	used, _ := create()
	if _, err := cli(t, url, dir, "node", "join", "--token", used, "--out", "first"); err != nil {
		t.Fatal(err)
	}
	withdrawn, id := create()
	if _, err := cli(t, url, dir, "admin", "join-token", "withdraw", id); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, token, problem string }{
		{"used", used, "join-token-used"},
		{"unknown", "no-such-token", "join-token-unknown"},
		{"withdrawn", withdrawn, "join-token-withdrawn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cli(t, url, dir, "node", "join", "--token", tc.token, "--out", tc.name)
			if err == nil || !strings.Contains(err.Error(), tc.problem) || !strings.Contains(err.Error(), "mandate admin join-token create") {
				t.Errorf("node join with a %s token = %v, want %s saying to ask for a new token", tc.name, err, tc.problem)
			}
		})
	}
}

// A join whose answer is lost (the connection cut after the authority
// got it) says to run the same command again, which asks again with the
// same key, as the authority answers a join asked again.
func TestNodeJoinCutShortSaysToRunItAgain(t *testing.T) {
	p := newJoinPKI(t)
	const id = "spiffe://org-a.example/node/join/0123456789abcdef"
	var mu sync.Mutex
	var keys []string // the keys the joins asked with, PKIX DER
	url, bundle := joinAuthority(t, p, nil, func(pub any) (string, *x509.Certificate) {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		keys = append(keys, string(der))
		first := len(keys) == 1
		mu.Unlock()
		if first {
			panic(http.ErrAbortHandler) // the connection cut before the answer
		}
		return id, p.sign(t, id, pub, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	})
	args := []string{"node", "join", "--server", url, "--bundle", bundle, "--token", "tok", "--out", filepath.Join(t.TempDir(), "node")}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "run the same command again") {
		t.Fatalf("node join with its answer lost = %v, want it told to run the same command again", err)
	}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("the same command again = %v", err)
	}
	if len(keys) != 2 || keys[0] != keys[1] {
		t.Errorf("the join asked again with another key (%d joins): the authority would refuse it", len(keys))
	}
}

// A join token given where node join takes none (as an argument, or as
// the name of --token-file) is refused without being echoed: errors end
// up in logs, where a token still valid is anyone's join.
func TestNodeJoinNeverEchoesAToken(t *testing.T) {
	const token = "c2VjcmV0LWpvaW4tdG9rZW4tbm90LWEtZmlsZQ"
	t.Chdir(t.TempDir())
	for _, args := range [][]string{
		{"node", "join", token},
		{"node", "join", "--out", "n", token},
		{"node", "join", "--token-file", token},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil || strings.Contains(err.Error()+stdout.String()+stderr.String(), token) || !strings.Contains(err.Error(), "--token") {
			t.Errorf("mandate %s = %v (printed %q), want an error that does not echo the token and says to give it with --token", strings.Join(args, " "), err, stdout.String()+stderr.String())
		}
	}
}
