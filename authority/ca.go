package authority

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/ca/hsm"
	"mandate.dev/mandate/credfile"
)

// caKeyDir is the directory of the CA's keys in dataDir.
func caKeyDir(dataDir string) string { return filepath.Join(dataDir, "keys") }

// openCA opens the CA with its keys in <data dir>/keys and its state in
// the store, creating both on first start.
func (a *Authority) openCA(ctx context.Context) error {
	var km ca.KeyManager = a.hsm
	if a.hsm == nil {
		disk, err := ca.NewDiskKeyManager(caKeyDir(a.cfg.DataDir))
		if err != nil {
			return err
		}
		a.caKeys, km = disk, disk
	}
	cc := a.cfg.CA
	cfg := ca.Config{
		TrustDomain: a.td,
		KeyManager:  km,
		Journal:     caJournal{a},
		KeyType:     ca.KeyType(cc.KeyType),
		CATTL:       cc.CATTL.D(),
		JWTKeyTTL:   cc.JWTKeyTTL.D(),
		X509SVIDTTL: cc.X509SVIDTTL.D(),
		JWTSVIDTTL:  cc.JWTSVIDTTL.D(),
		RefreshHint: a.cfg.Federation.BundleRefreshHint.D(),
		Now:         a.now,
		Logger:      a.log.With("component", "ca"),
	}
	if cfg.Upstream = a.upstream; cfg.Upstream != nil {
		// An X.509 CA never outlives the upstream CA that signs it: said
		// at start, before rotations start failing at its expiry.
		if end := cfg.Upstream.Chain[0].NotAfter; end.Before(a.now().Add(cc.CATTL.D())) {
			a.log.Warn("ca.upstream_cert_file expires within ca.ca_ttl: X.509 CAs are cut short at its expiry, and none can be made after it; renew the upstream CA",
				"upstream_not_after", end.UTC(), "ca_ttl", cc.CATTL.D())
		}
		// The chain's last certificate is what the bundle publishes as
		// the trust anchor. One that is not a root verifies SVIDs in Go,
		// but relying parties built on OpenSSL (and others that want a
		// chain to end at a self-signed root) refuse them.
		if last := cfg.Upstream.Chain[len(cfg.Upstream.Chain)-1]; !selfSigned(last) {
			a.log.Warn("ca.upstream_cert_file does not end with a root certificate: its last certificate is published in the bundle as the trust anchor, and relying parties that want a chain to end at a self-signed root (OpenSSL's default) refuse the SVIDs; append the root certificate to the file",
				"last_subject", last.Subject.String(), "last_issuer", last.Issuer.String())
		}
	}
	var err error
	if a.ca, err = ca.New(ctx, cfg); err != nil {
		switch {
		case errors.Is(err, ca.ErrKeyNotFound) && a.hsm != nil:
			// A key of a valid authority the stored CA state names is not
			// in the token: made elsewhere, or deleted from it after a
			// backup that is restored here. (One of an authority that has
			// expired is replaced: see ca.New.)
			return fmt.Errorf("authority: %w: is ca.pkcs11 the token the CA's keys were made in? (keys made in %s stay there: ca.pkcs11 is for a new data directory) If this data directory is a restored backup: the key of an authority still valid was deleted from the token after the backup was made (its authority revoked); restore a more recent backup", err, caKeyDir(a.cfg.DataDir))
		case errors.Is(err, ca.ErrKeyNotFound):
			// A key the stored CA state names is gone: never replaced
			// silently (SVIDs and tokens it signed would stop verifying).
			return fmt.Errorf("authority: %w: restore the CA's keys (%s) from a backup, or, if they were made in a PKCS#11 token, configure it (ca.pkcs11)", err, caKeyDir(a.cfg.DataDir))
		}
		return fmt.Errorf("authority: %w", err)
	}
	return nil
}

// openHSM logs in to the token of ca.pkcs11, with the PIN of its
// pin_file (only this user's).
func openHSM(p PKCS11Config) (*hsm.KeyManager, error) {
	b, err := credfile.ReadPrivate(p.PINFile)
	if err != nil {
		return nil, fmt.Errorf("authority: ca.pkcs11.pin_file: %w", err)
	}
	pin := strings.TrimRight(string(b), "\r\n")
	if pin == "" || strings.ContainsAny(pin, "\r\n") {
		return nil, fmt.Errorf("authority: ca.pkcs11.pin_file %s: want the token's user PIN, on one line", p.PINFile)
	}
	m, err := hsm.Open(hsm.Config{Module: p.Module, TokenLabel: p.TokenLabel, PIN: pin})
	if err != nil {
		return nil, fmt.Errorf("authority: ca.pkcs11: %w", err)
	}
	return m, nil
}

// selfSigned reports whether c is a root: issued by itself, and signed
// with its own key.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func loadUpstream(certFile, keyFile string) (*ca.Upstream, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("ca.upstream_cert_file: %w", err)
	}
	chain, err := credfile.ParseCertsPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("ca.upstream_cert_file %s: %w", certFile, err)
	}
	// The upstream CA's key signs every X.509 authority: only this
	// user's, as the authority's own keys.
	kb, err := credfile.ReadPrivate(keyFile)
	if err != nil {
		return nil, fmt.Errorf("ca.upstream_key_file: %w", err)
	}
	key, err := credfile.ParseKeyPEM(kb)
	if err != nil {
		return nil, fmt.Errorf("ca.upstream_key_file %s: %w", keyFile, err)
	}
	return &ca.Upstream{Chain: chain, Signer: key}, nil
}
