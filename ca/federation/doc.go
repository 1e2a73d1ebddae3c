// Package federation keeps the SPIFFE bundles of federated trust domains
// fresh by fetching them from their SPIFFE bundle endpoints, as described
// by the SPIFFE Federation specification. A federated peer's endpoint is
// hostile input, so the fetch is the package's own, bounded one (see
// Bounds) rather than go-spiffe's federation.FetchBundle.
//
// A Manager holds one Relationship per federated trust domain and its
// last-known bundle. Run refreshes each relationship in the background;
// Refresh fetches one on demand.
//
// # Authentication
//
// With ProfileHTTPSSPIFFE the endpoint server must present an X.509-SVID for
// exactly Relationship.EndpointSPIFFEID that chains to the bundle of that
// ID's trust domain, taken from the combined source (CombinedSource): the
// peer's own last-known bundle in the usual case, the local bundle
// (Config.LocalBundle) when the endpoint ID is in the local trust domain.
// This is why Set requires an initial bundle with X.509 authorities for an
// endpoint ID in the peer's own trust domain (obtained out of band), and why
// a fetched bundle without X.509 authorities is never accepted for such a
// relationship: it could not authenticate the next fetch. With
// ProfileHTTPSWeb the server is verified against Config.WebRoots (system
// roots if nil) and the URL's host name.
//
// # Guarantees
//
//   - A fetched bundle is always parsed as the relationship's trust domain,
//     so it can never be installed for another one. It is read by
//     ParseBundle: keys of an unknown type or use, or that cannot be read
//     as keys of their type, are ignored (SPIFFE Trust Domain and Bundle
//     §4.1.3) and logged, as are private or symmetric keys, RSA keys under
//     2048 bits, X.509 authorities that are not CA certificates and JWT
//     keys sharing their kid with another key; the others are taken.
//   - A bundle becomes visible only after Config.OnUpdate (if set) returned
//     nil for it; otherwise the previous bundle stays. OnUpdate is only
//     called when the content changed.
//   - A failing peer does not lose us its trust: on any error (network, TLS,
//     parse, empty bundle, OnUpdate) the last-known bundle keeps being
//     served, the error is recorded in Status, and the refresh is retried
//     with exponential backoff (Config.RetryBackoff doubling, capped at
//     Config.DefaultRefresh and at the refresh interval of the held
//     bundle, so that a peer that is down is never polled less often than
//     its refresh hint asks: it may publish new keys on that schedule).
//     A fetched bundle with no authorities at all
//     is refused.
//   - No bundle without authorities is held: Set refuses one, as
//     ParseBundle does, with ErrNoAuthorities. MarshalBundle encodes a
//     bundle with its keys member always present, never "keys": null,
//     which readers (go-spiffe's among them) refuse.
//   - Refresh intervals follow the bundle's spiffe_refresh_hint clamped to
//     [Config.MinRefresh, Config.MaxRefresh], or Config.DefaultRefresh when
//     the bundle has no hint. The hint itself is read within
//     [0, MaxRefreshHint], so that the bundle held encodes the hint read.
//   - A fetched bundle whose spiffe_sequence is lower than the held one's is
//     accepted, with a warning logged. As in SPIRE, the peer is the
//     authority on its current bundle (it may have restored from backup or
//     rebuilt its state), and the fetch is authenticated; refusing it would
//     pin us to keys the peer may have withdrawn. So is a bundle with
//     other authorities under the same sequence number as the held one's,
//     or none where the held one had one, with a warning logged too: the
//     peer should have changed it (SPIFFE Trust Domain and Bundle §4.1.1).
//     One that differs only by its refresh hint is taken without a
//     warning: a bundle exported without its hint (SPIRE's "bundle show")
//     differs so from the one its endpoint serves.
//   - Refreshes of one relationship never overlap; when Set or Remove
//     returns, no refresh or OnUpdate call for the replaced or removed
//     relationship is in progress, and none will start.
//   - All methods are safe for concurrent use. Bundles handed out
//     (Bundle, Bundles, the bundle sources, OnUpdate) are clones.
//
// # Bounds
//
// Each fetch is a single GET of Relationship.BundleEndpointURL:
//
//   - It is bounded in time by Config.FetchTimeout as a whole: connecting,
//     the TLS handshake (TLS 1.2 or later), the request and reading the body.
//     A peer that stalls or trickles its answer fails the refresh.
//   - Redirects are not followed; any status other than 200 is an error
//     naming the status code.
//   - The body is read up to Config.MaxBundleBytes (default 1 MiB); a larger
//     one is refused ("exceeds n bytes") without being read further, and is
//     never buffered whole. Response headers are limited to 64 KiB.
//   - Errors never quote the response body; the text of a bundle parse
//     error, which may quote parts of the document, is cut to 256 bytes,
//     and that of a connection, TLS or HTTP error (Go's HTTP client
//     quotes a malformed status line, certificate errors name what the
//     peer's certificate holds) to 1 KiB.
//   - Every fetch uses a fresh connection and TLS handshake (no keep-alive,
//     no session resumption), closed before the fetch returns, so each
//     https_spiffe fetch is authenticated against the bundles held at that
//     moment and no connection or goroutine outlives a fetch.
package federation
