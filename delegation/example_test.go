package delegation_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/delegation"
)

// A resource server, behind mTLS with SPIFFE X509-SVIDs, accepting a
// delegation token from its caller: the chain is verified offline
// against the bundles of the trust domains it trusts (its own and its
// federated peers'), held by the caller (its SPIFFE ID and certificate),
// and then, for an act that matters, asked of the last hop's issuer,
// which answers for the hops above as well (a revocation of any of them
// is "revoked"). Every failure denies.
func ExampleVerify() {
	var (
		bundles   *spiffebundle.Set // kept current, e.g. from the Workload API or each authority's /v1/bundle
		r         *http.Request     // the caller's request, over mTLS
		token     string            // from r, e.g. its Authorization header
		issuerURL = map[string]string{"spiffe://org-b.example": "https://mandate.org-b.example:8443"}
	)
	handle := func() error {
		caller, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
		if err != nil {
			return err
		}
		chain, err := delegation.Verify(token, bundles, delegation.VerifyOptions{
			Presenter:     caller,                    // only the holder may use it
			PresenterCert: r.TLS.PeerCertificates[0], // and, when bound, with its certificate
		})
		switch {
		case errors.Is(err, delegation.ErrExpired), errors.Is(err, delegation.ErrNotYetValid):
			return fmt.Errorf("ask for a new token: %w", err)
		case err != nil:
			return err
		}
		last := chain[len(chain)-1]
		for _, s := range last.Scopes() {
			_ = s // what the caller may do, for last.Subject (the principal)
		}
		td, err := spiffeid.TrustDomainFromString(last.Issuer)
		if err != nil {
			return err
		}
		hc := delegation.NewStatusClient(bundles, spiffeid.RequireFromSegments(td, "mandate", "server"))
		st, err := delegation.FetchStatus(context.Background(), hc, issuerURL[last.Issuer], last.ID)
		if err != nil || st.Status != delegation.StatusActive {
			return fmt.Errorf("not known to hold: %v", err)
		}
		return nil
	}
	_ = handle
}
