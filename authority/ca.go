package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/ca/hsm"
	"mandate.dev/mandate/credfile"
)

// caKeyDir is the directory of the CA's keys in dataDir.
func caKeyDir(dataDir string) string { return filepath.Join(dataDir, "keys") }

// openCA opens the CA with its keys in <data dir>/keys, or in the token
// of ca.pkcs11, and its state in the store, creating both on first
// start. With a token, the keys an authority made in keys/ before it
// had one are used from there until their authorities are gone
// (keysIntoToken).
func (a *Authority) openCA(ctx context.Context) error {
	var km ca.KeyManager = a.hsm
	switch _, err := os.Lstat(caKeyDir(a.cfg.DataDir)); {
	case a.hsm == nil:
		disk, err := ca.NewDiskKeyManager(caKeyDir(a.cfg.DataDir))
		if err != nil {
			return err
		}
		a.caKeys, km = disk, disk
	case err == nil:
		disk, err := ca.NewDiskKeyManager(caKeyDir(a.cfg.DataDir))
		if err != nil {
			return err
		}
		a.caKeys, km = disk, keysIntoToken{disk: disk, token: a.hsm}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("authority: %w", err)
	}
	cc := a.cfg.CA
	cfg := ca.Config{
		TrustDomain: a.td,
		KeyManager:  km,
		// A token keeps its keys apart from the data directory, and
		// backups hold none of them.
		KeysNotRestored: a.hsm != nil,
		Journal:         caJournal{a},
		KeyType:         ca.KeyType(cc.KeyType),
		CATTL:           cc.CATTL.D(),
		JWTKeyTTL:       cc.JWTKeyTTL.D(),
		X509SVIDTTL:     cc.X509SVIDTTL.D(),
		JWTSVIDTTL:      cc.JWTSVIDTTL.D(),
		RefreshHint:     a.cfg.Federation.BundleRefreshHint.D(),
		Now:             a.now,
		Logger:          a.log.With("component", "ca"),
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
			// A key of a valid authority the stored CA state names is
			// neither in the token nor in keys/: made in another token, or
			// deleted from it after a backup that is restored here. (One of
			// an authority that has expired is replaced: see ca.New.)
			return fmt.Errorf("authority: %w (looked for in the token, and in %s): is ca.pkcs11 the token the CA's keys were made in? If this data directory is a restored backup: the key of an authority still valid was deleted from the token after the backup was made (its authority revoked); restore a more recent backup", err, caKeyDir(a.cfg.DataDir))
		case errors.Is(err, ca.ErrKeyNotFound):
			// A key the stored CA state names is gone: never replaced
			// silently (SVIDs and tokens it signed would stop verifying).
			return fmt.Errorf("authority: %w: restore the CA's keys (%s) from a backup, or, if they were made in a PKCS#11 token, configure it (ca.pkcs11)", err, caKeyDir(a.cfg.DataDir))
		}
		return fmt.Errorf("authority: %w", err)
	}
	if n := a.CAKeysOnDisk(); a.hsm != nil && n > 0 {
		a.log.Warn("ca.pkcs11: keys the CA made before it had a token are still in its keys directory, and sign until their authorities are replaced (on schedule, or sooner: mandate admin ca rotate, after revoking a prepared authority whose key is there, which a rotation would activate); each is deleted from there once its authority is gone. New keys are made in the token",
			"keys_on_disk", n, "dir", caKeyDir(a.cfg.DataDir))
	}
	return nil
}

// CAKeysOnDisk is how many of the keys the CA uses now are files in
// <data dir>/keys: all of them without ca.pkcs11; with it, those made
// before the authority had a token, until their authorities are gone.
func (a *Authority) CAKeysOnDisk() int {
	if a.caKeys == nil {
		return 0
	}
	n := 0
	_ = a.ca.Still(func(keyIDs []string) error {
		for _, id := range keyIDs {
			if a.keyStore(id) == "keys_dir" {
				n++
			}
		}
		return nil
	})
	return n
}

// keyStore is where the CA's key keyID is: "keys_dir" (<data dir>/keys)
// or "pkcs11" (the token of ca.pkcs11).
func (a *Authority) keyStore(keyID string) string {
	if a.hsm == nil {
		return "keys_dir"
	}
	if a.caKeys != nil {
		if _, err := os.Lstat(a.caKeys.Path(keyID)); err == nil {
			return "keys_dir"
		}
	}
	return "pkcs11"
}

// keysIntoToken is the CA's key manager of an authority that kept its
// keys in keys/ and has a token now (ca.pkcs11): new keys are made in
// the token; a key is looked for, and deleted, in keys/ first, then in
// the token. The keys of keys/ so sign until their authorities are
// replaced, and are deleted with them: no key is moved, and none ever
// leaves the token.
type keysIntoToken struct {
	disk  *ca.DiskKeyManager
	token ca.KeyManager
}

func (k keysIntoToken) GenerateKey(ctx context.Context, id string, kt ca.KeyType) (crypto.Signer, error) {
	return k.token.GenerateKey(ctx, id, kt)
}

func (k keysIntoToken) GetKey(ctx context.Context, id string) (crypto.Signer, error) {
	s, err := k.disk.GetKey(ctx, id)
	if errors.Is(err, ca.ErrKeyNotFound) {
		return k.token.GetKey(ctx, id)
	}
	return s, err
}

func (k keysIntoToken) DeleteKey(ctx context.Context, id string) error {
	err := k.disk.DeleteKey(ctx, id)
	if errors.Is(err, ca.ErrKeyNotFound) {
		return k.token.DeleteKey(ctx, id)
	}
	return err
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
