// Package tpmtest provides what TPM attestation tests need besides the
// simulator: a stand-in TPM manufacturer CA that issues EK certificates
// shaped like real ones (empty subject, a critical subjectAltName holding
// only a directoryName with the TCG TPM manufacturer, model and version
// attributes, the tcg-kp-EKCertificate extended key usage).
package tpmtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"time"
)

// TCG OIDs of the EK Credential Profile.
var (
	oidManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertEKU    = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidSAN          = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// CA is a manufacturer CA.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
	// until is when the certificates it issues expire (zero: a day after
	// each is issued).
	until time.Time
}

// NewCA creates a manufacturer root CA valid for a day.
func NewCA(name string) (*CA, error) { return newCA(name, time.Time{}) }

// NewCAUntil creates a manufacturer root CA whose certificate, and every
// certificate it issues, is valid until notAfter: for certificates
// recorded once in test data.
func NewCAUntil(name string, notAfter time.Time) (*CA, error) { return newCA(name, notAfter) }

func newCA(name string, until time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	notAfter := until
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{name}, CommonName: name + " EK Root CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key, until: until}, nil
}

// PEM is the CA certificate in PEM, as an operator's ek_ca_roots file.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// IssueEKCert issues a DER EK certificate for pub (an *rsa.PublicKey or
// *ecdsa.PublicKey).
func (ca *CA) IssueEKCert(pub crypto.PublicKey) ([]byte, error) {
	return ca.IssueCert(pub, nil, []asn1.ObjectIdentifier{oidEKCertEKU})
}

// IssueCert issues a DER certificate for pub shaped like an EK
// certificate but with the extended key usages given (none: no such
// extension).
func (ca *CA) IssueCert(pub crypto.PublicKey, eku []x509.ExtKeyUsage, unknownEKU []asn1.ObjectIdentifier) ([]byte, error) {
	dir, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: oidManufacturer, Value: "id:474F4F47"}},
		{{Type: oidModel, Value: "mandate-test"}},
		{{Type: oidVersion, Value: "id:00010002"}},
	})
	if err != nil {
		return nil, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dir}})
	if err != nil {
		return nil, err
	}
	notAfter := ca.until
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:        eku,
		UnknownExtKeyUsage: unknownEKU,
		ExtraExtensions:    []pkix.Extension{{Id: oidSAN, Critical: true, Value: san}},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
}
