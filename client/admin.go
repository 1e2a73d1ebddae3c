package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"mandate.dev/mandate/ca"
)

// UpdateAgentIfMatch replaces a registration (admin) only if it is still
// the version etag names (Agent.ETag, as CreateAgent, GetAgent or an
// update returned it; "*": any version). A registration changed
// meanwhile is refused, a *Problem named "precondition-failed" (412),
// and nothing is changed: read it again, and change that.
func (c *Client) UpdateAgentIfMatch(ctx context.Context, id, etag string, a *Agent) (*Agent, error) {
	if etag == "" {
		return nil, errors.New("client: UpdateAgentIfMatch: no entity tag (UpdateAgent replaces whatever version is stored)")
	}
	return c.putAgent(ctx, id, http.Header{"If-Match": {etag}}, a)
}

// DeleteAgentIfMatch removes a registration (admin) only if it is still
// the version etag names, as UpdateAgentIfMatch.
func (c *Client) DeleteAgentIfMatch(ctx context.Context, id, etag string) error {
	if etag == "" {
		return errors.New("client: DeleteAgentIfMatch: no entity tag (DeleteAgent deletes whatever version is stored)")
	}
	_, err := c.doWith(ctx, http.MethodDelete, agentPath(id), http.Header{"If-Match": {etag}}, nil, nil)
	return err
}

// agentPath is the path of registration id.
func agentPath(id string) string { return "/v1/admin/agents/" + url.PathEscape(id) }

// agentCall makes a call whose answer is a registration, and sets its
// ETag from the answer's.
func (c *Client) agentCall(ctx context.Context, method, path string, hdr http.Header, body *Agent) (*Agent, error) {
	out := new(Agent)
	var in any
	if body != nil {
		in = body
	}
	a, err := c.doWith(ctx, method, path, hdr, in, out)
	if err != nil {
		return nil, err
	}
	out.ETag = a.header.Get("ETag")
	return out, nil
}

// putAgent replaces registration id with a, with the header fields hdr.
func (c *Client) putAgent(ctx context.Context, id string, hdr http.Header, a *Agent) (*Agent, error) {
	return c.agentCall(ctx, http.MethodPut, agentPath(id), hdr, a)
}

// CAStatus is the CA's authorities: X.509 CAs first, then JWT keys, each
// oldest first.
type CAStatus struct {
	TrustDomain string             `json:"trust_domain"`
	Authorities []ca.AuthorityInfo `json:"authorities"`
}

// CAStatus lists the CA's authorities and their rotation state (admin).
func (c *Client) CAStatus(ctx context.Context) (*CAStatus, error) {
	return call[CAStatus](ctx, c, http.MethodGet, "/v1/admin/ca", nil)
}

// CARotation asks for the active X.509 CA or JWT key to be replaced
// ahead of its schedule.
type CARotation struct {
	Kind   ca.Kind `json:"kind"`
	Reason string  `json:"reason"` // required
	// Immediately activates a JWT key at once (an X.509 CA never is).
	Immediately bool `json:"immediately"`
}

// CARotated is the successor of a rotation, and when it takes over.
type CARotated struct {
	Authority   ca.AuthorityInfo `json:"authority"`
	ActivatesAt time.Time        `json:"activates_at"`
}

// RotateCA replaces the active X.509 CA or JWT key ahead of its schedule
// (admin).
func (c *Client) RotateCA(ctx context.Context, r CARotation) (*CARotated, error) {
	return call[CARotated](ctx, c, http.MethodPost, "/v1/admin/ca/rotate", r)
}

// CARevoked is the answer of RevokeCA: the authority revoked.
type CARevoked struct {
	Revoked ca.AuthorityInfo `json:"revoked"`
}

// RevokeCA takes a replaced or prepared X.509 CA or JWT key (its id as
// CAStatus gives it) out of the bundle before it expires, and has its
// key deleted (admin): a prepared one then never becomes active. Without force, an X.509 CA is refused until every
// X509-SVID it signed has been renewed ("authority-in-use", 409).
func (c *Client) RevokeCA(ctx context.Context, id, reason string, force bool) (*CARevoked, error) {
	req := struct {
		ID     string `json:"id"`
		Reason string `json:"reason"`
		Force  bool   `json:"force"`
	}{id, reason, force}
	return call[CARevoked](ctx, c, http.MethodPost, "/v1/admin/ca/revoke", req)
}

// Backup is a copy of the authority's state, written on its host.
type Backup struct {
	// Dir is the backup's directory, <data dir>/backups/<time>, on the
	// authority's host.
	Dir       string       `json:"dir"`
	CreatedAt time.Time    `json:"created_at"`
	Files     []BackupFile `json:"files"`
	// AuditTreeSize is the size of the audit log the copy holds.
	AuditTreeSize uint64 `json:"audit_tree_size"`
}

// BackupFile is one file of a backup, its path relative to Backup.Dir.
type BackupFile struct {
	Path   string `json:"path"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// CreateBackup has the authority write a consistent copy of its state
// into a new directory on its host (admin). A backup of a large data
// file may take longer than Config.Timeout: it is made all the same.
func (c *Client) CreateBackup(ctx context.Context) (*Backup, error) {
	return call[Backup](ctx, c, http.MethodPost, "/v1/admin/backups", struct{}{})
}

// PolicyStatus is the active policy revision and its modules.
type PolicyStatus struct {
	Revision string   `json:"revision"`
	Modules  []string `json:"modules"`
	Dir      string   `json:"dir,omitempty"` // empty: the embedded policies
}

// PolicyStatus reports the active policy revision (admin).
func (c *Client) PolicyStatus(ctx context.Context) (*PolicyStatus, error) {
	return call[PolicyStatus](ctx, c, http.MethodGet, "/v1/admin/policy", nil)
}

// PolicyRevision is the answer of ReloadPolicy.
type PolicyRevision struct {
	Revision string `json:"revision"`
}

// ReloadPolicy has the authority read its policies again (admin). A
// policy that does not compile is refused, a *Problem named
// "policy-rejected" (422) saying why, and the active one stays.
func (c *Client) ReloadPolicy(ctx context.Context) (*PolicyRevision, error) {
	return call[PolicyRevision](ctx, c, http.MethodPost, "/v1/admin/policy/reload", struct{}{})
}

// PolicyTests is the outcome of the active revision's Rego tests.
type PolicyTests struct {
	Revision string       `json:"revision"`
	Tests    []PolicyTest `json:"tests"`
}

// PolicyTest is one Rego test's outcome.
type PolicyTest struct {
	Package    string `json:"package"`
	Name       string `json:"name"`
	Pass       bool   `json:"pass"`
	Error      string `json:"error,omitempty"`
	DurationNS int64  `json:"duration_ns"`
}

// TestPolicy runs the active policy revision's Rego tests on the
// authority (admin).
func (c *Client) TestPolicy(ctx context.Context) (*PolicyTests, error) {
	return call[PolicyTests](ctx, c, http.MethodPost, "/v1/admin/policy/test", struct{}{})
}

// BundleDocument fetches this trust domain's SPIFFE bundle (public) as
// the authority serves it: the JSON document a federated peer fetches.
func (c *Client) BundleDocument(ctx context.Context) (json.RawMessage, error) {
	var doc json.RawMessage
	if err := c.Do(ctx, http.MethodGet, "/v1/bundle", nil, &doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// Bundle fetches this trust domain's SPIFFE bundle (public), parsed.
func (c *Client) Bundle(ctx context.Context) (*spiffebundle.Bundle, error) {
	doc, err := c.BundleDocument(ctx)
	if err != nil {
		return nil, err
	}
	b, err := spiffebundle.Parse(c.td, doc)
	if err != nil {
		return nil, fmt.Errorf("client: GET /v1/bundle: %w", err)
	}
	return b, nil
}
