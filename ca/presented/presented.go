package presented

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// MaxRSABits is the largest RSA key a presented chain may hold
// (CheckKeys): crypto/tls's own bound on the keys of a client's chain.
// An RSA signature check costs about the square of the key's size, so a
// chain carrying, say, a 150,000-bit key would make a single
// verification take seconds.
const MaxRSABits = 8192

// CheckKeys refuses a presented chain (an X509-SVID and its
// intermediates) holding a certificate with an RSA key of more than
// MaxRSABits. It is meant to run before the chain is verified.
func CheckKeys(certs []*x509.Certificate) error {
	for i, c := range certs {
		if k, ok := c.PublicKey.(*rsa.PublicKey); ok && k.N != nil && k.N.BitLen() > MaxRSABits {
			return fmt.Errorf("certificate %d has an RSA key of %d bits (at most %d)", i, k.N.BitLen(), MaxRSABits)
		}
	}
	return nil
}

// Verify is x509svid.Verify of certs (the leaf first, then its
// intermediates, in any order) against the bundle source, with bounded
// work: the chain is refused if CheckKeys refuses it, and only the
// intermediates proven to descend from the leaf's trust domain's X.509
// authorities take part in the path search (see the package
// documentation). Presented certificates that are those authorities
// themselves are left out too: the search finds them among the roots.
func Verify(certs []*x509.Certificate, source x509bundle.Source, opts ...x509svid.VerifyOption) (spiffeid.ID, [][]*x509.Certificate, error) {
	if err := CheckKeys(certs); err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("x509svid: %w", err)
	}
	if len(certs) > 1 {
		// A leaf without an ID, or of a trust domain without a bundle, is
		// refused by x509svid.Verify before any search.
		if id, err := x509svid.IDFromCert(certs[0]); err == nil {
			if b, err := source.GetX509BundleForTrustDomain(id.TrustDomain()); err == nil {
				certs = append([]*x509.Certificate{certs[0]}, proven(certs[1:], b.X509Authorities())...)
				// The chain is verified against the bundle its
				// intermediates were proven from, not one the source
				// may hold a moment later.
				source = b
			}
		}
	}
	return x509svid.Verify(certs, source, opts...)
}

// proven returns the CA certificates of inter, each once, that are
// signed by one of roots or by a certificate of inter already proven,
// leaving out those that are roots. A certificate is checked at most
// once against each proven one whose subject is its issuer, and at most
// maxSignatureChecks signatures are checked in all: the intermediates
// not proven by then are left out.
func proven(inter, roots []*x509.Certificate) []*x509.Certificate {
	parents := append([]*x509.Certificate(nil), roots...)
	type candidate struct {
		cert  *x509.Certificate
		tried int // parents[:tried] were checked
	}
	var pending []*candidate
	seen := make(map[[32]byte]bool, len(inter)+len(roots))
	for _, r := range roots {
		seen[sha256.Sum256(r.Raw)] = true
	}
	for _, c := range inter {
		// x509.Verify takes only CAs as intermediates.
		if k := sha256.Sum256(c.Raw); !seen[k] && c.BasicConstraintsValid && c.IsCA {
			seen[k] = true
			pending = append(pending, &candidate{cert: c})
		}
	}
	var out []*x509.Certificate
	budget := maxSignatureChecks
	for progress := true; progress; {
		progress = false
		for i := 0; i < len(pending); i++ {
			c := pending[i]
			n := len(parents)
			// The parents its authority key id names first, as
			// x509.Verify takes them: among authorities of one name,
			// the right one is found with one check.
		search:
			for _, byKeyID := range []bool{true, false} {
				for _, p := range parents[c.tried:n] {
					if !bytes.Equal(c.cert.RawIssuer, p.RawSubject) || namesKey(c.cert, p) != byKeyID {
						continue
					}
					if signedBy(c.cert, p, &budget) {
						out, parents = append(out, c.cert), append(parents, c.cert)
						pending = append(pending[:i], pending[i+1:]...)
						i--
						progress = true
						break search
					}
					if budget == 0 {
						return out
					}
				}
			}
			c.tried = n
		}
	}
	return out
}

// maxSignatureChecks bounds the signatures proven checks for one chain
// (those it found good before, and remembers, aside): x509.Verify's own
// bound on a path search. The keys are the bundle's, but the presenter
// chooses how many of its intermediates name one authority, and a
// bundle may hold many authorities of one name (a peer's is up to 1 MiB
// of them): without it, every intermediate would be checked against
// every one of them.
const maxSignatureChecks = 100

// namesKey reports whether c's authority key id names parent's key.
func namesKey(c, parent *x509.Certificate) bool {
	return len(c.AuthorityKeyId) > 0 && bytes.Equal(c.AuthorityKeyId, parent.SubjectKeyId)
}

// signedBy reports whether parent's key signed c, as x509.Verify checks
// it (CheckSignatureFrom). A signature found good is remembered: the
// intermediates of the chains presented to an authority are few, and
// the same in each chain.
func signedBy(c, parent *x509.Certificate, budget *int) bool {
	k := pair{sha256.Sum256(c.Raw), sha256.Sum256(parent.Raw)}
	good.Lock()
	ok := good.m[k]
	good.Unlock()
	if ok {
		return true
	}
	if *budget <= 0 {
		return false
	}
	*budget--
	if checkSignature(c, parent) != nil {
		return false
	}
	good.Lock()
	defer good.Unlock()
	if len(good.m) >= maxGood {
		clear(good.m)
	}
	good.m[k] = true
	return true
}

// checkSignature is CheckSignatureFrom; tests replace it to count the
// signatures checked.
var checkSignature = (*x509.Certificate).CheckSignatureFrom

type pair struct{ cert, parent [32]byte }

// maxGood bounds the signatures remembered. Only a signature made with a
// root's key, or a proven CA's, is ever remembered: a presenter cannot
// fill the memory with its own.
const maxGood = 1024

var good = struct {
	sync.Mutex
	m map[pair]bool
}{m: make(map[pair]bool)}
