package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"mandate.dev/mandate/delegation"
)

// DelegationRequest is a hop asked of the authority (POST
// /v1/delegations) by the calling agent, its delegator: the client must
// be made with that agent's X509-SVID. DelegatorSignature is the
// delegator's statement over the hop (delegation.SignStatement, with the
// same delegatee, scopes, purpose, and principal or parent).
type DelegationRequest struct {
	// Delegatee is the SPIFFE ID of the agent that will act.
	Delegatee string `json:"delegatee"`
	// DelegateeX509SVID, the delegatee's current X509-SVID chain (PEM),
	// binds the token to its certificate (cnf).
	DelegateeX509SVID string   `json:"delegatee_x509_svid,omitempty"`
	Scopes            []string `json:"scopes"`
	// Principal (a root hop) or ParentToken (a sub-delegation, a token
	// the delegator holds): one of the two.
	Principal   string `json:"principal,omitempty"`
	ParentToken string `json:"parent_token,omitempty"`
	Purpose     string `json:"purpose,omitempty"`
	// TTLSeconds is the hop's lifetime (0: the authority's default).
	TTLSeconds         int64  `json:"ttl_seconds,omitempty"`
	DelegatorSignature string `json:"delegator_signature"`
}

// DelegationAnswer is the authority's answer to a DelegationRequest.
type DelegationAnswer struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// Chain is the verified chain, the new hop last, as the API shows
	// hops (delegation.View).
	Chain   json.RawMessage `json:"chain"`
	Receipt AuditReceipt    `json:"receipt"`
}

// AuditReceipt says where an entry is in the authority's audit log: its
// index and RFC 6962 leaf hash (hex), and its inclusion proof (the
// hashes, as AuditEntry's) against the signed checkpoint (a C2SP
// tlog-checkpoint note) of TreeSize entries.
type AuditReceipt struct {
	Index          uint64   `json:"index"`
	LeafHash       string   `json:"leaf_hash"`
	TreeSize       uint64   `json:"tree_size"`
	Checkpoint     string   `json:"checkpoint"`
	InclusionProof [][]byte `json:"inclusion_proof"`
}

// Delegate asks the authority for a delegation hop. A denial by policy
// is a *Problem with the policy's Reasons.
func (c *Client) Delegate(ctx context.Context, req *DelegationRequest) (*DelegationAnswer, error) {
	var ans DelegationAnswer
	if err := c.Do(ctx, http.MethodPost, "/v1/delegations", req, &ans); err != nil {
		return nil, err
	}
	if ans.Token == "" || ans.ID == "" {
		return nil, errors.New("client: the authority's answer carries no delegation token")
	}
	return &ans, nil
}

// DelegationStatus asks the authority that issued delegation id whether
// it still holds (anyone may ask; it answers for the hops above too, on
// its word): delegation.FetchStatus over this client's connections, so
// that the answer is bounded and checked as a verifier's is, and any
// failure matches delegation.ErrStatusUnknown.
func (c *Client) DelegationStatus(ctx context.Context, id string) (*delegation.StatusAnswer, error) {
	return delegation.FetchStatus(ctx, c.http, c.base, id)
}

// RevokeDelegation revokes a delegation issued by this authority and
// every delegation below it (admin), saying why; it returns the ids
// revoked now.
func (c *Client) RevokeDelegation(ctx context.Context, id, reason string) ([]string, error) {
	return c.revoke(ctx, "delegation_id", id, reason)
}

// RevokeSPIFFEID revokes an agent or a node (admin): what it delegated
// or was delegated, or what was delegated on the node, below hops this
// authority issued, saying why; it returns the delegation ids revoked
// now. The ID stays revoked.
func (c *Client) RevokeSPIFFEID(ctx context.Context, id, reason string) ([]string, error) {
	return c.revoke(ctx, "spiffe_id", id, reason)
}

// revoke posts a revocation of what field names.
func (c *Client) revoke(ctx context.Context, field, id, reason string) ([]string, error) {
	var ans struct {
		Revoked []string `json:"revoked"`
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/admin/revocations", map[string]string{field: id, "reason": reason}, &ans); err != nil {
		return nil, err
	}
	if ans.Revoked == nil {
		ans.Revoked = []string{}
	}
	return ans.Revoked, nil
}
