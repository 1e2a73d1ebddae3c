package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/credfile"
)

// adminCredentialTTL is the lifetime asked for the bootstrap admin
// credential; the CA caps it at its own expiry. It is renewed while the
// server runs once half of it has passed.
const adminCredentialTTL = 12 * time.Hour

// AdminPaths returns where the bootstrap admin credential lives in dataDir:
// <data dir>/admin/svid.pem, svid.key (0600) and bundle.pem.
func AdminPaths(dataDir string) credfile.Paths {
	return credfile.In(filepath.Join(dataDir, "admin"))
}

// WriteAdminCredential writes the bootstrap admin X509-SVID, its key and
// the trust bundle into <data dir>/admin. Unless force is set, a
// certificate with more than half its life left is kept, but the bundle
// file is always brought up to date. A new credential is recorded in the
// audit log, so Run must be running.
func (a *Authority) WriteAdminCredential(ctx context.Context, force bool) error {
	a.credMu.Lock() // the maintenance loop and serve's start both write it
	defer a.credMu.Unlock()
	p := AdminPaths(a.cfg.DataDir)
	if err := credfile.PrivateDir(filepath.Dir(p.Cert)); err != nil {
		return fmt.Errorf("authority: admin credential: %w", err)
	}
	if bundle := credfile.EncodeCertsPEM(a.ca.X509Authorities()); !fileHolds(p.Bundle, bundle) {
		if err := credfile.WriteFileAtomic(p.Bundle, bundle, 0o644); err != nil {
			return err
		}
	}
	if !force && a.credentialFresh(p.Cert) {
		// Still held to the private-key rule: a key others may read is
		// refused now, not at the next renewal. (A key gone, or one that
		// is not the certificate's: a new credential, below. The server
		// may have stopped between writing a new key and its
		// certificate: the credential is made again for the key there.)
		b, err := credfile.ReadPrivate(p.Key)
		if err == nil && certifiesKey(p.Cert, b) {
			return nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("authority: admin credential: %w", err)
		}
	}
	key, err := loadOrCreateKey(p.Key)
	if err != nil {
		return err
	}
	svid, err := a.ca.MintX509SVID(ctx, ca.X509Params{ID: AdminID(a.td), PublicKey: key.Public(), TTL: adminCredentialTTL})
	if err != nil {
		return fmt.Errorf("authority: mint admin credential: %w", err)
	}
	if _, err := a.record(ctx, event{typ: "svid.issued", subject: svid.ID.String(), details: map[string]any{
		"kind": "x509", "purpose": "bootstrap admin credential", "serial": svid.SerialNumber.Text(16), "certificate_sha256": CertificateSHA256(svid.Certificates[0]), "expires_at": svid.ExpiresAt.UTC(),
	}}); err != nil {
		return err
	}
	if err := credfile.WriteFileAtomic(p.Cert, credfile.EncodeCertsPEM(svid.Certificates), 0o644); err != nil {
		return err
	}
	a.log.Info("wrote admin credential", "spiffe_id", AdminID(a.td).String(), "expires_at", svid.ExpiresAt.Format(time.RFC3339), "path", p.Cert)
	return nil
}

func (a *Authority) credentialFresh(path string) bool {
	certs, err := readCerts(path)
	if err != nil {
		return false
	}
	return a.now().Before(halfLife(certs[0])) && a.chainsToBundle(certs)
}

// certifiesKey reports whether the certificate at path is for the
// private key keyPEM holds.
func certifiesKey(path string, keyPEM []byte) bool {
	certs, err := readCerts(path)
	if err != nil {
		return false
	}
	key, err := credfile.ParseKeyPEM(keyPEM)
	if err != nil {
		return false
	}
	return credfile.KeyMatches(key, certs[0])
}

// halfLife is when half of cert's life has passed.
func halfLife(cert *x509.Certificate) time.Time {
	return cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2)
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return credfile.ParseCertsPEM(b)
}

// adminRefreshWait is how long the maintenance loop waits before it
// looks at the admin credential again: a minute, or less when the
// credential reaches half its life sooner (one the CA capped at its own
// expiry, near a rotation, may live a minute or less), so that it is
// renewed before it expires.
func (a *Authority) adminRefreshWait() time.Duration {
	certs, err := readCerts(AdminPaths(a.cfg.DataDir).Cert)
	if err != nil {
		return time.Minute
	}
	return min(time.Minute, max(time.Second, halfLife(certs[0]).Sub(a.now())))
}

func (a *Authority) chainsToBundle(certs []*x509.Certificate) bool {
	roots := x509.NewCertPool()
	for _, c := range a.ca.X509Authorities() {
		roots.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: a.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

func loadOrCreateKey(path string) (crypto.Signer, error) {
	// A key another user could read, or could have put there, is not
	// certified as this authority's administrator.
	if b, err := credfile.ReadPrivate(path); err == nil {
		key, err := credfile.ParseKeyPEM(b)
		if err != nil { // its content never in the error
			return nil, fmt.Errorf("authority: admin key %s: %w (remove it: a new admin credential is made for a new key)", path, err)
		}
		return key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("authority: read key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("authority: generate key: %w", err)
	}
	b, err := credfile.EncodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return key, credfile.WriteFileAtomic(path, b, 0o600)
}

// fileHolds reports whether the file at path holds exactly b (so the
// once-a-minute refresh writes and fsyncs only when the bundle changed).
func fileHolds(path string, b []byte) bool {
	old, err := os.ReadFile(path)
	return err == nil && bytes.Equal(old, b)
}
