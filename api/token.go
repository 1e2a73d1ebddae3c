package api

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
)

// RFC 8693 names.
const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT       = delegation.TokenType
	tokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
	// tokenTypePrincipal is Mandate's subject token type for a root hop:
	// the subject token is the principal's name, vouched for by the
	// delegator's signature.
	tokenTypePrincipal = "urn:mandate:params:oauth:token-type:principal"
)

// oauthError answers as RFC 6749 §5.2 says: error_description only of
// the characters it allows (%x20-21 / %x23-5B / %x5D-7E; others become
// '?'), and at most maxErrorDescription of them. A 401 (the client
// authenticated with the Authorization header) names the scheme used.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	if status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="mandate", error="`+code+`"`)
	}
	writeTokenAnswer(w, status, map[string]string{"error": code, "error_description": errorDescription(desc)})
}

// writeTokenAnswer writes a token endpoint answer, a token or an OAuth
// error, as writeJSON writes the API's other answers, and uncacheable
// (RFC 6749 §5.1).
func writeTokenAnswer(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// authScheme is the scheme an Authorization header names (RFC 9110
// §11.4: a token), or "Basic" when it names none Mandate may repeat.
func authScheme(h string) string {
	scheme, _, _ := strings.Cut(h, " ")
	if scheme == "" || len(scheme) > 32 {
		return "Basic"
	}
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return "Basic"
		}
	}
	return scheme
}

// maxErrorDescription bounds an error_description.
const maxErrorDescription = 512

func errorDescription(s string) string {
	out := make([]byte, 0, min(len(s), maxErrorDescription))
	for i := 0; i < len(s) && len(out) < maxErrorDescription; i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c > 0x7e {
			c = '?'
		}
		out = append(out, c)
	}
	return string(out)
}

// clientAuthFailureStatus is the status of a failed client
// authentication at the token endpoint (RFC 6749 §5.2): 401 when the
// client sent an Authorization header, with a WWW-Authenticate challenge
// of the scheme it used, whichever it was; else 400.
func clientAuthFailureStatus(w http.ResponseWriter, r *http.Request) int {
	h := r.Header.Get("Authorization")
	if h == "" {
		return http.StatusBadRequest
	}
	w.Header().Set("WWW-Authenticate", authScheme(h)+` realm="mandate", error="invalid_client"`)
	return http.StatusUnauthorized
}

// tokenExchange is POST /v1/token: RFC 8693 token exchange, form-encoded,
// over mTLS as the delegator agent. subject_token is the parent
// delegation token (types jwt or access_token) or, for a root hop, the
// principal (type urn:mandate:params:oauth:token-type:principal);
// audience is the delegatee's SPIFFE ID; scope the scopes;
// actor_token, if given, a JWT-SVID of the caller for this trust domain;
// delegator_signature (an extension parameter) the delegator's signature
// of the hop; delegatee_x509_svid (another extension), the delegatee's
// SVID chain in PEM, binds the token to it.
func (s *Server) tokenExchange(w http.ResponseWriter, r *http.Request) {
	// A request refused before it names a hop is counted all the same:
	// every request ends in one outcome on /metrics.
	refuseEarly := func(status int, code, desc string) {
		s.metrics.delegations.WithLabelValues("refused").Inc()
		oauthError(w, status, code, desc)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		refuseEarly(http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if err = bodyError(err); errors.Is(err, errBodyTooLarge) || errors.Is(err, errBodyTimeout) {
			s.metrics.delegations.WithLabelValues(refusedOrError(err)).Inc()
			writeError(w, r, s.log, err)
		} else {
			refuseEarly(http.StatusBadRequest, "invalid_request", strings.TrimPrefix(err.Error(), "api: "))
		}
		return
	}
	f, err := url.ParseQuery(string(body))
	if err != nil {
		refuseEarly(http.StatusBadRequest, "invalid_request", "the body is not a form: "+err.Error())
		return
	}
	// RFC 6749 §3.1: a parameter sent without a value is as if omitted.
	for k, vs := range f {
		if vs = slices.DeleteFunc(vs, func(v string) bool { return v == "" }); len(vs) == 0 {
			delete(f, k)
		} else {
			f[k] = vs
		}
	}
	for _, k := range []string{"grant_type", "subject_token", "subject_token_type", "actor_token", "actor_token_type", "scope",
		"requested_token_type", "delegator_signature", "delegatee_x509_svid", "purpose", "client_id"} {
		if len(f[k]) > 1 {
			refuseEarly(http.StatusBadRequest, "invalid_request", k+" is given more than once")
			return
		}
	}
	switch f.Get("grant_type") {
	case grantTokenExchange:
	case "":
		refuseEarly(http.StatusBadRequest, "invalid_request", "grant_type is required ("+grantTokenExchange+")")
		return
	default:
		refuseEarly(http.StatusBadRequest, "unsupported_grant_type", "only "+grantTokenExchange+" is supported")
		return
	}
	// The client authenticates with its X509-SVID (RFC 8705
	// tls_client_auth). An Authorization header, as OAuth libraries send
	// the client_id in one, must name that client: a 401 then names the
	// scheme it used (RFC 6749 §5.2). Without one, a failed client
	// authentication is a 400.
	unauthorized := http.StatusBadRequest
	headerID, _, usedHeader := r.BasicAuth()
	otherScheme := false
	if usedHeader {
		if id, err := url.QueryUnescape(headerID); err == nil { // RFC 6749 §2.3.1
			headerID = id
		}
		unauthorized = http.StatusUnauthorized
	} else if r.Header.Get("Authorization") != "" {
		// Refused below, whatever else the request holds.
		unauthorized = clientAuthFailureStatus(w, r)
		otherScheme = true
	}
	c := callerOf(r)
	if c == nil {
		refuseEarly(unauthorized, "invalid_client", "authenticate with the delegator's X509-SVID (mTLS)")
		return
	}
	req := authority.DelegateRequest{Delegatee: f.Get("audience"), Scopes: scopeTokens(f.Get("scope")), Purpose: f.Get("purpose"),
		DelegatorSignature: f.Get("delegator_signature")}
	// The subject token is the parent token or, for a root hop, the
	// principal; another type is refused below.
	subject, knownSubject := map[string]*string{tokenTypeJWT: &req.ParentToken, tokenTypeAccess: &req.ParentToken,
		tokenTypePrincipal: &req.Principal}[f.Get("subject_token_type")]
	if knownSubject {
		*subject = f.Get("subject_token")
	}
	// Refusals of an authenticated agent are recorded, as Delegate
	// records its own.
	refuse := func(status int, code, desc string) {
		_ = s.a.RefuseDelegation(r.Context(), c, req, errors.New(code+": "+desc))
		s.metrics.delegations.WithLabelValues("refused").Inc()
		oauthError(w, status, code, desc)
	}
	// RFC 8705 tls_client_auth: a client_id, when one is sent, names the
	// client the certificate authenticated.
	if id := f.Get("client_id"); id != "" && id != c.ID.String() {
		refuse(unauthorized, "invalid_client", "client_id does not name the authenticated caller "+c.ID.String())
		return
	}
	if otherScheme {
		refuse(unauthorized, "invalid_client", "authenticate with the delegator's X509-SVID (mTLS); an Authorization header may only name it (Basic, its SPIFFE ID)")
		return
	}
	if usedHeader && headerID != c.ID.String() {
		refuse(unauthorized, "invalid_client", "the Authorization header does not name the authenticated caller "+c.ID.String())
		return
	}
	// Only an agent of this trust domain delegates: any other client is
	// refused as the client it is (invalid_client), whatever else its
	// form holds, not for the first parameter found wanting.
	if err := s.a.Require(c, authority.RoleAgent); err != nil {
		_, code, desc, _ := oauthErrorOf(err)
		refuseEarly(unauthorized, code, desc)
		return
	}
	// RFC 8693 §2.2.2: one delegatee per token, named by audience; no
	// resource indicators.
	if len(f["audience"]) != 1 || len(f["resource"]) > 0 {
		refuse(http.StatusBadRequest, "invalid_target", "name exactly one delegatee, by its SPIFFE ID, in audience (and no resource)")
		return
	}
	if _, err := spiffeid.FromString(req.Delegatee); err != nil {
		refuse(http.StatusBadRequest, "invalid_target", "audience is not a SPIFFE ID: "+err.Error())
		return
	}
	switch f.Get("requested_token_type") {
	case "", tokenTypeJWT, tokenTypeAccess:
	default:
		refuse(http.StatusBadRequest, "invalid_request", "requested_token_type: only "+tokenTypeJWT+" (or "+tokenTypeAccess+", answered with one) is issued")
		return
	}
	if !knownSubject {
		refuse(http.StatusBadRequest, "invalid_request", "subject_token_type must be "+tokenTypeJWT+", "+tokenTypeAccess+" or "+tokenTypePrincipal)
		return
	}
	if f.Get("subject_token") == "" { // RFC 8693 §2.1: required
		refuse(http.StatusBadRequest, "invalid_request", "subject_token is required: the parent token, or for a root hop the principal")
		return
	}
	if len(req.Scopes) == 0 { // RFC 6749 §3.3: no default scope here
		refuse(http.StatusBadRequest, "invalid_scope", "scope is required: the scopes to delegate, space-separated")
		return
	}
	switch at := f.Get("actor_token"); {
	case at == "" && f.Has("actor_token_type"):
		// RFC 8693 §2.1: actor_token_type only with an actor_token.
		refuse(http.StatusBadRequest, "invalid_request", "actor_token_type is given without an actor_token")
		return
	case at != "" && f.Get("actor_token_type") != tokenTypeJWT:
		refuse(http.StatusBadRequest, "invalid_request", "actor_token_type must be "+tokenTypeJWT+" (a JWT-SVID)")
		return
	case at != "":
		svid, err := jwtsvid.ParseAndValidate(at, s.a, []string{s.a.TrustDomain().IDString()})
		if err != nil || svid.ID != c.ID {
			refuse(http.StatusBadRequest, "invalid_request", "actor_token is not a JWT-SVID of the authenticated caller for audience "+s.a.TrustDomain().IDString())
			return
		}
	}
	if pem := f.Get("delegatee_x509_svid"); pem != "" {
		certs, err := credfile.ParseCertsPEM([]byte(pem))
		if err != nil {
			refuse(http.StatusBadRequest, "invalid_request", "delegatee_x509_svid: "+err.Error())
			return
		}
		req.DelegateeSVID = certs
	}
	ans, err := s.a.Delegate(r.Context(), c, req)
	s.metrics.delegated(err)
	if err != nil {
		if status, code, desc, ok := oauthErrorOf(err); ok {
			if status == http.StatusUnauthorized {
				status = unauthorized
			}
			oauthError(w, status, code, desc)
		} else {
			writeError(w, r, s.log, err) // the server's own fault, or unavailable
		}
		return
	}
	// expires_in in the token's whole seconds (exp less the second of
	// the answer), and never below 1: OAuth client libraries read 0 (or
	// no expires_in) as a token that does not expire.
	expiresIn := max(ans.ExpiresAt.Unix()-time.Now().Unix(), 1)
	writeTokenAnswer(w, http.StatusOK, map[string]any{"access_token": ans.Token, "issued_token_type": tokenTypeJWT, "token_type": "Bearer",
		"expires_in": expiresIn, "scope": strings.Join(req.Scopes, " ")})
}

// oauthErrorOf is the RFC 6749 error (§5.2) a refused exchange answers
// for err, or not ok for the server's own faults, an unavailable status
// and a hop whose grounds changed while it was decided, which are
// problem documents.
func oauthErrorOf(err error) (status int, code, desc string, ok bool) {
	status, code = http.StatusBadRequest, "invalid_request"
	var denial *authority.PolicyDenial
	switch {
	case errors.As(err, &denial):
		return status, "invalid_scope", strings.Join(denial.Decision.Reasons, "; ") + " (decision " + denial.Decision.ID + ")", true
	case errors.Is(err, authority.ErrScopeNotGranted), errors.Is(err, authority.ErrScopeInvalid):
		// RFC 6749 §5.2: a scope "invalid, unknown, malformed, or
		// [exceeding] the scope granted".
		code = "invalid_scope"
	case errors.Is(err, authority.ErrForbidden), errors.Is(err, authority.ErrUnauthenticated), errors.Is(err, authority.ErrAgentNotRegistered):
		status, code = http.StatusUnauthorized, "invalid_client"
	case errors.Is(err, authority.ErrDelegateeInvalid):
		// RFC 8693 §2.2.2: no token for this audience.
		code = "invalid_target"
	case errors.Is(err, delegation.ErrMalformed), errors.Is(err, delegation.ErrUntrustedIssuer), errors.Is(err, delegation.ErrSignature),
		errors.Is(err, delegation.ErrExpired), errors.Is(err, delegation.ErrNotHolder), errors.Is(err, delegation.ErrChain),
		errors.Is(err, delegation.ErrAudience), errors.Is(err, authority.ErrDelegationRevoked):
		// RFC 8693 §2.2.2: a subject_token invalid "for any reason"
		// is invalid_request.
	case errors.Is(err, authority.ErrInvalidRequest), errors.Is(err, delegation.ErrDelegatorSignature), errors.Is(err, delegation.ErrTooLarge):
	case errors.Is(err, authority.ErrChangedMeanwhile):
		// Not the request's fault, and nothing RFC 6749 names: asked
		// again, it is decided anew (409 changed-meanwhile).
		return 0, "", "", false
	default:
		// The caller's own fault, as the other endpoints answer it: not
		// allowed (its node banned, drifted or not attested, say) is
		// unauthorized_client; anything else it sent, invalid_request.
		k, known := problemOf(err)
		switch {
		case known && (k.status == http.StatusUnauthorized || k.status == http.StatusForbidden):
			code = "unauthorized_client"
		case known && k.status < 500:
		default:
			return 0, "", "", false
		}
	}
	return status, code, plainText(err.Error()), true
}

// oauthMetadata is GET /.well-known/oauth-authorization-server (RFC 8414).
func (s *Server) oauthMetadata(w http.ResponseWriter, r *http.Request) {
	base := s.baseURL(r)
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                base,
		"token_endpoint":                        base + "/v1/token",
		"jwks_uri":                              base + "/.well-known/jwks.json",
		"grant_types_supported":                 []string{grantTokenExchange},
		"token_endpoint_auth_methods_supported": []string{"tls_client_auth"},
		"tls_client_certificate_bound_access_tokens": true,
		// RFC 8414 §2 asks for it; there is no authorization endpoint.
		"response_types_supported":              []string{},
		"mandate_subject_token_types_supported": []string{tokenTypeJWT, tokenTypeAccess, tokenTypePrincipal},
	})
}

// baseURL is where clients reach this API: http.public_url, or else the
// host the request was sent to. A request that names none (HTTP/1.0
// allows it) reached the name the client asked for in the TLS handshake,
// or else the address it connected to, at the port it connected to.
func (s *Server) baseURL(r *http.Request) string {
	if pub := s.a.Config().HTTP.PublicURL; pub != "" {
		return strings.TrimSuffix(pub, "/")
	}
	host := r.Host
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); host == "" && ok {
		host = local.String()
		if _, port, err := net.SplitHostPort(host); err == nil && r.TLS != nil && r.TLS.ServerName != "" {
			host = net.JoinHostPort(r.TLS.ServerName, port)
		}
	}
	return (&url.URL{Scheme: "https", Host: host}).String()
}

// scopeTokens splits an OAuth scope parameter on spaces, as RFC 6749
// §3.3 separates its tokens (SP only): any other space, a no-break space
// say, stays in its scope, which is then refused as POST /v1/delegations
// refuses it, never read as two scopes a JSON request could not name.
// Extra spaces separate nothing.
func scopeTokens(scope string) []string {
	return strings.FieldsFunc(scope, func(r rune) bool { return r == ' ' })
}
