package authority

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"mandate.dev/mandate/delegation"
)

// ErrStatusUnavailable is returned when the revocation status of a
// federated authority's hop cannot be learned: the chain is not extended
// on faith.
var ErrStatusUnavailable = errors.New("authority: delegation status unavailable")

// statusTimeout bounds one status request to another authority.
const statusTimeout = 5 * time.Second

// remoteRevoked asks the issuer of each hop issued elsewhere for its
// status, at its status endpoint (https_spiffe federation: the API
// listener of the peer's bundle endpoint, authenticated as
// spiffe://<td>/mandate/server with the peer's federated bundle). It
// returns the hops found revoked (or expired), keyed "delegation:<id>".
func (a *Authority) remoteRevoked(ctx context.Context, chain []*delegation.Claims) (map[string]bool, error) {
	out := map[string]bool{}
	var feds map[string]*Federation
	for _, c := range chain {
		if c.Issuer == a.td.IDString() {
			continue
		}
		if feds == nil {
			recs, err := a.loadFederations(ctx)
			if err != nil {
				return nil, err
			}
			feds = map[string]*Federation{}
			for _, f := range recs {
				feds[f.TrustDomain] = f
			}
		}
		td, err := spiffeid.TrustDomainFromString(c.Issuer)
		if err != nil {
			return nil, fmt.Errorf("%w: issuer %q", delegation.ErrMalformed, c.Issuer)
		}
		f := feds[td.Name()]
		if f == nil || f.Profile != "https_spiffe" {
			return nil, fmt.Errorf("%w: %s is not federated with the https_spiffe profile, so its status endpoint is unknown", ErrStatusUnavailable, td)
		}
		status, err := a.fetchStatus(ctx, td, f, c.ID)
		if err != nil {
			return nil, err
		}
		out["delegation:"+c.ID] = status != delegation.StatusActive
	}
	return out, nil
}

func (a *Authority) fetchStatus(ctx context.Context, td spiffeid.TrustDomain, f *Federation, id string) (string, error) {
	u, err := url.Parse(f.BundleEndpointURL)
	if err != nil {
		return "", fmt.Errorf("%w: %s: bundle endpoint %q", ErrStatusUnavailable, td, f.BundleEndpointURL)
	}
	serverID := ServerID(td)
	if f.EndpointSPIFFEID != "" {
		if serverID, err = spiffeid.FromString(f.EndpointSPIFFEID); err != nil {
			return "", fmt.Errorf("%w: %s: endpoint SPIFFE ID: %v", ErrStatusUnavailable, td, err)
		}
	}
	status := url.URL{Scheme: "https", Host: u.Host, Path: "/v1/delegations/" + url.PathEscape(id) + "/status"}
	hc := &http.Client{Timeout: statusTimeout, Transport: &http.Transport{TLSClientConfig: tlsconfig.TLSClientConfig(a, tlsconfig.AuthorizeID(serverID))},
		// A status is answered, not redirected elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, status.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrStatusUnavailable, td, err)
	}
	defer resp.Body.Close()
	var out struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.ID != id {
		return "", fmt.Errorf("%w: %s answered %d for %s", ErrStatusUnavailable, td, resp.StatusCode, id)
	}
	return out.Status, nil
}
