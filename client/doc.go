// Package client is a Go client for a Mandate authority's HTTPS API, used
// by the mandate CLI, its benchmarks and tests, and by any Go program that
// wants identities from Mandate.
//
// It always authenticates the server as the X509-SVID
// spiffe://<trust domain>/mandate/server against a trust bundle it is
// given, and authenticates itself with an X509-SVID when it has one (mTLS).
// It keeps that SVID for its life: after a renewal, make a new Client.
// With the admin credential an authority writes on its first start, and
// go-spiffe to read the files:
//
//	svid, err := x509svid.Load("mandate-data/admin/svid.pem", "mandate-data/admin/svid.key")
//	...
//	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), "mandate-data/admin/bundle.pem")
//	...
//	admin, err := client.New(client.Config{Server: "https://127.0.0.1:8443",
//		Bundle: bundle.X509Authorities(), SVID: svid.Certificates, Key: svid.PrivateKey})
//	...
//	a, err := admin.GetAgent(ctx, id)
//	var p *client.Problem
//	if errors.As(err, &p) && p.Name() == "not-found" { ... }
//
// A call refused at the TLS handshake for the client's credential
// matches ErrCredentialRefused (errors.Is). A call over the caller's
// rate (http.rate_limit) is a Problem of Status 429: named
// "rate-limited", but for the Data API's (QueryData: Code
// "too_many_requests") and POST /v1/token's (ExchangeToken: Code
// "temporarily_unavailable"). Nothing of it was done, and it may be
// asked again after its RetryAfter. The client does not retry by itself.
//
// A registration read or written carries its version (Agent.ETag):
// UpdateAgentIfMatch and DeleteAgentIfMatch change only that version,
// where UpdateAgent and DeleteAgent change whatever is stored. Lists
// (ListAgents, ListNodes, ListRevokedIDs) are asked a page at a time,
// so that a list of any length is read whole.
//
// The audit reads (AuditCheckpoint, AuditEntry, AuditConsistency,
// SearchAudit, AuditChain) and a delegation's AuditReceipt return what
// the authority answers: an auditor verifies the checkpoint with the
// log's verifier key (golang.org/x/mod/sumdb/note, or
// github.com/transparency-dev/formats/log.ParseCheckpoint, whose origin
// is "<trust domain>/audit" unless the authority sets another), and each
// proof against it with github.com/transparency-dev/merkle's proof
// package and rfc6962.DefaultHasher, as mandate audit does: an entry's
// leaf hash is the RFC 6962 leaf hash of its EntryB64, and its proof
// hashes are given as bytes (see the example of AuditEntry).
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
//     are *Problem errors too, their code in Problem.Code (and their
//     Type about:blank, so that Name is no use for them);
//   - a call that fails answers nil (or the zero value) with its error,
//     never part of an answer: a list of several pages fails whole;
//   - a call whose answer must carry a credential (Join, AttestTPM and
//     AnswerTPMChallenge, X509SVID and NewX509SVID, JWTSVID, Delegate,
//     ExchangeToken) fails when the answer carries none;
//   - DelegationStatus is delegation.FetchStatus over the client's
//     connections: its failures match delegation.ErrStatusUnknown, as a
//     verifier's do.
package client
