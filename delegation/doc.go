// Package delegation is Mandate's delegation token: an RFC 8693-shaped
// JWT, signed by the issuing authority, with which agent A lets agent B
// act for a principal with some scopes, below the hop that gave A those
// scopes, possibly issued by another organisation's authority. Verify is
// an offline verifier any program can import.
//
// Guarantees of a token Verify accepts:
//   - Every hop is signed by its issuer's JWT key, found by kid in that
//     trust domain's SPIFFE bundle; only ES256, ES384, RS256 and PS256 are
//     accepted ("none" and MACs never), and the key decides the algorithm.
//     Protected headers are read strictly: no member name twice, no crit
//     or b64. ECDSA signatures are checked with crypto/ecdsa over the
//     signing input as received, RSA ones with go-jose, and only with
//     keys of 2048 bits (RFC 7518 §3.3) to 8192 bits (a key, or a
//     certificate of an x5c, of more is refused before any signature is
//     checked with it: each check would cost the verifier the square of
//     its size).
//   - Every hop carries its delegator's own signature over the hop (who,
//     to whom, for whom, which scopes, below which parent), made with an
//     X509-SVID of the delegator that go-spiffe validates against the
//     delegator's trust domain bundle (its x5c's intermediates taking part
//     only once proven from that bundle down, see ca/presented), and whose
//     key usage includes digitalSignature: an issuer alone cannot invent a
//     delegation. The SVID is checked at the hop's iat, and a hop lives
//     at most MaxLifetime (a day) from its iat to its exp: an SVID key
//     that leaked long after its SVID expired signs no hop valid now.
//   - Each hop continues its parent, which it carries: same principal,
//     depth + 1, the parent given to this hop's delegator, scopes a subset
//     of the parent's, an expiry not beyond the parent's, and the RFC 8693
//     act chain extending the parent's; a parent bound to a certificate
//     (cnf) is continued with that certificate's key: its continuation's
//     delegator signature is made with it (CheckHolderContinues).
//   - On the last hop: the audience asked, and the holder: the presenter's
//     SPIFFE ID is the current actor (act.sub), and its certificate
//     matches cnf.x5t#S256 when the token is bound to one (RFC 8705).
//   - Sizes are bounded (MaxTokenSize, MaxDepth); no input panics.
//
// A verifier remembers (bounded, per process) the tokens and delegator
// signatures it has verified, by their bytes and the key that verified
// them, and does not verify those bytes with that key again; a token's
// delegator signature, with its SVID chain, once for as long as the
// delegator's trust domain has the same X.509 authorities; and the
// protected headers of signatures that verified. Everything else is
// checked on every call: the issuer's key is still in the current
// bundle, the expiry, the links, the audience and the holder. Verify
// hands out copies: what a caller does with the returned claims never
// changes what the next call returns.
//
// Revocation is not offline: a verifier asks the status endpoint of the
// last hop's issuer, which answers for the hops above it too (asking
// their issuers).
package delegation
