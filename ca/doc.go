// Package ca is Mandate's SPIFFE certificate and JWT authority: it holds
// the trust domain's signing keys, mints X509-SVIDs and JWT-SVIDs, serves
// the SPIFFE trust bundle and rotates its authorities without outage.
//
// # Keys
//
// Private keys are only reached through the KeyManager interface, as
// crypto.Signer values, so an HSM or KMS can replace DiskKeyManager. The
// disk implementation keeps one PKCS#8 PEM file per key, mode 0600, in a
// directory it makes with mode 0700, written atomically (temporary file,
// fsync, rename, directory fsync); it refuses key files that group or
// others can access, and a directory they can write to. Key ids are restricted to [A-Za-z0-9._-] and
// cannot name a path. Key material never appears in errors or logs.
//
// # State
//
// Which authorities exist, their certificates, public keys, key ids and
// states, and the bundle sequence number are saved through the Journal
// interface (owned by the caller) before any change takes effect.
//
// # X509-SVIDs
//
// Every X509-SVID minted has exactly one URI SAN, the requested SPIFFE ID,
// which is always in the CA's trust domain and has a path; basic
// constraints CA=false; key usage digitalSignature (plus keyEncipherment
// for RSA keys) and never certSign or cRLSign; extended key usages
// serverAuth and clientAuth; a subject key identifier (RFC 7093
// method 1, as the CA certificates'); a random 128-bit serial; NotBefore ten
// seconds in the past; and NotAfter no later than the signing CA's
// NotAfter. Subject keys are ECDSA P-256/P-384 or RSA of 2048 to 8192 bits.
// The returned chain is the leaf, the signing CA and any upstream
// intermediates, never the root. Each issued certificate is parsed and
// re-checked for these properties before it is returned.
//
// Our X.509 CA certificates are CAs (path length 0) with key usage
// certSign and cRLSign and the trust domain's SPIFFE ID as URI SAN. They
// are self-signed roots, or, with Config.Upstream, intermediates signed by
// the upstream that never outlive the upstream chain; the bundle then
// holds the upstream roots. Each such CA is verified under the upstream
// chain, as relying parties verify, for both extended key usages of an
// X509-SVID: an upstream whose name constraints or extended key usages
// leave out the trust domain's SVIDs is refused by New
// (ErrInvalidConfig), and a leaf with DNS or IP names it does not allow
// is refused (ErrInvalidParams).
//
// # JWT-SVIDs
//
// JWT-SVIDs are signed with ES256 (P-256 keys) or ES384 (P-384), carry
// the header kid and typ "JWT" and the claims sub, aud, exp and iat; exp
// never exceeds the signing key's expiry.
//
// # Rotation
//
// X.509 CAs and JWT keys rotate independently on the same schedule. At
// 1/2 of the active authority's lifetime the next one is prepared: created
// and published in the bundle, signing nothing. At 5/6 it becomes active
// and the previous one old. An old authority stays in the bundle until its
// own expiry (JWT keys one more minute, for validators' exp leeway), then
// it is pruned and its key deleted. Because every SVID's lifetime is capped
// at its issuer's expiry, these invariants hold at every instant:
//
//   - every unexpired SVID the CA has minted verifies against the bundle
//     being served;
//   - every authority is in the bundle for 1/3 of its predecessor's
//     lifetime before it signs anything (except at bootstrap, or when
//     the active one expired while rotation was not running; one
//     prepared late, by a start after 1/2 of its predecessor's life,
//     waits for that window or until its predecessor is about to expire
//     (two rotation ticks, at least a minute, before), whichever is
//     first);
//   - exactly one authority of each kind is active;
//   - the bundle's spiffe_sequence increases by one with every change of
//     its contents: its authorities, or its spiffe_refresh_hint (a
//     changed Config.RefreshHint, taken at the next start; SPIFFE Trust
//     Domain and Bundle §4.1.1).
//
// Rotation is driven by Run (or by calling Rotate) using the injected
// clock. Consumers learn about changes through Subscribe.
//
// # Concurrency
//
// A CA is safe for concurrent use. Minting and the read accessors load an
// immutable snapshot through an atomic pointer and never block on
// rotation; a mint costs about one signature (plus, for X.509, the
// signature check crypto/x509 performs inside CreateCertificate).
package ca
