package authority

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/singleflight"

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

// askedHop is a hop whose status is asked for, and until when a
// revocation of it matters (see keepPeerRevocation): the hop's own
// expiry when known, otherwise the latest expiry of the hops asked
// about below it.
type askedHop struct {
	hopRef
	until time.Time
}

// refsOf names the hops of a verified chain.
func refsOf(chain []*delegation.Claims) []askedHop {
	out := make([]askedHop, len(chain))
	for i, c := range chain {
		out[i] = askedHop{hopRef{Issuer: c.Issuer, ID: c.ID}, time.Unix(c.Expiry, 0)}
	}
	return out
}

// remoteStatus asks the issuer of each hop issued elsewhere for its
// status, at its status endpoint (https_spiffe federation: the API
// listener of the peer's bundle endpoint, authenticated as
// spiffe://<td>/mandate/server with the peer's federated bundle). An
// issuer that once answered that a hop no longer holds (revoked or
// expired) is not asked again: that answer is final, and remembered
// whoever asked (an issuer that later says "active" again, restored
// from a backup or hostile, does not bring the hop back); a revocation
// is also kept in the store, so that a restart or a full memory does not
// forget it (see keepPeerRevocation). Otherwise,
// with maxAge 0 (extending a chain) it always asks, and remembers only
// such a final answer. With maxAge > 0 (the public status endpoint) it
// relies on an active answer asked for less than maxAge ago, on a
// failure less than remoteFailureTTL ago, shares one request among
// concurrent callers for the same hop, and asks at most
// maxRemoteFetches at once, at most maxRemoteFetchesPerPeer of them of
// one authority: public requests cannot make it hammer another
// authority, and one slow or hostile authority cannot hold every slot
// and starve the status of hops below the others'. A hop that cannot be
// asked is an error: nothing is assumed of it. The others are asked all
// the same, and what they said is answered with the first such error: a
// revocation one issuer states is not hidden because another issuer of
// the chain is down. An issuer that could not be asked at all is not
// asked again in the same call, for its other hops.
func (a *Authority) remoteStatus(ctx context.Context, refs []askedHop, maxAge time.Duration) (map[hopRef]remoteHop, error) {
	out := map[hopRef]remoteHop{}
	var feds map[string]*Federation
	var unknown error // the first hop that could not be asked
	failed := func(err error) {
		if unknown == nil {
			unknown = err
		}
	}
	// Issuers that could not be asked at all in this call: their other
	// hops are not asked either (each would wait out the same timeout),
	// though what is known of them here still counts.
	down := map[string]error{}
	failedAt := func(td spiffeid.TrustDomain, err error) {
		if errors.As(err, new(issuerUnreachable)) {
			down[td.Name()] = err
		}
		failed(err)
	}
	for _, asked := range refs {
		r := asked.hopRef
		if r.Issuer == a.td.IDString() {
			continue
		}
		// The federation first: a peer no longer federated is not
		// answered for from memory.
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
			failed(fmt.Errorf("%w: issuer %q", delegation.ErrMalformed, r.Issuer))
			continue
		}
		f := feds[td.Name()]
		if f == nil || f.Profile != "https_spiffe" {
			failed(fmt.Errorf("%w: %s is not federated with the https_spiffe profile, so its status endpoint is unknown", ErrStatusUnavailable, td))
			continue
		}
		// A revocation already known is kept at least as long as this
		// hop matters: it may have been kept until the expiry of a hop
		// below it, sooner than its own.
		if h, ok := a.remote.final(r); ok {
			a.keepPeerRevocation(ctx, asked, h)
			out[r] = h
			continue
		}
		switch kept, err := a.peerRevoked(ctx, r); {
		case err != nil:
			return nil, err
		case kept:
			h := remoteHop{Status: delegation.StatusRevoked}
			a.remote.put(r, h, nil, a.now())
			a.keepPeerRevocation(ctx, asked, h)
			out[r] = h
			continue
		}
		if err, ok := down[td.Name()]; ok {
			failed(err)
			continue
		}
		if maxAge <= 0 {
			at := a.now()
			h, err := a.fetchStatus(ctx, td, f, r.ID)
			if err != nil {
				failedAt(td, err)
				continue
			}
			if h.Status != delegation.StatusActive {
				a.remote.put(r, h, nil, at)
				a.keepPeerRevocation(ctx, asked, h)
			}
			out[r] = h
			continue
		}
		if h, err, ok := a.remote.get(r, a.now(), maxAge); ok {
			if err != nil {
				failedAt(td, err)
				continue
			}
			out[r] = h
			continue
		}
		// The fetch is shared by every caller asking meanwhile, and
		// remembered.
		v, err := a.remote.shared(ctx, r.key(), 2*delegation.StatusTimeout, func(fctx context.Context) (any, error) {
			release, err := a.remote.slots.acquire(fctx, td.Name())
			if err != nil {
				return remoteHop{}, issuerUnreachable{fmt.Errorf("%w: %v", ErrStatusUnavailable, err)}
			}
			defer release()
			at := a.now()
			h, err := a.fetchStatus(fctx, td, f, r.ID)
			a.remote.put(r, h, err, at)
			if err == nil {
				a.keepPeerRevocation(fctx, asked, h)
			}
			return h, err
		})
		if err != nil {
			failedAt(td, err)
			continue
		}
		out[r] = v.(remoteHop)
	}
	return out, unknown
}

// remoteStatusTTL is how long the status endpoint relies on another
// authority's "active" for a hop above one of its own (counted from when
// it asked): how late it can learn of a revocation there. Extending a
// chain always asks afresh (unless a revocation is remembered).
const remoteStatusTTL = 5 * time.Second

// remoteFailureTTL is how long the status endpoint answers 503 for a hop
// whose issuer could not be asked, without asking again.
const remoteFailureTTL = 2 * time.Second

// maxRemoteStatuses bounds the remembered answers; when full they are
// forgotten, except final ones (see remoteStatuses.put).
const maxRemoteStatuses = 4096

// maxRemoteFetches bounds the status endpoint's concurrent requests to
// other authorities.
const maxRemoteFetches = 16

// maxRemoteFetchesPerPeer bounds those of them to one authority (trust
// domain): an authority that holds its requests (slow or hostile) holds
// at most this share, and leaves the rest of the slots to the others.
const maxRemoteFetchesPerPeer = maxRemoteFetches / 2

// fetchSlots are the slots of the status endpoint's requests to other
// authorities: maxRemoteFetches in all (all), maxRemoteFetchesPerPeer per
// trust domain (peers, guarded by mu; a trust domain's entry lives while
// a request to it holds or waits for a slot).
type fetchSlots struct {
	all   chan struct{} // made by New, maxRemoteFetches slots
	mu    sync.Mutex
	peers map[string]*peerSlots
}

type peerSlots struct {
	slots chan struct{} // maxRemoteFetchesPerPeer slots
	users int           // requests holding or waiting for one
}

// acquire waits for a slot for a request to the authority of trust
// domain td: one of td's share first, then one of all (so a request
// waiting for td's share holds none of the others'). It gives up when
// ctx ends. release gives the slots back.
func (s *fetchSlots) acquire(ctx context.Context, td string) (release func(), err error) {
	s.mu.Lock()
	p := s.peers[td]
	if p == nil {
		if s.peers == nil {
			s.peers = map[string]*peerSlots{}
		}
		p = &peerSlots{slots: make(chan struct{}, maxRemoteFetchesPerPeer)}
		s.peers[td] = p
	}
	p.users++
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if p.users--; p.users == 0 {
			delete(s.peers, td)
		}
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
	select {
	case s.all <- struct{}{}:
	case <-ctx.Done():
		<-p.slots
		done()
		return nil, ctx.Err()
	}
	return func() {
		<-s.all
		<-p.slots
		done()
	}, nil
}

// remoteStatuses is what the authority keeps to ask other authorities:
// their answers (guarded by mu), a client per issuer server, the requests
// in flight.
type remoteStatuses struct {
	mu      sync.Mutex
	m       map[hopRef]rememberedHop
	clients map[spiffeid.ID]*http.Client
	group   singleflight.Group
	slots   fetchSlots
	// life ends (end, by Run's end or Close) shared work still running:
	// it runs detached from its callers, not from the authority.
	life context.Context
	end  context.CancelFunc
}

type rememberedHop struct {
	hop remoteHop
	err error
	at  time.Time // when it was asked
}

// final reports whether e says the hop no longer holds (revoked or
// expired): an issuer does not take that back.
func (e rememberedHop) final() bool { return e.err == nil && e.hop.Status != delegation.StatusActive }

// shared runs work once for every caller asking for key meanwhile. The
// work runs on its own time (at most timeout), not the first caller's:
// a public caller that hangs up must not make the answer a failure for
// the others; a caller whose ctx ends stops waiting (unavailable). It
// ends with the authority (life). A panic in work is the callers' error,
// not the process's end.
func (c *remoteStatuses) shared(ctx context.Context, key string, timeout time.Duration, work func(context.Context) (any, error)) (any, error) {
	ch := c.group.DoChan(key, func() (v any, err error) {
		defer func() {
			if p := recover(); p != nil {
				v, err = nil, fmt.Errorf("authority: %s: panic: %v", key, p)
			}
		}()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		if c.life != nil {
			defer context.AfterFunc(c.life, cancel)()
		}
		return work(wctx)
	})
	select {
	case res := <-ch:
		return res.Val, res.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrStatusUnavailable, ctx.Err())
	}
}

// get recalls a final answer (see final), an active answer asked for at
// most maxAge before now, or a failure at most remoteFailureTTL before
// now.
func (c *remoteStatuses) get(r hopRef, now time.Time, maxAge time.Duration) (remoteHop, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[r]
	switch {
	case ok && e.final():
		return e.hop, nil, true
	case !ok || now.Before(e.at):
		return remoteHop{}, nil, false
	case e.err != nil:
		return remoteHop{}, e.err, now.Sub(e.at) <= remoteFailureTTL
	case e.hop.Status == delegation.StatusActive && now.Sub(e.at) <= maxAge:
		return e.hop, nil, true
	}
	return remoteHop{}, nil, false
}

// final recalls an answer that the hop no longer holds (revoked or
// expired), whenever it was asked for: its issuer does not take it back.
func (c *remoteStatuses) final(r hopRef) (remoteHop, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[r]; ok && e.final() {
		return e.hop, true
	}
	return remoteHop{}, false
}

// put remembers an answer (or a failure) asked for at asked, unless what
// is remembered is final, or was asked for later and this answer is not
// final (a final answer replaces any other). When full, only final
// answers are kept (at most half as many as may be remembered).
func (c *remoteStatuses) put(r hopRef, h remoteHop, err error, asked time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := rememberedHop{hop: h, err: err, at: asked}
	if old, ok := c.m[r]; ok && (old.final() || !e.final() && old.at.After(asked)) {
		return
	}
	if c.m == nil || len(c.m) >= maxRemoteStatuses {
		kept := map[hopRef]rememberedHop{}
		for k, old := range c.m {
			if old.final() && len(kept) < maxRemoteStatuses/2 {
				kept[k] = old
			}
		}
		c.m = kept
	}
	c.m[r] = e
}

// client is the status client for an issuer's server, made once.
func (c *remoteStatuses) client(bundles x509bundle.Source, server spiffeid.ID) *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc, ok := c.clients[server]; ok {
		return hc
	}
	if c.clients == nil || len(c.clients) >= maxRemoteStatuses {
		c.clients = map[spiffeid.ID]*http.Client{}
	}
	hc := delegation.NewStatusClient(bundles, server)
	c.clients[server] = hc
	return hc
}

// revokedAbove says why rec no longer holds, though its own record is
// not revoked: a hop above it revoked (in this authority's records, or,
// for another authority's hop, as that authority answers: an active
// answer younger than remoteStatusTTL is relied on), or one of its
// parties or the parties above revoked here (see revokedInTx; a cascade
// that stopped at its bound leaves such hops to be found here). It
// returns "" when everything holds, and an error when a hop above cannot
// be asked.
func (a *Authority) revokedAbove(ctx context.Context, rec *delegation.Record) (string, error) {
	var foreign []askedHop
	why := ""
	err := a.store.View(ctx, func(tx store.Tx) error {
		for _, an := range rec.Ancestors {
			if an.Issuer != a.td.IDString() {
				// A hop above lasts at least as long as rec.
				foreign = append(foreign, askedHop{hopRef{Issuer: an.Issuer, ID: an.ID}, rec.ExpiresAt})
			}
		}
		var err error
		why, err = revokedInTx(tx, a.td.IDString(), rec)
		return err
	})
	if err != nil || why != "" {
		return why, err
	}
	// A revocation heard of is the answer, also when another hop above
	// could not be asked.
	remote, err := a.remoteStatus(ctx, foreign, remoteStatusTTL)
	for _, r := range foreign {
		if h, ok := remote[r.hopRef]; ok && h.Status == delegation.StatusRevoked {
			return "the hop " + r.ID + " of " + r.Issuer + " above it was revoked", nil
		}
	}
	return "", err
}

// issuerUnreachable is a status that could not be asked because its
// issuer could not be (its server did not answer, or no slot to ask it
// came free in time), not because of the hop: remoteStatus asks none of
// that issuer's other hops in the same call.
type issuerUnreachable struct{ error }

func (e issuerUnreachable) Unwrap() error { return e.error }

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
	out, err := delegation.FetchStatus(ctx, a.remote.client(a, serverID), "https://"+u.Host, id)
	if err != nil {
		werr := fmt.Errorf("%w: %v", ErrStatusUnavailable, err)
		if errors.Is(err, delegation.ErrStatusUnreachable) {
			return remoteHop{}, issuerUnreachable{werr}
		}
		return remoteHop{}, werr
	}
	// Where the hop is logged is part of the link written into the next
	// hop: an active hop's answer without it does not extend the chain.
	// A revoked or expired hop is learned whatever else its answer says.
	if out.Status != delegation.StatusActive {
		return remoteHop{Status: out.Status}, nil
	}
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

// bucketPeerRevocations keeps the hops of other authorities that their
// issuers said were revoked: "<issuer> 0x00 <id>" → peerRevocation.
const bucketPeerRevocations = "delegations_peer_revoked"

// peerRevocation is what is kept of another authority's revoked hop.
type peerRevocation struct {
	LearnedAt time.Time `json:"learned_at"`
	// KeepUntil is when it stops mattering: the latest expiry known of
	// the hop (or of a hop asked about below it), when no token of the
	// hop verifies any more.
	KeepUntil time.Time `json:"keep_until"`
}

func peerRevocationKey(r hopRef) []byte {
	return append(append([]byte(r.Issuer), 0), r.ID...)
}

// peerRevoked reports whether r's issuer once said r was revoked (kept
// in the store by keepPeerRevocation).
func (a *Authority) peerRevoked(ctx context.Context, r hopRef) (bool, error) {
	found := false
	err := a.store.View(ctx, func(tx store.Tx) error {
		_, err := tx.Get(bucketPeerRevocations, peerRevocationKey(r))
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("authority: read what peers said of %s: %w", r.key(), err)
	}
	return found, nil
}

// keepPeerRevocation keeps h in the store if it says the hop was
// revoked, until the hop has expired (an "expired" answer needs no
// keeping: every verifier finds the expiry in the token itself); one
// kept already is kept longer if asked.until is later. It writes only
// then. A failure to keep it is logged: the answer stands for this
// request, the memory keeps it until a restart, and keeping it is tried
// again when the hop is next asked about.
func (a *Authority) keepPeerRevocation(ctx context.Context, asked askedHop, h remoteHop) {
	if h.Status != delegation.StatusRevoked {
		return
	}
	k := peerRevocationKey(asked.hopRef)
	// keptLonger reports whether tx keeps the hop until asked.until or
	// later already.
	keptLonger := func(tx store.Tx) (bool, error) {
		switch b, err := tx.Get(bucketPeerRevocations, k); {
		case err == nil:
			var old peerRevocation
			return json.Unmarshal(b, &old) == nil && !old.KeepUntil.Before(asked.until), nil
		case errors.Is(err, store.ErrNotFound):
			return false, nil
		default:
			return false, err
		}
	}
	kept, err := viewed(ctx, a.store, keptLonger)
	if err == nil && !kept {
		err = a.store.Update(ctx, func(tx store.Tx) error {
			if kept, err := keptLonger(tx); err != nil || kept {
				return err
			}
			b, err := json.Marshal(peerRevocation{LearnedAt: a.now(), KeepUntil: asked.until})
			if err != nil {
				return err
			}
			return tx.Put(bucketPeerRevocations, k, b)
		})
	}
	if err != nil && ctx.Err() == nil {
		a.log.ErrorContext(ctx, "keep a peer's revocation", "hop", asked.key(), "err", err)
	}
}

// prunePeerRevocations forgets the kept revocations of hops that have
// expired (an hour past, for clocks that disagree). It writes only when
// there is something to forget.
func (a *Authority) prunePeerRevocations(ctx context.Context) {
	cutoff := a.now().Add(-time.Hour)
	// One that cannot be read is kept: forgetting a revocation is the
	// unsafe way.
	expired := func(v []byte) bool {
		var rev peerRevocation
		return json.Unmarshal(v, &rev) == nil && rev.KeepUntil.Before(cutoff)
	}
	var gone [][]byte
	err := a.store.View(ctx, func(tx store.Tx) error {
		gone = gone[:0]
		return tx.Scan(bucketPeerRevocations, nil, nil, func(k, v []byte) error {
			if expired(v) {
				gone = append(gone, k)
			}
			return nil
		})
	})
	if err == nil && len(gone) > 0 {
		err = a.store.Update(ctx, func(tx store.Tx) error {
			for _, k := range gone {
				// Kept longer meanwhile (asked about below a later hop)?
				if v, err := tx.Get(bucketPeerRevocations, k); err != nil || !expired(v) {
					if err != nil && !errors.Is(err, store.ErrNotFound) {
						return err
					}
					continue
				}
				if err := tx.Delete(bucketPeerRevocations, k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil && ctx.Err() == nil {
		a.log.Error("prune peers' revocations", "err", err)
	}
}
