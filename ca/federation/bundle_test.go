package federation

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// A bundle is encoded with its keys member always present, "keys": []
// when it has no authorities (SPIFFE Trust Domain and Bundle §4.1.3), so
// that a reader, go-spiffe's among them, can read it back.
func TestMarshalBundleKeepsKeys(t *testing.T) {
	caB := newTestCA(t, tdB)
	tests := []struct {
		name string
		b    *spiffebundle.Bundle
	}{
		{"without authorities", bundleOf(tdB, 3, 0)},
		{"with an authority", bundleOf(tdB, 3, 0, caB)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := MarshalBundle(tt.b)
			if err != nil {
				t.Fatalf("MarshalBundle() = %v", err)
			}
			if bytes.Contains(doc, []byte(`"keys":null`)) {
				t.Fatalf("MarshalBundle() = %s, want keys present", doc)
			}
			got, err := spiffebundle.Parse(tdB, doc)
			if err != nil || !got.Equal(tt.b) {
				t.Fatalf("the encoding %s reads back as %v, %v; want the bundle", doc, got, err)
			}
		})
	}
}

// A peer's refresh hint is read within [0, MaxRefreshHint], so that the
// bundle stored and handed out says what was read, not a hint go-spiffe's
// encoding overflowed or moved (SPIFFE Trust Domain and Bundle §4.1.2).
func TestParseBundleBoundsRefreshHint(t *testing.T) {
	caB := newTestCA(t, tdB)
	doc := marshal(t, bundleOf(tdB, 1, 300*time.Second, caB))
	year := int64(MaxRefreshHint / time.Second)
	tests := []struct {
		hint string
		want int64
	}{
		{"300", 300},
		{"0", 0},
		{"-5", 0},
		{"-9223372036854775808", 0},
		{"31536000", year},
		{"31536001", year},
		{"9223372036", year},
		{"9223372036854775807", year},
	}
	for _, tt := range tests {
		t.Run(tt.hint, func(t *testing.T) {
			in := bytes.Replace(doc, []byte(`"spiffe_refresh_hint":300`), []byte(`"spiffe_refresh_hint":`+tt.hint), 1)
			b, _, err := ParseBundle(tdB, in)
			if err != nil {
				t.Fatalf("ParseBundle() = %v", err)
			}
			stored, err := MarshalBundle(b)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Hint *int64 `json:"spiffe_refresh_hint"`
			}
			if err := json.Unmarshal(stored, &got); err != nil || got.Hint == nil || *got.Hint != tt.want {
				t.Errorf("hint %s is stored as %s, want %d", tt.hint, stored, tt.want)
			}
		})
	}
}

// A bundle of a trust domain whose X.509 authority names another trust
// domain is not that trust domain's: it is refused, whoever gives it (a
// peer's endpoint, an administrator), rather than let the other trust
// domain's CA vouch for its IDs. An authority naming no SPIFFE ID (an
// upstream root) is kept.
func TestParseBundleRefusesAnotherTrustDomainsAuthority(t *testing.T) {
	caB, caC := newTestCA(t, tdB), newTestCA(t, tdC)
	upstream := newTestCA(t, tdB)
	// An upstream root's certificate: no SPIFFE ID.
	tmpl := *upstream.cert
	tmpl.URIs = nil
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, upstream.key.Public(), upstream.key)
	if err != nil {
		t.Fatal(err)
	}
	if upstream.cert, err = x509.ParseCertificate(der); err != nil || len(upstream.cert.URIs) != 0 {
		t.Fatalf("upstream root: %v", err)
	}
	for _, tc := range []struct {
		name    string
		b       *spiffebundle.Bundle
		refused bool
	}{
		{"its own authority", bundleOf(tdB, 1, 0, caB), false},
		{"an authority naming no SPIFFE ID", bundleOf(tdB, 1, 0, upstream), false},
		{"another trust domain's authority", bundleOf(tdB, 1, 0, caC), true},
		{"its own and another's", bundleOf(tdB, 1, 0, caB, caC), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseBundle(tdB, marshal(t, tc.b))
			if refused := err != nil; refused != tc.refused {
				t.Fatalf("ParseBundle() = %v, want refused %v", err, tc.refused)
			}
			if tc.refused && !strings.Contains(err.Error(), "spiffe://org-c.example") {
				t.Errorf("ParseBundle() = %v, want the other trust domain named", err)
			}
		})
	}
}

// An X.509 authority is a CA certificate: one that is not (an endpoint's
// or a workload's own certificate, exported as the bundle by mistake)
// is ignored, as keys that cannot serve as authorities are, and said
// why, rather than taken as a root that a chain of just that
// certificate verifies against.
func TestParseBundleIgnoresAuthorityThatIsNotACA(t *testing.T) {
	caB := newTestCA(t, tdB)
	leaf := caB.serverCert(t, spiffeid.RequireFromPath(tdB, "/mandate/server")).Leaf
	noConstraints := *caB.cert
	noConstraints.IsCA, noConstraints.BasicConstraintsValid = false, false
	der, err := x509.CreateCertificate(rand.Reader, &noConstraints, &noConstraints, caB.key.Public(), caB.key)
	if err != nil {
		t.Fatal(err)
	}
	unconstrained, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
	}{
		{"a leaf certificate", leaf},
		{"a certificate without basic constraints", unconstrained},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bundleOf(tdB, 1, 0, caB)
			b.AddX509Authority(tc.cert)
			got, ignored, err := ParseBundle(tdB, marshal(t, b))
			if err != nil {
				t.Fatalf("ParseBundle() = %v", err)
			}
			if !got.Equal(bundleOf(tdB, 1, 0, caB)) {
				t.Errorf("ParseBundle() kept %d X.509 authorities, want only the CA", len(got.X509Authorities()))
			}
			if len(ignored) != 1 || !strings.Contains(ignored[0], "not a CA certificate") {
				t.Errorf("ignored = %q, want the certificate said not to be a CA", ignored)
			}
			only := bundleOf(tdB, 1, 0)
			only.AddX509Authority(tc.cert)
			if _, _, err := ParseBundle(tdB, marshal(t, only)); !errors.Is(err, ErrNoAuthorities) || !strings.Contains(err.Error(), "not a CA certificate") {
				t.Errorf("ParseBundle() of it alone = %v, want ErrNoAuthorities saying why", err)
			}
		})
	}
}

// Two keys of one use under the same kid leave it unknown which key
// signs what that kid names: go-spiffe would keep whichever came last,
// silently. Both are ignored, and said why; the same key given twice is
// one key.
func TestParseBundleIgnoresKeysSharingAKid(t *testing.T) {
	caB := newTestCA(t, tdB)
	k1, k2, k3 := newKey(t).Public(), newKey(t).Public(), newKey(t).Public()
	jwk := func(use, kid string, pub any) string {
		doc, err := json.Marshal(jose.JSONWebKey{Key: pub, KeyID: kid, Use: use})
		if err != nil {
			t.Fatal(err)
		}
		return string(doc)
	}
	root := string(marshal(t, bundleOf(tdB, 0, -1, caB)))
	root = root[strings.Index(root, "[")+1 : strings.LastIndex(root, "]")]
	for _, tc := range []struct {
		name        string
		keys        []string
		wantJWT     map[string]any
		wantWIT     map[string]any
		wantIgnored int
	}{
		{"two keys under one kid", []string{jwk("jwt-svid", "a", k1), jwk("jwt-svid", "a", k2), jwk("jwt-svid", "b", k3)},
			map[string]any{"b": k3}, nil, 2},
		{"the same key twice", []string{jwk("jwt-svid", "a", k1), jwk("jwt-svid", "a", k1)},
			map[string]any{"a": k1}, nil, 0},
		{"one kid in two uses", []string{jwk("jwt-svid", "a", k1), jwk("wit-svid", "a", k2)},
			map[string]any{"a": k1}, map[string]any{"a": k2}, 0},
		{"two WIT keys under one kid", []string{jwk("wit-svid", "a", k1), jwk("wit-svid", "a", k2), jwk("jwt-svid", "a", k3)},
			map[string]any{"a": k3}, nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := `{"keys":[` + root + "," + strings.Join(tc.keys, ",") + `]}`
			b, ignored, err := ParseBundle(tdB, []byte(doc))
			if err != nil {
				t.Fatalf("ParseBundle() = %v", err)
			}
			same := func(got map[string]crypto.PublicKey, want map[string]any) bool {
				if len(got) != len(want) {
					return false
				}
				for kid, pub := range want {
					if k, ok := got[kid]; !ok || !k.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
						return false
					}
				}
				return true
			}
			if !same(b.JWTAuthorities(), tc.wantJWT) || !same(b.WITAuthorities(), tc.wantWIT) {
				t.Errorf("ParseBundle() kept JWT keys %v and WIT keys %v, want %v and %v", b.JWTAuthorities(), b.WITAuthorities(), tc.wantJWT, tc.wantWIT)
			}
			if len(ignored) != tc.wantIgnored {
				t.Errorf("ignored = %q, want %d keys", ignored, tc.wantIgnored)
			}
			for _, why := range ignored {
				if !strings.Contains(why, `kid "a" names more than one key`) {
					t.Errorf("ignored %q, want the shared kid named", why)
				}
			}
		})
	}
}
