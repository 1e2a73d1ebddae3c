package federation

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzFetchedBundle feeds a peer's bundle endpoint answer to what a fetch
// does with it (ParseBundle, then the checks before it is used). A bundle it
// accepts is stored as it encodes and read back at the next start: that
// reading must give the same authorities, or a peer could make an
// authority that trusted it unable to start, or trust other keys after a
// restart; its refresh hint must read back the same too, or the hint
// handed to clients would not be the one read. No X.509 authority of a
// bundle it accepts names another trust domain than the peer's.
func FuzzFetchedBundle(f *testing.F) {
	ca := newTestCA(f, tdB)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	b := bundleOf(tdB, 7, 5*time.Minute, ca)
	if err := b.AddJWTAuthority("k1", key.Public()); err != nil {
		f.Fatal(err)
	}
	doc, err := b.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc)
	// Another trust domain's CA, alone and beside the peer's own: the
	// bundle is not the peer's. A CA naming no SPIFFE ID (an https URI)
	// is kept.
	caC, upstream := newTestCA(f, tdC), newTestCA(f, tdB)
	tmpl := *upstream.cert
	tmpl.URIs = []*url.URL{{Scheme: "https", Host: tdC.Name(), Path: "/ca"}}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, upstream.key.Public(), upstream.key)
	if err != nil {
		f.Fatal(err)
	}
	if upstream.cert, err = x509.ParseCertificate(der); err != nil {
		f.Fatal(err)
	}
	for _, tc := range []struct {
		b       *spiffebundle.Bundle
		refused bool
	}{
		{bundleOf(tdB, 7, 5*time.Minute, caC), true},
		{bundleOf(tdB, 7, 5*time.Minute, ca, caC), true},
		{bundleOf(tdB, 7, 5*time.Minute, upstream, ca), false},
	} {
		seed, err := tc.b.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		if _, _, err := ParseBundle(tdB, seed); (err != nil) != tc.refused {
			f.Fatalf("ParseBundle(%s, a seed) = %v, want refused: %v", tdB, err, tc.refused)
		}
		f.Add(seed)
	}
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","use":"jwt-svid","kid":"a","x":"","y":""}],"spiffe_refresh_hint":-1,"spiffe_sequence":18446744073709551615}`))
	f.Add([]byte(`{"keys":null,"spiffe_refresh_hint":9223372036854775807}`))
	for _, hint := range []string{"9223372036854775807", "-5", "9223372036"} {
		f.Add(bytes.Replace(doc, []byte(`"spiffe_refresh_hint":300`), []byte(`"spiffe_refresh_hint":`+hint), 1))
	}
	// Keys to ignore (SPIFFE Trust Domain and Bundle §4.1.3, §4.2.1,
	// §4.2.2) beside those to keep, and alone.
	for _, key := range []string{
		`{"kty":"FUTURE","use":"x509-svid"}`,
		`{"kty":"OKP","crv":"Ed448","use":"jwt-svid","kid":"ed448","x":"` + strings.Repeat("A", 76) + `"}`,
		`{"kty":"EC","use":"future-svid"}`,
		`null`,
	} {
		f.Add(bytes.Replace(doc, []byte(`"keys":[`), []byte(`"keys":[`+key+`,`), 1))
		f.Add([]byte(`{"keys":[` + key + `]}`))
	}
	rel := Relationship{TrustDomain: tdB, BundleEndpointURL: "https://b.example/bundle", Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: endpointB}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, _, err := ParseBundle(tdB, body)
		if err != nil {
			return
		}
		for _, c := range got.X509Authorities() {
			for _, u := range c.URIs {
				if id, err := spiffeid.FromURI(u); u.Scheme == "spiffe" && (err != nil || id.TrustDomain() != tdB) {
					t.Fatalf("a bundle of %s is accepted with an X.509 authority naming %s", tdB, u)
				}
			}
		}
		if checkFetched(rel, got, DefaultMaxBundleBytes) != nil {
			return
		}
		stored, err := MarshalBundle(got)
		if err != nil {
			t.Fatalf("an accepted bundle does not encode: %v", err)
		}
		again, _, err := ParseBundle(tdB, stored)
		if err != nil {
			t.Fatalf("an accepted bundle, as stored, does not read back: %v\nstored: %s", err, stored)
		}
		if !again.X509Bundle().Equal(got.X509Bundle()) || !again.JWTBundle().Equal(got.JWTBundle()) {
			t.Fatalf("an accepted bundle reads back with other contents\nfetched: %s\nstored:  %s", body, stored)
		}
		hint, hasHint := got.RefreshHint()
		if againHint, againHas := again.RefreshHint(); againHint != hint || againHas != hasHint {
			t.Fatalf("an accepted bundle's refresh hint %v reads back as %v\nfetched: %s\nstored:  %s", hint, againHint, body, stored)
		}
	})
}
