// Package client is a Go client for a Mandate authority's HTTPS API, used
// by the mandate CLI, its benchmarks and tests, and by any Go program that
// wants identities from Mandate.
//
// It always authenticates the server as the X509-SVID
// spiffe://<trust domain>/mandate/server against a trust bundle it is
// given, and authenticates itself with an X509-SVID when it has one (mTLS).
// It keeps that SVID for its life: after a renewal, make a new Client.
//
// A registration read or written carries its version (Agent.ETag):
// UpdateAgentIfMatch and DeleteAgentIfMatch change only that version,
// where UpdateAgent and DeleteAgent change whatever is stored. Lists
// (ListAgents, ListNodes, ListRevokedIDs) are asked a page at a time,
// so that a list of any length is read whole.
//
// The audit reads (AuditCheckpoint, AuditEntry, AuditConsistency,
// SearchAudit, AuditChain) return what the authority answers: an auditor
// verifies the checkpoint with the log's key and each proof against it
// (golang.org/x/mod/sumdb/note, github.com/transparency-dev/merkle), as
// mandate audit does.
//
// Decisions are asked with QueryData (the OPA v1 Data API), Evaluate
// and EvaluateBatch (OpenID AuthZEN 1.0); a delegation hop with Delegate,
// or by RFC 8693 token exchange with ExchangeToken.
//
// What it guarantees of answers:
//   - an answer is used only whole: one larger than 4 MiB, cut short, or
//     still arriving when the call's time (Config.Timeout, default 30 s,
//     bounded further by the caller's context) runs out is an error;
//   - redirects are never followed (the authority's API never redirects):
//     a 3xx answer is an error;
//   - error answers become *Problem errors carrying the RFC 9457 type and
//     the answer's HTTP status: branch on Problem.Name ("not-found",
//     "precondition-failed", "policy-denied", ...) with errors.As; the
//     Data API's errors (OPA's shape) and POST /v1/token's (RFC 6749's)
//     are *Problem errors too, their code in Problem.Code;
//   - a call whose answer must carry a credential (Join, AttestTPM and
//     AnswerTPMChallenge, X509SVID and NewX509SVID, JWTSVID, Delegate,
//     ExchangeToken) fails when the answer carries none;
//   - DelegationStatus is delegation.FetchStatus over the client's
//     connections: its failures match delegation.ErrStatusUnknown, as a
//     verifier's do.
package client
