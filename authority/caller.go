package authority

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Role is what a caller may do, derived from its SPIFFE ID.
type Role int

// Roles, from none (public) up.
const (
	RoleNone Role = iota
	RoleAgent
	RoleNode
	RoleAdmin
	RoleAuditor
)

func (r Role) String() string {
	return [...]string{"none", "agent", "node", "admin", "auditor"}[r]
}

// Caller is an authenticated client: the SPIFFE ID of the X509-SVID it
// presented over mTLS, and that certificate.
type Caller struct {
	ID   spiffeid.ID
	Cert *x509.Certificate
}

// hostNodePrefix starts the Subject description that Mandate puts in
// agent X509-SVIDs: "mandate-host-node=<node SPIFFE ID>", the node the
// SVID was issued to. It lets an agent renew by itself while the authority
// still checks that its host is attested, unbanned and allowed. (The
// SPIFFE X509-SVID spec leaves the Subject free; the identity is only ever
// the URI SAN.)
const hostNodePrefix = "mandate-host-node="

// oidDescription is the X.520 description attribute, which, unlike the
// organizational unit (at most 64 characters, RFC 5280 Appendix A.1),
// holds a node ID of any length.
var oidDescription = asn1.ObjectIdentifier{2, 5, 4, 13}

// hostNodeSubject is the Subject of an agent SVID issued to node.
func hostNodeSubject(node spiffeid.ID) pkix.Name {
	return pkix.Name{Organization: []string{"Mandate"}, ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidDescription, Value: hostNodePrefix + node.String()}}}
}

// HostNode returns the node SPIFFE ID recorded in an agent X509-SVID: in
// its Subject description, or, in an SVID issued before the node moved
// there, its organizational unit.
func HostNode(cert *x509.Certificate) (spiffeid.ID, error) {
	for _, atv := range cert.Subject.Names {
		if v, ok := atv.Value.(string); ok && atv.Type.Equal(oidDescription) {
			if s, ok := strings.CutPrefix(v, hostNodePrefix); ok {
				return spiffeid.FromString(s)
			}
		}
	}
	for _, ou := range cert.Subject.OrganizationalUnit {
		if s, ok := strings.CutPrefix(ou, hostNodePrefix); ok {
			return spiffeid.FromString(s)
		}
	}
	return spiffeid.ID{}, fmt.Errorf("%w: the SVID does not name its host node", ErrForbidden)
}

// RoleOf returns the role of a caller's SPIFFE ID in this authority.
func (a *Authority) RoleOf(id spiffeid.ID) Role {
	if id.IsZero() {
		return RoleNone
	}
	if a.admins[id.String()] {
		return RoleAdmin
	}
	if a.auditors[id.String()] {
		return RoleAuditor
	}
	if id.TrustDomain() != a.td {
		return RoleNone
	}
	switch {
	case strings.HasPrefix(id.Path(), "/node/"):
		return RoleNode
	case strings.HasPrefix(id.Path(), "/agent/"):
		return RoleAgent
	}
	return RoleNone
}

// Require returns ErrUnauthenticated or ErrForbidden unless c has role r
// (or one of the roles or): the check every flow that needs r makes
// first, for a server to make before it reads a request.
func (a *Authority) Require(c *Caller, r Role, or ...Role) error { return a.require(c, r, or...) }

// require returns ErrUnauthenticated or ErrForbidden unless c has role r
// or one of the roles or.
func (a *Authority) require(c *Caller, r Role, or ...Role) error {
	if c == nil || c.ID.IsZero() {
		return ErrUnauthenticated
	}
	if got := a.RoleOf(c.ID); got != r && !slices.Contains(or, got) {
		needs := r.String()
		for _, o := range or {
			needs += " or " + o.String()
		}
		return fmt.Errorf("%w: %s has role %s; this needs %s", ErrForbidden, c.ID, got, needs)
	}
	return nil
}
