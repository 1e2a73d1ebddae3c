package authority

import (
	"context"
	"encoding/hex"
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

// remoteHop is what a hop's issuer says of it at its status endpoint:
// whether it still holds, and where its issuance is in that issuer's log.
type remoteHop struct {
	Status   string
	LogIndex uint64
	LeafHash string // hex
}

// remoteStatus asks the issuer of each hop issued elsewhere for its
// status, at its status endpoint (https_spiffe federation: the API
// listener of the peer's bundle endpoint, authenticated as
// spiffe://<td>/mandate/server with the peer's federated bundle). It
// returns the answers by delegation id.
func (a *Authority) remoteStatus(ctx context.Context, chain []*delegation.Claims) (map[string]remoteHop, error) {
	out := map[string]remoteHop{}
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
		h, err := a.fetchStatus(ctx, td, f, c.ID)
		if err != nil {
			return nil, err
		}
		out[c.ID] = h
	}
	return out, nil
}

func (a *Authority) fetchStatus(ctx context.Context, td spiffeid.TrustDomain, f *Federation, id string) (remoteHop, error) {
	u, err := url.Parse(f.BundleEndpointURL)
	if err != nil {
		return remoteHop{}, fmt.Errorf("%w: %s: bundle endpoint %q", ErrStatusUnavailable, td, f.BundleEndpointURL)
	}
	serverID := ServerID(td)
	if f.EndpointSPIFFEID != "" {
		if serverID, err = spiffeid.FromString(f.EndpointSPIFFEID); err != nil {
			return remoteHop{}, fmt.Errorf("%w: %s: endpoint SPIFFE ID: %v", ErrStatusUnavailable, td, err)
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
		return remoteHop{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return remoteHop{}, fmt.Errorf("%w: %s: %v", ErrStatusUnavailable, td, err)
	}
	defer resp.Body.Close()
	var out struct {
		ID       string  `json:"id"`
		Status   string  `json:"status"`
		LogIndex *uint64 `json:"log_index"`
		LeafHash string  `json:"leaf_hash"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.ID != id {
		return remoteHop{}, fmt.Errorf("%w: %s answered %d for %s", ErrStatusUnavailable, td, resp.StatusCode, id)
	}
	// Where the hop is logged is part of the link written into the next
	// hop: an answer without it does not extend the chain.
	if out.LogIndex == nil || !isLeafHash(out.LeafHash) {
		return remoteHop{}, fmt.Errorf("%w: %s did not say where %s is logged", ErrStatusUnavailable, td, id)
	}
	return remoteHop{Status: out.Status, LogIndex: *out.LogIndex, LeafHash: out.LeafHash}, nil
}

// isLeafHash reports whether s is a hex SHA-256 hash.
func isLeafHash(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == 32
}
