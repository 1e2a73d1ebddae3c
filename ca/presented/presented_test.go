package presented

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var td = spiffeid.RequireTrustDomainFromString("org-a.example")

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial int64

// mint makes a certificate named subject, signed by parent (self-signed
// if parent is nil); key is its key (a new one if nil).
func mint(t testing.TB, subject string, isCA bool, parent *issuer, key *ecdsa.PrivateKey, uri string) *issuer {
	t.Helper()
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{Organization: []string{"SPIFFE"}, CommonName: subject},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		// A name of its own: x509.Verify takes CAs of one subject, key
		// and names for one.
		tmpl.DNSNames = []string{fmt.Sprintf("ca%d.example", serial)}
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{cert: c, key: key}
}

func leafOf(t testing.TB, parent *issuer) *x509.Certificate {
	return mint(t, "", false, parent, nil, "spiffe://org-a.example/agent/planner").cert
}

// Verify accepts what x509svid.Verify accepts, with the same chains:
// a leaf alone, a leaf with the root, with intermediates in order or
// not, nested, and under a bundle that holds an intermediate.
func TestVerifyAcceptsWhatX509SVIDAccepts(t *testing.T) {
	root := mint(t, "root", true, nil, nil, "spiffe://org-a.example")
	int1 := mint(t, "int1", true, root, nil, "spiffe://org-a.example")
	int2 := mint(t, "int2", true, int1, nil, "spiffe://org-a.example")
	// Old nested SPIRE servers gave all their CAs one subject.
	same1 := mint(t, "", true, root, nil, "spiffe://org-a.example")
	same2 := mint(t, "", true, same1, nil, "spiffe://org-a.example")
	other := mint(t, "other root", true, nil, nil, "spiffe://org-a.example")
	underRoot, underInt1, underInt2, underSame2 := leafOf(t, root), leafOf(t, int1), leafOf(t, int2), leafOf(t, same2)
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert})
	for _, tc := range []struct {
		name   string
		certs  []*x509.Certificate
		bundle *x509bundle.Bundle
		ok     bool
	}{
		{"a leaf under the root", []*x509.Certificate{underRoot}, bundle, true},
		{"a leaf and the root", []*x509.Certificate{underRoot, root.cert}, bundle, true},
		{"a leaf and its intermediate", []*x509.Certificate{underInt1, int1.cert}, bundle, true},
		{"nested, in order", []*x509.Certificate{underInt2, int2.cert, int1.cert}, bundle, true},
		{"nested, out of order, with the root", []*x509.Certificate{underInt2, root.cert, int1.cert, int2.cert}, bundle, true},
		{"nested CAs of one subject", []*x509.Certificate{underSame2, same2.cert, same1.cert}, bundle, true},
		{"an intermediate in the bundle", []*x509.Certificate{underInt2, int2.cert}, x509bundle.FromX509Authorities(td, []*x509.Certificate{int1.cert}), true},
		{"a leaf under the root, an unrelated intermediate beside it", []*x509.Certificate{underRoot, int2.cert}, bundle, true},
		{"an intermediate missing", []*x509.Certificate{underInt2, int2.cert}, bundle, false},
		{"another root", []*x509.Certificate{underRoot, root.cert}, x509bundle.FromX509Authorities(td, []*x509.Certificate{other.cert}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantID, wantChains, wantErr := x509svid.Verify(tc.certs, tc.bundle)
			id, chains, err := Verify(tc.certs, tc.bundle)
			if (err == nil) != tc.ok || (wantErr == nil) != tc.ok {
				t.Fatalf("Verify = %v, x509svid.Verify = %v; want ok=%v", err, wantErr, tc.ok)
			}
			if id != wantID || !slices.EqualFunc(chains, wantChains, slices.Equal) {
				t.Errorf("Verify = %v, %v; x509svid.Verify = %v, %v", id, chains, wantID, wantChains)
			}
		})
	}
}

// A presenter's intermediates that no root vouches for never reach the
// path search, however many share a name and a key; those the roots
// vouch for do, once each.
func TestOnlyProvenIntermediatesAreSearched(t *testing.T) {
	root := mint(t, "root", true, nil, nil, "spiffe://org-a.example")
	int1 := mint(t, "int1", true, root, nil, "spiffe://org-a.example")
	// Six CAs of one name and one key, each signed by that key: each
	// could be the parent of any other.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	first := mint(t, "junk", true, nil, key, "spiffe://org-a.example")
	junk := []*x509.Certificate{first.cert}
	for range 5 {
		junk = append(junk, mint(t, "junk", true, first, key, "spiffe://org-a.example").cert)
	}
	// A junk CA naming the root as its issuer, signed with the junk key.
	rootNamed := *root.cert
	rootNamed.PublicKey = &key.PublicKey
	forged := mint(t, "junk", true, &issuer{cert: &rootNamed, key: key}, key, "spiffe://org-a.example")
	if string(forged.cert.RawIssuer) != string(root.cert.RawSubject) {
		t.Fatal("the forged CA does not name the root as its issuer")
	}
	leaf := leafOf(t, first)
	roots := []*x509.Certificate{root.cert}

	presented := append(append([]*x509.Certificate{int1.cert, root.cert, forged.cert}, junk...), int1.cert)
	got := proven(presented, roots)
	if !slices.Equal(got, []*x509.Certificate{int1.cert}) {
		t.Errorf("proven = %d certificates %v, want int1 alone", len(got), names(got))
	}
	_, _, err = Verify(append([]*x509.Certificate{leaf}, presented...), x509bundle.FromX509Authorities(td, roots))
	if err == nil {
		t.Fatal("Verify of a leaf under the junk CAs succeeded")
	}
}

// TestVerifySearchesNoUnprovenIntermediate: a leaf under CAs of one name
// and one key, none proven from the roots, is refused by Verify without
// a path search among them (which x509svid.Verify ends only at Go's
// limit of signature checks): the roots alone are searched, and the
// leaf's issuer is none of them.
func TestVerifySearchesNoUnprovenIntermediate(t *testing.T) {
	root := mint(t, "root", true, nil, nil, "spiffe://org-a.example")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rootNamed := *root.cert
	rootNamed.PublicKey = &key.PublicKey
	first := mint(t, "junk", true, &issuer{cert: &rootNamed, key: key}, key, "spiffe://org-a.example")
	certs := []*x509.Certificate{leafOf(t, first), first.cert}
	for range 6 {
		certs = append(certs, mint(t, "junk", true, first, key, "spiffe://org-a.example").cert)
	}
	_, _, err = Verify(certs, x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert}))
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) || strings.Contains(err.Error(), "limit") {
		t.Fatalf("Verify of a leaf under unproven CAs = %v, want it refused as signed by an unknown authority, with no search among them", err)
	}
}

func names(certs []*x509.Certificate) string {
	var s []string
	for _, c := range certs {
		s = append(s, c.Subject.CommonName)
	}
	return strings.Join(s, ",")
}

// BenchmarkJunkChain verifies a leaf under seven CAs of one name and one
// key (P-256 here; a presenter would choose RSA keys of 8192 bits),
// with x509svid.Verify and with Verify.
func BenchmarkJunkChain(b *testing.B) {
	root := mint(b, "root", true, nil, nil, "spiffe://org-a.example")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootNamed := *root.cert
	rootNamed.PublicKey = &key.PublicKey
	first := mint(b, "junk", true, &issuer{cert: &rootNamed, key: key}, key, "spiffe://org-a.example")
	certs := []*x509.Certificate{leafOf(b, first), first.cert}
	for range 6 {
		certs = append(certs, mint(b, "junk", true, first, key, "spiffe://org-a.example").cert)
	}
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert})
	for _, v := range []struct {
		name   string
		verify func([]*x509.Certificate, x509bundle.Source, ...x509svid.VerifyOption) (spiffeid.ID, [][]*x509.Certificate, error)
	}{{"x509svid.Verify", x509svid.Verify}, {"Verify", Verify}} {
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := v.verify(certs, bundle); err == nil {
					b.Fatal("the junk chain verified")
				}
			}
		})
	}
}

// changingSource answers its first read with first, and every later one
// with then: a bundle rotated between two reads.
type changingSource struct {
	first, then *x509bundle.Bundle
	reads       int
}

func (s *changingSource) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.reads++
	if s.reads == 1 {
		return s.first, nil
	}
	return s.then, nil
}

// A chain is verified against the one bundle its intermediates were
// proven from: a source whose bundle changes between two reads neither
// fails a chain the first bundle vouches for, nor is read twice.
func TestVerifyReadsTheBundleOnce(t *testing.T) {
	root := mint(t, "root", true, nil, nil, "spiffe://org-a.example")
	next := mint(t, "next root", true, nil, nil, "spiffe://org-a.example")
	inter := mint(t, "int", true, root, nil, "spiffe://org-a.example")
	leaf := leafOf(t, inter)
	for _, tc := range []struct {
		name        string
		first, then []*x509.Certificate
		ok          bool
	}{
		{"the root rotated out after the first read", []*x509.Certificate{root.cert}, []*x509.Certificate{next.cert}, true},
		{"the root rotated in after the first read", []*x509.Certificate{next.cert}, []*x509.Certificate{root.cert}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &changingSource{first: x509bundle.FromX509Authorities(td, tc.first), then: x509bundle.FromX509Authorities(td, tc.then)}
			_, _, err := Verify([]*x509.Certificate{leaf, inter.cert}, src)
			if (err == nil) != tc.ok {
				t.Errorf("Verify = %v, want ok=%v (verified against the bundle of the first read)", err, tc.ok)
			}
			if src.reads != 1 {
				t.Errorf("the source was read %d times, want once", src.reads)
			}
		})
	}
}

// A federated peer's authorities vouch for its own trust domain only: a
// leaf naming this trust domain, signed by the peer's root or by an
// intermediate under it, is refused even though the source holds the
// peer's bundle, and the peer's own leaves verify.
func TestPeerAuthorityCannotVouchForAnotherTrustDomain(t *testing.T) {
	tdB := spiffeid.RequireTrustDomainFromString("org-b.example")
	rootA := mint(t, "root a", true, nil, nil, "spiffe://org-a.example")
	rootB := mint(t, "root b", true, nil, nil, "spiffe://org-b.example")
	intB := mint(t, "int b", true, rootB, nil, "spiffe://org-b.example")
	set := x509bundle.NewSet(
		x509bundle.FromX509Authorities(td, []*x509.Certificate{rootA.cert}),
		x509bundle.FromX509Authorities(tdB, []*x509.Certificate{rootB.cert}),
	)
	for _, tc := range []struct {
		name  string
		certs []*x509.Certificate
		ok    bool
	}{
		{"this trust domain's leaf under its root", []*x509.Certificate{leafOf(t, rootA)}, true},
		{"the peer's leaf under its root", []*x509.Certificate{mint(t, "", false, rootB, nil, "spiffe://org-b.example/agent/booker").cert}, true},
		{"a leaf naming this trust domain under the peer's root", []*x509.Certificate{leafOf(t, rootB)}, false},
		{"a leaf naming this trust domain under the peer's intermediate", []*x509.Certificate{leafOf(t, intB), intB.cert}, false},
		{"the same, with the peer's root", []*x509.Certificate{leafOf(t, intB), intB.cert, rootB.cert}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := Verify(tc.certs, set); (err == nil) != tc.ok {
				t.Fatalf("Verify = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// countChecks counts the signatures Verify checks until t ends.
func countChecks(t *testing.T) *int {
	n := new(int)
	orig := checkSignature
	checkSignature = func(c, parent *x509.Certificate) error {
		*n++
		return orig(c, parent)
	}
	t.Cleanup(func() { checkSignature = orig })
	return n
}

// A bundle holding many authorities of one name (a federated peer's
// bundle is up to 1 MiB of them) does not make each of a presenter's
// intermediates naming that authority cost a signature check with each
// of their keys: Verify checks at most maxSignatureChecks signatures,
// as x509.Verify does in its path search, and refuses the chain. A
// chain that the bundle does vouch for verifies with a check for each
// of its intermediates, the authority its key id names found first.
func TestManyAuthoritiesOfOneNameCostBoundedChecks(t *testing.T) {
	var roots []*issuer
	for range 150 {
		roots = append(roots, mint(t, "root", true, nil, nil, "spiffe://org-a.example"))
	}
	var certs []*x509.Certificate
	for _, r := range roots {
		certs = append(certs, r.cert)
	}
	bundle := x509bundle.FromX509Authorities(td, certs)

	// Seven CAs naming the authorities' name as their issuer, signed
	// with a key of the presenter's.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rootNamed := *roots[0].cert
	rootNamed.PublicKey = &key.PublicKey
	first := mint(t, "junk", true, &issuer{cert: &rootNamed, key: key}, key, "spiffe://org-a.example")
	junk := []*x509.Certificate{leafOf(t, first), first.cert}
	for range 6 {
		junk = append(junk, mint(t, "junk", true, &issuer{cert: &rootNamed, key: key}, key, "spiffe://org-a.example").cert)
	}
	// A chain under the last of them.
	inter := mint(t, "int", true, roots[len(roots)-1], nil, "spiffe://org-a.example")
	good := []*x509.Certificate{leafOf(t, inter), inter.cert}

	for _, tc := range []struct {
		name      string
		certs     []*x509.Certificate
		ok        bool
		maxChecks int
	}{
		{"intermediates naming the authorities, signed by the presenter", junk, false, maxSignatureChecks},
		{"an intermediate under one of the authorities", good, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checks := countChecks(t)
			_, _, err := Verify(tc.certs, bundle)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify = %v, want ok=%v", err, tc.ok)
			}
			if _, _, wantErr := x509svid.Verify(tc.certs, bundle); (wantErr == nil) != tc.ok {
				t.Fatalf("x509svid.Verify = %v, want ok=%v", wantErr, tc.ok)
			}
			if *checks > tc.maxChecks {
				t.Errorf("Verify checked %d signatures before its path search, want at most %d", *checks, tc.maxChecks)
			}
		})
	}
}
