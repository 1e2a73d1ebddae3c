package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
)

// JoinToken is the answer to CreateJoinToken.
type JoinToken struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	NodeID    string    `json:"node_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// WithdrawJoinToken withdraws an unused join token by its id (admin):
// JoinToken.ID, 16 lowercase hex digits. Anything else, the token itself
// above all, is refused before it is sent: it would go in the request's
// URL, and in the error of a call that fails.
func (c *Client) WithdrawJoinToken(ctx context.Context, id string) error {
	if !attest.ValidJoinTokenID(id) {
		return errors.New("client: WithdrawJoinToken: a join token id is 16 lowercase hex digits (JoinToken.ID), not the token")
	}
	return c.Do(ctx, http.MethodDelete, "/v1/admin/join-tokens/"+url.PathEscape(id), nil, nil)
}

// CreateJoinToken asks for a single-use join token (admin) that lives
// ttl, a whole number of seconds (0: the authority's default, 10
// minutes). JoinToken.Token is the secret, shown only in this answer;
// JoinToken.ID names it to WithdrawJoinToken.
func (c *Client) CreateJoinToken(ctx context.Context, ttl time.Duration) (*JoinToken, error) {
	if ttl < 0 || ttl%time.Second != 0 {
		return nil, fmt.Errorf("client: join token ttl %s: a whole number of seconds (0: the authority's default)", ttl)
	}
	return call[JoinToken](ctx, c, http.MethodPost, "/v1/admin/join-tokens", map[string]int64{"ttl_seconds": int64(ttl / time.Second)})
}

// Accountability names who answers for an agent.
type Accountability struct {
	Operator         string `json:"operator"`
	ModelProvider    string `json:"model_provider"`
	Model            string `json:"model"`
	ResponsibleParty string `json:"responsible_party"`
}

// Agent is an agent registration.
type Agent struct {
	ID             string         `json:"id,omitempty"`
	SPIFFEID       string         `json:"spiffe_id"`
	NodeIDs        []string       `json:"node_ids"`
	Selectors      []string       `json:"selectors"`
	X509TTLSeconds int64          `json:"x509_ttl_seconds"`
	JWTTTLSeconds  int64          `json:"jwt_ttl_seconds"`
	Scopes         []string       `json:"scopes"`
	Accountability Accountability `json:"accountability"`
	// RequireHardwareAttestation admits only TPM-attested hosting nodes.
	RequireHardwareAttestation bool       `json:"require_hardware_attestation"`
	CreatedAt                  *time.Time `json:"created_at,omitempty"`
	UpdatedAt                  *time.Time `json:"updated_at,omitempty"`
	// ETag names the version read (CreateAgent, GetAgent and the
	// updates set it; ListAgents does not), for UpdateAgentIfMatch and
	// DeleteAgentIfMatch. It is not part of the registration.
	ETag string `json:"-"`
}

// CreateAgent registers an agent (admin).
func (c *Client) CreateAgent(ctx context.Context, a *Agent) (*Agent, error) {
	return c.agentCall(ctx, http.MethodPost, "/v1/admin/agents", nil, a)
}

// UpdateAgent replaces a registration (admin), whatever version is
// stored: the last write wins. UpdateAgentIfMatch replaces only the
// version read.
func (c *Client) UpdateAgent(ctx context.Context, id string, a *Agent) (*Agent, error) {
	return c.putAgent(ctx, id, nil, a)
}

// GetAgent returns a registration (admin), with its ETag.
func (c *Client) GetAgent(ctx context.Context, id string) (*Agent, error) {
	return c.agentCall(ctx, http.MethodGet, agentPath(id), nil, nil)
}

// DeleteAgent removes a registration (admin), whatever version is
// stored (DeleteAgentIfMatch: only the version read).
func (c *Client) DeleteAgent(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, agentPath(id), nil, nil)
}

// ListAgents lists registrations (admin), asking a page at a time.
func (c *Client) ListAgents(ctx context.Context) ([]Agent, error) {
	return listAll(ctx, c, "/v1/admin/agents", func(p *struct {
		Agents        []Agent
		NextPageToken string `json:"next_page_token"`
	}) ([]Agent, string) {
		return p.Agents, p.NextPageToken
	})
}

// listPage is the size of the pages ListAgents and ListNodes ask for.
const listPage = 500

// listAll gets every page of an admin list at path; page says what a
// page holds and the token of the next. An answer that would keep it
// going round (a page that lists nothing yet names a next one, or the
// token of a page asked before) is an error, not a listing without end.
func listAll[T, P any](ctx context.Context, c *Client, path string, page func(*P) ([]T, string)) ([]T, error) {
	all := []T{}
	token := ""
	asked := map[[sha256.Size]byte]bool{} // the tokens asked with, by their SHA-256
	for {
		q := url.Values{"limit": {strconv.Itoa(listPage)}}
		if token != "" {
			q.Set("page_token", token)
		}
		var p P
		if err := c.Do(ctx, http.MethodGet, path+"?"+q.Encode(), nil, &p); err != nil {
			return nil, err
		}
		items, next := page(&p)
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		if len(items) == 0 {
			return nil, fmt.Errorf("client: GET %s: a page that lists nothing names a next page (the listing would not end)", path)
		}
		sum := sha256.Sum256([]byte(next))
		if asked[sum] {
			return nil, fmt.Errorf("client: GET %s: the next page token is that of a page already listed (the listing would not end)", path)
		}
		asked[sum] = true
		token = next
	}
}

// Node is an attested node as the admin API shows it.
type Node struct {
	SPIFFEID          string    `json:"spiffe_id"`
	AttestationMethod string    `json:"attestation_method"`
	Level             string    `json:"level"`
	Selectors         []string  `json:"selectors"`
	AttestedAt        time.Time `json:"attested_at"`
	SVIDSerial        string    `json:"svid_serial,omitempty"`
	PrevSVIDSerial    string    `json:"prev_svid_serial,omitempty"`
	SVIDIssuedAt      time.Time `json:"svid_issued_at,omitzero"`
	SVIDExpiresAt     time.Time `json:"svid_expires_at,omitzero"`
	NewestSVIDAt      time.Time `json:"newest_svid_at,omitzero"`
	TPM               *NodeTPM  `json:"tpm,omitempty"`
	Drifted           bool      `json:"drifted,omitempty"`
	DriftedAt         time.Time `json:"drifted_at,omitzero"`
	DriftReason       string    `json:"drift_reason,omitempty"`
	Banned            bool      `json:"banned"`
	BannedAt          time.Time `json:"banned_at,omitzero"`
	BanReason         string    `json:"ban_reason,omitempty"`
}

// NodeTPM is what a node's last TPM attestation proved.
type NodeTPM struct {
	EKSHA256    string            `json:"ek_sha256"`
	EKTrust     string            `json:"ek_trust"`
	Profile     string            `json:"profile"`
	QuoteSHA256 string            `json:"quote_sha256"`
	QuotedAt    time.Time         `json:"quoted_at"`
	PCRs        map[string]string `json:"pcrs_sha256"`
}

// ListNodes lists attested nodes (admin), asking a page at a time.
func (c *Client) ListNodes(ctx context.Context) ([]Node, error) {
	return listAll(ctx, c, "/v1/admin/nodes", func(p *struct {
		Nodes         []Node
		NextPageToken string `json:"next_page_token"`
	}) ([]Node, string) {
		return p.Nodes, p.NextPageToken
	})
}

// Revocation is a SPIFFE ID's revocation as the admin API shows it.
type Revocation struct {
	SPIFFEID  string    `json:"spiffe_id"`
	RevokedAt time.Time `json:"revoked_at"`
	RevokedBy string    `json:"revoked_by"`
	Reason    string    `json:"reason"`
}

// ListRevokedIDs lists the SPIFFE IDs revoked (admin), asking a page at
// a time.
func (c *Client) ListRevokedIDs(ctx context.Context) ([]Revocation, error) {
	return listAll(ctx, c, "/v1/admin/revocations", func(p *struct {
		Revoked       []Revocation `json:"revoked_spiffe_ids"`
		NextPageToken string       `json:"next_page_token"`
	}) ([]Revocation, string) {
		return p.Revoked, p.NextPageToken
	})
}

// BanNode bans a node (admin).
func (c *Client) BanNode(ctx context.Context, nodeID, reason string) (*Node, error) {
	return call[Node](ctx, c, http.MethodPost, "/v1/admin/nodes/"+url.PathEscape(nodeID)+"/ban", map[string]string{"reason": reason})
}

// GetNode returns a node's record (admin).
func (c *Client) GetNode(ctx context.Context, nodeID string) (*Node, error) {
	return call[Node](ctx, c, http.MethodGet, "/v1/admin/nodes/"+url.PathEscape(nodeID), nil)
}

// EvictNode removes a node's record, so that it is attested no more (a
// TPM node may attest again), and returns the record removed. A banned
// node is evicted only with liftBan.
func (c *Client) EvictNode(ctx context.Context, nodeID, reason string, liftBan bool) (*Node, error) {
	body := map[string]any{"reason": reason, "lift_ban": liftBan}
	return call[Node](ctx, c, http.MethodPost, "/v1/admin/nodes/"+url.PathEscape(nodeID)+"/evict", body)
}

// Federation is a federation relationship.
type Federation struct {
	TrustDomain       string          `json:"trust_domain"`
	BundleEndpointURL string          `json:"bundle_endpoint_url"`
	Profile           string          `json:"profile,omitempty"`
	EndpointSPIFFEID  string          `json:"endpoint_spiffe_id,omitempty"`
	Bundle            json.RawMessage `json:"bundle,omitempty"`
	CreatedAt         *time.Time      `json:"created_at,omitempty"` // set by the authority
	BundleSequence    *uint64         `json:"bundle_sequence,omitempty"`
	LastRefresh       *time.Time      `json:"last_refresh,omitempty"`
	LastError         string          `json:"last_error,omitempty"`
	NextRefresh       *time.Time      `json:"next_refresh,omitempty"`
}

// AddFederation creates a federation relationship (admin).
func (c *Client) AddFederation(ctx context.Context, f *Federation) (*Federation, error) {
	return call[Federation](ctx, c, http.MethodPost, "/v1/admin/federations", f)
}

// ListFederations lists federation relationships (admin).
func (c *Client) ListFederations(ctx context.Context) ([]Federation, error) {
	out, err := call[struct{ Federations []Federation }](ctx, c, http.MethodGet, "/v1/admin/federations", nil)
	if err != nil {
		return nil, err
	}
	return out.Federations, nil
}

// DeleteFederation ends a federation relationship (admin).
func (c *Client) DeleteFederation(ctx context.Context, td string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/admin/federations/"+url.PathEscape(td), nil, nil)
}

// SVIDAnswer is what the authority answers with an X509-SVID.
type SVIDAnswer struct {
	SPIFFEID  string                     `json:"spiffe_id"`
	X509SVID  string                     `json:"x509_svid"`
	ExpiresAt time.Time                  `json:"expires_at"`
	Bundles   map[string]json.RawMessage `json:"bundles"`
	// Server is the certificate chain the authority presented on the
	// connection that answered (its X509-SVID, leaf first): the bundle
	// of its trust domain must still authenticate it for the credential
	// to reach the authority again.
	Server []*x509.Certificate `json:"-"`
}

// Certificates parses the SVID chain.
func (a *SVIDAnswer) Certificates() ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(a.X509SVID)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("client: svid: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("client: answer carries no certificate")
	}
	return out, nil
}

// ParseBundles parses the SPIFFE bundles of the answer.
func (a *SVIDAnswer) ParseBundles() (map[spiffeid.TrustDomain]*spiffebundle.Bundle, error) {
	return ParseBundles(a.Bundles)
}

// ParseBundles parses a "bundles" object: trust domain → SPIFFE bundle.
// Two names of one trust domain ("org-a.example" and
// "spiffe://org-a.example") are refused: which bundle is meant?
func ParseBundles(m map[string]json.RawMessage) (map[spiffeid.TrustDomain]*spiffebundle.Bundle, error) {
	out := map[spiffeid.TrustDomain]*spiffebundle.Bundle{}
	for name, doc := range m {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, fmt.Errorf("client: bundles: %w", err)
		}
		if _, twice := out[td]; twice {
			return nil, fmt.Errorf("client: bundles: trust domain %s is named twice", td)
		}
		b, err := spiffebundle.Parse(td, doc)
		if err != nil {
			return nil, fmt.Errorf("client: bundles: %s: %w", name, err)
		}
		out[td] = b
	}
	return out, nil
}

// NewKeyAndCSR makes a P-256 key and a CSR for it (no SANs: the authority
// decides the identity).
func NewKeyAndCSR() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := CSRFor(key, spiffeid.ID{})
	return key, csr, err
}

// CSRFor makes a PEM CSR for key, naming id as URI SAN when it is set.
func CSRFor(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	tpl := &x509.CertificateRequest{}
	if !id.IsZero() {
		tpl.URIs = append(tpl.URIs, id.URL())
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tpl, key)
	if err != nil {
		return nil, fmt.Errorf("client: csr: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// Join trades a join token and a CSR for a node X509-SVID (public).
func (c *Client) Join(ctx context.Context, token string, csrPEM []byte) (*SVIDAnswer, error) {
	return c.svid(ctx, "/v1/nodes/join", map[string]string{"token": token, "csr": string(csrPEM)})
}

// X509SVID asks for an X509-SVID for spiffeID (node for a hosted agent,
// agent or node for itself).
func (c *Client) X509SVID(ctx context.Context, spiffeID string, csrPEM []byte) (*SVIDAnswer, error) {
	return c.svid(ctx, "/v1/svid/x509", map[string]string{"spiffe_id": spiffeID, "csr": string(csrPEM)})
}

// NewX509SVID asks for an X509-SVID of id (as X509SVID does) for a new
// P-256 key made here: the answer, and the key.
func (c *Client) NewX509SVID(ctx context.Context, id spiffeid.ID) (*SVIDAnswer, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := CSRFor(key, id)
	if err != nil {
		return nil, nil, err
	}
	ans, err := c.X509SVID(ctx, id.String(), csr)
	if err != nil {
		return nil, nil, err
	}
	return ans, key, nil
}

// svid posts req to an endpoint that answers with an X509-SVID, and
// refuses an answer without one.
func (c *Client) svid(ctx context.Context, path string, req any) (*SVIDAnswer, error) {
	out := new(SVIDAnswer)
	server, err := c.do(ctx, http.MethodPost, path, req, out)
	if err != nil {
		return nil, err
	}
	out.Server = server
	if out.X509SVID == "" || out.SPIFFEID == "" {
		return nil, fmt.Errorf("client: POST %s: the answer carries no X509-SVID", path)
	}
	return out, nil
}

// JWTAnswer is what the authority answers with a JWT-SVID.
type JWTAnswer struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// JWTSVID asks for a JWT-SVID for audience (spiffeID empty: the caller).
func (c *Client) JWTSVID(ctx context.Context, spiffeID string, audience []string) (*JWTAnswer, error) {
	out := new(JWTAnswer)
	req := map[string]any{"audience": audience}
	if spiffeID != "" {
		req["spiffe_id"] = spiffeID
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/svid/jwt", req, out); err != nil {
		return nil, err
	}
	if out.Token == "" {
		return nil, errors.New("client: POST /v1/svid/jwt: the answer carries no token")
	}
	return out, nil
}

// NodeSync is what a node learns from POST /v1/nodes/sync.
type NodeSync struct {
	NodeID string `json:"node_id"`
	// Hosted are the agents asked about that the node may serve.
	Hosted []string `json:"hosted"`
	// Refused are those it may not, each with the problem its SVIDs'
	// issuance would be refused with.
	Refused []SyncRefusal              `json:"refused"`
	Bundles map[string]json.RawMessage `json:"bundles"`
}

// SyncRefusal is an agent a node may not serve, and why.
type SyncRefusal struct {
	SPIFFEID string `json:"spiffe_id"`
	Problem
}

// SyncNode asks, as a node, which of the agents ids it may still serve
// on its host, and for the trust bundles to serve with them.
func (c *Client) SyncNode(ctx context.Context, ids []spiffeid.ID) (*NodeSync, error) {
	req := struct {
		SPIFFEIDs []string `json:"spiffe_ids"`
	}{SPIFFEIDs: make([]string, len(ids))}
	for i, id := range ids {
		req.SPIFFEIDs[i] = id.String()
	}
	out := new(NodeSync)
	if err := c.Do(ctx, http.MethodPost, "/v1/nodes/sync", req, out); err != nil {
		return nil, err
	}
	if len(out.Bundles) == 0 {
		return nil, errors.New("client: POST /v1/nodes/sync: the answer carries no bundle")
	}
	return out, nil
}
