package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	json "github.com/go-json-experiment/json/v1"
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

// jwtIssuer is the active JWT key, signing compact JWS.
type jwtIssuer struct {
	kid       string
	signer    *ecSigner
	notAfter  time.Time
	headers   sync.Map // typ → the base64url protected header, built on first use
	typesKept atomic.Int32
}

// maxHeaderTypes bounds the headers an issuer keeps (Mandate signs two
// types); others are built each time.
const maxHeaderTypes = 16

// headerFor returns the base64url protected header {"alg","kid","typ"}
// of the issuer's tokens of type typ.
func (i *jwtIssuer) headerFor(typ string) (string, error) {
	if h, ok := i.headers.Load(typ); ok {
		return h.(string), nil
	}
	b, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{i.signer.alg, i.kid, typ})
	if err != nil {
		return "", fmt.Errorf("ca: jwt header: %w", err)
	}
	h := base64.RawURLEncoding.EncodeToString(b)
	if i.typesKept.Add(1) <= maxHeaderTypes {
		i.headers.Store(typ, h)
	}
	return h, nil
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
	es, err := newECSigner(a.signer, a.id)
	if err != nil {
		return nil, err
	}
	return &jwtIssuer{kid: a.id, signer: es, notAfter: a.notAfter}, nil
}

// signAs returns the compact JWS (RFC 7515 §7.1) of payload with header
// typ typ: header and payload base64url, then the signature over both.
// The signing input is built in sb, and the token written once, at its
// size.
func (i *jwtIssuer) signAs(sb *scratch, typ string, payload []byte) (string, error) {
	hdr, err := i.headerFor(typ)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	in := append(sb.in[:0], hdr...)
	in = append(in, '.')
	in = enc.AppendEncode(in, payload)
	sb.in = in
	sig, err := i.signer.sign(in)
	if err != nil {
		return "", fmt.Errorf("ca: sign jwt: %w", err)
	}
	in = enc.AppendEncode(append(in, '.'), sig)
	sb.in = in
	var tok strings.Builder
	tok.Grow(len(in))
	tok.Write(in)
	return tok.String(), nil
}

// scratch is the memory a token is made in: its encoded claims and its
// signing input, pooled.
type scratch struct {
	claims bytes.Buffer
	in     []byte
}

var scratches = sync.Pool{New: func() any { return new(scratch) }}

// maxScratch bounds the scratch memory kept in the pool (a delegation
// token with its ancestors inside is up to about 32 KB, twice encoded).
const maxScratch = 128 << 10

func getScratch() *scratch { return scratches.Get().(*scratch) }

func putScratch(s *scratch) {
	if s.claims.Cap()+cap(s.in) <= maxScratch {
		s.claims.Reset()
		scratches.Put(s)
	}
}

// marshalClaims encodes claims as json.Marshal does, into s.
func (s *scratch) marshalClaims(claims any) ([]byte, error) {
	s.claims.Reset()
	if err := jsonv2.MarshalWrite(&s.claims, claims, json.DefaultOptionsV1()); err != nil {
		return nil, err
	}
	return s.claims.Bytes(), nil
}

// MintJWTSVID issues a JWT-SVID signed by the active JWT key (ES256 for
// P-256 keys, ES384 for P-384) with header kid and typ "JWT" and claims
// sub, aud, exp and iat; exp = min(now+TTL, key expiry). A token signed
// by a key revoked while it was made (replaced, then revoked) is not
// returned, nor the failure of a key revoked (and destroyed) before it
// signed: it is signed again by the active key.
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
	return signAgain("jwt-svid not issued", func() (*JWTSVID, error) { return c.mintJWT(p, ttl) })
}

// mintJWT signs the JWT-SVID of p with the active JWT key of the
// moment; errRevokedWhileSigning when that key was revoked (replaced,
// then revoked) before the token was made.
func (c *CA) mintJWT(p JWTParams, ttl time.Duration) (*JWTSVID, error) {
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
	sc := getScratch()
	defer putScratch(sc)
	payload, err := sc.marshalClaims(svidClaims{Subject: p.ID.String(), Audience: aud, Expiry: exp, IssuedAt: now.Unix()})
	if err != nil {
		return nil, fmt.Errorf("ca: encode jwt claims: %w", err)
	}
	token, err := c.signLive(iss, sc, "JWT", payload)
	if err != nil {
		return nil, err
	}
	return &JWTSVID{Token: token, ID: p.ID, Audience: aud, ExpiresAt: time.Unix(exp, 0).UTC(), KeyID: iss.kid}, nil
}

// JWTKeyNotAfter is when the active JWT key expires: nothing it signs
// may outlive it.
func (c *CA) JWTKeyNotAfter() time.Time { return c.view.Load().jwt.notAfter }

// X509CANotAfter is when the active X.509 CA expires: nothing it signs
// may outlive it.
func (c *CA) X509CANotAfter() time.Time { return c.view.Load().x509.notAfter }

// SignJWT signs arbitrary claims (for example delegation tokens) with the
// active JWT key and header typ, returning the compact token and the key
// id. A typ other than "JWT" or "JOSE" keeps the token from being taken
// for a JWT-SVID (go-spiffe refuses those types). It caps nothing: claims
// must marshal to a JSON object that carries an "exp" not after
// expiresAt, and expiresAt must be in the future and not beyond the
// active key's expiry; otherwise the error wraps ErrInvalidParams.
//
// Like MintJWTSVID, it signs again with the active key what a key
// revoked while it signed (replaced, then revoked) signed.
func (c *CA) SignJWT(ctx context.Context, typ string, claims any, expiresAt time.Time) (token string, kid string, err error) {
	if err := ctx.Err(); err != nil {
		return "", "", err
	}
	type signed struct{ token, kid string }
	out, err := signAgain("jwt not signed", func() (signed, error) {
		token, kid, err := c.signJWT(typ, claims, expiresAt)
		return signed{token, kid}, err
	})
	return out.token, out.kid, err
}

func (c *CA) signJWT(typ string, claims any, expiresAt time.Time) (token string, kid string, err error) {
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
	sc := getScratch()
	defer putScratch(sc)
	payload, err := sc.marshalClaims(claims)
	if err != nil {
		return "", "", fmt.Errorf("%w: encode claims: %v", ErrInvalidParams, err)
	}
	if err := checkExp(payload, expiresAt); err != nil {
		return "", "", err
	}
	if typ == "" {
		return "", "", fmt.Errorf("%w: a typ is required", ErrInvalidParams)
	}
	if token, err = c.signLive(iss, sc, typ, payload); err != nil {
		return "", "", err
	}
	return token, iss.kid, nil
}

// signLive signs payload with iss, the active JWT key when the caller
// read it; errRevokedWhileSigning when iss was revoked (replaced, then
// revoked) meanwhile: what it signed is not handed out, and a failure
// of its key, destroyed with it (an HSM's, say), is not the caller's.
// The active key signs instead. A key still active is not looked up.
func (c *CA) signLive(iss *jwtIssuer, sc *scratch, typ string, payload []byte) (string, error) {
	token, err := iss.signAs(sc, typ, payload)
	if v := c.view.Load(); (err != nil || v.jwt != iss) && v.revoked(iss.kid) {
		return "", errRevokedWhileSigning
	}
	return token, err
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

// ecSigner signs JWS with any ECDSA crypto.Signer (software key, HSM,
// KMS), converting its ASN.1 signatures to the JWS R || S form (RFC 7518
// §3.4).
type ecSigner struct {
	signer crypto.Signer
	alg    string
	hash   crypto.Hash
	size   int // byte length of r and s
}

func newECSigner(s crypto.Signer, kid string) (*ecSigner, error) {
	pub, ok := s.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("ca: jwt key %s is not an ecdsa key", kid)
	}
	switch pub.Curve {
	case elliptic.P256():
		return &ecSigner{signer: s, alg: "ES256", hash: crypto.SHA256, size: 32}, nil
	case elliptic.P384():
		return &ecSigner{signer: s, alg: "ES384", hash: crypto.SHA384, size: 48}, nil
	}
	return nil, fmt.Errorf("ca: jwt key %s: unsupported curve %s", kid, curveName(pub.Curve))
}

// sign returns the R || S signature of input.
func (o *ecSigner) sign(input []byte) ([]byte, error) {
	h := o.hash.New()
	h.Write(input)
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
