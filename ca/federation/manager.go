package federation

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults applied by NewManager to zero (or negative) Config durations;
// see also DefaultMaxBundleBytes.
const (
	DefaultRefreshInterval = 5 * time.Minute
	DefaultMinRefresh      = 10 * time.Second
	DefaultMaxRefresh      = time.Hour
	DefaultRetryBackoff    = 5 * time.Second
	DefaultFetchTimeout    = 10 * time.Second
)

var (
	// ErrUnknownTrustDomain is wrapped by errors about a trust domain the
	// manager has no relationship (or, for the bundle sources, no bundle) for.
	ErrUnknownTrustDomain = errors.New("federation: unknown trust domain")
	// ErrRemoved is wrapped by the error of a refresh whose relationship was
	// replaced or removed while it ran; its result was discarded.
	ErrRemoved = errors.New("federation: relationship was replaced or removed")
	// ErrAlreadyRunning is returned by Run while another Run is active.
	ErrAlreadyRunning = errors.New("federation: manager is already running")
)

// Config configures a Manager. The zero value is usable; zero durations and
// a zero MaxBundleBytes get the Default* values.
type Config struct {
	// LocalBundle returns this authority's own bundle (nil if not yet
	// available). It makes the local trust domain part of the combined
	// source (see CombinedSource), which authenticates https_spiffe endpoints
	// whose SPIFFE ID is in the local trust domain. It is called without any
	// Manager lock held; the returned bundle is not modified.
	LocalBundle func() *spiffebundle.Bundle
	// WebRoots are the roots trusted for https_web endpoints; nil means the
	// system roots.
	WebRoots *x509.CertPool
	// DefaultRefresh is the refresh interval for a bundle without a refresh
	// hint, and the cap of the retry backoff (which never exceeds the
	// held bundle's refresh interval either). Default 5m.
	DefaultRefresh time.Duration
	// MinRefresh is the floor for a bundle's refresh hint (a hint of 0 is
	// raised to it). Default 10s, which keeps a peer from making us poll
	// it in a tight loop; hints are whole seconds on the wire.
	MinRefresh time.Duration
	// MaxRefresh is the ceiling for a bundle's refresh hint, bounding how
	// stale a bundle can get after the peer rotates. Default 1h; raised to
	// MinRefresh if smaller.
	MaxRefresh time.Duration
	// RetryBackoff is the delay before the first retry after a failed
	// refresh; it doubles with each consecutive failure, capped at
	// DefaultRefresh and at the held bundle's refresh interval (a peer
	// that is down is never polled less often than its hint asks).
	// Default 5s.
	RetryBackoff time.Duration
	// FetchTimeout bounds each fetch (connecting, TLS handshake, request
	// and reading the whole body), and separately each OnUpdate call.
	// Default 10s.
	FetchTimeout time.Duration
	// MaxBundleBytes is the largest bundle document accepted from a bundle
	// endpoint; a larger body is refused without being read further.
	// Default DefaultMaxBundleBytes (1 MiB).
	MaxBundleBytes int64
	// OnUpdate, if set, is called with a newly fetched bundle whose content
	// differs from the last-known one, before it becomes visible; it is
	// meant to persist it. If it returns an error the old bundle is kept and
	// the refresh counts as failed (and is retried with backoff). It is not
	// called for bundles given to Set. Calls for one trust domain are
	// serialized; calls for different ones may run concurrently. It must not
	// call Set, Remove or Refresh on the same Manager for the same trust
	// domain (that deadlocks); reading methods are fine.
	OnUpdate func(ctx context.Context, td spiffeid.TrustDomain, b *spiffebundle.Bundle) error
	// Now is the clock used for Status times and for deciding when a
	// refresh is due. Default time.Now. Waiting is done with real timers.
	Now func() time.Time
	// Logger receives fetch failures, updates and warnings. Default
	// slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.DefaultRefresh <= 0 {
		c.DefaultRefresh = DefaultRefreshInterval
	}
	if c.MinRefresh <= 0 {
		c.MinRefresh = DefaultMinRefresh
	}
	if c.MaxRefresh <= 0 {
		c.MaxRefresh = DefaultMaxRefresh
	}
	if c.MaxRefresh < c.MinRefresh {
		c.MaxRefresh = c.MinRefresh
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = DefaultFetchTimeout
	}
	if c.MaxBundleBytes <= 0 {
		c.MaxBundleBytes = DefaultMaxBundleBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Status describes the refresh state of one federation relationship.
type Status struct {
	TrustDomain spiffeid.TrustDomain
	// HasBundle reports whether a bundle (fetched or given to Set) is held.
	HasBundle bool
	// Sequence is the held bundle's spiffe_sequence, if HasSequence.
	Sequence    uint64
	HasSequence bool
	// LastAttempt is when the last refresh attempt finished (zero if none).
	LastAttempt time.Time
	// LastSuccess is when the last successful refresh finished (zero if none).
	LastSuccess time.Time
	// LastError is the error of the last attempt; empty if it succeeded.
	LastError string
	// ConsecutiveFailures counts failed attempts since the last success.
	ConsecutiveFailures int
	// NextRefresh is when Run will next refresh this relationship.
	NextRefresh time.Time
}

// entry is the state of one relationship. rel and fetchLock are immutable;
// every other field is guarded by Manager.mu. A held bundle is never
// modified: it is replaced, and handed out only as clones.
type entry struct {
	rel Relationship
	// fetchLock (capacity 1) is held for a whole refresh: fetch, OnUpdate and
	// applying the result. It serializes refreshes of this relationship and
	// lets Set and Remove wait for one in progress.
	fetchLock chan struct{}

	bundle      *spiffebundle.Bundle
	removed     bool               // replaced or removed: results are discarded
	cancel      context.CancelFunc // cancels the refresh in progress, if any
	inflight    bool               // Run has a goroutine working on this entry
	lastAttempt time.Time
	lastSuccess time.Time
	lastErr     string
	failures    int
	next        time.Time
	soon        bool // RefreshSoon asked again during a refresh: its failure is not backed off
}

// Manager keeps the bundles of federated trust domains fresh by fetching
// them from their bundle endpoints. It is safe for concurrent use.
type Manager struct {
	cfg  Config        // immutable after NewManager
	wake chan struct{} // capacity 1: nudges Run to recompute its schedule

	// setMu serializes Set and Remove. It is held while waiting for a
	// refresh of a replaced relationship to finish, never while holding mu.
	setMu sync.Mutex

	// mu guards entries, the mutable fields of every entry (see entry) and
	// running. It is never held while fetching, calling OnUpdate or
	// LocalBundle, or logging.
	mu      sync.RWMutex
	entries map[spiffeid.TrustDomain]*entry
	running bool
}

// NewManager returns a Manager with no relationships. Call Set to add them
// and Run to keep them fresh.
func NewManager(cfg Config) *Manager {
	return &Manager{
		cfg:     cfg.withDefaults(),
		wake:    make(chan struct{}, 1),
		entries: make(map[spiffeid.TrustDomain]*entry),
	}
}

// Set adds a relationship or replaces the one for the same trust domain.
//
// bundle is the initial (last-known) bundle of rel.TrustDomain, e.g. one
// exchanged out of band or loaded from storage; it must be for that trust
// domain and have authorities (ErrNoAuthorities). If it is nil and a relationship for the trust domain already
// exists, that relationship's last-known bundle is kept. For https_spiffe
// with the endpoint ID in the peer's own trust domain a bundle with X.509
// authorities is required (given or kept), because the endpoint is
// authenticated with it; nil is fine for https_web and for endpoint IDs in
// other trust domains.
//
// The relationship is refreshed as soon as Run gets to it. When Set returns,
// no refresh (and no OnUpdate call) for a replaced relationship is in
// progress: one that was is cancelled and waited for, and its result is
// discarded. Callers that persist relationships should do so after Set
// returns.
func (m *Manager) Set(rel Relationship, bundle *spiffebundle.Bundle) error {
	if err := rel.Validate(); err != nil {
		return err
	}
	if bundle != nil && bundle.TrustDomain() != rel.TrustDomain {
		return fmt.Errorf("federation: bundle is for trust domain %q, not %q", bundle.TrustDomain(), rel.TrustDomain)
	}
	if bundle != nil && bundle.Empty() {
		return fmt.Errorf("%w: the initial bundle of %q trusts no key", ErrNoAuthorities, rel.TrustDomain)
	}
	if local := m.localBundle(); local != nil && local.TrustDomain() == rel.TrustDomain {
		return fmt.Errorf("federation: cannot federate with the local trust domain %q", rel.TrustDomain)
	}
	if bundle != nil {
		bundle = bundle.Clone()
	}

	m.setMu.Lock()
	defer m.setMu.Unlock()

	m.mu.Lock()
	old := m.entries[rel.TrustDomain]
	if bundle == nil && old != nil {
		bundle = old.bundle
	}
	if rel.NeedsInitialBundle() && (bundle == nil || len(bundle.X509Authorities()) == 0) {
		m.mu.Unlock()
		return fmt.Errorf("federation: %q: profile %s with endpoint %q in the peer's own trust domain needs an initial bundle with x509 authorities to authenticate the endpoint", rel.TrustDomain, rel.Profile, rel.EndpointSPIFFEID)
	}
	if old != nil {
		old.markRemoved()
	}
	m.mu.Unlock()

	if old != nil {
		// Wait for a refresh of the old relationship to finish. The old
		// entry keeps serving its bundle meanwhile.
		old.fetchLock <- struct{}{}
		<-old.fetchLock
	}

	m.mu.Lock()
	m.entries[rel.TrustDomain] = &entry{
		rel:       rel,
		fetchLock: make(chan struct{}, 1),
		bundle:    bundle,
		next:      m.cfg.Now(),
	}
	m.mu.Unlock()
	m.wakeup()
	return nil
}

// Remove deletes the relationship for td, if any: its bundle stops being
// served at once, and when Remove returns no refresh (and no OnUpdate call)
// for it is in progress.
func (m *Manager) Remove(td spiffeid.TrustDomain) {
	m.setMu.Lock()
	defer m.setMu.Unlock()

	m.mu.Lock()
	old := m.entries[td]
	if old != nil {
		old.markRemoved()
		delete(m.entries, td)
	}
	m.mu.Unlock()

	if old != nil {
		old.fetchLock <- struct{}{}
		<-old.fetchLock
		m.wakeup()
	}
}

// markRemoved must be called with Manager.mu held.
func (e *entry) markRemoved() {
	e.removed = true
	if e.cancel != nil {
		e.cancel()
	}
}

// Relationships returns all relationships, sorted by trust domain.
func (m *Manager) Relationships() []Relationship {
	m.mu.RLock()
	defer m.mu.RUnlock()
	rels := make([]Relationship, 0, len(m.entries))
	for _, e := range m.entries {
		rels = append(rels, e.rel)
	}
	slices.SortFunc(rels, func(a, b Relationship) int {
		return cmp.Compare(a.TrustDomain.Name(), b.TrustDomain.Name())
	})
	return rels
}

// Bundle returns a clone of the last-known bundle of the federated trust
// domain td. It does not consult LocalBundle; see CombinedSource for that.
func (m *Manager) Bundle(td spiffeid.TrustDomain) (*spiffebundle.Bundle, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e := m.entries[td]
	if e == nil || e.bundle == nil {
		return nil, false
	}
	return e.bundle.Clone(), true
}

// Bundles returns clones of all held federated bundles, sorted by trust
// domain. Relationships without a bundle yet are skipped.
func (m *Manager) Bundles() []*spiffebundle.Bundle {
	m.mu.RLock()
	defer m.mu.RUnlock()
	bundles := make([]*spiffebundle.Bundle, 0, len(m.entries))
	for _, e := range m.entries {
		if e.bundle != nil {
			bundles = append(bundles, e.bundle.Clone())
		}
	}
	slices.SortFunc(bundles, func(a, b *spiffebundle.Bundle) int {
		return cmp.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})
	return bundles
}

// Status returns the refresh state of the relationship for td.
func (m *Manager) Status(td spiffeid.TrustDomain) (Status, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e := m.entries[td]
	if e == nil {
		return Status{}, false
	}
	s := Status{
		TrustDomain:         td,
		HasBundle:           e.bundle != nil,
		LastAttempt:         e.lastAttempt,
		LastSuccess:         e.lastSuccess,
		LastError:           e.lastErr,
		ConsecutiveFailures: e.failures,
		NextRefresh:         e.next,
	}
	if e.bundle != nil {
		s.Sequence, s.HasSequence = e.bundle.SequenceNumber()
	}
	return s, true
}

// RefreshSoon has Run refresh td's bundle as soon as it can, without
// waiting for it: now, or, if a refresh is in progress, right after it
// should that one fail (its failure is then not backed off). It is for a
// caller whose OnUpdate refused a bundle for a reason it has since
// removed (its record of the relationship was not written yet).
func (m *Manager) RefreshSoon(td spiffeid.TrustDomain) {
	m.mu.Lock()
	if e := m.entries[td]; e != nil && !e.removed {
		e.soon = true
		e.next = m.cfg.Now()
	}
	m.mu.Unlock()
	m.wakeup()
}

// Refresh fetches the bundle of td now, waiting for a refresh already in
// progress first. The outcome is recorded in Status and reschedules the
// next refresh exactly as one made by Run.
func (m *Manager) Refresh(ctx context.Context, td spiffeid.TrustDomain) error {
	m.mu.RLock()
	e := m.entries[td]
	m.mu.RUnlock()
	if e == nil {
		return fmt.Errorf("%w %q", ErrUnknownTrustDomain, td)
	}
	return m.refresh(ctx, e, false)
}

// Run refreshes every relationship until ctx is done, then waits for the
// refreshes it started to stop and returns nil. A relationship is refreshed
// when added by Set, then after its bundle's refresh hint (clamped to
// [MinRefresh, MaxRefresh]) or DefaultRefresh if there is none. After a
// failure it is retried after RetryBackoff, doubled for each further
// consecutive failure and capped at DefaultRefresh and at the interval the
// held bundle's refresh hint gives; meanwhile the last-known
// bundle keeps being served. Relationships are refreshed concurrently, at
// most one refresh per relationship at a time. Only one Run may be active.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return ErrAlreadyRunning
	}
	m.running = true
	m.mu.Unlock()

	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		m.mu.Lock()
		m.running = false
		m.mu.Unlock()
	}()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before wg.Wait above

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, wait := m.collectDue()
		for _, e := range due {
			wg.Go(func() {
				_ = m.refresh(runCtx, e, true)
				m.mu.Lock()
				e.inflight = false
				m.mu.Unlock()
				m.wakeup()
			})
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-m.wake:
		}
	}
}

// collectDue marks the entries due for a refresh as inflight and returns
// them, with how long to wait before the next one is due.
func (m *Manager) collectDue() ([]*entry, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	wait := m.cfg.MaxRefresh
	var due []*entry
	for _, e := range m.entries {
		if e.inflight || e.removed {
			continue
		}
		if !now.Before(e.next) {
			e.inflight = true
			due = append(due, e)
			continue
		}
		wait = min(wait, e.next.Sub(now))
	}
	return due, wait
}

func (m *Manager) wakeup() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// refresh fetches e's bundle and applies the result. With onlyIfDue it does
// nothing if e is not due (e.g. Refresh ran while Run's goroutine waited).
func (m *Manager) refresh(ctx context.Context, e *entry, onlyIfDue bool) error {
	rel := e.rel
	td := rel.TrustDomain
	select {
	case e.fetchLock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("federation: refresh %q: %w", td, ctx.Err())
	}
	defer func() { <-e.fetchLock }()
	defer m.wakeup()

	m.mu.Lock()
	if e.removed {
		m.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrRemoved, td)
	}
	if onlyIfDue && m.cfg.Now().Before(e.next) {
		m.mu.Unlock()
		return nil
	}
	opCtx, cancel := context.WithCancel(ctx)
	e.cancel = cancel
	held := e.bundle
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		e.cancel = nil
		m.mu.Unlock()
		cancel()
	}()

	fetched, err := m.fetch(opCtx, rel)
	if err == nil {
		err = checkFetched(rel, fetched, m.cfg.MaxBundleBytes)
	}
	changed := err == nil && (held == nil || !held.Equal(fetched))
	if changed && m.cfg.OnUpdate != nil {
		m.mu.RLock()
		removed := e.removed
		m.mu.RUnlock()
		if removed {
			return fmt.Errorf("%w: %q", ErrRemoved, td)
		}
		uctx, ucancel := context.WithTimeout(opCtx, m.cfg.FetchTimeout)
		if uerr := m.cfg.OnUpdate(uctx, td, fetched.Clone()); uerr != nil {
			err = fmt.Errorf("federation: storing bundle of %q: %w", td, uerr)
		}
		ucancel()
	}
	if ctx.Err() != nil {
		// The caller (or Run) is going away: not the peer's fault, so
		// neither a failure nor a success is recorded.
		return fmt.Errorf("federation: refresh %q: %w", td, ctx.Err())
	}

	now := m.cfg.Now()
	m.mu.Lock()
	if e.removed {
		m.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrRemoved, td)
	}
	e.lastAttempt = now
	soon := e.soon
	e.soon = false
	if err != nil {
		e.failures++
		e.lastErr = err.Error()
		delay := min(m.backoff(e.failures), m.interval(e.bundle))
		if soon { // asked again meanwhile: what failed may hold now
			delay = 0
		}
		e.next = now.Add(delay)
		failures := e.failures
		m.mu.Unlock()
		m.cfg.Logger.Warn("federation: bundle refresh failed; keeping last-known bundle",
			"trust_domain", td.Name(), "url", rel.BundleEndpointURL, "error", err,
			"consecutive_failures", failures, "retry_in", delay)
		return err
	}
	if changed {
		e.bundle = fetched
	}
	e.failures = 0
	e.lastErr = ""
	e.lastSuccess = now
	interval := m.interval(e.bundle)
	e.next = now.Add(interval)
	m.mu.Unlock()

	if changed {
		seq, hasSeq := fetched.SequenceNumber()
		if held != nil {
			oldSeq, ok := held.SequenceNumber()
			switch {
			case ok && hasSeq && seq < oldSeq:
				m.cfg.Logger.Warn("federation: fetched bundle has a lower sequence number than the last-known one; accepting it as the peer's current bundle",
					"trust_domain", td.Name(), "old_sequence", oldSeq, "new_sequence", seq)
			case ok && hasSeq && seq == oldSeq && !sameAuthorities(held, fetched):
				// The sequence MUST change whenever the contents do (SPIFFE
				// Trust Domain and Bundle §4.1.1). Only a refresh hint that
				// differs is no sign of it: a bundle exported without its
				// hint (SPIRE's "bundle show", an administrator's file)
				// differs so from what the endpoint serves.
				m.cfg.Logger.Warn("federation: fetched bundle changed without a new sequence number; accepting it as the peer's current bundle",
					"trust_domain", td.Name(), "sequence", seq)
			case ok && !hasSeq:
				m.cfg.Logger.Warn("federation: fetched bundle has no sequence number, the last-known one had; accepting it as the peer's current bundle",
					"trust_domain", td.Name(), "old_sequence", oldSeq)
			}
		}
		m.cfg.Logger.Info("federation: bundle updated", "trust_domain", td.Name(),
			"sequence", seq, "has_sequence", hasSeq,
			"x509_authorities", len(fetched.X509Authorities()),
			"jwt_authorities", len(fetched.JWTAuthorities()),
			"next_refresh_in", interval)
	}
	return nil
}

// sameAuthorities reports whether a and b hold the same X.509, JWT and
// WIT authorities, whatever their sequence numbers and refresh hints.
func sameAuthorities(a, b *spiffebundle.Bundle) bool {
	return a.X509Bundle().Equal(b.X509Bundle()) && a.JWTBundle().Equal(b.JWTBundle()) &&
		a.WITBundle().Equal(b.WITBundle())
}

// checkFetched refuses bundles that would wipe out trust in the peer,
// and those larger than limit once encoded as this authority serves
// them (in every SVID answer: a peer whose document grows when
// re-encoded, say a kid of characters JSON escapes six times over,
// would otherwise make every local answer too large for its clients).
func checkFetched(rel Relationship, b *spiffebundle.Bundle, limit int64) error {
	if b.TrustDomain() != rel.TrustDomain { // fetch guarantees it; be explicit
		return fmt.Errorf("federation: fetched bundle is for %q, not %q", b.TrustDomain(), rel.TrustDomain)
	}
	if doc, err := MarshalBundle(b); err != nil || int64(len(doc)) > limit {
		return fmt.Errorf("federation: bundle fetched for %q is %d bytes encoded, more than %d (or cannot be encoded: %v); keeping last-known bundle",
			rel.TrustDomain, len(doc), limit, err)
	}
	if b.Empty() {
		return fmt.Errorf("%w: bundle fetched for %q; keeping last-known bundle", ErrNoAuthorities, rel.TrustDomain)
	}
	if rel.NeedsInitialBundle() && len(b.X509Authorities()) == 0 {
		return fmt.Errorf("federation: bundle fetched for %q has no x509 authorities, so it could not authenticate its own endpoint; keeping last-known bundle", rel.TrustDomain)
	}
	return nil
}

// interval is the refresh interval after a successful refresh: the bundle's
// refresh hint clamped to [MinRefresh, MaxRefresh], or DefaultRefresh.
func (m *Manager) interval(b *spiffebundle.Bundle) time.Duration {
	if b != nil {
		if hint, ok := b.RefreshHint(); ok {
			return min(max(hint, m.cfg.MinRefresh), m.cfg.MaxRefresh)
		}
	}
	return m.cfg.DefaultRefresh
}

// backoff is the retry delay after the given number of consecutive
// failures (>= 1): RetryBackoff doubled per extra failure, capped at
// DefaultRefresh.
func (m *Manager) backoff(failures int) time.Duration {
	limit := m.cfg.DefaultRefresh
	d := m.cfg.RetryBackoff
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func (m *Manager) localBundle() *spiffebundle.Bundle {
	if m.cfg.LocalBundle == nil {
		return nil
	}
	return m.cfg.LocalBundle()
}
