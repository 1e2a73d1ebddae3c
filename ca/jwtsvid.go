package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// JWTParams is a request for a JWT-SVID.
type JWTParams struct {
	ID       spiffeid.ID   // required; must be in the CA's trust domain and have a path
	Audience []string      // required, non-empty, no empty entries
	TTL      time.Duration // 0 means Config.JWTSVIDTTL; capped at the key's expiry
}

// JWTSVID is a minted JWT-SVID.
type JWTSVID struct {
	Token     string
	ID        spiffeid.ID
	Audience  []string
	ExpiresAt time.Time
	KeyID     string // the "kid" header: the signing key's id in the bundle
}

// jwtIssuer is the active JWT key with its go-jose signer built once.
type jwtIssuer struct {
	kid      string
	signer   jose.Signer // typ "JWT"; safe for concurrent use
	key      jose.SigningKey
	notAfter time.Time
	typed    sync.Map // typ → jose.Signer, built on first use
}

// signerFor returns the issuer's signer with header typ.
func (i *jwtIssuer) signerFor(typ string) (jose.Signer, error) {
	if s, ok := i.typed.Load(typ); ok {
		return s.(jose.Signer), nil
	}
	s, err := jose.NewSigner(i.key, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		return nil, fmt.Errorf("ca: jwt signer: %w", err)
	}
	i.typed.Store(typ, s)
	return s, nil
}

// svidClaims are the JWT-SVID claims, in a fixed struct so that encoding
// is a single json.Marshal.
type svidClaims struct {
	Subject  string   `json:"sub"`
	Audience []string `json:"aud"`
	Expiry   int64    `json:"exp"`
	IssuedAt int64    `json:"iat"`
}

func newJWTIssuer(a *authority) (*jwtIssuer, error) {
	if a.signer == nil {
		return nil, fmt.Errorf("ca: jwt authority %s has no key", a.id)
	}
	op, err := newECOpaqueSigner(a.signer, a.id)
	if err != nil {
		return nil, err
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: op.alg, Key: op}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("ca: jwt signer: %w", err)
	}
	return &jwtIssuer{kid: a.id, signer: s, key: jose.SigningKey{Algorithm: op.alg, Key: op}, notAfter: a.notAfter}, nil
}

func (i *jwtIssuer) sign(payload []byte) (string, error) { return i.signAs(i.signer, payload) }

func (i *jwtIssuer) signAs(s jose.Signer, payload []byte) (string, error) {
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("ca: sign jwt: %w", err)
	}
	return jws.CompactSerialize()
}

// MintJWTSVID issues a JWT-SVID signed by the active JWT key (ES256 for
// P-256 keys, ES384 for P-384) with header kid and typ "JWT" and claims
// sub, aud, exp and iat; exp = min(now+TTL, key expiry).
func (c *CA) MintJWTSVID(ctx context.Context, p JWTParams) (*JWTSVID, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := c.checkID(p.ID); err != nil {
		return nil, err
	}
	if len(p.Audience) == 0 || slices.Contains(p.Audience, "") {
		return nil, fmt.Errorf("%w: audience must be non-empty", ErrInvalidParams)
	}
	ttl, err := resolveTTL(p.TTL, c.cfg.JWTSVIDTTL)
	if err != nil {
		return nil, err
	}
	// The time first, then the view: an authority read after the time
	// is at least as new as the time, so a rotation in between cannot
	// make a current authority look expired.
	now := c.now()
	iss := c.view.Load().jwt
	exp := earlierOf(now.Add(ttl), iss.notAfter).Unix()
	if exp <= now.Unix() {
		// The view read may predate a rotation that happened since: read
		// it again, with the time, before calling the key expired.
		now = c.now()
		iss = c.view.Load().jwt
		if exp = earlierOf(now.Add(ttl), iss.notAfter).Unix(); exp <= now.Unix() {
			return nil, fmt.Errorf("%w: jwt key %s expired at %s", ErrAuthorityExpired, iss.kid, iss.notAfter)
		}
	}
	aud := slices.Clone(p.Audience)
	payload, err := json.Marshal(svidClaims{Subject: p.ID.String(), Audience: aud, Expiry: exp, IssuedAt: now.Unix()})
	if err != nil {
		return nil, fmt.Errorf("ca: encode jwt claims: %w", err)
	}
	token, err := iss.sign(payload)
	if err != nil {
		return nil, err
	}
	return &JWTSVID{Token: token, ID: p.ID, Audience: aud, ExpiresAt: time.Unix(exp, 0).UTC(), KeyID: iss.kid}, nil
}

// JWTKeyNotAfter is when the active JWT key expires: nothing it signs
// may outlive it.
func (c *CA) JWTKeyNotAfter() time.Time { return c.view.Load().jwt.notAfter }

// SignJWT signs arbitrary claims (for example delegation tokens) with the
// active JWT key and header typ, returning the compact token and the key
// id. A typ other than "JWT" or "JOSE" keeps the token from being taken
// for a JWT-SVID (go-spiffe refuses those types). It caps nothing: claims
// must marshal to a JSON object that carries an "exp" not after
// expiresAt, and expiresAt must be in the future and not beyond the
// active key's expiry; otherwise the error wraps ErrInvalidParams.
func (c *CA) SignJWT(ctx context.Context, typ string, claims any, expiresAt time.Time) (token string, kid string, err error) {
	if err := ctx.Err(); err != nil {
		return "", "", err
	}
	// The time first, then the view: an authority read after the time
	// is at least as new as the time, so a rotation in between cannot
	// make a current authority look expired.
	now := c.now()
	iss := c.view.Load().jwt
	switch {
	case !expiresAt.After(now):
		return "", "", fmt.Errorf("%w: expiresAt %s is not in the future", ErrInvalidParams, expiresAt)
	case expiresAt.After(iss.notAfter):
		return "", "", fmt.Errorf("%w: expiresAt %s is beyond the active jwt key's expiry %s", ErrInvalidParams, expiresAt, iss.notAfter)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", "", fmt.Errorf("%w: encode claims: %v", ErrInvalidParams, err)
	}
	if err := checkExp(payload, expiresAt); err != nil {
		return "", "", err
	}
	if typ == "" {
		return "", "", fmt.Errorf("%w: a typ is required", ErrInvalidParams)
	}
	signer, err := iss.signerFor(typ)
	if err != nil {
		return "", "", err
	}
	token, err = iss.signAs(signer, payload)
	if err != nil {
		return "", "", err
	}
	return token, iss.kid, nil
}

// checkExp requires a JSON object payload with a numeric exp claim that is
// not after expiresAt.
func checkExp(payload []byte, expiresAt time.Time) error {
	if !bytes.HasPrefix(payload, []byte("{")) {
		return fmt.Errorf("%w: claims must encode to a json object", ErrInvalidParams)
	}
	var c struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || c.Exp == nil {
		return fmt.Errorf("%w: claims must include a numeric exp", ErrInvalidParams)
	}
	exp, err := c.Exp.Float64()
	if err != nil || exp > float64(expiresAt.Unix()) {
		return fmt.Errorf("%w: claims exp must not be after expiresAt %s", ErrInvalidParams, expiresAt)
	}
	return nil
}

// ecOpaqueSigner adapts any ECDSA crypto.Signer (software key, HSM, KMS)
// to go-jose, converting ASN.1 signatures to the JWS r||s form.
type ecOpaqueSigner struct {
	signer crypto.Signer
	jwk    *jose.JSONWebKey
	alg    jose.SignatureAlgorithm
	hash   crypto.Hash
	size   int // byte length of r and s
}

var _ jose.OpaqueSigner = (*ecOpaqueSigner)(nil)

func newECOpaqueSigner(s crypto.Signer, kid string) (*ecOpaqueSigner, error) {
	pub, ok := s.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("ca: jwt key %s is not an ecdsa key", kid)
	}
	op := &ecOpaqueSigner{signer: s}
	switch pub.Curve {
	case elliptic.P256():
		op.alg, op.hash, op.size = jose.ES256, crypto.SHA256, 32
	case elliptic.P384():
		op.alg, op.hash, op.size = jose.ES384, crypto.SHA384, 48
	default:
		return nil, fmt.Errorf("ca: jwt key %s: unsupported curve %s", kid, curveName(pub.Curve))
	}
	op.jwk = &jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(op.alg), Use: "sig"}
	return op, nil
}

func (o *ecOpaqueSigner) Public() *jose.JSONWebKey { return o.jwk }

func (o *ecOpaqueSigner) Algs() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{o.alg} }

func (o *ecOpaqueSigner) SignPayload(payload []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	if alg != o.alg {
		return nil, fmt.Errorf("ca: unexpected jws algorithm %s", alg)
	}
	h := o.hash.New()
	h.Write(payload)
	der, err := o.signer.Sign(rand.Reader, h.Sum(nil), o.hash)
	if err != nil {
		return nil, err
	}
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R.BitLen() > o.size*8 || sig.S.BitLen() > o.size*8 ||
		sig.R.Sign() <= 0 || sig.S.Sign() <= 0 {
		return nil, errors.New("ca: signer returned a malformed ecdsa signature")
	}
	out := make([]byte, 2*o.size)
	sig.R.FillBytes(out[:o.size])
	sig.S.FillBytes(out[o.size:])
	return out, nil
}
