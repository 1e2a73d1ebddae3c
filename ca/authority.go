package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Kind is the kind of an authority.
type Kind string

// Authority kinds.
const (
	KindX509 Kind = "x509" // an X.509 CA certificate and key
	KindJWT  Kind = "jwt"  // a JWT-SVID signing key
)

// State is the rotation state of an authority.
type State string

// Authority states. An authority is created prepared, becomes active, then
// old, and is pruned after it expires.
const (
	// StatePrepared: published in the bundle, signs nothing yet.
	StatePrepared State = "prepared"
	// StateActive: signs everything that is minted. One per kind.
	StateActive State = "active"
	// StateOld: signs nothing; stays in the bundle until it expires (and
	// a minute more, for verifiers' leeway).
	StateOld State = "old"
)

// AuthorityInfo describes one authority for administrative display.
type AuthorityInfo struct {
	// ID is the public identifier: the hex Subject Key ID of an X.509 CA
	// certificate, or the JWT "kid" of a JWT key.
	ID        string    `json:"id"`
	Kind      Kind      `json:"kind"`
	State     State     `json:"state"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// KeyID is the KeyManager id of the private key.
	KeyID string `json:"key_id"`
	// KeyStore is where that key is, when the key manager's user says
	// (the authority: "keys_dir" or "pkcs11"); the CA leaves it empty.
	KeyStore string `json:"key_store,omitempty"`
	// Upstream is true for X.509 CAs signed by the configured upstream.
	Upstream bool `json:"upstream,omitempty"`
	// ActivatesAt is when a prepared authority takes over ahead of its
	// schedule, as an admin asked (Expedite); zero when it follows it.
	ActivatesAt time.Time `json:"activates_at,omitzero"`
	// ReplacedAt is when an old authority stopped signing; zero for one
	// that never signed, or was replaced before this release.
	ReplacedAt time.Time `json:"replaced_at,omitzero"`
}

const (
	// backdate is subtracted from NotBefore to tolerate clock skew.
	backdate = 10 * time.Second
	// pruneLeeway is how long an authority stays in the bundle after its
	// expiry, matching the default exp leeway of common JWT validators
	// (go-jose's jwt.DefaultLeeway), and more than delegation.Verify's
	// (30s): a delegation hop lasts no longer than its JWT key nor than
	// the X.509 CA of its delegator's SVID, and until its exp plus that
	// leeway a verifier checks the hop's signature with the one and its
	// delegator's with the other. An expired X.509 CA kept that long
	// lets no X509-SVID verify at a time it has expired: its chains are
	// valid only while every certificate in them is.
	pruneLeeway = time.Minute
	// minAuthorityLifetime is the shortest X.509 CA the CA will create
	// when the upstream certificate is about to expire.
	minAuthorityLifetime = time.Minute
)

// authority is one X.509 CA or JWT key. Values are immutable once
// published in a caState: transitions copy (see withState).
type authority struct {
	kind      Kind
	id        string
	keyID     string
	state     State
	notBefore time.Time
	notAfter  time.Time
	publicKey crypto.PublicKey

	// X.509 only.
	cert          *x509.Certificate   // our CA certificate
	intermediates []*x509.Certificate // upstream certificates between cert and root
	root          *x509.Certificate   // trust anchor for the bundle (cert itself when self-signed)

	// signer is the private key; nil for old authorities loaded from the
	// journal (they never sign again).
	signer crypto.Signer

	// activateAt is when a prepared authority becomes active at the
	// latest (Expedite); zero: on schedule.
	activateAt time.Time
	// replacedAt is when an old authority stopped signing, replaced by
	// its successor; zero for one that never signed (retired unused) and
	// one replaced before this was kept.
	replacedAt time.Time
}

// withState is a copy of a in state s; one no longer prepared has no
// activation time.
func (a *authority) withState(s State) *authority {
	b := *a
	b.state = s
	if s != StatePrepared {
		b.activateAt = time.Time{}
	}
	return &b
}

// life is the authority's lifetime.
func (a *authority) life() time.Duration { return a.notAfter.Sub(a.notBefore) }

// publishedAt is when the authority was made, and so first published: an
// X.509 CA's notBefore is backdated, a JWT key's cut to the second.
func (a *authority) publishedAt() time.Time {
	if a.kind == KindX509 {
		return a.notBefore.Add(backdate)
	}
	return a.notBefore
}

// at returns the instant when num/den of the authority's lifetime has
// elapsed.
func (a *authority) at(num, den int64) time.Time {
	life := a.notAfter.Sub(a.notBefore)
	return a.notBefore.Add(time.Duration(int64(life) / den * num))
}

// pruneAfter is the instant after which the authority leaves the bundle.
// Everything it signed has expired by then, by more than verifiers'
// leeway.
func (a *authority) pruneAfter() time.Time {
	return a.notAfter.Add(pruneLeeway)
}

func (a *authority) info() AuthorityInfo {
	return AuthorityInfo{
		ID:          a.id,
		Kind:        a.kind,
		State:       a.state,
		NotBefore:   a.notBefore,
		NotAfter:    a.notAfter,
		KeyID:       a.keyID,
		Upstream:    a.kind == KindX509 && !a.root.Equal(a.cert),
		ActivatesAt: a.activateAt,
		ReplacedAt:  a.replacedAt,
	}
}

// newAuthority generates a key and creates a prepared authority of kind.
// On failure the generated key is deleted again.
func (c *CA) newAuthority(ctx context.Context, kind Kind, now time.Time) (*authority, error) {
	keyID := newKeyID(kind)
	signer, err := c.km.GenerateKey(ctx, keyID, c.cfg.KeyType)
	if err != nil {
		return nil, fmt.Errorf("ca: generate %s authority key: %w", kind, err)
	}
	var a *authority
	if err = checkAuthorityKey(signer.Public()); err == nil {
		if kind == KindX509 {
			a, err = c.signX509Authority(keyID, signer, now)
		} else {
			a, err = newJWTAuthority(keyID, signer, now, c.cfg.JWTKeyTTL)
		}
	}
	if err != nil {
		c.deleteKeys(ctx, []string{keyID})
		return nil, err
	}
	return a, nil
}

// signX509Authority creates the CA certificate for signer: self-signed, or
// an intermediate signed by the upstream and never outliving it.
func (c *CA) signX509Authority(keyID string, signer crypto.Signer, now time.Time) (*authority, error) {
	cert, intermediates, root, err := c.cfg.x509CACert(signer, now)
	if err != nil {
		return nil, err
	}
	return &authority{
		kind:          KindX509,
		id:            hex.EncodeToString(cert.SubjectKeyId),
		keyID:         keyID,
		state:         StatePrepared,
		notBefore:     cert.NotBefore,
		notAfter:      cert.NotAfter,
		publicKey:     cert.PublicKey,
		cert:          cert,
		intermediates: intermediates,
		root:          root,
		signer:        signer,
	}, nil
}

// x509CACert creates an X.509 CA certificate for signer's key: self-signed,
// or an intermediate signed by the upstream, never outliving it and
// verified under it (an upstream whose name constraints or extended key
// usages leave out the trust domain's SVIDs signs no CA). It returns the
// certificate, the upstream intermediates and the root of the bundle.
func (cfg *Config) x509CACert(signer crypto.Signer, now time.Time) (cert *x509.Certificate, intermediates []*x509.Certificate, root *x509.Certificate, err error) {
	serial := randomSerial()
	subject := cfg.Subject
	subject.SerialNumber = serial.String()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(cfg.CATTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{cfg.TrustDomain.ID().URL()},
	}
	parent, parentSigner := tmpl, signer
	up := cfg.Upstream
	if up != nil {
		if limit := up.notAfter(); tmpl.NotAfter.After(limit) {
			tmpl.NotAfter = limit
		}
		if tmpl.NotAfter.Sub(now) < minAuthorityLifetime {
			return nil, nil, nil, fmt.Errorf("ca: upstream chain expires at %s, too soon to sign a new CA", up.notAfter().UTC())
		}
		parent, parentSigner = up.Chain[0], up.Signer
		intermediates = append(intermediates, up.Chain[:len(up.Chain)-1]...)
		root = up.Chain[len(up.Chain)-1]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, signer.Public(), parentSigner)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca: create x509 ca certificate: %w", err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, nil, fmt.Errorf("ca: parse new x509 ca certificate: %w", err)
	}
	if up == nil {
		return cert, nil, cert, nil
	}
	if err := verifyUnder(cert, intermediates, root, now); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: the upstream CA cannot sign this trust domain's CAs: %v", ErrInvalidConfig, err)
	}
	return cert, intermediates, root, nil
}

// verifyUnder verifies cert through intermediates to root at now for each
// extended key usage an X509-SVID has, as relying parties do: the
// upstream's name constraints and extended key usages apply to
// everything below it.
func verifyUnder(cert *x509.Certificate, intermediates []*x509.Certificate, root *x509.Certificate, now time.Time) error {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	for _, eku := range leafExtKeyUsage {
		opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{eku}}
		if _, err := cert.Verify(opts); err != nil {
			return err
		}
	}
	return nil
}

func newJWTAuthority(keyID string, signer crypto.Signer, now time.Time, ttl time.Duration) (*authority, error) {
	pub := signer.Public()
	kid, err := JWKThumbprint(pub)
	if err != nil {
		return nil, err
	}
	return &authority{
		kind:      KindJWT,
		id:        kid,
		keyID:     keyID,
		state:     StatePrepared,
		notBefore: now.UTC().Truncate(time.Second),
		notAfter:  now.Add(ttl).UTC().Truncate(time.Second),
		publicKey: pub,
		signer:    signer,
	}, nil
}

// JWKThumbprint is the RFC 7638 SHA-256 thumbprint of a public key,
// base64url-encoded without padding: the CA's JWT key ids, and how the
// audit log names a peer's JWT keys.
func JWKThumbprint(pub crypto.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("ca: jwk thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// deleteUnsaved deletes the keys of a state whose save failed, except
// those the journal holds all the same (a save reported failed may have
// been kept: deleting its keys would leave an authority that cannot
// start). If the journal cannot be read, every key is kept: an orphaned
// key file is harmless, a missing one is not.
func (c *CA) deleteUnsaved(ctx context.Context, keyIDs []string) {
	data, err := c.journal.Load(context.WithoutCancel(ctx))
	var saved *caState
	if err == nil && data != nil {
		saved, err = decodeState(c.td, data)
	}
	if err != nil {
		c.log.Warn("ca: keys of a state whose save failed are kept: the journal could not be read", "key_ids", keyIDs, "err", err)
		return
	}
	var unsaved []string
	for _, id := range keyIDs {
		if saved == nil || !slices.ContainsFunc(saved.auths, func(a *authority) bool { return a.keyID == id }) {
			unsaved = append(unsaved, id)
		}
	}
	c.deleteKeys(ctx, unsaved)
}

// deleteKeys deletes keys best-effort, logging failures (an orphaned key
// file is harmless; a failed rotation is not).
func (c *CA) deleteKeys(ctx context.Context, keyIDs []string) {
	for _, id := range keyIDs {
		err := c.km.DeleteKey(context.WithoutCancel(ctx), id)
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			c.log.Warn("ca: delete key failed", "key_id", id, "err", err)
		}
	}
}
