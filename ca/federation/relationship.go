package federation

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Profile is a SPIFFE bundle endpoint profile: how the bundle endpoint
// server is authenticated (SPIFFE Federation specification, section 5).
type Profile string

const (
	// ProfileHTTPSSPIFFE authenticates the endpoint server by its X.509-SVID:
	// its certificate must chain to the bundle of the endpoint ID's trust
	// domain and carry exactly Relationship.EndpointSPIFFEID.
	ProfileHTTPSSPIFFE Profile = "https_spiffe"
	// ProfileHTTPSWeb authenticates the endpoint server with ordinary Web PKI
	// (Config.WebRoots, or the system roots when that is nil).
	ProfileHTTPSWeb Profile = "https_web"
)

// ErrInvalidRelationship is wrapped by every error Relationship.Validate
// returns.
var ErrInvalidRelationship = errors.New("federation: invalid relationship")

// Relationship describes a federation relationship with one foreign trust
// domain: where its bundle is published and how that endpoint is
// authenticated.
type Relationship struct {
	// TrustDomain is the federated (foreign) trust domain.
	TrustDomain spiffeid.TrustDomain
	// BundleEndpointURL is the https URL of the trust domain's SPIFFE bundle
	// endpoint.
	BundleEndpointURL string
	// Profile is the bundle endpoint profile.
	Profile Profile
	// EndpointSPIFFEID is, for ProfileHTTPSSPIFFE only, the SPIFFE ID the
	// endpoint server's certificate must carry. It is usually in
	// TrustDomain itself, in which case the endpoint is authenticated with
	// the last-known bundle of TrustDomain; it may also be in the local trust
	// domain or another federated one. It must be zero for ProfileHTTPSWeb.
	EndpointSPIFFEID spiffeid.ID
}

// Validate reports whether r is well-formed: a non-zero trust domain, an
// absolute https URL without user info, a known profile, an endpoint SPIFFE
// ID for https_spiffe and none for https_web. It does not contact the
// endpoint. Errors wrap ErrInvalidRelationship.
func (r Relationship) Validate() error {
	if r.TrustDomain.IsZero() {
		return fmt.Errorf("%w: trust domain is empty", ErrInvalidRelationship)
	}
	if r.BundleEndpointURL == "" {
		return fmt.Errorf("%w: %q: bundle endpoint url is empty", ErrInvalidRelationship, r.TrustDomain)
	}
	u, err := url.Parse(r.BundleEndpointURL)
	if err != nil {
		// url.Parse's error quotes the whole URL, a password in it too:
		// only what it found wrong is said.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%w: %q: bundle endpoint url: %w", ErrInvalidRelationship, r.TrustDomain, err)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("%w: %q: bundle endpoint url must use the https scheme, got %q", ErrInvalidRelationship, r.TrustDomain, u.Scheme)
	}
	if u.Hostname() == "" { // "https://:8443/" has a Host, and no host in it
		return fmt.Errorf("%w: %q: bundle endpoint url has no host", ErrInvalidRelationship, r.TrustDomain)
	}
	// url.Parse takes any digits for a port: one no fetch can dial is
	// refused now, not at every refresh. An empty port is the scheme's.
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("%w: %q: bundle endpoint url: port %s is not a number from 1 to 65535", ErrInvalidRelationship, r.TrustDomain, p)
		}
	}
	if u.User != nil {
		return fmt.Errorf("%w: %q: bundle endpoint url must not contain user info", ErrInvalidRelationship, r.TrustDomain)
	}
	switch r.Profile {
	case ProfileHTTPSSPIFFE:
		if r.EndpointSPIFFEID.IsZero() {
			return fmt.Errorf("%w: %q: profile %s requires an endpoint spiffe id", ErrInvalidRelationship, r.TrustDomain, r.Profile)
		}
	case ProfileHTTPSWeb:
		if !r.EndpointSPIFFEID.IsZero() {
			return fmt.Errorf("%w: %q: endpoint spiffe id is only used with profile %s, not %s", ErrInvalidRelationship, r.TrustDomain, ProfileHTTPSSPIFFE, r.Profile)
		}
	default:
		return fmt.Errorf("%w: %q: unknown bundle endpoint profile %q", ErrInvalidRelationship, r.TrustDomain, r.Profile)
	}
	return nil
}

// NeedsInitialBundle reports whether the endpoint is authenticated with
// the peer's own bundle (https_spiffe with the endpoint ID in the peer's
// trust domain): then a last-known bundle with X.509 authorities is needed
// before the first fetch, and must never be replaced by one without them.
func (r Relationship) NeedsInitialBundle() bool {
	return r.Profile == ProfileHTTPSSPIFFE && r.EndpointSPIFFEID.TrustDomain() == r.TrustDomain
}
