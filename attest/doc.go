// Package attest decides whether a host has proven enough to become a node
// of the trust domain.
//
// The first attestation method is the join token: an operator creates a
// single-use secret with a lifetime, hands it to a host out of band, and
// the host trades it (with a CSR) for a node X509-SVID
// spiffe://<trust domain>/node/join/<token id>.
//
// Guarantees:
//   - A join token is accepted at most once, and never after it expires.
//     Consumption is a read-modify-write inside the caller's store
//     transaction, so two concurrent joins with one token cannot both win.
//   - The secret itself is never stored: the store keeps its SHA-256, and
//     only the token id (which is not secret) appears in records and logs.
package attest
