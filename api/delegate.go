package api

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
)

// DelegationRequest is the body of POST /v1/delegations, as the server
// reads it (DecodeStrict).
type DelegationRequest struct {
	Delegatee          string   `json:"delegatee"`
	DelegateeX509SVID  string   `json:"delegatee_x509_svid"`
	Scopes             []string `json:"scopes"`
	Principal          string   `json:"principal"`
	ParentToken        string   `json:"parent_token"`
	Purpose            string   `json:"purpose"`
	TTLSeconds         int64    `json:"ttl_seconds"`
	DelegatorSignature string   `json:"delegator_signature"`
}

// delegate is POST /v1/delegations (an agent, the delegator).
func (s *Server) delegate(w http.ResponseWriter, r *http.Request) {
	var req DelegationRequest
	if err := decodeJSON(r, &req); err != nil {
		s.metrics.delegations.WithLabelValues(refusedOrError(err)).Inc()
		writeError(w, r, s.log, err)
		return
	}
	dr := authority.DelegateRequest{Delegatee: req.Delegatee, Scopes: req.Scopes, Principal: req.Principal, ParentToken: req.ParentToken,
		Purpose: req.Purpose, TTL: time.Duration(req.TTLSeconds) * time.Second, DelegatorSignature: req.DelegatorSignature}
	// Refusals of an authenticated agent are recorded, as Delegate
	// records its own.
	refuse := func(msg string) {
		err := s.a.RefuseDelegation(r.Context(), callerOf(r), dr, errInvalid(msg))
		s.metrics.delegated(err)
		writeError(w, r, s.log, err)
	}
	if req.DelegateeX509SVID != "" {
		certs, err := credfile.ParseCertsPEM([]byte(req.DelegateeX509SVID))
		if err != nil {
			refuse("delegatee_x509_svid: " + err.Error())
			return
		}
		dr.DelegateeSVID = certs
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(authority.MaxDelegationTTL/time.Second) {
		refuse(fmt.Sprintf("ttl_seconds must be between 0 (the default, %s) and %d", authority.DefaultDelegationTTL, int64(authority.MaxDelegationTTL/time.Second)))
		return
	}
	ans, err := s.a.Delegate(r.Context(), callerOf(r), dr)
	s.metrics.delegated(err)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusCreated, delegationAnswerOf(ans))
}

// delegationAnswer is the answer to POST /v1/delegations: its members in
// the order of their names, as an answer written from a map has them.
type delegationAnswer struct {
	Chain     []delegation.HopView `json:"chain"`
	ExpiresAt time.Time            `json:"expires_at"`
	ID        string               `json:"id"`
	Receipt   receiptAnswer        `json:"receipt"`
	Token     string               `json:"token"`
}

// receiptAnswer is an audit receipt as answered: the leaf hash in hex,
// the proof's hashes in base64 (as JSON writes bytes).
type receiptAnswer struct {
	Checkpoint     string   `json:"checkpoint"`
	InclusionProof [][]byte `json:"inclusion_proof"`
	Index          uint64   `json:"index"`
	LeafHash       string   `json:"leaf_hash"`
	TreeSize       uint64   `json:"tree_size"`
}

func delegationAnswerOf(ans *authority.DelegateAnswer) delegationAnswer {
	proof := ans.Receipt.InclusionProof
	if proof == nil {
		proof = [][]byte{} // [], never null
	}
	return delegationAnswer{Chain: delegation.ViewsOf(ans.Chain), ExpiresAt: ans.ExpiresAt.UTC(), ID: ans.ID, Token: ans.Token,
		Receipt: receiptAnswer{Checkpoint: string(ans.Receipt.Checkpoint), InclusionProof: proof, Index: ans.Receipt.Index,
			LeafHash: hexOf(ans.Receipt.LeafHash), TreeSize: ans.Receipt.TreeSize}}
}

// delegationStatus is GET /v1/delegations/{id}/status (public).
func (s *Server) delegationStatus(w http.ResponseWriter, r *http.Request) {
	// No cache between here and a verifier keeps an answer: an "active"
	// kept would outlive a revocation.
	w.Header().Set("Cache-Control", "no-store")
	rec, status, err := s.a.DelegationStatus(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := map[string]any{"id": rec.ID, "status": status, "log_index": rec.LogIndex, "leaf_hash": rec.LeafHash}
	if !rec.RevokedAt.IsZero() {
		out["revoked_at"], out["reason"] = rec.RevokedAt.UTC(), rec.Reason
	}
	writeJSON(w, http.StatusOK, out)
}

// revoke is POST /v1/admin/revocations.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DelegationID string `json:"delegation_id"`
		SPIFFEID     string `json:"spiffe_id"`
		Reason       string `json:"reason"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	ids, err := s.a.Revoke(r.Context(), callerOf(r), req.DelegationID, req.SPIFFEID, req.Reason)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"revoked": ids})
}

func errInvalid(msg string) error { return fmt.Errorf("%w: %s", authority.ErrInvalidRequest, msg) }

func hexOf(b []byte) string { return hex.EncodeToString(b) }

// auditChain is GET /v1/audit/chains/{id} (auditor or admin).
func (s *Server) auditChain(w http.ResponseWriter, r *http.Request) {
	hops, err := s.a.AuditChain(r.Context(), callerOf(r), r.PathValue("id"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	// Every hop says where its issuer answers for it: a hop logged here,
	// this API.
	for i := range hops {
		if hops[i].Index != nil && hops[i].LogURL == "" {
			hops[i].LogURL = s.baseURL(r) + "/v1/audit/chains/" + url.PathEscape(hops[i].ID)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"hops": hops})
}
