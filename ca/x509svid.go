package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// X509Params is a request for an X509-SVID.
type X509Params struct {
	ID        spiffeid.ID      // required; must be in the CA's trust domain and have a path
	PublicKey crypto.PublicKey // ECDSA P-256/P-384 or RSA 2048..8192 bits
	TTL       time.Duration    // 0 means Config.X509SVIDTTL; capped at the CA's expiry
	DNSNames  []string         // optional DNS SANs (e.g. the authority's own server certificate)
	// IPAddresses are optional IP SANs (the authority's own server
	// certificate).
	IPAddresses []net.IP
	// Subject optionally replaces the leaf subject (default: the CA's
	// Organization). It carries no identity: SPIFFE identity is only the
	// URI SAN.
	Subject pkix.Name
}

// X509SVID is a minted X509-SVID.
type X509SVID struct {
	ID spiffeid.ID
	// Certificates is the leaf first, then, when the CA is an intermediate
	// under an upstream CA, the signing CA certificate and any upstream
	// intermediates; never the root, which is in the bundle.
	// The CA certificates are shared and must not be modified.
	Certificates []*x509.Certificate
	ExpiresAt    time.Time
	SerialNumber *big.Int
}

var leafExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}

// x509Issuer is the immutable, precomputed signing side of the active
// X.509 CA: nothing is parsed or marshalled again per mint.
type x509Issuer struct {
	id          string
	cert        *x509.Certificate
	signer      crypto.Signer
	chain       []*x509.Certificate // cert and upstream intermediates; empty when cert is a self-signed root
	root        *x509.Certificate   // the upstream root; nil when cert is a self-signed root
	notBefore   time.Time
	notAfter    time.Time
	leafSubject []byte // DER of the leaf subject
}

func newX509Issuer(a *authority, subject pkix.Name) (*x509Issuer, error) {
	if a.signer == nil {
		return nil, fmt.Errorf("ca: x509 authority %s has no key", a.id)
	}
	raw, err := asn1.Marshal(pkix.Name{Organization: subject.Organization}.ToRDNSequence())
	if err != nil {
		return nil, fmt.Errorf("ca: encode leaf subject: %w", err)
	}
	var chain []*x509.Certificate // a self-signed CA is the root: in the bundle, not the chain
	var root *x509.Certificate
	if a.root == nil || !bytes.Equal(a.root.Raw, a.cert.Raw) {
		chain = append([]*x509.Certificate{a.cert}, a.intermediates...)
		root = a.root
	}
	return &x509Issuer{
		id:          a.id,
		cert:        a.cert,
		signer:      a.signer,
		chain:       chain,
		root:        root,
		notBefore:   a.cert.NotBefore,
		notAfter:    a.cert.NotAfter,
		leafSubject: raw,
	}, nil
}

// MintX509SVID issues an X509-SVID for p.ID and p.PublicKey, signed by the
// active X.509 CA. The leaf has exactly one URI SAN (the SPIFFE ID), is not
// a CA, has key usage digitalSignature (plus keyEncipherment for RSA keys),
// extended key usages serverAuth and clientAuth, a subject key identifier
// (as RFC 5280 asks of end-entity certificates), a random 128-bit serial,
// NotBefore ten seconds in the past (never before the CA's NotBefore),
// and NotAfter = min(now+TTL, CA expiry).
//
// Refusals wrap ErrInvalidParams, ErrUnsupportedKey or ErrWeakKey;
// ErrAuthorityExpired and ErrAuthorityNotYetValid say the clock reads
// past the active CA's life, or so far before it that the SVID would
// never be valid. An SVID signed by a CA revoked while it was made
// (replaced, then revoked) is not returned, nor the failure of a CA
// revoked (and its key destroyed) before it signed: it is made again by
// the active CA.
func (c *CA) MintX509SVID(ctx context.Context, p X509Params) (*X509SVID, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := c.checkID(p.ID); err != nil {
		return nil, err
	}
	ttl, err := resolveTTL(p.TTL, c.cfg.X509SVIDTTL)
	if err != nil {
		return nil, err
	}
	usage, err := leafKeyUsage(p.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := checkSANs(p.DNSNames, p.IPAddresses); err != nil {
		return nil, err
	}
	return signAgain("x509-svid not issued", func() (*X509SVID, error) { return c.mintX509(p, ttl, usage) })
}

// mintX509 signs the X509-SVID of p with the active X.509 CA of the
// moment; errRevokedWhileSigning when that CA was revoked (replaced,
// then revoked) before the SVID was made: one it signed is not handed
// out, as it would verify with no bundle.
func (c *CA) mintX509(p X509Params, ttl time.Duration, usage x509.KeyUsage) (*X509SVID, error) {
	// The time first, then the view: an authority read after the time
	// is at least as new as the time, so a rotation in between cannot
	// make a current authority look expired.
	now := c.now()
	iss := c.view.Load().x509
	if !now.Before(iss.notAfter) {
		// The view read may predate a rotation that happened since: read
		// it again, with the time, before calling the authority expired.
		now = c.now()
		iss = c.view.Load().x509
		if !now.Before(iss.notAfter) {
			return nil, fmt.Errorf("%w: x509 ca %s expired at %s", ErrAuthorityExpired, iss.id, iss.notAfter)
		}
	}
	// Never before the CA's own NotBefore: a clock that reads earlier
	// (stepped back since the CA was made) shortens the SVID, and one
	// that reads earlier by the whole lifetime would make a certificate
	// valid at no instant, which is refused.
	notBefore, notAfter := laterOf(now.Add(-backdate), iss.notBefore), earlierOf(now.Add(ttl), iss.notAfter)
	if !notBefore.Before(notAfter) {
		return nil, fmt.Errorf("%w: x509 ca %s is valid from %s, and the clock reads %s: an SVID it signed now would never be valid (was the clock stepped back?)",
			ErrAuthorityNotYetValid, iss.id, iss.notBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	subject, err := leafSubject(p.Subject, iss.leafSubject)
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(p.PublicKey)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		RawSubject:            subject,
		SubjectKeyId:          skid,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           leafExtKeyUsage,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{p.ID.URL()},
		DNSNames:              p.DNSNames,
		IPAddresses:           p.IPAddresses,
	}
	// CreateCertificate verifies the signature it produced against the
	// CA's public key, so the signature needs no second check below.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, iss.cert, p.PublicKey, iss.signer)
	if err != nil {
		if c.view.Load().revoked(iss.id) {
			// Its key destroyed with it (an HSM's, say): the active CA
			// signs instead.
			return nil, errRevokedWhileSigning
		}
		return nil, fmt.Errorf("ca: sign x509-svid: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse issued x509-svid: %w", err)
	}
	if err := checkIssued(leaf, p, usage, iss.notAfter); err != nil {
		return nil, fmt.Errorf("ca: issued x509-svid failed validation: %w", err)
	}
	if iss.root != nil && len(p.DNSNames)+len(p.IPAddresses) > 0 {
		// DNS and IP names are held to the upstream's name constraints
		// (the trust domain's SPIFFE IDs were, at start): a certificate
		// no relying party would accept is not handed out.
		if err := verifyUnder(leaf, iss.chain, iss.root, now); err != nil {
			return nil, fmt.Errorf("%w: the upstream CA does not allow these names: %v", ErrInvalidParams, err)
		}
	}
	// Still active (no search), or replaced meanwhile and not revoked.
	if v := c.view.Load(); v.x509 != iss && v.revoked(iss.id) {
		return nil, errRevokedWhileSigning
	}
	certs := make([]*x509.Certificate, 0, 1+len(iss.chain))
	certs = append(append(certs, leaf), iss.chain...)
	return &X509SVID{ID: p.ID, Certificates: certs, ExpiresAt: leaf.NotAfter, SerialNumber: leaf.SerialNumber}, nil
}

// maxSignAttempts bounds how often a mint signs again, the authority that
// signed having been revoked meanwhile.
const maxSignAttempts = 3

// errRevokedWhileSigning: the authority that signed was revoked
// (replaced, then revoked) before what it signed was returned.
var errRevokedWhileSigning = errors.New("ca: the authority was revoked while it signed")

// signAgain is what sign makes, made again while the authority that
// signed it was revoked meanwhile (errRevokedWhileSigning), at most
// maxSignAttempts times; what says what failed then.
func signAgain[T any](what string, sign func() (T, error)) (T, error) {
	for range maxSignAttempts {
		v, err := sign()
		if !errors.Is(err, errRevokedWhileSigning) {
			return v, err
		}
	}
	var none T
	return none, fmt.Errorf("ca: %s: %w, %d times", what, errRevokedWhileSigning, maxSignAttempts)
}

// revoked reports whether the authority id is no longer in v's state
// (nor so in its bundle): neither active, prepared, nor replaced and not
// revoked.
func (v *view) revoked(id string) bool {
	return !slices.ContainsFunc(v.infos, func(a AuthorityInfo) bool { return a.ID == id })
}

// checkIssued re-checks the SPIFFE properties of what was actually encoded.
// It deliberately skips signature verification: CreateCertificate already
// verified the signature over exactly these bytes with the issuer's public
// key, and the issuer's own chain was checked when it was created.
func checkIssued(leaf *x509.Certificate, p X509Params, usage x509.KeyUsage, caNotAfter time.Time) error {
	switch {
	case len(leaf.URIs) != 1 || leaf.URIs[0].String() != p.ID.String():
		return errors.New("uri san is not exactly the spiffe id")
	case leaf.IsCA || !leaf.BasicConstraintsValid:
		return errors.New("leaf is a ca or lacks basic constraints")
	case leaf.KeyUsage != usage:
		return errors.New("unexpected key usage")
	case !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) ||
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		return errors.New("missing serverAuth or clientAuth extended key usage")
	case leaf.NotAfter.After(caNotAfter):
		return errors.New("leaf outlives its ca")
	case !publicKeyEqual(leaf.PublicKey, p.PublicKey):
		return errors.New("public key differs from the requested one")
	case len(leaf.SubjectKeyId) == 0:
		return errors.New("no subject key identifier")
	}
	return nil
}

// checkID refuses zero IDs, IDs without a path (the trust domain itself)
// and IDs of other trust domains.
func (c *CA) checkID(id spiffeid.ID) error {
	switch {
	case id.IsZero():
		return fmt.Errorf("%w: spiffe id is required", ErrInvalidParams)
	case !id.MemberOf(c.td):
		return fmt.Errorf("%w: spiffe id %s is not in trust domain %s", ErrInvalidParams, id, c.td)
	case id.Path() == "":
		return fmt.Errorf("%w: spiffe id %s has no path", ErrInvalidParams, id)
	}
	return nil
}

func resolveTTL(ttl, def time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("%w: negative ttl %s", ErrInvalidParams, ttl)
	case ttl == 0:
		return def, nil
	}
	return ttl, nil
}

// checkSANs accepts plain host names (1..253 characters, labels of 1..63
// letters, digits and hyphens not starting or ending with a hyphen; no
// wildcards) and 4- or 16-byte IP addresses.
func checkSANs(names []string, ips []net.IP) error {
	for _, n := range names {
		if !ValidDNSName(n) {
			return fmt.Errorf("%w: invalid dns name %q", ErrInvalidParams, n)
		}
	}
	for _, ip := range ips {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("%w: invalid ip address", ErrInvalidParams)
		}
	}
	return nil
}

// leafSubject returns the DER subject for a leaf: def (precomputed) when
// n is empty, otherwise n encoded.
func leafSubject(n pkix.Name, def []byte) ([]byte, error) {
	if len(n.Country)+len(n.Organization)+len(n.OrganizationalUnit)+len(n.Locality)+
		len(n.Province)+len(n.StreetAddress)+len(n.PostalCode)+len(n.Names)+len(n.ExtraNames) == 0 &&
		n.SerialNumber == "" && n.CommonName == "" {
		return def, nil
	}
	raw, err := asn1.Marshal(n.ToRDNSequence())
	if err != nil {
		return nil, fmt.Errorf("%w: subject: %v", ErrInvalidParams, err)
	}
	if len(raw) <= 2 { // empty SEQUENCE: nothing encodable was set
		return def, nil
	}
	return raw, nil
}

// ValidDNSName reports whether n is a DNS name an X509-SVID (or the
// server's certificate) may carry: ASCII labels of letters, digits and
// hyphens (not at either end), at most 63 bytes each and 253 in all; no
// wildcard, no trailing dot.
func ValidDNSName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-') {
				return false
			}
		}
	}
	return true
}

func earlierOf(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
