package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/echo"
	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/witness"
)

// ProblemBase prefixes every problem type URI.
const ProblemBase = "https://mandate.dev/problems/"

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Reasons and DecisionID extend a policy deny: every reason the
	// policy gave (an empty array when it gave none), and the decision's
	// id in the audit log. Other problems carry neither.
	Reasons    []string `json:"reasons,omitzero"`
	DecisionID string   `json:"decision_id,omitempty"`
}

// problemKind is one row of the table: what an error means to a client.
type problemKind struct {
	err    error
	status int
	name   string
	title  string
}

// problemTable maps the errors flows return to problem types. The first
// row whose error matches (errors.Is) wins. Types are stable: clients
// branch on them.
var problemTable = []problemKind{
	{attest.ErrTokenUsed, http.StatusForbidden, "join-token-used", "Join token already used"},
	{attest.ErrTokenExpired, http.StatusForbidden, "join-token-expired", "Join token expired"},
	{attest.ErrTokenUnknown, http.StatusForbidden, "join-token-unknown", "Join token unknown"},
	{attest.ErrTokenWithdrawn, http.StatusForbidden, "join-token-withdrawn", "Join token withdrawn"},
	{attest.ErrTokenTTL, http.StatusBadRequest, "invalid-ttl", "TTL out of range"},
	{attest.ErrTPMDisabled, http.StatusForbidden, "tpm-attestation-disabled", "TPM attestation is not configured"},
	{attest.ErrTPMMalformed, http.StatusBadRequest, "tpm-malformed", "Malformed TPM structure"},
	{attest.ErrEKUntrusted, http.StatusForbidden, "tpm-ek-untrusted", "Endorsement key not trusted"},
	{attest.ErrEKCertInvalid, http.StatusForbidden, "tpm-ek-cert-invalid", "Endorsement key certificate invalid"},
	{attest.ErrAKInvalid, http.StatusBadRequest, "tpm-ak-invalid", "Attestation key not acceptable"},
	{attest.ErrChallengeUnknown, http.StatusForbidden, "tpm-challenge-unknown", "TPM challenge unknown"},
	{attest.ErrChallengeUsed, http.StatusForbidden, "tpm-challenge-used", "TPM challenge already answered"},
	{attest.ErrChallengeExpired, http.StatusForbidden, "tpm-challenge-expired", "TPM challenge expired"},
	{attest.ErrTooManyChallenges, http.StatusTooManyRequests, "tpm-too-many-challenges", "Too many open TPM challenges"},
	{attest.ErrCredentialMismatch, http.StatusForbidden, "tpm-credential-mismatch", "Activated credential does not match"},
	{attest.ErrQuoteInvalid, http.StatusForbidden, "tpm-quote-invalid", "Not a TPM-generated quote"},
	{attest.ErrQuoteSignature, http.StatusForbidden, "tpm-quote-signature-invalid", "Quote signature invalid"},
	{attest.ErrNonceMismatch, http.StatusForbidden, "tpm-nonce-mismatch", "Quote not over the challenge's nonce"},
	{attest.ErrPCRSelection, http.StatusForbidden, "tpm-pcr-selection-mismatch", "Quote covers other PCRs than asked"},
	{attest.ErrPCRDigest, http.StatusForbidden, "tpm-pcr-digest-mismatch", "Reported PCR values do not match the quote"},
	{attest.ErrPCRPolicy, http.StatusForbidden, "tpm-pcr-policy-mismatch", "PCR values match no allowed profile"},
	{authority.ErrPolicyDenied, http.StatusForbidden, "policy-denied", "Denied by policy"},
	{delegation.ErrMalformed, http.StatusBadRequest, "delegation-token-malformed", "Malformed delegation token"},
	{delegation.ErrTooLarge, http.StatusBadRequest, "delegation-chain-too-long", "Delegation chain too long for a token"},
	{delegation.ErrUntrustedIssuer, http.StatusForbidden, "delegation-issuer-untrusted", "Delegation issuer not trusted"},
	{delegation.ErrSignature, http.StatusForbidden, "delegation-signature-invalid", "Delegation token signature invalid"},
	{delegation.ErrExpired, http.StatusForbidden, "delegation-expired", "Delegation expired"},
	{delegation.ErrAudience, http.StatusForbidden, "delegation-wrong-audience", "Delegation token not for this audience"},
	{delegation.ErrNotHolder, http.StatusForbidden, "delegation-not-holder", "Not the delegation token's holder"},
	{delegation.ErrDelegatorSignature, http.StatusForbidden, "delegator-signature-invalid", "Delegator signature invalid"},
	{delegation.ErrChain, http.StatusForbidden, "delegation-chain-invalid", "Delegation chain inconsistent"},
	{authority.ErrDelegationRevoked, http.StatusForbidden, "delegation-revoked", "Revoked"},
	{authority.ErrScopeNotGranted, http.StatusForbidden, "scope-not-granted", "Scope not granted"},
	{authority.ErrStatusUnavailable, http.StatusServiceUnavailable, "delegation-status-unavailable", "A hop's revocation status is unavailable"},
	{policy.ErrRejected, http.StatusUnprocessableEntity, "policy-rejected", "Policy refused"},
	{policy.ErrBadPath, http.StatusBadRequest, "invalid-request", "Invalid request"},
	{registry.ErrBanned, http.StatusForbidden, "node-banned", "Node is banned"},
	{registry.ErrNodeDrifted, http.StatusForbidden, "node-drifted", "Node failed re-attestation"},
	{registry.ErrBanStands, http.StatusConflict, "node-ban-stands", "Node is banned"},
	{registry.ErrNotHosted, http.StatusForbidden, "agent-not-allowed-on-node", "Agent not allowed on this node"},
	{registry.ErrAlreadyExists, http.StatusConflict, "already-exists", "Already exists"},
	{authority.ErrPreconditionFailed, http.StatusPreconditionFailed, "precondition-failed", "Precondition failed"},
	{registry.ErrInvalid, http.StatusBadRequest, "invalid-registration", "Invalid registration"},
	{authority.ErrAgentNotRegistered, http.StatusForbidden, "agent-not-registered", "Agent not registered"},
	{authority.ErrNodeUnknown, http.StatusForbidden, "node-not-attested", "Node not attested"},
	{authority.ErrIDRevoked, http.StatusForbidden, "spiffe-id-revoked", "SPIFFE ID revoked"},
	{authority.ErrSVIDSuperseded, http.StatusForbidden, "svid-superseded", "SVID replaced since"},
	{authority.ErrRenewedMeanwhile, http.StatusConflict, "renewed-meanwhile", "Renewed meanwhile"},
	{authority.ErrChangedMeanwhile, http.StatusConflict, "changed-meanwhile", "Changed meanwhile"},
	{authority.ErrBackupUnderWay, http.StatusConflict, "backup-in-progress", "A backup is being made"},
	{authority.ErrBackupNoRoom, http.StatusInsufficientStorage, "backup-no-room", "No room for a backup"},
	{authority.ErrStopping, http.StatusServiceUnavailable, "stopping", "The server is stopping"},
	{store.ErrUnwritable, http.StatusServiceUnavailable, "storage-unavailable", "The authority cannot record now"},
	{authority.ErrForbidden, http.StatusForbidden, "forbidden", "Forbidden"},
	{authority.ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated", "Client certificate required"},
	{registry.ErrNotFound, http.StatusNotFound, "not-found", "Not found"},
	{authority.ErrNotFound, http.StatusNotFound, "not-found", "Not found"},
	{authority.ErrInvalidRequest, http.StatusBadRequest, "invalid-request", "Invalid request"},
	{authority.ErrFederation, http.StatusBadRequest, "invalid-federation", "Invalid federation relationship"},
	{ca.ErrAuthorityInUse, http.StatusConflict, "authority-in-use", "Authority still in use"},
	{ca.ErrUnknownAuthority, http.StatusNotFound, "not-found", "Not found"},
	{ca.ErrWeakKey, http.StatusBadRequest, "weak-key", "Key too weak"},
	{ca.ErrUnsupportedKey, http.StatusBadRequest, "unsupported-key", "Unsupported key type"},
	{ca.ErrInvalidCSR, http.StatusBadRequest, "invalid-csr", "Invalid CSR"},
	{ca.ErrCSRIdentity, http.StatusBadRequest, "csr-identity-mismatch", "CSR names another identity"},
	{ca.ErrInvalidParams, http.StatusBadRequest, "invalid-request", "Invalid request"},
	{errBadJSON, http.StatusBadRequest, "malformed-json", "Malformed JSON"},
	{errUnknownField, http.StatusBadRequest, "unknown-field", "Unknown field"},
	{errBodyTooLarge, http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large"},
	{errBodyTimeout, http.StatusRequestTimeout, "request-timeout", "Request body not received in time"},
	{errBodyBroken, http.StatusBadRequest, "incomplete-body", "Request body incomplete"},
	{errRateLimited, http.StatusTooManyRequests, "rate-limited", "Rate limit reached"},
	{errContentType, http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type"},
	{errBadPath, http.StatusBadRequest, "invalid-request", "Invalid request"},
	{errBadQuery, http.StatusBadRequest, "invalid-request", "Invalid request"},
	{witness.ErrMalformed, http.StatusBadRequest, "witness-request-malformed", "Malformed add-checkpoint request"},
	{witness.ErrUnknownLog, http.StatusNotFound, "witness-unknown-log", "Log not witnessed here"},
	{witness.ErrNotSigned, http.StatusForbidden, "witness-checkpoint-unsigned", "Checkpoint not signed by its log"},
	{witness.ErrInconsistent, http.StatusUnprocessableEntity, "witness-inconsistent", "Consistency proof does not verify"},
	{witness.ErrRootMismatch, http.StatusConflict, "witness-root-mismatch", "Another root hash at the size cosigned"},
	{errNoWitness, http.StatusNotFound, "not-found", "Not found"},
	{authority.ErrNotWitnessed, http.StatusNotFound, "checkpoint-not-witnessed", "No checkpoint cosigned by a witness"},
	{audit.ErrIndexOutOfRange, http.StatusNotFound, "audit-entry-not-found", "No such audit entry"},
	{audit.ErrTreeSize, http.StatusBadRequest, "invalid-tree-size", "Invalid tree size"},
	{audit.ErrBadQuery, http.StatusBadRequest, "invalid-query", "Invalid search query"},
	{audit.ErrBadTilePath, http.StatusNotFound, "tile-not-found", "No such tile"},
	{audit.ErrNoTile, http.StatusNotFound, "tile-not-found", "No such tile"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout", "Request timed out"},
	{context.Canceled, http.StatusServiceUnavailable, "canceled", "Request canceled"}, // the client went away
}

// problemOf is the row of the table err matches; none for the server's
// own faults.
func problemOf(err error) (problemKind, bool) {
	for _, k := range problemTable {
		if errors.Is(err, k.err) {
			return k, true
		}
	}
	return problemKind{}, false
}

// writeError answers err as problem+json. Errors not in the table are the
// server's fault: logged, and answered 500 without their text.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	if k, ok := problemOf(err); ok {
		p := Problem{Type: ProblemBase + k.name, Title: k.title, Status: k.status, Detail: problemDetail(err, k.err)}
		if k.err == store.ErrUnwritable {
			// The error names the server's files and the system's
			// error: the server log says them (once, see audit.Log.Run).
			p.Detail = "its data file could not be written (a full disk?): the request was not done; try again later"
			if errors.Is(err, store.ErrNotDurable) {
				p.Detail = "a write to its data file could not be confirmed on its disk: it does nothing more with the file until it is restarted"
			}
		}
		var denial *authority.PolicyDenial
		if errors.As(err, &denial) {
			p.Reasons, p.DecisionID = denial.Decision.Reasons, denial.Decision.ID
			if p.Reasons == nil {
				p.Reasons = []string{}
			}
		}
		if errors.Is(err, registry.ErrBanned) {
			// A banned node (or an agent on one) still knocking: what an
			// operator watching for a compromised host must see.
			caller := ""
			if c := callerOf(r); c != nil {
				caller = c.ID.String()
			}
			log.WarnContext(r.Context(), "refused: banned node", "method", r.Method, "path", r.URL.Path, "caller", caller, "err", err)
		}
		writeProblem(w, p)
		return
	}
	log.ErrorContext(r.Context(), "internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	writeProblem(w, Problem{Type: ProblemBase + "internal", Title: "Internal server error", Status: http.StatusInternalServerError,
		Detail: "the server failed to answer; the error is in its log, with request_id=" + RequestID(r.Context())})
}

// problemDetail is err's text as a problem's detail, without the Go
// error it matched in the table, which the title says already:
// "registry: not found: agent "x"" is `agent "x"`, and "attest: join
// token already used (token …)" is "join token already used (token …)".
// An error that does not begin with the one it matched is said whole.
// Either way the names of Go packages its clauses begin with are left
// out (see plainText), except in a policy's reasons, which are the
// policy author's words.
func problemDetail(err, matched error) string {
	s, m := err.Error(), matched.Error()
	if errors.Is(matched, authority.ErrPolicyDenied) {
		if d, ok := strings.CutPrefix(s, m+": "); ok && d != "" {
			return d
		}
		return s
	}
	rest, ok := strings.CutPrefix(s, m)
	if !ok {
		return plainText(s)
	}
	if d, ok := strings.CutPrefix(rest, ": "); ok && d != "" {
		return plainText(d)
	}
	if _, bare, ok := strings.Cut(m, ": "); ok {
		return plainText(bare + rest) // without its package's name
	}
	return plainText(s)
}

// goPackages are the names Go errors begin with, by convention, in the
// packages whose errors reach a refusal: this module's and the
// libraries' it reads requests with. They are words of the code, not of
// the request.
var goPackages = []string{
	"api", "attest", "audit", "authority", "ca", "credfile", "delegation", "federation", "policy", "registry", "store/bolt", "bolt", "store",
	"asn1", "x509", "pem", "json", "jsontext", "go-jose/go-jose", "jose", "spiffeid", "spiffebundle", "x509bundle", "jwtbundle",
	"x509svid", "jwtsvid", "tpm2",
}

// plainText is an error's text for a user: without the Go package name
// ("federation: ", "x509: ", …) that begins it or any of its clauses
// (the text after a ": " or "; ", outside quoted text: what a request
// said is quoted as it was). "bundle: federation: bundle has no
// authorities" is "bundle: bundle has no authorities", and "signature:
// x509: ECDSA verification failure" is "signature: ECDSA verification
// failure".
func plainText(s string) string {
	var b strings.Builder
	for {
		for trimmed := true; trimmed; {
			trimmed = false
			for _, p := range goPackages {
				if rest, ok := strings.CutPrefix(s, p+": "); ok {
					s, trimmed = rest, true
					break
				}
			}
		}
		i := clauseEnd(s)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i:]
	}
}

// clauseEnd is the index just after the first ": " or "; " of s outside
// a quoted string (what a request said, quoted as Go quotes it, is
// said as it was), or -1.
func clauseEnd(s string) int {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++ // the escaped byte
		case c == '"':
			quoted = !quoted
		case !quoted && (c == ':' || c == ';') && i+1 < len(s) && s[i+1] == ' ':
			return i + 2
		}
	}
	return -1
}

func writeProblem(w http.ResponseWriter, p Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeProblem(w, Problem{Type: ProblemBase + "not-found", Title: "Not found", Status: http.StatusNotFound,
		Detail: "no such endpoint: " + echo.Cut(r.Method, maxEcho) + " " + echo.Cut(r.URL.Path, maxEcho)})
}

// methodNotAllowed answers a method the path does not serve (RFC 9110
// §15.5.6: with Allow), in OPA's shape under /v1/data.
func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow []string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	detail := "method " + echo.Cut(r.Method, maxEcho) + " is not allowed on " + echo.Cut(r.URL.Path, maxEcho)
	if isDataPath(r.URL.Path) {
		writeOPAError(w, http.StatusMethodNotAllowed, opaInvalidOperation, detail)
		return
	}
	writeProblem(w, Problem{Type: ProblemBase + "method-not-allowed", Title: "Method not allowed", Status: http.StatusMethodNotAllowed, Detail: detail})
}
