package delegation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The memo of validated delegator SVIDs is bounded by what it keeps, not
// by its count alone: a header made of a large certificate a trusted CA
// issued (another trust domain's CA may issue any) keeps that certificate
// alive, once per distinct header (each kid a new one), signature or not.
func TestSVIDMemoBoundedBySize(t *testing.T) {
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: "org-b.example"}}}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	id := spiffeid.RequireFromString("spiffe://org-b.example/agent/big")
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{id.URL()},
		// 12 KB of an extension: the size that still fits a hop's
		// header inside a token of MaxTokenSize.
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: make([]byte, 12<<10)}}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	auths := []*x509.Certificate{ca}
	roots := rootsOf(auths)
	x5c := base64.StdEncoding.EncodeToString(leafDER)
	svids.mu.Lock()
	svids.m, svids.size = map[svidKey]svidEntry{}, 0
	svids.mu.Unlock()
	for i := range 4000 { // within the count the memo kept before it counted bytes
		hdr := fmt.Sprintf(`{"alg":"ES256","typ":%q,"kid":"k%d","x5c":[%q]}`, statementType, i, x5c)
		j, err := parseCompact(b64url.EncodeToString([]byte(hdr)) + ".e30.c2ln")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifiedSVID(j, auths, roots, id, now); err != nil {
			t.Fatal(err)
		}
	}
	svids.mu.Lock()
	defer svids.mu.Unlock()
	kept := 0
	leaves := map[*x509.Certificate]bool{}
	for _, e := range svids.m {
		if !leaves[e.leaf] {
			leaves[e.leaf] = true
			kept += len(e.leaf.Raw)
		}
	}
	if kept > maxCachedSVIDBytes || svids.size > maxCachedSVIDBytes {
		t.Errorf("the memo keeps %d certificates, %d bytes of them (counted %d): more than its %d", len(leaves), kept, svids.size, maxCachedSVIDBytes)
	}
}
