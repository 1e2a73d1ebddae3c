package delegation

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Limits of what Verify reads.
const (
	// MaxTokenSize bounds a token, its ancestors included.
	MaxTokenSize = 32 << 10
	// MaxDepth bounds a chain.
	MaxDepth = 8
	// MaxLifetime bounds a hop's life, from its iat to its exp. The
	// delegator's signature is checked at iat: without a bound, the
	// key of an SVID long expired, with its issuer's key, would sign a
	// hop valid today; with it, only hops that expired a day after it.
	MaxLifetime = 24 * time.Hour
)

// TokenType is a delegation token's RFC 8693 token type
// (issued_token_type, subject_token_type).
const TokenType = "urn:ietf:params:oauth:token-type:jwt"

// JWTType is the "typ" header of a delegation token: not "JWT", so that
// no JWT-SVID validator takes one for a JWT-SVID of its principal.
const JWTType = "mandate-delegation+jwt"

// statementType is the "typ" header of a delegator's signature.
const statementType = "mandate-hop+jws"

// Actor is the RFC 8693 act claim: the current actor outermost, the
// actors before it nested.
type Actor struct {
	Subject string `json:"sub"`
	Actor   *Actor `json:"act,omitempty"`
}

// Confirmation is the RFC 8705 cnf claim: the SHA-256 thumbprint of the
// certificate the token is bound to.
type Confirmation struct {
	X5tS256 string `json:"x5t#S256"`
}

// Parent links a hop to the hop above it: the parent's issuer, id and
// audit log position, and the parent token itself, so that a chain is
// verifiable offline from its last token.
type Parent struct {
	Issuer   string `json:"iss"`
	ID       string `json:"jti"`
	LeafHash string `json:"leaf_hash,omitempty"` // hex, the parent's audit entry
	LogIndex uint64 `json:"log_index"`
	Token    string `json:"token"`
}

// Hop is what a delegation token says of its own hop.
type Hop struct {
	Delegator string  `json:"delegator"`
	Delegatee string  `json:"delegatee"`
	Depth     int     `json:"depth"`
	Purpose   string  `json:"purpose,omitempty"`
	Parent    *Parent `json:"parent,omitempty"`
	// DelegatorSignature is a compact JWS, made with the delegator's
	// X509-SVID key (its chain in the x5c header), over the hop's
	// Statement.
	DelegatorSignature string `json:"delegator_sig"`
}

// Claims are a delegation token's claims: RFC 8693 shaped (iss, sub the
// principal, act the actors, scope, aud, exp, iat, jti the delegation id,
// cnf), and the hop.
type Claims struct {
	Issuer   string   `json:"iss"` // spiffe://<issuing trust domain>
	Subject  string   `json:"sub"` // the principal
	Audience []string `json:"aud"`
	Expiry   int64    `json:"exp"`
	IssuedAt int64    `json:"iat"`
	// NotBefore is RFC 7519's nbf: Mandate issues none, and a verifier
	// refuses a hop before it (a trusted issuer's token may carry one).
	NotBefore int64         `json:"nbf,omitempty"`
	ID        string        `json:"jti"`
	Scope     string        `json:"scope"`
	Act       *Actor        `json:"act"`
	Cnf       *Confirmation `json:"cnf,omitempty"`
	Hop       Hop           `json:"mandate_hop"`
}

// clone is a deep copy of c.
func (c *Claims) clone() *Claims {
	out := *c
	out.Audience = slices.Clone(c.Audience)
	out.Act = c.Act.clone()
	if c.Cnf != nil {
		cnf := *c.Cnf
		out.Cnf = &cnf
	}
	if c.Hop.Parent != nil {
		p := *c.Hop.Parent
		out.Hop.Parent = &p
	}
	return &out
}

func (a *Actor) clone() *Actor {
	if a == nil {
		return nil
	}
	return &Actor{Subject: a.Subject, Actor: a.Actor.clone()}
}

// Scopes are the claims' scopes: the scope claim split at its spaces
// (U+0020), as RFC 6749 §3.3 separates scope tokens and as an OAuth
// library reads them; any other space is part of a scope.
func (c *Claims) Scopes() []string {
	return strings.FieldsFunc(c.Scope, func(r rune) bool { return r == ' ' })
}

// Statement is what a delegator signs for a hop: who delegates what to
// whom, for whom, below which parent, and (optionally) until when at
// the latest and bound to which certificate of the delegatee.
type Statement struct {
	Delegator    string   `json:"delegator"`
	Delegatee    string   `json:"delegatee"`
	Principal    string   `json:"principal"`
	Scopes       []string `json:"scopes"`
	Parent       string   `json:"parent,omitempty"`     // the parent delegation id
	ParentIssuer string   `json:"parent_iss,omitempty"` // and its issuer
	Purpose      string   `json:"purpose,omitempty"`
	// NotAfter, if not 0, is the latest expiry (Unix seconds) the
	// delegator allows the hop: its issuer caps the token's exp there,
	// and a verifier refuses a hop that expires later. Without it the
	// expiry is the issuer's word alone.
	NotAfter int64 `json:"not_after,omitempty"`
	// Cnf, if not nil, is the delegatee certificate (RFC 8705
	// x5t#S256) the hop must be bound to: its issuer binds the token
	// to it, and a verifier refuses a hop bound otherwise, or not at
	// all. Without it the binding is the issuer's word alone.
	Cnf *Confirmation `json:"cnf,omitempty"`
}

// MaxNotAfter bounds a statement's not_after and a token's exp and nbf
// (the year 9999), so that each is a time every reader reads alike.
const MaxNotAfter = 253402300799

// allows checks a hop expiring at exp, bound by cnf (nil: unbound),
// against the limits its delegator signed (st, as signed).
func (st Statement) allows(exp int64, cnf *Confirmation) error {
	if st.NotAfter != 0 && exp > st.NotAfter {
		return fmt.Errorf("%w: the hop expires at %d, after the not_after %d its delegator signed", ErrDelegatorSignature, exp, st.NotAfter)
	}
	if st.Cnf != nil && (cnf == nil || cnf.X5tS256 != st.Cnf.X5tS256) {
		return fmt.Errorf("%w: the hop is not bound to the certificate its delegator signed for (x5t#S256 %s)", ErrDelegatorSignature, st.Cnf.X5tS256)
	}
	return nil
}

// validThumbprint reports whether s is an x5t#S256: the unpadded
// base64url of 32 bytes.
func validThumbprint(s string) bool {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// bytes is the statement's one encoding: scopes sorted.
func (st Statement) bytes() []byte {
	st.Scopes = slices.Sorted(slices.Values(st.Scopes))
	b, _ := json.Marshal(st)
	return b
}

// statement is the Statement a hop's claims say was signed.
func (c *Claims) statement() Statement {
	st := Statement{Delegator: c.Hop.Delegator, Delegatee: c.Hop.Delegatee, Principal: c.Subject, Scopes: c.Scopes(), Purpose: c.Hop.Purpose}
	if c.Hop.Parent != nil {
		st.Parent, st.ParentIssuer = c.Hop.Parent.ID, c.Hop.Parent.Issuer
	}
	return st
}

// signatureAlgorithms are the JWS algorithms accepted anywhere in a
// chain: never "none", never a MAC.
var signatureAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256, jose.PS256}

// SignStatement is the delegator's side: it signs st with the key of its
// X509-SVID, putting the SVID chain in the x5c header. chain is the SVID,
// leaf first, and key the leaf's private key: anything else is refused
// here rather than by the issuer.
func SignStatement(st Statement, key crypto.Signer, chain []*x509.Certificate) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("delegation: sign the hop: no X509-SVID to put in x5c")
	}
	if pub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return "", errors.New("delegation: sign the hop: the key is not the X509-SVID's")
	}
	alg, err := algorithmFor(key.Public())
	if err != nil {
		return "", err
	}
	x5c := make([]string, len(chain))
	for i, c := range chain {
		x5c[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{}).WithHeader("x5c", x5c).WithType(statementType))
	if err != nil {
		return "", fmt.Errorf("delegation: sign the hop: %w", err)
	}
	jws, err := signer.Sign(st.bytes())
	if err != nil {
		return "", fmt.Errorf("delegation: sign the hop: %w", err)
	}
	return jws.CompactSerialize()
}

func algorithmFor(pub crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		}
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return jose.RS256, nil
		}
	}
	return "", errors.New("delegation: unsupported key (P-256, P-384 or RSA of 2048 bits or more)")
}

// Signer is what issues tokens: the authority's CA (ca.CA has it).
type Signer interface {
	SignJWT(ctx context.Context, typ string, claims any, expiresAt time.Time) (token, kid string, err error)
}

// Issue signs claims as a delegation token, after checking they are
// well formed (an act chain that ends with the hop's actors, a depth
// that follows the parent's). A token larger than MaxTokenSize, which
// no verifier reads, is ErrTooLarge.
func Issue(ctx context.Context, s Signer, c *Claims) (string, error) {
	if err := c.wellFormed(); err != nil {
		return "", err
	}
	tok, _, err := s.SignJWT(ctx, JWTType, c, time.Unix(c.Expiry, 0))
	if err != nil {
		return "", fmt.Errorf("delegation: sign: %w", err)
	}
	if len(tok) > MaxTokenSize {
		return "", fmt.Errorf("%w: the token, its %d ancestors inside, is %d bytes; at most %d are read", ErrTooLarge, c.Hop.Depth-1, len(tok), MaxTokenSize)
	}
	return tok, nil
}

// Thumbprint is the RFC 8705 x5t#S256 of a certificate.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// wellFormed checks what a token's claims must say of themselves.
func (c *Claims) wellFormed() error {
	scopes := c.Scopes()
	switch {
	case c.ID == "" || c.Subject == "" || c.Issuer == "":
		return fmt.Errorf("%w: jti, sub and iss are required", ErrMalformed)
	case len(scopes) == 0:
		return fmt.Errorf("%w: no scope", ErrMalformed)
	case hasDuplicate(scopes):
		return fmt.Errorf("%w: a scope twice", ErrMalformed)
	case strings.Join(scopes, " ") != c.Scope:
		// One spelling of a set of scopes: the issuer's.
		return fmt.Errorf("%w: the scopes are not separated by one space each", ErrMalformed)
	case c.Act == nil || c.Act.Subject != c.Hop.Delegatee:
		return fmt.Errorf("%w: act.sub must be the delegatee", ErrMalformed)
	case c.Act.Actor == nil || c.Act.Actor.Subject != c.Hop.Delegator:
		return fmt.Errorf("%w: act.act.sub must be the delegator", ErrMalformed)
	case c.Hop.Depth < 1 || c.Hop.Depth > MaxDepth:
		return fmt.Errorf("%w: depth %d out of 1..%d", ErrMalformed, c.Hop.Depth, MaxDepth)
	case (c.Hop.Parent == nil) != (c.Hop.Depth == 1):
		return fmt.Errorf("%w: a root hop has depth 1 and no parent, and only a root hop", ErrMalformed)
	case c.Expiry <= c.IssuedAt:
		return fmt.Errorf("%w: exp must be after iat", ErrMalformed)
	case c.Expiry > c.IssuedAt+int64(MaxLifetime/time.Second): // wraps only to refuse
		return fmt.Errorf("%w: exp is more than %s after iat", ErrMalformed, MaxLifetime)
	case c.Expiry > MaxNotAfter || c.NotBefore > MaxNotAfter:
		// Beyond, time.Unix wraps: an nbf of 2^63-1 would read as the
		// year 0, a hop valid now.
		return fmt.Errorf("%w: exp and nbf are at most %d (the year 9999)", ErrMalformed, int64(MaxNotAfter))
	}
	if err := CheckPrincipal(c.Subject); err != nil {
		return fmt.Errorf("%w: sub: %v", ErrMalformed, err)
	}
	for _, id := range []string{c.Hop.Delegator, c.Hop.Delegatee} {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("%w: %q is not a SPIFFE ID", ErrMalformed, id)
		}
	}
	if !ValidID(c.ID) {
		return fmt.Errorf("%w: jti is 1 to %d characters of A-Z a-z 0-9 . _ -", ErrMalformed, MaxIDLen)
	}
	td, err := spiffeid.TrustDomainFromString(c.Issuer)
	if err != nil || c.Issuer != td.IDString() {
		// One spelling only: spiffe://<trust domain>.
		return fmt.Errorf("%w: iss %q is not spiffe://<trust domain>", ErrMalformed, c.Issuer)
	}
	// A hop is issued by its delegator's own authority: no authority
	// speaks for another trust domain's agents.
	if d := spiffeid.RequireFromString(c.Hop.Delegator); d.TrustDomain() != td {
		return fmt.Errorf("%w: %s issued a hop of %s's agent %s", ErrChain, c.Issuer, d.TrustDomain(), d)
	}
	if depth := actDepth(c.Act); depth != c.Hop.Depth+1 {
		return fmt.Errorf("%w: %d actors for a hop of depth %d", ErrMalformed, depth, c.Hop.Depth)
	}
	return nil
}

// hasDuplicate reports whether a value appears twice in list.
func hasDuplicate(list []string) bool {
	sorted := slices.Sorted(slices.Values(list))
	return len(slices.Compact(sorted)) != len(list)
}

// MaxIDLen bounds a delegation id (jti).
const MaxIDLen = 128

// ValidID reports whether id is a delegation id: 1 to MaxIDLen of
// A-Z a-z 0-9 . _ - (ids name records and index keys).
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// MaxPrincipalLen bounds a principal.
const MaxPrincipalLen = 256

// CheckPrincipal checks a principal (sub: the person or account on whose
// behalf), as every verifier does: 1 to MaxPrincipalLen bytes of valid
// UTF-8, no control characters, no leading or trailing space, and not a
// SPIFFE ID, not even behind invisible characters (format characters and
// the other default-ignorable ones: a combining grapheme joiner, a Hangul
// filler, a variation selector), for a workload is an actor, never a
// principal: a chain for "spiffe://..." would read as that workload's own.
func CheckPrincipal(p string) error {
	switch {
	case p == "" || len(p) > MaxPrincipalLen:
		return fmt.Errorf("a principal is 1 to %d bytes", MaxPrincipalLen)
	case !IsText(p) || strings.TrimSpace(p) != p:
		return errors.New("a principal is valid UTF-8 (without U+FFFD) without leading or trailing space")
	case strings.IndexFunc(p, unicode.IsControl) >= 0:
		return errors.New("a principal has no control characters")
	case strings.HasPrefix(strings.ToLower(withoutInvisible(p)), "spiffe:"):
		return errors.New("a principal is a person or an account, not a SPIFFE ID")
	}
	return nil
}

// CheckNewPrincipal is CheckPrincipal, and what an authority asks of a
// principal it is given for a new chain: no format characters but the
// zero-width non-joiner and joiner that names and emoji are written with
// (no zero-width spaces, word joiners, byte order marks, soft hyphens or
// direction marks), and none of the other default-ignorable characters
// no name needs (a combining grapheme joiner, Hangul fillers: variation
// selectors, which emoji are written with, are accepted), by which two
// principals that look alike would differ, and a policy keyed on one
// would miss the other.
func CheckNewPrincipal(p string) error {
	if err := CheckPrincipal(p); err != nil {
		return err
	}
	if strings.IndexFunc(p, func(r rune) bool {
		return unicode.Is(unicode.Cf, r) && r != '\u200c' && r != '\u200d' || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r)
	}) >= 0 {
		return errors.New("a principal has no invisible characters (format or default-ignorable ones) but U+200C, U+200D and variation selectors")
	}
	return nil
}

// withoutInvisible is s without the characters that show nothing: its
// format characters (Unicode Cf) and the other default-ignorable ones
// (Other_Default_Ignorable_Code_Point, Variation_Selector).
func withoutInvisible(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Variation_Selector, r) {
			return -1
		}
		return r
	}, s)
}

func actDepth(a *Actor) int {
	n := 0
	for ; a != nil; a = a.Actor {
		n++
	}
	return n
}
