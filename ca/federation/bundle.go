package federation

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/echo"
)

// MaxRefreshHint is the largest spiffe_refresh_hint read from a peer's
// bundle document: a larger one is read as this, and a negative one as 0
// (the hint is a number of seconds, SPIFFE Trust Domain and Bundle
// §4.1.2), so that the hint stored and handed out is the one read:
// go-spiffe's reading and encoding overflow for hints of about 292 years
// and more, and move a negative one by a second.
const MaxRefreshHint = 365 * 24 * time.Hour

// ErrNoAuthorities is wrapped by the errors about a peer's bundle that
// has no authority left to trust (none given, or only keys that are
// ignored): holding it would trust nothing of the peer, and clients
// refuse the document it encodes to.
var ErrNoAuthorities = errors.New("federation: bundle has no authorities")

// knownUses are the JWK uses a bundle's keys are read for: those of the
// SPIFFE SVID specifications and the WIT-SVID one go-spiffe reads.
var knownUses = map[string]bool{"x509-svid": true, "jwt-svid": true, "wit-svid": true}

// maxIgnoredListed bounds how many ignored keys ParseBundle describes
// one by one; the others are counted.
const maxIgnoredListed = 10

// bundleDocument is a SPIFFE bundle document with its keys left unread.
type bundleDocument struct {
	Keys        *[]json.RawMessage `json:"keys"`
	Sequence    *uint64            `json:"spiffe_sequence,omitempty"`
	RefreshHint *int64             `json:"spiffe_refresh_hint,omitempty"`
}

// ParseBundle reads doc, a SPIFFE bundle document of trust domain td (a
// peer's, fetched, given by an administrator or stored), as the SPIFFE
// Trust Domain and Bundle specification asks of its consumers:
//
//   - keys must be present (§4.1.3);
//   - a key whose use is unknown (§4.2.2), whose key type is unknown
//     (§4.1.3, §4.2.1), that cannot be read as a key of its type (an
//     unsupported curve, say Ed448), or that is not a public key (a
//     symmetric "oct" key, or one with its private part: a bundle holds
//     public keys, and it is handed on to every workload), or, for an
//     x509-svid key, whose certificate is not a CA certificate, is
//     ignored, and so are JWT-SVID (or WIT-SVID) keys whose kid names
//     more than one key of their use; they are never kept nor encoded
//     again; the returned list says
//     which, and why (the first ten, each cut to a bounded length; a
//     last line counts the others);
//   - spiffe_refresh_hint is read within [0, MaxRefreshHint];
//   - a bundle left with no authorities is refused with ErrNoAuthorities.
//
// The keys kept are read by go-spiffe, which refuses what it refuses (an
// x509-svid key without exactly one certificate, a jwt-svid key without
// a kid).
func ParseBundle(td spiffeid.TrustDomain, doc []byte) (*spiffebundle.Bundle, []string, error) {
	var d bundleDocument
	if err := json.Unmarshal(doc, &d); err != nil {
		// Said in the document's words, not in Go's ("cannot unmarshal
		// number into Go value of type federation.bundleDocument").
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			what := "the document"
			if te.Field != "" {
				what = "member " + strconv.Quote(te.Field)
			}
			return nil, nil, fmt.Errorf("federation: bundle is not a SPIFFE bundle document: %s cannot be a JSON %s", what, te.Value)
		}
		return nil, nil, fmt.Errorf("federation: bundle is not a SPIFFE bundle document: %w", err)
	}
	if d.Keys == nil {
		return nil, nil, errors.New("federation: bundle has no keys member")
	}
	total := len(*d.Keys)
	why := make([]string, total)
	parsed := make([]*jose.JSONWebKey, total)
	for i, raw := range *d.Keys {
		why[i], parsed[i] = ignoredKey(raw)
	}
	sharedKids(parsed, why)
	kept := make([]json.RawMessage, 0, total)
	var ignored []string
	for i, raw := range *d.Keys {
		switch {
		case why[i] == "":
			kept = append(kept, raw)
		case len(ignored) < maxIgnoredListed:
			ignored = append(ignored, fmt.Sprintf("key %d: %s", i, why[i]))
		}
	}
	d.Keys = &kept
	if d.RefreshHint != nil {
		hint := min(max(*d.RefreshHint, 0), int64(MaxRefreshHint/time.Second))
		d.RefreshHint = &hint
	}
	if n := total - len(kept); n > len(ignored) {
		ignored = append(ignored, fmt.Sprintf("%d more keys ignored", n-len(ignored)))
	}
	clean, err := json.Marshal(d)
	if err != nil {
		return nil, ignored, fmt.Errorf("federation: bundle: %w", err)
	}
	b, err := spiffebundle.Parse(td, clean)
	if err != nil {
		return nil, ignored, err
	}
	if err := ownAuthorities(td, b); err != nil {
		return nil, ignored, err
	}
	if b.Empty() {
		err := fmt.Errorf("%w (%d keys, %d ignored)", ErrNoAuthorities, total, total-len(kept))
		if len(ignored) > 0 {
			err = fmt.Errorf("%w; %s", err, ignored[0])
		}
		return nil, ignored, err
	}
	return b, ignored, nil
}

// ownAuthorities refuses a bundle of td holding an X.509 authority whose
// certificate names another trust domain (OtherTrustDomain): another
// trust domain's bundle, given as td's by mistake, would let that trust
// domain's CA vouch for td's IDs. An authority naming no SPIFFE ID (an
// upstream root, say) is td's to vouch for.
func ownAuthorities(td spiffeid.TrustDomain, b *spiffebundle.Bundle) error {
	for i, c := range b.X509Authorities() {
		if other, ok := OtherTrustDomain(td, c); ok {
			return fmt.Errorf("federation: bundle of %s: its X.509 authority %d names %s, of another trust domain: this is not %s's bundle",
				td, i, boundedValue(other), td)
		}
	}
	return nil
}

// OtherTrustDomain reports whether the CA certificate c names, as a
// SPIFFE ID URI SAN (as X509-SVID signing certificates carry their trust
// domain's), a trust domain other than td, and which (the URI; an
// unreadable SPIFFE ID is another's too). Such a certificate is not an
// authority of td's bundle.
func OtherTrustDomain(td spiffeid.TrustDomain, c *x509.Certificate) (string, bool) {
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if id, err := spiffeid.FromURI(u); err != nil || id.TrustDomain() != td {
			return u.String(), true
		}
	}
	return "", false
}

// ignoredKey says why the JWK raw is to be ignored, or "" if it is not;
// and the key read, when it was (nil if it could not be).
func ignoredKey(raw json.RawMessage) (string, *jose.JSONWebKey) {
	var head struct {
		Kty any `json:"kty"`
		Use any `json:"use"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return "not a JSON object", nil
	}
	named := fmt.Sprintf("(kty %s, use %s)", boundedValue(head.Kty), boundedValue(head.Use))
	if use, _ := head.Use.(string); !knownUses[use] {
		return named + ": unknown use", nil
	}
	k := new(jose.JSONWebKey)
	if err := json.Unmarshal(raw, k); err != nil {
		return named + ": " + boundedError{err: err}.Error(), nil
	}
	if !k.IsPublic() {
		// A symmetric key, or a key pair with its private part: no
		// authority of a bundle, and not to be handed on to every
		// workload with the bundles.
		return named + ": not a public key", k
	}
	if use, _ := head.Use.(string); use == "x509-svid" && len(k.Certificates) == 1 &&
		(!k.Certificates[0].BasicConstraintsValid || !k.Certificates[0].IsCA) {
		// An X.509 authority signs the trust domain's certificates; a
		// leaf (an endpoint's own certificate, exported by mistake) is
		// none, and in a root pool a chain of just itself verifies.
		return named + ": not a CA certificate (basic constraints CA:TRUE)", k
	}
	if pub, ok := k.Key.(*rsa.PublicKey); ok && pub.N.BitLen() < minRSABits {
		// Forgeable with the means of a well-funded attacker: no anchor
		// of this trust domain's trust in another.
		return fmt.Sprintf("%s: an RSA key of %d bits (at least %d are required)", named, pub.N.BitLen(), minRSABits), k
	}
	return "", k
}

// sharedKids sets why[i] for the JWT-SVID and WIT-SVID keys not yet
// ignored (why[i] == "", keys[i] read by ignoredKey) whose kid another
// key of the same use has, with another public key: which of them signs
// what the kid names is unknown (go-spiffe would keep the last,
// silently), so none is trusted. The same key given twice is one key.
func sharedKids(keys []*jose.JSONWebKey, why []string) {
	type useKid struct{ use, kid string }
	type key struct {
		i   int
		pub crypto.PublicKey
	}
	groups := map[useKid][]key{}
	var order []useKid
	for i, k := range keys {
		if why[i] != "" || (k.Use != "jwt-svid" && k.Use != "wit-svid") || k.KeyID == "" {
			continue // no kid: go-spiffe refuses the bundle
		}
		uk := useKid{k.Use, k.KeyID}
		if _, ok := groups[uk]; !ok {
			order = append(order, uk)
		}
		groups[uk] = append(groups[uk], key{i, k.Key})
	}
	for _, uk := range order {
		g := groups[uk]
		first, ok := g[0].pub.(interface{ Equal(crypto.PublicKey) bool })
		shared := !ok && len(g) > 1
		for _, k := range g[1:] {
			if ok && !first.Equal(k.pub) {
				shared = true
			}
		}
		if !shared {
			continue
		}
		for _, k := range g {
			why[k.i] = fmt.Sprintf("(use %s): kid %s names more than one key", boundedValue(uk.use), boundedValue(uk.kid))
		}
	}
}

// minRSABits is the least size of an RSA key a peer's bundle is trusted
// with (NIST SP 800-131A).
const minRSABits = 2048

// boundedValue is v (a kty or use of a peer's key) as JSON, cut to 40
// bytes.
func boundedValue(v any) string {
	s, _ := json.Marshal(v) // a value json.Unmarshal made: cannot fail
	return echo.Cut(string(s), 40)
}

// MarshalBundle encodes b as go-spiffe does, except that a bundle without
// authorities has "keys": [] rather than null: the member MUST be present
// (§4.1.3), and go-spiffe refuses a document without it, so one such
// bundle among those handed out would make clients refuse them all.
func MarshalBundle(b *spiffebundle.Bundle) ([]byte, error) {
	doc, err := b.Marshal()
	if err != nil || !b.Empty() {
		return doc, err
	}
	var d bundleDocument
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("federation: encode bundle: %w", err)
	}
	d.Keys = &[]json.RawMessage{}
	return json.Marshal(d)
}
