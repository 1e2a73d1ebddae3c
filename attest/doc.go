// Package attest decides whether a host has proven enough to become a node
// of the trust domain.
//
// Join tokens: an operator creates a single-use secret with a lifetime,
// hands it to a host out of band, and the host trades it (with a CSR) for
// a node X509-SVID spiffe://<trust domain>/node/join/<token id>.
//
// TPM 2.0 (TPMVerifier, sessions): a host proves that its attestation key
// (AK) lives in a TPM whose endorsement key (EK) the operator trusts, by
// activating a credential made for that EK and AK, and quotes its PCRs
// over a fresh nonce; it becomes spiffe://<trust domain>/node/tpm/<hex
// SHA-256 of the EK's TPMT_PUBLIC>. docs/attestation.md is the protocol.
//
// Guarantees:
//   - A join token is accepted at most once, and never after it expires.
//     Consumption is a read-modify-write inside the caller's store
//     transaction, so two concurrent joins with one token cannot both win.
//   - The secret itself is never stored: the store keeps its SHA-256, and
//     only the token id (which is not secret) appears in records and logs.
//     A TPM challenge's secret is kept nowhere: its SHA-256 travels sealed
//     (AES-256-GCM) in the session id, and the store holds only the mark
//     of a challenge used up.
//   - TPM structures are decoded from the exact bytes received, which must
//     be their canonical encoding with nothing trailing; names and digests
//     are computed here from those bytes, never taken from the client.
//   - Verify accepts evidence only if the activated secret matches, the
//     quote is a TPM-generated TPMS_ATTEST of type quote signed by the AK
//     in its own scheme over the session's nonce and exactly its PCRs,
//     the reported values reproduce the quote's digest, and they match an
//     allowed profile. Any failure is an error; nothing is admitted by
//     default.
//   - An EK trusted by certificate is the TCG default EK template apart
//     from its key, so one certified key yields one node ID.
//   - A TPM challenge is answered at most once (ConsumeTPMSession stores
//     the mark of its use inside the caller's transaction, kept until an
//     hour after it expires) and never after it expires, nor before it
//     was made (a clock gone back). Only an answer whose activated
//     secret matched is marked: one that proves nothing writes nothing.
//     Its state is sealed into the session id, not stored: asking
//     challenges writes nothing and takes no one's challenge away.
package attest
