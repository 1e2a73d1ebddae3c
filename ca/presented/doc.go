// Package presented verifies X509-SVID chains that others present (a
// client's certificate chain in a TLS handshake, a server's to the
// clients of TLSClientConfig and MTLSClientConfig, a delegatee's chain in
// a request, the x5c of a delegation token) with work bounded by the
// verifier's own trust, not by the presenter.
//
// Verify accepts the chains go-spiffe's x509svid.Verify accepts, but
// those holding an RSA key of more than MaxRSABits, and those whose
// intermediates take more than a hundred signature checks to prove (see
// below), and gives the same verified chains (it may also accept one whose search x509svid.Verify
// gives up, at Go's limit of a hundred signature checks, among
// intermediates nothing vouches for). Before that verification it keeps
// of the presented intermediates only those proven, from the bundle's
// X.509 authorities down, to be signed by a certificate already proven:
// every signature it checks on the way is checked with the key of a root
// or of such a proven CA, never with a key the presenter chose. A chain
// of intermediates that all share one name and one key (which would make
// the standard path search try up to a hundred signatures, each with a
// key as costly as the presenter likes) thus costs a handful of checks
// with the verifier's own keys. It checks at most a hundred signatures
// for a chain (x509.Verify's bound on its search), those with the key
// an intermediate's authority key id names first: a bundle holding many
// authorities of one name (a federated peer's) does not make each
// presented intermediate that names it cost a check with each of them.
//
// Verify refuses a chain holding an RSA key of more than MaxRSABits
// (CheckKeys) before it checks any signature: the bound crypto/tls sets
// on a peer's chain in a handshake, kept for chains that arrive another
// way (a request's body, a token's x5c).
package presented
