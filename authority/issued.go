package authority

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/delegation"
)

// IssuedDetails are the details of a delegation.issued audit entry, as
// the delegation flow writes them and as the index hook, the chain
// endpoint and auditors read them.
type IssuedDetails struct {
	ID            string                `json:"delegation_id"`
	Delegator     string                `json:"delegator"`
	Delegatee     string                `json:"delegatee"`
	Principal     string                `json:"principal"`
	Scopes        []string              `json:"scopes"`
	Depth         int                   `json:"depth"`
	Purpose       string                `json:"purpose"`
	ExpiresAt     time.Time             `json:"expires_at"`
	ParentID      string                `json:"parent_id"`
	ParentIssuer  string                `json:"parent_iss"`
	ParentLink    *LogLink              `json:"parent_link"`
	Ancestors     []delegation.Ancestor `json:"ancestors"`
	DelegatorHost string                `json:"delegator_host"`
	// DelegateeHosts are the nodes the delegatee may hold the hop on
	// (see delegation.Record).
	DelegateeHosts []string `json:"delegatee_hosts,omitempty"`
	// BoundTo is the x5t#S256 of the delegatee certificate the token is
	// bound to (empty: unbound, or logged before it was recorded).
	BoundTo string `json:"bound_to,omitempty"`
	// Signature is the delegator's signature over the hop; SignerSVID
	// where the X509-SVID it was made with is logged.
	Signature  string     `json:"delegator_signature"`
	SignerSVID *SVIDEntry `json:"delegator_svid"`
	Decision   struct {
		Allow   bool     `json:"allow"`
		Reasons []string `json:"reasons"`
	} `json:"decision"`
}

// LogLink is where a hop's parent is logged.
type LogLink struct {
	LogIndex uint64 `json:"log_index"`
	LeafHash string `json:"leaf_hash"` // hex
}

// CertificateSHA256 is how an svid.issued entry names the certificate it
// records: the hex SHA-256 of its DER, beside its serial.
func CertificateSHA256(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// SVIDEntry names the svid.issued entry of an X509-SVID.
type SVIDEntry struct {
	Serial   string `json:"serial"` // hex
	LogIndex uint64 `json:"log_index"`
}

// ReadIssued reads the details of e, a delegation.issued entry.
func ReadIssued(e audit.Entry) (*IssuedDetails, error) {
	var d IssuedDetails
	if e.Type != "delegation.issued" {
		return nil, fmt.Errorf("authority: a %s entry, not delegation.issued", e.Type)
	}
	if err := e.ReadDetails(&d); err != nil || d.ID == "" || d.ID != e.DelegationID {
		return nil, fmt.Errorf("authority: delegation.issued entry of %q: unreadable details (%v)", e.DelegationID, err)
	}
	return &d, nil
}

// RevokedDetails are what a delegation.revoked audit entry says was
// revoked: a delegation (and what is below it), or a SPIFFE ID (and the
// delegations it is a party of), and why.
type RevokedDetails struct {
	DelegationID string `json:"delegation_id"`
	SPIFFEID     string `json:"spiffe_id"`
	Reason       string `json:"reason"`
}

// ReadRevoked reads the details of e, a delegation.revoked entry.
func ReadRevoked(e audit.Entry) (*RevokedDetails, error) {
	var d RevokedDetails
	if e.Type != "delegation.revoked" {
		return nil, fmt.Errorf("authority: a %s entry, not delegation.revoked", e.Type)
	}
	if err := e.ReadDetails(&d); err != nil {
		return nil, fmt.Errorf("authority: delegation.revoked entry: unreadable details (%v)", err)
	}
	if (d.DelegationID == "") == (d.SPIFFEID == "") {
		return nil, fmt.Errorf("authority: delegation.revoked entry: names %q and %q; want a delegation id or a SPIFFE ID", d.DelegationID, d.SPIFFEID)
	}
	return &d, nil
}

// ChainView is what a chain shows of the hop e records (its details d):
// the policy decision, and the accountable parties of its delegator and
// delegatee. An entry naming one of them twice, differently, says two
// things: the view shows the first, and the error says so (an auditor
// refuses such an entry; an authority still shows its own log).
func (d *IssuedDetails) ChainView(e audit.Entry) (*ChainDecision, map[string]map[string]any, error) {
	result := "deny"
	if d.Decision.Allow {
		result = "allow"
	}
	acc := map[string]map[string]any{}
	seen := map[string]audit.Party{}
	var twice error
	for _, p := range e.Accountable {
		id := p.SPIFFEID.String()
		if q, ok := seen[id]; ok {
			if q != p && twice == nil {
				twice = fmt.Errorf("authority: delegation.issued entry of %q names the accountable party of %s twice, differently", d.ID, id)
			}
			continue
		}
		seen[id] = p
		view := map[string]any{"spiffe_id": id, "operator": p.Operator, "model_provider": p.ModelProvider,
			"model": p.Model, "responsible_party": p.ResponsibleParty}
		if id == d.Delegator {
			acc["delegator"] = view
		}
		if id == d.Delegatee {
			acc["delegatee"] = view
		}
	}
	return &ChainDecision{ID: e.DecisionID, Result: result, Reasons: nonNil(d.Decision.Reasons), PolicyRevision: e.PolicyRevision}, acc, twice
}
