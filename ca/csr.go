package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CSR errors, for callers that accept PKCS#10 requests.
var (
	// ErrInvalidCSR is returned by ParseCSR for input that is not a
	// well-formed, correctly self-signed PEM certificate request.
	ErrInvalidCSR = errors.New("ca: invalid certificate signing request")
	// ErrCSRIdentity is returned by ParseCSR when the request names a
	// SPIFFE ID other than the one being issued.
	ErrCSRIdentity = errors.New("ca: csr names another identity")
)

const maxCSRSize = 64 << 10

// ParseCSR parses a PEM "CERTIFICATE REQUEST", checks that its public key
// is acceptable for an X509-SVID (ErrUnsupportedKey/ErrWeakKey), that its
// URI SANs, if any, are exactly id (ErrCSRIdentity), and that it is signed
// by its own key, proving possession. It returns the public key. The rest
// of the request (subject, extensions) is ignored; DNS, e-mail and IP SANs
// are refused (ErrCSRIdentity): the CA
// alone decides the certificate's contents.
func ParseCSR(csrPEM []byte, id spiffeid.ID) (crypto.PublicKey, error) {
	if len(csrPEM) > maxCSRSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidCSR, maxCSRSize)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		// A well-formed key of a curve Go does not read (secp256k1,
		// brainpool) is a key Mandate does not sign for, not a bad CSR.
		if strings.Contains(err.Error(), "unsupported elliptic curve") {
			return nil, fmt.Errorf("%w: an elliptic curve other than P-256 or P-384", ErrUnsupportedKey)
		}
		return nil, fmt.Errorf("%w: the PEM block is not a PKCS#10 request: %s", ErrInvalidCSR, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "x509: "), "asn1: "))
	}
	if csr.PublicKey == nil {
		return nil, fmt.Errorf("%w: a public key algorithm other than ECDSA P-256 or P-384 and RSA (2048 bits or more)", ErrUnsupportedKey)
	}
	// The CSR's signature is its proof of possession: not over SHA-1
	// (which x509's check of a CSR still accepts).
	switch csr.SignatureAlgorithm {
	case x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1, x509.MD5WithRSA, x509.MD2WithRSA, x509.DSAWithSHA256:
		return nil, fmt.Errorf("%w: signed with %s; sign it with SHA-256 or better", ErrInvalidCSR, csr.SignatureAlgorithm)
	}
	if _, err := leafKeyUsage(csr.PublicKey); err != nil {
		return nil, err
	}
	for _, u := range csr.URIs {
		if u.String() != id.String() {
			return nil, fmt.Errorf("%w: csr names %q, request is for %q", ErrCSRIdentity, u.String(), id.String())
		}
	}
	if n := len(csr.DNSNames) + len(csr.EmailAddresses) + len(csr.IPAddresses); n > 0 {
		return nil, fmt.Errorf("%w: csr has %d dns, email or ip sans; an x509-svid names only its spiffe id", ErrCSRIdentity, n)
	}
	if len(csr.URIs) > 1 {
		return nil, fmt.Errorf("%w: csr has %d uri sans", ErrCSRIdentity, len(csr.URIs))
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: its signature does not verify (%s)", ErrInvalidCSR, strings.TrimPrefix(err.Error(), "x509: "))
	}
	return csr.PublicKey, nil
}

// JWTAlgorithm returns the JWS algorithm the CA signs with for a JWT
// authority public key ("ES256" for P-256, "ES384" for P-384), or "" for
// keys the CA does not sign with. Useful for JWKS "alg" fields.
func JWTAlgorithm(pub crypto.PublicKey) string {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return ""
	}
	switch k.Curve {
	case elliptic.P256():
		return "ES256"
	case elliptic.P384():
		return "ES384"
	}
	return ""
}
