// Package api is the authority's HTTP transport: routes, mTLS
// authentication, request limits, problem+json errors and metrics. It holds
// no business logic: every handler decodes a request, calls one flow of
// package authority, and encodes the answer.
//
// Guarantees:
//   - Every error answer is RFC 9457 application/problem+json with a
//     stable type URI (https://mandate.dev/problems/<name>), chosen in one
//     table (problems.go) from the error the flow returned. A 5xx means the
//     server's own fault; its detail never carries internal messages.
//   - Request bodies are bounded, JSON bodies must be application/json,
//     a single object, and unknown fields are refused.
//   - The client identity is the X509-SVID verified during the TLS
//     handshake against the bundle of the trust domain it names (this
//     one's, or a federated one's); no request is served on a
//     certificate that has expired since the handshake, nor on a chain
//     that no longer verifies once the bundles changed.
//   - Handlers recover from panics and answer 500 without details; one
//     whose answer had begun has its connection cut instead, so that
//     what was sent is not taken for the whole answer.
package api
