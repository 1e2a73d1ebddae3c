package authority

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/store"
)

// ErrStatusUnavailable is returned when the revocation status of a
// federated authority's hop cannot be learned: the chain is not extended
// on faith.
var ErrStatusUnavailable = errors.New("authority: delegation status unavailable")

// remoteHop is what a hop's issuer says of it at its status endpoint:
// whether it still holds, and where its issuance is in that issuer's log.
type remoteHop struct {
	Status   string
	LogIndex uint64
	LeafHash string // hex
}

// hopRef names a hop: delegation ids are unique per issuer only.
type hopRef struct{ Issuer, ID string }

// key names the hop among the parties and hops of a chain (what the
// delegation policy sees as a chain member's spiffe_id).
func (r hopRef) key() string { return "delegation " + r.ID + " of " + r.Issuer }

// refsOf names the hops of a verified chain.
func refsOf(chain []*delegation.Claims) []hopRef {
	out := make([]hopRef, len(chain))
	for i, c := range chain {
		out[i] = hopRef{Issuer: c.Issuer, ID: c.ID}
	}
	return out
}

// remoteStatus asks the issuer of each hop issued elsewhere for its
// status, at its status endpoint (https_spiffe federation: the API
// listener of the peer's bundle endpoint, authenticated as
// spiffe://<td>/mandate/server with the peer's federated bundle), or
// recalls an active answer younger than maxAge (0: always ask, and
// remember nothing). A hop that cannot be asked is an error: nothing is
// assumed of it.
func (a *Authority) remoteStatus(ctx context.Context, refs []hopRef, maxAge time.Duration) (map[hopRef]remoteHop, error) {
	out := map[hopRef]remoteHop{}
	var feds map[string]*Federation
	for _, r := range refs {
		if r.Issuer == a.td.IDString() {
			continue
		}
		if h, ok := a.remote.get(r, a.now(), maxAge); ok {
			out[r] = h
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
		td, err := spiffeid.TrustDomainFromString(r.Issuer)
		if err != nil {
			return nil, fmt.Errorf("%w: issuer %q", delegation.ErrMalformed, r.Issuer)
		}
		f := feds[td.Name()]
		if f == nil || f.Profile != "https_spiffe" {
			return nil, fmt.Errorf("%w: %s is not federated with the https_spiffe profile, so its status endpoint is unknown", ErrStatusUnavailable, td)
		}
		h, err := a.fetchStatus(ctx, td, f, r.ID)
		if err != nil {
			return nil, err
		}
		if maxAge > 0 {
			a.remote.put(r, h, a.now())
		}
		out[r] = h
	}
	return out, nil
}

// remoteStatusTTL is how long the status endpoint relies on another
// authority's "active" for a hop above one of its own: it bounds how
// often a public status request makes this authority ask another one.
// Extending a chain always asks afresh.
const remoteStatusTTL = 5 * time.Second

// maxRemoteStatuses bounds the remembered answers; when full they are
// forgotten.
const maxRemoteStatuses = 4096

// remoteStatuses remembers other authorities' answers, guarded by mu.
type remoteStatuses struct {
	mu sync.Mutex
	m  map[hopRef]rememberedHop
}

type rememberedHop struct {
	hop remoteHop
	at  time.Time
}

func (c *remoteStatuses) get(r hopRef, now time.Time, maxAge time.Duration) (remoteHop, bool) {
	if maxAge <= 0 {
		return remoteHop{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[r]
	if !ok || e.hop.Status != delegation.StatusActive || now.Sub(e.at) > maxAge || now.Before(e.at) {
		return remoteHop{}, false
	}
	return e.hop, true
}

func (c *remoteStatuses) put(r hopRef, h remoteHop, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxRemoteStatuses {
		c.m = map[hopRef]rememberedHop{}
	}
	c.m[r] = rememberedHop{hop: h, at: now}
}

// revokedAbove names the first hop above rec (root first) that was
// revoked: in this authority's records, or, for another authority's hop,
// as that authority answers (an active answer younger than
// remoteStatusTTL is relied on). It returns "" when every hop above
// holds, and an error when one cannot be asked.
func (a *Authority) revokedAbove(ctx context.Context, rec *delegation.Record) (string, error) {
	var foreign []hopRef
	found := ""
	err := a.store.View(ctx, func(tx store.Tx) error {
		for _, an := range rec.Ancestors {
			if an.Issuer != a.td.IDString() {
				foreign = append(foreign, hopRef{Issuer: an.Issuer, ID: an.ID})
				continue
			}
			r, err := delegation.Get(tx, an.ID)
			if err != nil {
				return err
			}
			if !r.RevokedAt.IsZero() {
				found = an.ID + " of " + an.Issuer
				return nil
			}
		}
		return nil
	})
	if err != nil || found != "" {
		return found, err
	}
	remote, err := a.remoteStatus(ctx, foreign, remoteStatusTTL)
	if err != nil {
		return "", err
	}
	for _, r := range foreign {
		if remote[r].Status == delegation.StatusRevoked {
			return r.ID + " of " + r.Issuer, nil
		}
	}
	return "", nil
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
	out, err := delegation.FetchStatus(ctx, a, "https://"+u.Host, serverID, id)
	if err != nil {
		return remoteHop{}, fmt.Errorf("%w: %v", ErrStatusUnavailable, err)
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
