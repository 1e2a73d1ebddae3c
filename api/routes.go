package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/federation"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
)

// routes registers every endpoint. Each path also gets a method-less
// fallback so a wrong method is answered with a 405 (its Allow header
// naming the path's methods), and "/" answers unknown paths with a 404
// problem.
func (s *Server) routes() (*http.ServeMux, error) {
	bundleHandler, err := s.bundleHandler()
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	allowed := map[string][]string{} // path → its methods, for the 405's Allow
	handle := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, h)
		method, path, _ := strings.Cut(pattern, " ")
		if _, ok := allowed[path]; !ok {
			mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { methodNotAllowed(w, r, allowed[path]) })
		}
		allowed[path] = append(allowed[path], method)
		if method == http.MethodGet && !isDataPath(path) {
			allowed[path] = append(allowed[path], http.MethodHead)
		}
	}
	handle("GET /healthz", s.healthz)
	handle("GET /metrics", s.metricsHandler(promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})))
	handle("GET /v1/bundle", bundleHandler.ServeHTTP)
	handle("GET /.well-known/jwks.json", s.jwks)

	handle("POST /v1/admin/join-tokens", s.createJoinToken)
	handle("DELETE /v1/admin/join-tokens/{id}", s.withdrawJoinToken)
	handle("POST /v1/admin/agents", s.createAgent)
	handle("GET /v1/admin/agents", s.listAgents)
	handle("GET /v1/admin/agents/{id}", s.getAgent)
	handle("PUT /v1/admin/agents/{id}", s.updateAgent)
	handle("DELETE /v1/admin/agents/{id}", s.deleteAgent)
	handle("GET /v1/admin/nodes", s.listNodes)
	handle("GET /v1/admin/nodes/{id}", s.getNode)
	handle("POST /v1/admin/nodes/{id}/ban", s.banNode)
	handle("POST /v1/admin/nodes/{id}/evict", s.evictNode)
	handle("POST /v1/admin/federations", s.addFederation)
	handle("GET /v1/admin/federations", s.listFederations)
	handle("DELETE /v1/admin/federations/{td}", s.deleteFederation)
	handle("GET /v1/admin/ca", s.caStatus)
	handle("POST /v1/admin/ca/rotate", s.caRotate)
	handle("POST /v1/admin/ca/revoke", s.caRevoke)
	handle("POST /v1/admin/backups", s.makeBackup)

	handle("GET /v1/audit/checkpoint", s.auditCheckpoint)
	handle("GET /v1/audit/checkpoint/witnessed", s.auditWitnessedCheckpoint)
	handle("GET /v1/audit/entries/{index}", s.auditEntry)
	handle("GET /v1/audit/proofs/consistency", s.auditConsistency)
	handle("GET /v1/audit/search", s.auditSearch)
	handle("GET /v1/audit/verifier-key", s.auditVerifierKey)
	handle("GET /v1/audit/chains/{id}", s.auditChain)
	handle("GET /checkpoint", s.tiles)
	handle("GET /tile/", s.tiles)
	mux.HandleFunc("/tile", notFound) // not the mux's redirect to /tile/

	handle("POST /v1/admin/policy/reload", s.policyReload)
	handle("POST /v1/admin/policy/test", s.policyTest)
	handle("GET /v1/admin/policy", s.policyStatus)
	handle("POST /v1/data/{path...}", s.dataPost)
	handle("GET /v1/data/{path...}", s.dataGet)
	handle("POST /v1/data", s.dataPost)
	handle("GET /v1/data", s.dataGet)
	// As OPA: HEAD is no method of the Data API (a GET pattern would
	// take it, evaluating and recording a decision whose answer no one
	// reads).
	for _, path := range []string{"/v1/data/{path...}", "/v1/data"} {
		mux.HandleFunc("HEAD "+path, func(w http.ResponseWriter, r *http.Request) { methodNotAllowed(w, r, allowed[path]) })
	}
	handle("POST /access/v1/evaluation", s.accessEvaluation)
	handle("POST /access/v1/evaluations", s.accessEvaluations)

	handle("POST /v1/delegations", s.delegate)
	handle("POST /v1/token", s.tokenExchange)
	handle("GET /.well-known/oauth-authorization-server", s.oauthMetadata)
	handle("GET /v1/delegations/{id}/status", s.delegationStatus)
	handle("POST /v1/admin/revocations", s.revoke)
	handle("GET /v1/admin/revocations", s.listRevocations)

	handle("POST /v1/witness/add-checkpoint", s.witnessAddCheckpoint)
	handle("GET /v1/witness/verifier-key", s.witnessVerifierKey)
	handle("POST /v1/nodes/join", s.join)
	handle("POST /v1/nodes/attest/tpm/challenge", s.tpmChallenge)
	handle("POST /v1/nodes/attest/tpm/verify", s.tpmVerify)
	handle("POST /v1/svid/x509", s.svidX509)
	handle("POST /v1/svid/jwt", s.svidJWT)
	handle("POST /v1/nodes/sync", s.nodeSync)
	mux.HandleFunc("/", notFound)
	return mux, nil
}

// healthz answers 200 while the authority can serve, and 503 while its
// data file is no longer used, the audit log cannot record (see health)
// or an active signing key has expired.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	x509CA, jwtKey := s.a.SigningExpiry()
	code, body := health(s.a.TrustDomain().String(), s.a.StoreStopped(), s.a.AuditStats(), signingKeys{x509CA: x509CA, jwtKey: jwtKey}, time.Now())
	writeJSON(w, code, body)
}

// signingKeys are when the active X.509 CA and JWT key expire.
type signingKeys struct{ x509CA, jwtKey time.Time }

// health is the answer of /healthz for the data file's state (stopped:
// no longer used until a restart), the audit log's stats and the active
// signing keys at now.
func health(td string, stopped error, st audit.Stats, keys signingKeys, now time.Time) (int, map[string]string) {
	failing := func(reason string) (int, map[string]string) {
		return http.StatusServiceUnavailable, map[string]string{"status": "failing", "trust_domain": td, "reason": reason}
	}
	if stopped != nil {
		return failing("the data file is no longer read or written since a failure (a damaged page, or a write whose sync failed): nothing can be served from it until the server is restarted; the server log says why")
	}
	if at := st.FailedAt; !at.IsZero() && now.Sub(at) < healthFailureWindow {
		return failing("the audit log's latest commit failed (" + at.UTC().Format(time.RFC3339) + "): nothing can be recorded; the server log says why")
	}
	for _, k := range []struct {
		what     string
		notAfter time.Time
	}{{"X.509 CA (no X509-SVID", keys.x509CA}, {"JWT key (no JWT-SVID or delegation token", keys.jwtKey}} {
		if !k.notAfter.IsZero() && !now.Before(k.notAfter) {
			return failing("the active " + k.what + " can be issued) expired at " + k.notAfter.UTC().Format(time.RFC3339) +
				": it was not rotated in time; the server log says why")
		}
	}
	return http.StatusOK, map[string]string{"status": "ok", "trust_domain": td}
}

// healthFailureWindow is how long a failed audit commit makes /healthz
// answer 503 when no commit follows it.
const healthFailureWindow = time.Minute

// metricsHandler serves /metrics to anyone, or, when http.metrics_readers
// lists SPIFFE IDs, only to them and to admins over mTLS.
func (s *Server) metricsHandler(h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.a.MayReadMetrics(r.Context(), callerOf(r)); err != nil {
			writeError(w, r, s.log, err)
			return
		}
		h.ServeHTTP(w, r)
	}
}

// BundleHandler serves only the SPIFFE bundle endpoint, at every path, for
// a second listener with a Web PKI certificate (https_web profile).
func (s *Server) BundleHandler() http.Handler {
	h, err := s.bundleHandler()
	if err != nil {
		return http.HandlerFunc(notFound)
	}
	return h
}

// bundleHandler is go-spiffe's bundle endpoint, answering HEAD as GET
// without the body (go-spiffe's own answers HEAD with 405, which some
// HTTP clients and monitors use to look at an endpoint).
func (s *Server) bundleHandler() (http.Handler, error) {
	h, err := federation.NewHandler(s.a.TrustDomain(), s.a)
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead { // the server drops the body of a HEAD's answer
			r = r.Clone(r.Context())
			r.Method = http.MethodGet
		}
		h.ServeHTTP(w, r)
	}), nil
}

// writeRefusal answers a caller refused by a roleCheck: in OPA's shape on
// the Data API, else as a problem.
func (s *Server) writeRefusal(w http.ResponseWriter, r *http.Request, err error) {
	if isDataPath(r.URL.Path) {
		s.writeDataError(w, r, err)
		return
	}
	writeError(w, r, s.log, err)
}

// roleCheck is the check of who may call the endpoint of pattern (as
// registered, "POST /v1/delegations") with request r, or nil for an
// endpoint that checks its callers itself or needs none.
func (s *Server) roleCheck(pattern string) func(*authority.Caller, *http.Request) error {
	_, path, _ := strings.Cut(pattern, " ")
	switch {
	case strings.HasPrefix(path, "/v1/admin/"):
		return func(c *authority.Caller, _ *http.Request) error { return s.a.Require(c, authority.RoleAdmin) }
	case pattern == "POST /v1/delegations":
		return func(c *authority.Caller, _ *http.Request) error { return s.a.Require(c, authority.RoleAgent) }
	case pattern == "POST /v1/nodes/sync":
		return func(c *authority.Caller, _ *http.Request) error { return s.a.Require(c, authority.RoleNode) }
	case strings.HasPrefix(path, "/v1/svid/"):
		// A node (for itself or an agent it hosts) or an agent (for
		// itself); the flow checks which SVID each may have.
		return func(c *authority.Caller, _ *http.Request) error {
			return s.a.Require(c, authority.RoleNode, authority.RoleAgent)
		}
	case strings.HasPrefix(path, "/access/v1/"):
		// An admin or a decision caller (allowed the AuthZEN document).
		return func(c *authority.Caller, r *http.Request) error { return s.a.MayEvaluateAccess(r.Context(), c) }
	case isDataPath(path):
		// An admin or a decision caller, allowed the document asked.
		return func(c *authority.Caller, r *http.Request) error { return s.a.MayQueryData(r.Context(), c, dataPath(r)) }
	}
	return nil
}
