package federation

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CombinedSource is the combined bundle source of a Manager: the local
// trust domain's bundle (Config.LocalBundle) plus the last-known bundle of
// every federated trust domain. It is what verifiers of SVIDs from any
// trusted trust domain need, and what authenticates https_spiffe bundle
// endpoints. It implements spiffebundle.Source, x509bundle.Source and
// jwtbundle.Source, is safe for concurrent use, reflects the Manager's
// current state on every call, and returns bundles the caller may modify.
// The local trust domain wins should a relationship ever name it (Set
// refuses that while LocalBundle reports it).
type CombinedSource struct {
	m *Manager
}

var (
	_ spiffebundle.Source = CombinedSource{}
	_ x509bundle.Source   = CombinedSource{}
	_ jwtbundle.Source    = CombinedSource{}
	_ spiffebundle.Source = (*Manager)(nil)
	_ x509bundle.Source   = (*Manager)(nil)
	_ jwtbundle.Source    = (*Manager)(nil)
)

// CombinedSource returns the combined (local + federated) bundle source.
func (m *Manager) CombinedSource() CombinedSource {
	return CombinedSource{m: m}
}

// GetBundleForTrustDomain returns a clone of the bundle for td from the
// local bundle or the federated ones. Errors wrap ErrUnknownTrustDomain.
func (s CombinedSource) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if local := s.m.localBundle(); local != nil && local.TrustDomain() == td {
		return local.Clone(), nil
	}
	if b, ok := s.m.Bundle(td); ok {
		return b, nil
	}
	return nil, fmt.Errorf("%w %q: no bundle", ErrUnknownTrustDomain, td)
}

// GetX509BundleForTrustDomain returns the X.509 part of the bundle for td
// (see GetBundleForTrustDomain).
func (s CombinedSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := s.GetBundleForTrustDomain(td)
	if err != nil {
		return nil, err
	}
	return b.X509Bundle(), nil
}

// GetJWTBundleForTrustDomain returns the JWT part of the bundle for td (see
// GetBundleForTrustDomain).
func (s CombinedSource) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	b, err := s.GetBundleForTrustDomain(td)
	if err != nil {
		return nil, err
	}
	return b.JWTBundle(), nil
}

// GetBundleForTrustDomain makes the Manager itself a spiffebundle.Source
// over the combined (local + federated) bundles; see CombinedSource.
// Unlike Bundle, it also answers for the local trust domain.
func (m *Manager) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	return m.CombinedSource().GetBundleForTrustDomain(td)
}

// GetX509BundleForTrustDomain makes the Manager an x509bundle.Source over
// the combined bundles; see CombinedSource.
func (m *Manager) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return m.CombinedSource().GetX509BundleForTrustDomain(td)
}

// GetJWTBundleForTrustDomain makes the Manager a jwtbundle.Source over the
// combined bundles; see CombinedSource.
func (m *Manager) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	return m.CombinedSource().GetJWTBundleForTrustDomain(td)
}
