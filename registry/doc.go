// Package registry keeps the authority's records of who may hold an
// identity: agent registrations and attested nodes.
//
// Guarantees:
//   - One registration per agent SPIFFE ID; an agent ID is always
//     spiffe://<trust domain>/agent/<name> in the authority's own trust
//     domain. Registrations are validated before they are written.
//   - A node record exists only for a node that completed attestation; a
//     banned node stays banned (the flag is never cleared by re-attestation).
//   - A node whose re-attestation failed its PCR policy (drifted) hosts no
//     agent until an attestation matches again.
//   - Everything is read and written through store.Tx, so callers compose
//     registry changes with other changes in one durable transaction.
//
// Records are stored as JSON documents in the buckets named by the
// Bucket* constants.
package registry
