package ca

import (
	"cmp"
	"crypto/x509"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Bundle returns (a clone of) the trust domain's SPIFFE bundle: the X.509
// authorities (our CA certificates, or the upstream roots when an upstream
// is configured) and the JWT authorities of every prepared, active and not
// yet expired old authority, with spiffe_sequence and spiffe_refresh_hint
// set. The sequence number increases by one on every change of the
// bundle's contents (its authorities, or its refresh hint when
// Config.RefreshHint changed since the last start: SPIFFE Trust Domain
// and Bundle §4.1.1) and is persisted with the state.
func (c *CA) Bundle() *spiffebundle.Bundle {
	return c.view.Load().bundle.Clone()
}

// X509Authorities returns the bundle's X.509 authorities. The slice is a
// copy; the certificates are shared and must not be modified.
func (c *CA) X509Authorities() []*x509.Certificate {
	return c.view.Load().bundle.X509Authorities()
}

// TrustDomain returns the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Status lists all authorities (X.509 first, then JWT, each oldest first)
// for administrative display.
func (c *CA) Status() []AuthorityInfo {
	return slices.Clone(c.view.Load().infos)
}

func (c *CA) buildBundle(st *caState) *spiffebundle.Bundle {
	b := spiffebundle.New(c.td)
	for _, a := range st.auths {
		switch a.kind {
		case KindX509:
			b.AddX509Authority(a.root) // de-duplicates shared upstream roots
		case KindJWT:
			_ = b.AddJWTAuthority(a.id, a.publicKey) // only fails for an empty kid
		}
	}
	if st.hint != nil {
		b.SetRefreshHint(*st.hint)
	}
	b.SetSequenceNumber(st.seq)
	return b
}

// bundleContentEqual compares the contents of two bundles, their
// authorities and refresh hint, ignoring the sequence number.
func bundleContentEqual(a, b *spiffebundle.Bundle) bool {
	ha, oka := a.RefreshHint()
	hb, okb := b.RefreshHint()
	if ha != hb || oka != okb {
		return false
	}
	xa, xb := a.X509Authorities(), b.X509Authorities()
	if !slices.EqualFunc(xa, xb, func(p, q *x509.Certificate) bool { return p.Equal(q) }) {
		return false
	}
	ja, jb := a.JWTAuthorities(), b.JWTAuthorities()
	if len(ja) != len(jb) {
		return false
	}
	for kid, pa := range ja {
		if pb, ok := jb[kid]; !ok || !publicKeyEqual(pa, pb) {
			return false
		}
	}
	return true
}

// StateAuthorities describes the authorities of a journal document (one
// the CA passed to Journal.Save), as Status would once it takes effect.
func StateAuthorities(td spiffeid.TrustDomain, state []byte) ([]AuthorityInfo, error) {
	st, err := decodeState(td, state)
	if err != nil {
		return nil, err
	}
	return authorityInfos(st), nil
}

func authorityInfos(st *caState) []AuthorityInfo {
	infos := make([]AuthorityInfo, 0, len(st.auths))
	for _, a := range st.auths {
		infos = append(infos, a.info())
	}
	slices.SortStableFunc(infos, func(p, q AuthorityInfo) int {
		if p.Kind != q.Kind {
			if p.Kind == KindX509 {
				return -1
			}
			return 1
		}
		return cmp.Compare(p.NotBefore.UnixNano(), q.NotBefore.UnixNano())
	})
	return infos
}
