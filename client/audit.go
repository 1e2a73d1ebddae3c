package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// AuditEntry is one entry of the audit log with its inclusion proof, as
// the audit API answers it (auditor or admin).
type AuditEntry struct {
	Index    uint64          `json:"index"`
	Entry    json.RawMessage `json:"entry"`
	EntryB64 []byte          `json:"entry_b64"` // the exact stored bytes
	// LeafHash is the RFC 6962 leaf hash of EntryB64 (hex): check it
	// is rfc6962.DefaultHasher.HashLeaf(EntryB64).
	LeafHash string `json:"leaf_hash"`
	// InclusionProof proves the entry in the tree of TreeSize entries.
	TreeSize       uint64   `json:"tree_size"`
	InclusionProof [][]byte `json:"inclusion_proof"`
	// Checkpoint is the log's latest signed checkpoint (a C2SP
	// tlog-checkpoint note) when the entry was read. Its size is
	// TreeSize unless a smaller tree size was asked for (AuditEntry's
	// treeSize): that tree's root, computed from the proof
	// (proof.RootFromInclusionProof), is then proven a prefix of the
	// checkpoint's with AuditConsistency.
	Checkpoint string `json:"checkpoint"`
}

// ConsistencyAnswer is a consistency proof between two tree sizes.
type ConsistencyAnswer struct {
	From  uint64   `json:"from"`
	To    uint64   `json:"to"`
	Proof [][]byte `json:"proof"`
}

// AuditCheckpoint fetches the audit log's latest signed checkpoint (a
// C2SP tlog-checkpoint note), as it is: verify it with the log's
// verifier key (golang.org/x/mod/sumdb/note) before trusting it.
func (c *Client) AuditCheckpoint(ctx context.Context) ([]byte, error) {
	return c.GetRaw(ctx, "/v1/audit/checkpoint")
}

// AuditVerifierKey fetches the audit log's verifier key (note format;
// public). Compare it with the key obtained out of band (the
// authority's <data dir>/audit/log.vkey) before relying on it.
func (c *Client) AuditVerifierKey(ctx context.Context) (string, error) {
	b, err := c.GetRaw(ctx, "/v1/audit/verifier-key")
	return strings.TrimSpace(string(b)), err
}

// AuditEntry fetches entry index with its inclusion proof in the tree of
// treeSize entries (0: the tree of the latest checkpoint, which the
// answer carries, so that it verifies on its own). An index at or
// beyond the tree is a *Problem named "audit-entry-not-found", a tree
// size beyond the log one named "invalid-tree-size".
func (c *Client) AuditEntry(ctx context.Context, index, treeSize uint64) (*AuditEntry, error) {
	path := "/v1/audit/entries/" + strconv.FormatUint(index, 10)
	if treeSize > 0 {
		path += "?tree_size=" + strconv.FormatUint(treeSize, 10)
	}
	return call[AuditEntry](ctx, c, http.MethodGet, path, nil)
}

// AuditConsistency fetches the proof that the tree of from entries is a
// prefix of the tree of to entries. A size beyond the log is a *Problem
// named "invalid-tree-size".
func (c *Client) AuditConsistency(ctx context.Context, from, to uint64) (*ConsistencyAnswer, error) {
	path := fmt.Sprintf("/v1/audit/proofs/consistency?from=%d&to=%d", from, to)
	return call[ConsistencyAnswer](ctx, c, http.MethodGet, path, nil)
}

// AuditQuery is a search of the audit log: the entries matching every
// filter set (an empty one, or a zero time, filters nothing).
type AuditQuery struct {
	SPIFFEID     string
	Type         string
	DecisionID   string
	DelegationID string
	Since, Until time.Time
	// Limit bounds the entries of a page (0: the authority's default).
	Limit int
	// PageToken asks for the page after the one whose NextPageToken it
	// is.
	PageToken string
}

// AuditPage is a page of a search's hits, in log order.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	// NextPageToken, when set, asks for the next page (AuditQuery.PageToken).
	NextPageToken string `json:"next_page_token,omitempty"`
}

// SearchAudit asks for a page of the entries q matches, each with its
// inclusion proof. The hits are the authority's word: check each one's
// proof against a checkpoint verified with the log's key, and that it
// matches q.
func (c *Client) SearchAudit(ctx context.Context, q AuditQuery) (*AuditPage, error) {
	v := url.Values{}
	for name, val := range map[string]string{"spiffe_id": q.SPIFFEID, "type": q.Type, "decision_id": q.DecisionID,
		"delegation_id": q.DelegationID, "page_token": q.PageToken} {
		if val != "" {
			v.Set(name, val)
		}
	}
	for name, t := range map[string]time.Time{"since": q.Since, "until": q.Until} {
		if !t.IsZero() {
			v.Set(name, t.Format(time.RFC3339Nano))
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return call[AuditPage](ctx, c, http.MethodGet, "/v1/audit/search?"+v.Encode(), nil)
}

// ChainHop is one hop of an accountability chain, as an auditor reads it.
// A hop the authority issued carries its audit entry with an inclusion
// proof against a signed checkpoint; a hop issued elsewhere carries what
// the verified token said of it and LogURL, where its issuer answers.
type ChainHop struct {
	ID             string                    `json:"id"`
	Issuer         string                    `json:"issuer"`
	Delegator      string                    `json:"delegator"`
	Delegatee      string                    `json:"delegatee"`
	Principal      string                    `json:"principal"`
	Scopes         []string                  `json:"scopes"`
	Depth          int                       `json:"depth"`
	Decision       *ChainDecision            `json:"decision,omitempty"`
	Accountability map[string]map[string]any `json:"accountability,omitempty"` // "delegator", "delegatee"
	Index          *uint64                   `json:"index,omitempty"`
	LeafHash       string                    `json:"leaf_hash,omitempty"`
	TreeSize       uint64                    `json:"tree_size,omitempty"`
	InclusionProof [][]byte                  `json:"inclusion_proof,omitempty"`
	Checkpoint     string                    `json:"checkpoint,omitempty"`
	EntryB64       []byte                    `json:"entry_b64,omitempty"` // the exact logged bytes
	LogURL         string                    `json:"log_url,omitempty"`
}

// ChainDecision is the policy decision of a hop.
type ChainDecision struct {
	ID             string   `json:"id"`
	Result         string   `json:"result"` // allow
	Reasons        []string `json:"reasons"`
	PolicyRevision string   `json:"policy_revision"`
}

// AuditChainDocument fetches the accountability chain of delegation id
// (auditor or admin) as the authority answers it, {"hops": [...]}: for
// an auditor that reads it as it reads other authorities' answers.
func (c *Client) AuditChainDocument(ctx context.Context, id string) (json.RawMessage, error) {
	var doc json.RawMessage
	if err := c.Do(ctx, http.MethodGet, "/v1/audit/chains/"+url.PathEscape(id), nil, &doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// AuditChain fetches the accountability chain of delegation id (auditor
// or admin): every hop from the principal down to it, root first. The
// hops are the authority's word: prove each against its log.
func (c *Client) AuditChain(ctx context.Context, id string) ([]ChainHop, error) {
	var out struct {
		Hops []ChainHop `json:"hops"`
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/audit/chains/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return out.Hops, nil
}
