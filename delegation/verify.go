package delegation

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca/presented"
)

// NoLeeway is VerifyOptions.Leeway for no tolerance of clock skew.
const NoLeeway time.Duration = -1

// Errors a verifier branches on. Every error of Verify matches one.
var (
	ErrMalformed          = errors.New("delegation: malformed token")
	ErrUntrustedIssuer    = errors.New("delegation: issuer not trusted")
	ErrSignature          = errors.New("delegation: token signature invalid")
	ErrExpired            = errors.New("delegation: token expired")
	ErrAudience           = errors.New("delegation: token not for this audience")
	ErrNotHolder          = errors.New("delegation: presenter is not the token's holder")
	ErrDelegatorSignature = errors.New("delegation: delegator signature invalid")
	ErrChain              = errors.New("delegation: chain is inconsistent")
	// ErrPresenterCertNeeded is ErrNotHolder for a token bound to a
	// certificate (cnf) verified with no presenter's certificate.
	ErrPresenterCertNeeded = fmt.Errorf("%w: the token is bound to a certificate (cnf), and the presenter's was not given", ErrNotHolder)
	// ErrNotYetValid is ErrMalformed for a hop issued later than the
	// verification time allows (iat beyond Now + Leeway): a clock that
	// lags, or a token made up.
	ErrNotYetValid = fmt.Errorf("%w: issued in the future", ErrMalformed)
	// ErrUnknownKey is ErrSignature for a hop signed with a key (kid)
	// its issuer's bundle does not hold: a key rotated out of the bundle
	// (the hop is no longer valid), or one newer than the bundle given
	// (bundles that need refreshing, before verifying again).
	ErrUnknownKey = fmt.Errorf("%w: its key is not in the issuer's bundle", ErrSignature)
	// ErrTooLarge is Issue's refusal of a hop whose token, its ancestors
	// inside, would exceed MaxTokenSize: no verifier would read it.
	ErrTooLarge = errors.New("delegation: chain too long for a token")
)

// Bundles gives the SPIFFE bundle of a trust domain: this authority's and
// every federated one's (spiffebundle.Set has it). A nil Bundles, or a
// nil pointer (a *spiffebundle.Set not yet made), has none: every token
// is then from an untrusted issuer.
type Bundles interface {
	GetBundleForTrustDomain(spiffeid.TrustDomain) (*spiffebundle.Bundle, error)
}

// bundleOf is td's bundle in bundles, nil when there is none (bundles
// nil included: a nil *spiffebundle.Set would panic when asked).
func bundleOf(bundles Bundles, td spiffeid.TrustDomain) *spiffebundle.Bundle {
	if bundles == nil {
		return nil
	}
	if v := reflect.ValueOf(bundles); v.Kind() == reflect.Pointer && v.IsNil() {
		return nil
	}
	b, err := bundles.GetBundleForTrustDomain(td)
	if err != nil {
		return nil
	}
	return b
}

// VerifyOptions say what the verifier expects of the last hop.
type VerifyOptions struct {
	// Now is the verification time (default time.Now()).
	Now time.Time
	// Leeway tolerates clock skew on exp and iat: zero means the default,
	// 30s; NoLeeway (or any negative value) none.
	Leeway time.Duration
	// Audience, if set, must be in the last token's aud. Mandate's
	// tokens name their delegatee (the holder) as their audience: a
	// resource server checks the holder (Presenter, PresenterCert), and
	// sets Audience only to its caller's SPIFFE ID, never to its own.
	Audience string
	// Presenter must be the last token's current actor (act.sub): a
	// token is only ever used by its holder. Verify refuses to check a
	// token without one unless AnyHolder is set (for a party that only
	// inspects a chain and never acts on it: then the holder is checked
	// only if Presenter is given, and the certificate binding only if
	// Presenter or PresenterCert is).
	Presenter spiffeid.ID
	AnyHolder bool
	// PresenterCert is the presenter's X509-SVID leaf; it must match the
	// last token's cnf thumbprint, when the token has one.
	PresenterCert *x509.Certificate
}

// Verify checks a delegation token offline and returns its chain, root
// first: every hop's signature against its issuer's bundle (algorithms
// ES256, ES384, RS256, PS256 only; the key found by kid), its expiry, its
// delegator's signature over the hop (an X509-SVID of the delegator,
// validated against the delegator's trust domain bundle), and each link
// to its parent (same principal, depth + 1, scopes narrowing, expiry not
// beyond the parent's, the actors continuing the parent's). On the last
// hop it checks the audience and that the presenter is the holder.
func Verify(token string, bundles Bundles, opts VerifyOptions) ([]*Claims, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	switch {
	case opts.Leeway == 0:
		opts.Leeway = 30 * time.Second
	case opts.Leeway < 0:
		opts.Leeway = 0
	}
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxTokenSize)
	}
	chain, err := verifyChain(token, bundles, opts, 0)
	if err != nil {
		return nil, err
	}
	last := chain[len(chain)-1]
	if opts.Audience != "" && !slices.Contains(last.Audience, opts.Audience) {
		return nil, fmt.Errorf("%w: %q is not in %v", ErrAudience, opts.Audience, last.Audience)
	}
	if opts.Presenter.IsZero() && !opts.AnyHolder {
		return nil, fmt.Errorf("%w: no presenter to check the holder against", ErrNotHolder)
	}
	if !opts.Presenter.IsZero() && opts.Presenter.String() != last.Act.Subject {
		return nil, fmt.Errorf("%w: presented by %s, held by %s", ErrNotHolder, opts.Presenter, last.Act.Subject)
	}
	// An inspector (AnyHolder) naming neither a presenter nor a
	// certificate checks no binding.
	if last.Cnf != nil && !(opts.AnyHolder && opts.Presenter.IsZero() && opts.PresenterCert == nil) {
		if opts.PresenterCert == nil {
			return nil, ErrPresenterCertNeeded
		}
		if Thumbprint(opts.PresenterCert) != last.Cnf.X5tS256 {
			return nil, fmt.Errorf("%w: the token is bound to another certificate", ErrNotHolder)
		}
	}
	return chain, nil
}

func verifyChain(token string, bundles Bundles, opts VerifyOptions, depth int) ([]*Claims, error) {
	if depth >= MaxDepth {
		return nil, fmt.Errorf("%w: deeper than %d hops", ErrChain, MaxDepth)
	}
	c, known, err := verifyToken(token, bundles)
	if err != nil {
		return nil, err
	}
	if err := c.wellFormed(); err != nil {
		return nil, err
	}
	// Valid only before exp (RFC 7519 §4.1.4), as the issuer's status
	// answers "expired" from exp on.
	if !opts.Now.Before(time.Unix(c.Expiry, 0).Add(opts.Leeway)) {
		return nil, fmt.Errorf("%w: %s (hop %s) expired at %s", ErrExpired, c.ID, c.Hop.Delegatee, time.Unix(c.Expiry, 0).UTC().Format(time.RFC3339))
	}
	if time.Unix(c.IssuedAt, 0).After(opts.Now.Add(opts.Leeway)) {
		return nil, fmt.Errorf("%w: %s, at %s", ErrNotYetValid, c.ID, time.Unix(c.IssuedAt, 0).UTC().Format(time.RFC3339))
	}
	if c.NotBefore != 0 && time.Unix(c.NotBefore, 0).After(opts.Now.Add(opts.Leeway)) {
		return nil, fmt.Errorf("%w: %s is not valid before %s (nbf)", ErrNotYetValid, c.ID, time.Unix(c.NotBefore, 0).UTC().Format(time.RFC3339))
	}
	// The delegator's signature, unless it verified for these very bytes
	// against the delegator's trust domain authorities as they are now.
	if known == ([32]byte{}) || delegatorRoots(bundles, c.Hop.Delegator) != known {
		roots, err := verifyDelegatorSignature(c, bundles, time.Unix(c.IssuedAt, 0))
		if err != nil {
			return nil, err
		}
		verifiedTokens.update(token, func(e *verifiedToken) { e.delegatorRoots = roots })
	}
	if c.Hop.Parent == nil {
		return []*Claims{c}, nil
	}
	chain, err := verifyChain(c.Hop.Parent.Token, bundles, opts, depth+1)
	if err != nil {
		return nil, fmt.Errorf("parent of %s: %w", c.ID, err)
	}
	if err := link(chain[len(chain)-1], c); err != nil {
		return nil, err
	}
	if err := CheckHolderContinues(chain[len(chain)-1], c.Hop.DelegatorSignature); err != nil {
		return nil, fmt.Errorf("%s: %w", c.ID, err)
	}
	for _, p := range chain {
		if p.Issuer == c.Issuer && p.ID == c.ID {
			return nil, fmt.Errorf("%w: %s of %s appears twice in the chain", ErrChain, c.ID, c.Issuer)
		}
	}
	return append(chain, c), nil
}

// CheckHolderContinues checks that a hop below parent, whose delegator
// signed it with sig, was made by parent's holder: when parent is bound
// to a certificate (cnf), sig was made with that certificate's key (the
// first of its x5c). A bound hop is thus continued only by whoever holds
// its key, as any verifier sees from the chain alone, not only on the
// word of the issuer below it.
func CheckHolderContinues(parent *Claims, sig string) error {
	if parent.Cnf == nil {
		return nil
	}
	j, err := parseCompact(sig)
	if err != nil {
		return fmt.Errorf("%w: not a JWS (%v)", ErrDelegatorSignature, err)
	}
	certs, err := x5c(j)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDelegatorSignature, err)
	}
	if Thumbprint(certs[0]) != parent.Cnf.X5tS256 {
		return fmt.Errorf("%w: the hop above, %s, is bound to another certificate than the one its continuation is signed with", ErrNotHolder, parent.ID)
	}
	return nil
}

// link checks that c continues its parent p.
func link(p, c *Claims) error {
	switch {
	case p.ID != c.Hop.Parent.ID || p.Issuer != c.Hop.Parent.Issuer:
		return fmt.Errorf("%w: %s names parent %s of %s, the token is %s of %s", ErrChain, c.ID, c.Hop.Parent.ID, c.Hop.Parent.Issuer, p.ID, p.Issuer)
	case p.Hop.Delegatee != c.Hop.Delegator:
		return fmt.Errorf("%w: %s is delegated by %s, but the parent was given to %s", ErrChain, c.ID, c.Hop.Delegator, p.Hop.Delegatee)
	case p.Subject != c.Subject:
		return fmt.Errorf("%w: %s acts for %q, its parent for %q", ErrChain, c.ID, c.Subject, p.Subject)
	case c.Hop.Depth != p.Hop.Depth+1:
		return fmt.Errorf("%w: %s has depth %d under a parent of depth %d", ErrChain, c.ID, c.Hop.Depth, p.Hop.Depth)
	case c.Expiry > p.Expiry:
		return fmt.Errorf("%w: %s expires after its parent", ErrChain, c.ID)
	case !reflect.DeepEqual(c.Act.Actor, p.Act):
		return fmt.Errorf("%w: %s's actors do not continue its parent's", ErrChain, c.ID)
	}
	// The parent's scopes split and sorted once, each of c's found by a
	// binary search: a hop's scopes are its issuer's word, as many as a
	// token holds, and splitting the parent's again for each of them, or
	// comparing each with every one of the parent's, would cost a
	// verifier the product of the two counts.
	parent := p.Scopes()
	slices.Sort(parent)
	for _, s := range c.Scopes() {
		if _, ok := slices.BinarySearch(parent, s); !ok {
			return fmt.Errorf("%w: %s has scope %q its parent does not", ErrChain, c.ID, s)
		}
	}
	return nil
}

// verifyToken checks a token's signature with its issuer's JWT key and
// returns its claims. The claims are decoded from the signed payload
// before the signature is checked only to learn the issuer (which
// chooses the key); they are returned only once the signature over those
// exact bytes verifies. A token verified before is recalled, not decoded
// and verified again, as long as its issuer's bundle still holds the key
// that verified it; roots is then what its delegator's signature
// verified against (see rootsOf; zero if it has not).
func verifyToken(token string, bundles Bundles) (c *Claims, roots [32]byte, err error) {
	if e, ok := verifiedTokens.get(token); ok {
		if key, err := issuerKey(bundles, e.claims.Issuer, e.kid); err == nil && sameKey(key, e.key) {
			return e.claims.clone(), e.delegatorRoots, nil
		}
		// The key changed: verified anew (and refused) below.
	}
	j, err := parseCompact(token)
	if err != nil {
		return nil, roots, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if j.header.Type != JWTType {
		return nil, roots, fmt.Errorf("%w: typ %q, not %q", ErrMalformed, j.header.Type, JWTType)
	}
	c, err = claimsOf(j.payload)
	if err != nil {
		return nil, roots, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	key, err := issuerKey(bundles, c.Issuer, j.header.KeyID)
	if err != nil {
		return nil, roots, err
	}
	if err := checkJWS(j, key, JWTType); err != nil {
		return nil, roots, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	verifiedTokens.put(token, verifiedToken{claims: c.clone(), kid: j.header.KeyID, key: key}, 2*len(token)+256)
	return c, roots, nil
}

// claimsOf reads a token's claims as encoding/json reads them (names
// matched without regard to case, as strings.EqualFold matches them:
// "j_t_i" is not "jti"), except that a name that appears
// twice, in any case, or a string that is not UTF-8 is refused: readers
// that keep the first value and readers that keep the last would see
// different claims. It uses encoding/json/v2 (the module
// github.com/go-json-experiment/json mirrors it until Go 1.27), which
// also reads a parent token inside the claims about four times faster.
func claimsOf(payload []byte) (*Claims, error) {
	c := new(Claims)
	if err := jsonv2.Unmarshal(payload, c, asEncodingJSON); err != nil {
		return nil, err
	}
	return c, nil
}

// asEncodingJSON reads names as encoding/json matches them
// (strings.EqualFold), with encoding/json/v2's refusal of a name twice
// (here: twice in any case) and of invalid UTF-8.
var asEncodingJSON = jsonv2.JoinOptions(jsonv2.MatchCaseInsensitiveNames(true), jsonv1.MatchCaseSensitiveDelimiter(true))

// sameKey reports whether a and b are the same public key.
func sameKey(a, b any) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && b != nil && k.Equal(b)
}

// issuerKey is the JWT key kid of issuer's trust domain bundle.
func issuerKey(bundles Bundles, issuer, kid string) (any, error) {
	td, err := spiffeid.TrustDomainFromString(issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: iss %q: %v", ErrMalformed, issuer, err)
	}
	b := bundleOf(bundles, td)
	if b == nil {
		return nil, fmt.Errorf("%w: no bundle for %s", ErrUntrustedIssuer, td)
	}
	key, ok := b.FindJWTAuthority(kid)
	if !ok {
		return nil, fmt.Errorf("%w: %s has no JWT key %q", ErrUnknownKey, td, kid)
	}
	return key, nil
}

// verifiedTokens remembers the tokens already verified, by the token
// itself: their claims, the key (kid and key) that verified them, and
// the X.509 authorities of the delegator's trust domain its delegator's
// signature verified against. A verifier that sees a token again (its
// holder presents it on every call) or a chain's parents again (every
// hop below them carries them) decodes and verifies each once, and its
// delegator's signature once for as long as those authorities are
// unchanged (the signature and the SVID's validity at the token's iat
// depend on nothing else). Every other check (the key still in the
// bundle, expiry, the links) is made every time.
var verifiedTokens = newMemo[string, verifiedToken](maxVerifiedTokenBytes)

// maxVerifiedTokenBytes bounds the memo by the size of what it keeps of
// each token (the token, and its claims, which hold its parent and its
// delegator's signature: about twice the token); when full it is
// emptied.
const maxVerifiedTokenBytes = 32 << 20

type verifiedToken struct {
	claims         *Claims // never handed out: callers get clones
	kid            string
	key            any
	delegatorRoots [32]byte // zero until the delegator's signature verified
}

// verifiedSigs remembers the signatures already verified, by the SHA-256
// of the whole compact JWS and the key's hash (keyHash): a verifier that sees a
// token again (its holder presents it on every call) or a chain's parents
// again (every hop below them carries them) checks each signature once.
// A key is looked up in the current bundle before the memo is asked, so a
// key removed from a bundle stops verifying what it signed.
var verifiedSigs = newMemo[sigKey, struct{}](maxVerifiedSigs)

// maxVerifiedSigs bounds the memo (each signature counts one).
const maxVerifiedSigs = 16384

type sigKey struct{ jws, key [32]byte }

// verifyDelegatorSignature checks the hop's delegator signature: a JWS
// over the hop's statement, by an X509-SVID of the delegator, and that
// the hop keeps within the limits it signed, if any (not_after, cnf). It returns
// rootsOf the bundle it verified against.
func verifyDelegatorSignature(c *Claims, bundles Bundles, at time.Time) ([32]byte, error) {
	_, roots, signed, err := verifyStatement(c.Hop.DelegatorSignature, c.statement(), bundles, at)
	if err == nil {
		err = signed.allows(c.Expiry, c.Cnf)
	}
	if err != nil {
		return roots, fmt.Errorf("%s: %w", c.ID, err)
	}
	return roots, nil
}

// rootsOf identifies X.509 authorities: the SHA-256 of their DER
// encodings, in order.
func rootsOf(auths []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, a := range auths {
		h.Write(a.Raw)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// delegatorRoots is rootsOf the bundle of delegator's trust domain
// (zero when there is none).
func delegatorRoots(bundles Bundles, delegator string) [32]byte {
	id, err := spiffeid.FromString(delegator)
	if err != nil {
		return [32]byte{}
	}
	b := bundleOf(bundles, id.TrustDomain())
	if b == nil {
		return [32]byte{}
	}
	return rootsOf(b.X509Authorities())
}

// CheckStatementSignature checks that sig is st signed by an X509-SVID of
// st.Delegator, valid at time at in the delegator's trust domain bundle.
func CheckStatementSignature(sig string, st Statement, bundles Bundles, at time.Time) error {
	_, _, _, err := verifyStatement(sig, st, bundles, at)
	return err
}

// VerifyStatement is CheckStatementSignature, and returns the X509-SVID
// that signed (its serial, SerialNumber.Text(16), is how its issuer
// records it), the expiry of the bundle's X.509 authority its chain was
// validated against (once that authority leaves the bundle, as a CA
// rotation removes it a minute past its expiry, no verifier can check the
// signature any more: an issuer caps the hop's expiry there too), and
// the statement as signed (with the not_after the delegator put on the
// hop, if any: an issuer caps the hop's expiry there). The certificate
// is shared: read it, never change it.
func VerifyStatement(sig string, st Statement, bundles Bundles, at time.Time) (signer *x509.Certificate, anchorNotAfter time.Time, signed Statement, err error) {
	sv, _, signed, err := verifyStatement(sig, st, bundles, at)
	if err != nil {
		return nil, time.Time{}, signed, err
	}
	return sv.leaf, sv.anchorNotAfter, signed, nil
}

// verifyStatement is VerifyStatement, and also returns rootsOf the
// bundle the signer's SVID was validated against.
func verifyStatement(sig string, st Statement, bundles Bundles, at time.Time) (signer *svidEntry, roots [32]byte, signed Statement, err error) {
	if sig == "" {
		return nil, roots, st, fmt.Errorf("%w: none", ErrDelegatorSignature)
	}
	j, err := parseCompact(sig)
	if err != nil {
		return nil, roots, st, fmt.Errorf("%w: not a JWS (%v)", ErrDelegatorSignature, err)
	}
	if j.header.Type != statementType {
		return nil, roots, st, fmt.Errorf("%w: typ %q, not %q", ErrDelegatorSignature, j.header.Type, statementType)
	}
	delegator, err := spiffeid.FromString(st.Delegator)
	if err != nil {
		return nil, roots, st, fmt.Errorf("%w: delegator %q", ErrMalformed, st.Delegator)
	}
	b := bundleOf(bundles, delegator.TrustDomain())
	if b == nil {
		return nil, roots, st, fmt.Errorf("%w: no bundle for the delegator's trust domain %s", ErrDelegatorSignature, delegator.TrustDomain())
	}
	// The authorities are read once: what the chain is validated against
	// is what roots names, whatever happens to the bundle meanwhile.
	auths := b.X509Authorities()
	roots = rootsOf(auths)
	sv, err := verifiedSVID(j, auths, roots, delegator, at)
	if err != nil {
		return nil, roots, st, err
	}
	signed, err = st.signedAs(j.payload)
	if err != nil {
		return nil, roots, st, err
	}
	if err := verifyJWS(j, sv.key, sv.keyHash, statementType); err != nil {
		return nil, roots, st, fmt.Errorf("%w: %v", ErrDelegatorSignature, err)
	}
	return sv, roots, signed, nil
}

// CheckStatementSignedBy checks that sig is st signed by the key of the
// certificate first in its x5c header, a certificate with the SPIFFE ID
// st.Delegator valid at time at, and returns that certificate and the
// statement as signed (with its not_after, if any); the certificate is
// the caller's own, to change at will. The
// certificate is not validated against any roots: an auditor, long after
// the CA of the time left the bundle, checks instead that the issuer's
// log records issuing this certificate (its serial and SHA-256) to the
// delegator.
func CheckStatementSignedBy(sig string, st Statement, at time.Time) (*x509.Certificate, Statement, error) {
	j, err := parseCompact(sig)
	if err != nil {
		return nil, st, fmt.Errorf("%w: not a JWS (%v)", ErrDelegatorSignature, err)
	}
	certs, err := x5c(j)
	if err != nil {
		return nil, st, fmt.Errorf("%w: %v", ErrDelegatorSignature, err)
	}
	leaf := certs[0]
	if err := signingLeaf(leaf); err != nil {
		return nil, st, err
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil || id.String() != st.Delegator {
		return nil, st, fmt.Errorf("%w: signed by %v, not the delegator %s", ErrDelegatorSignature, id, st.Delegator)
	}
	if at.Before(leaf.NotBefore) || at.After(leaf.NotAfter) {
		return nil, st, fmt.Errorf("%w: the delegator's SVID was not valid at %s", ErrDelegatorSignature, at.UTC().Format(time.RFC3339))
	}
	signed, err := st.signedAs(j.payload)
	if err != nil {
		return nil, st, err
	}
	if err := checkJWS(j, leaf.PublicKey, statementType); err != nil {
		return nil, st, fmt.Errorf("%w: %v", ErrDelegatorSignature, err)
	}
	// The caller's own copy: leaf is shared with every later JWS of the
	// same header (the headers memo), and what a caller does with it
	// must change nothing they check.
	own, err := x509.ParseCertificate(leaf.Raw)
	if err != nil {
		return nil, st, fmt.Errorf("%w: %v", ErrDelegatorSignature, err)
	}
	return own, signed, nil
}

// signingLeaf refuses a delegator's X509-SVID whose key may not make
// signatures: a leaf SVID asserts digitalSignature (SPIFFE X509-SVID
// §4.3), and a key whose certificate leaves it out (RFC 5280 §4.2.1.3:
// a key for key agreement or key transport only, or a certificate
// without the extension) signs no hop. go-spiffe checks only that the
// leaf is no CA.
func signingLeaf(leaf *x509.Certificate) error {
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("%w: the delegator's X509-SVID does not assert the digitalSignature key usage", ErrDelegatorSignature)
	}
	return nil
}

// x5c returns the certificates of a JWS's x5c header, leaf first.
func x5c(j *compactJWS) ([]*x509.Certificate, error) {
	if len(j.header.Certs) == 0 {
		return nil, errors.New("no x5c header")
	}
	return j.header.Certs, nil
}

// svids remembers delegator X509-SVID chains already validated: a
// verifier that sees many hops by the same agents (and a chain's parents
// again and again) validates each certificate chain once per bundle.
var svids = newMemo[svidKey, svidEntry](maxCachedSVIDBytes)

// maxCachedSVIDBytes bounds the memo by what it keeps of each chain: its
// leaf, counted as its DER encoding and svidEntryOverhead. A chain is
// remembered once it validates, before its signature is checked, once
// per distinct header: counting entries alone, a trust domain's CA that
// issues large certificates could make it hold some 70 MB.
const maxCachedSVIDBytes = 16 << 20

// svidEntryOverhead is about what a parsed certificate takes beyond its
// DER encoding, with its memo entry (measured: 3 to 4 KB).
const svidEntryOverhead = 4 << 10

type svidKey struct {
	chain [32]byte // SHA-256 of the JWS header holding the x5c chain
	roots [32]byte // SHA-256 of the X.509 authorities it was validated against
}

type svidEntry struct {
	id                  spiffeid.ID
	notBefore, notAfter time.Time
	key                 any
	keyHash             [32]byte
	leaf                *x509.Certificate // the SVID (shared with the remembered header)
	// anchorNotAfter is the expiry of the bundle's authority the chain
	// was validated against (its last certificate; the latest of them,
	// if it validates against several).
	anchorNotAfter time.Time
}

// verifiedSVID returns the public key of the X509-SVID in j's x5c header,
// after checking (or recalling) that it is a valid X509-SVID of want
// under the X.509 authorities auths (of want's trust domain; roots is
// rootsOf them), valid at at.
func verifiedSVID(j *compactJWS, auths []*x509.Certificate, roots [32]byte, want spiffeid.ID, at time.Time) (*svidEntry, error) {
	hdr, _, _ := strings.Cut(j.compact, ".")
	k := svidKey{chain: sha256String(hdr), roots: roots}
	e, ok := svids.get(k)
	if !ok {
		certs, err := x5c(j)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDelegatorSignature, err)
		}
		// SPIFFE's own rules on the leaf and its chain (go-spiffe), at a
		// time the leaf is valid; the time asked is checked below.
		id, verified, err := presented.Verify(certs, x509bundle.FromX509Authorities(want.TrustDomain(), auths), x509svid.WithTime(at))
		if err != nil || len(verified) == 0 {
			return nil, fmt.Errorf("%w: not a valid X509-SVID of %s's trust domain (%v)", ErrDelegatorSignature, want, err)
		}
		if err := signingLeaf(certs[0]); err != nil {
			return nil, err
		}
		// Valid when every certificate of the verified chain (leaf,
		// intermediates, root) is.
		e = svidEntry{id: id, notBefore: certs[0].NotBefore, notAfter: certs[0].NotAfter, key: certs[0].PublicKey, keyHash: keyHash(certs[0].PublicKey), leaf: certs[0]}
		for _, chain := range verified {
			if a := chain[len(chain)-1].NotAfter; a.After(e.anchorNotAfter) {
				e.anchorNotAfter = a
			}
		}
		for _, c := range verified[0] {
			if c.NotBefore.After(e.notBefore) {
				e.notBefore = c.NotBefore
			}
			if c.NotAfter.Before(e.notAfter) {
				e.notAfter = c.NotAfter
			}
		}
		svids.put(k, e, len(certs[0].Raw)+svidEntryOverhead)
	}
	if e.id != want {
		return nil, fmt.Errorf("%w: signed by %s, not the delegator %s", ErrDelegatorSignature, e.id, want)
	}
	if at.Before(e.notBefore) || at.After(e.notAfter) {
		return nil, fmt.Errorf("%w: the delegator's SVID (or a certificate of its chain) was not valid at %s", ErrDelegatorSignature, at.UTC().Format(time.RFC3339))
	}
	return &e, nil
}
