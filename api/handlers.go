package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/credfile"
)

// svidAnswer is the body of every answer that carries an X509-SVID.
type svidAnswer struct {
	SPIFFEID  string `json:"spiffe_id"`
	X509SVID  string `json:"x509_svid"`
	ExpiresAt string `json:"expires_at"`
	Bundles   any    `json:"bundles"`
}

func (s *Server) svidAnswer(svid *ca.X509SVID) svidAnswer {
	return svidAnswer{
		SPIFFEID:  svid.ID.String(),
		X509SVID:  string(credfile.EncodeCertsPEM(svid.Certificates)),
		ExpiresAt: svid.ExpiresAt.UTC().Format(time.RFC3339),
		Bundles:   s.a.BundlesJSON(),
	}
}

func (s *Server) createJoinToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TTLSeconds int64 `json:"ttl_seconds"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(attest.MaxJoinTokenTTL/time.Second) {
		writeError(w, r, s.log, fmt.Errorf("%w: ttl_seconds must be between 0 (default) and %d", attest.ErrTokenTTL, int64(attest.MaxJoinTokenTTL/time.Second)))
		return
	}
	secret, rec, err := s.a.CreateJoinToken(r.Context(), callerOf(r), time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	nodeID, err := rec.NodeID(s.a.TrustDomain())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store") // it carries a bearer secret
	writeJSON(w, http.StatusCreated, map[string]string{
		"token": secret, "id": rec.ID, "expires_at": rec.ExpiresAt.UTC().Format(time.RFC3339), "node_id": nodeID.String(),
	})
}

// withdrawJoinToken is DELETE /v1/admin/join-tokens/{id}: an unused
// token is withdrawn (admin).
func (s *Server) withdrawJoinToken(w http.ResponseWriter, r *http.Request) {
	if _, err := s.a.WithdrawJoinToken(r.Context(), callerOf(r), r.PathValue("id")); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token string `json:"token"`
		CSR   string `json:"csr"`
	}
	if err := decodeJSON(r, &req); err != nil {
		s.metrics.attestations.WithLabelValues("join_token", refusedOrError(err)).Inc()
		writeError(w, r, s.log, err)
		return
	}
	svid, err := s.a.JoinNode(r.Context(), req.Token, []byte(req.CSR))
	if err != nil {
		s.metrics.attestations.WithLabelValues("join_token", refusedOrError(err)).Inc()
		writeError(w, r, s.log, err)
		return
	}
	s.metrics.attestations.WithLabelValues("join_token", "admitted").Inc()
	s.metrics.issued.WithLabelValues("x509", "node").Inc()
	writeJSON(w, http.StatusOK, s.svidAnswer(svid))
}

func (s *Server) svidX509(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SPIFFEID string `json:"spiffe_id"`
		CSR      string `json:"csr"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	svid, err := s.a.MintX509(r.Context(), callerOf(r), req.SPIFFEID, []byte(req.CSR))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.metrics.issued.WithLabelValues("x509", s.a.RoleOf(svid.ID).String()).Inc()
	writeJSON(w, http.StatusOK, s.svidAnswer(svid))
}

func (s *Server) svidJWT(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Audience []string `json:"audience"`
		SPIFFEID string   `json:"spiffe_id"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	svid, err := s.a.MintJWT(r.Context(), callerOf(r), req.SPIFFEID, req.Audience)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.metrics.issued.WithLabelValues("jwt", "agent").Inc()
	writeJSON(w, http.StatusOK, map[string]string{
		"spiffe_id": svid.ID.String(), "token": svid.Token, "expires_at": svid.ExpiresAt.UTC().Format(time.RFC3339),
	})
}

// nodeSync is POST /v1/nodes/sync: a node asks which of the agents it
// serves on its host it may still serve, and for the trust bundles.
func (s *Server) nodeSync(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SPIFFEIDs []string `json:"spiffe_ids"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	sync, err := s.a.SyncNode(r.Context(), callerOf(r), req.SPIFFEIDs)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	// Each refusal is the problem its SVIDs' issuance would answer.
	type refusal struct {
		SPIFFEID string `json:"spiffe_id"`
		Problem
	}
	hosted, refused := make([]string, 0, len(sync.Hosted)), make([]refusal, 0, len(sync.Refused))
	for _, id := range sync.Hosted {
		hosted = append(hosted, id.String())
	}
	for id, why := range sync.Refused {
		k, _ := problemOf(why) // each is one of the table's
		refused = append(refused, refusal{SPIFFEID: id.String(), Problem: Problem{Type: ProblemBase + k.name, Title: k.title, Status: k.status, Detail: problemDetail(why, k.err)}})
	}
	slices.SortFunc(refused, func(a, b refusal) int { return strings.Compare(a.SPIFFEID, b.SPIFFEID) })
	writeJSON(w, http.StatusOK, map[string]any{
		"node_id": sync.NodeID.String(), "hosted": hosted, "refused": refused, "bundles": sync.Bundles,
	})
}

// jwksMaxAge is how long a JWKS answer may be cached, at most: never
// longer than the bundle's refresh hint, which is shorter than the time a
// new key is published before it signs.
const jwksMaxAge = time.Minute

// jwks serves the JWT authorities as a plain JWKS for JWT verifiers that
// do not speak SPIFFE bundles.
func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	b := s.a.Bundle()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for kid, pub := range b.JWTAuthorities() {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: pub, KeyID: kid, Use: "sig", Algorithm: ca.JWTAlgorithm(pub)})
	}
	slices.SortFunc(set.Keys, func(a, b jose.JSONWebKey) int { return strings.Compare(a.KeyID, b.KeyID) })
	maxAge := jwksMaxAge
	if hint, ok := b.RefreshHint(); ok {
		maxAge = min(maxAge, hint)
	}
	w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d", int64(maxAge/time.Second)))
	writeJSON(w, http.StatusOK, set)
}

// caRotate is POST /v1/admin/ca/rotate: the active X.509 CA or JWT key
// replaced ahead of its schedule (admin).
func (s *Server) caRotate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Kind        string `json:"kind"`
		Reason      string `json:"reason"`
		Immediately bool   `json:"immediately"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	ans, err := s.a.RotateCA(r.Context(), callerOf(r), authority.CARotation{Kind: ca.Kind(req.Kind), Reason: req.Reason, Immediately: req.Immediately})
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

// caRevoke is POST /v1/admin/ca/revoke: a replaced X.509 CA or JWT key
// out of the bundle before it expires (admin).
func (s *Server) caRevoke(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID     string `json:"id"`
		Reason string `json:"reason"`
		Force  bool   `json:"force"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	info, err := s.a.RevokeCA(r.Context(), callerOf(r), req.ID, req.Reason, req.Force)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": info})
}

func (s *Server) caStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.a.CAStatus(callerOf(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
