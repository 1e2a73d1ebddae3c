package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/ca/federation"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// bucketFederations holds one Federation record per federated trust domain.
const bucketFederations = "federations"

// Federation is a persisted federation relationship and the peer's
// last-known bundle.
type Federation struct {
	TrustDomain       string          `json:"trust_domain"`
	BundleEndpointURL string          `json:"bundle_endpoint_url"`
	Profile           string          `json:"profile"`
	EndpointSPIFFEID  string          `json:"endpoint_spiffe_id,omitempty"`
	Bundle            json.RawMessage `json:"bundle,omitempty"`
	CreatedAt         time.Time       `json:"created_at"`
}

// FederationStatus is a relationship with its refresh state, as the admin
// API shows it.
type FederationStatus struct {
	Federation
	BundleSequence *uint64    `json:"bundle_sequence,omitempty"`
	LastRefresh    *time.Time `json:"last_refresh,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
	NextRefresh    *time.Time `json:"next_refresh,omitempty"`
}

// maxBundleEndpointURL bounds a bundle endpoint URL (as browsers and
// proxies commonly bound URLs).
const maxBundleEndpointURL = 2048

// trustDomainOf parses a trust domain written as its name or as its
// SPIFFE ID ("spiffe://name"). Anything more, a path, is refused rather
// than dropped: "spiffe://org-b.example/x" names no trust domain.
func trustDomainOf(s string) (spiffeid.TrustDomain, error) {
	td, err := spiffeid.TrustDomainFromString(s)
	if err == nil && s != td.Name() && s != td.IDString() {
		return spiffeid.TrustDomain{}, errors.New("a trust domain has no path")
	}
	return td, err
}

// federationRefusal is the federation package's err refusing what an
// administrator asked, as ErrFederation: in words for them, without the
// package's name or its "invalid relationship" (ErrFederation says it).
// "federation: invalid relationship: "x": bundle endpoint url is empty"
// is `"x": bundle endpoint url is empty`.
func federationRefusal(err error) error {
	s := err.Error()
	if rest, ok := strings.CutPrefix(s, federation.ErrInvalidRelationship.Error()+": "); ok {
		s = rest
	}
	return fmt.Errorf("%w: %s", ErrFederation, strings.TrimPrefix(s, "federation: "))
}

// relationship reads f: its relationship, its bundle (nil if none), and
// what the bundle rules left out of that bundle (ParseBundle).
func (f *Federation) relationship() (federation.Relationship, *spiffebundle.Bundle, []string, error) {
	if len(strings.TrimPrefix(f.TrustDomain, "spiffe://")) > registry.MaxTrustDomainLen || len(f.EndpointSPIFFEID) > registry.MaxSPIFFEIDLen ||
		len(f.BundleEndpointURL) > maxBundleEndpointURL {
		return federation.Relationship{}, nil, nil, fmt.Errorf("%w: a trust domain is at most %d bytes, a SPIFFE ID %d, a bundle endpoint URL %d",
			ErrFederation, registry.MaxTrustDomainLen, registry.MaxSPIFFEIDLen, maxBundleEndpointURL)
	}
	td, err := trustDomainOf(f.TrustDomain)
	if err != nil {
		return federation.Relationship{}, nil, nil, fmt.Errorf("%w: trust_domain %q: %v", ErrFederation, f.TrustDomain, err)
	}
	f.TrustDomain = td.Name() // one spelling: "spiffe://x" and "x" are one relationship
	if string(f.Bundle) == "null" {
		f.Bundle = nil
	}
	if f.Profile == "" {
		f.Profile = string(federation.ProfileHTTPSSPIFFE)
	}
	rel := federation.Relationship{TrustDomain: td, BundleEndpointURL: f.BundleEndpointURL, Profile: federation.Profile(f.Profile)}
	if rel.Profile == federation.ProfileHTTPSSPIFFE && f.EndpointSPIFFEID == "" {
		f.EndpointSPIFFEID = ServerID(td).String()
	}
	if f.EndpointSPIFFEID != "" {
		if rel.EndpointSPIFFEID, err = spiffeid.FromString(f.EndpointSPIFFEID); err != nil {
			return rel, nil, nil, fmt.Errorf("%w: endpoint_spiffe_id %q: %v", ErrFederation, f.EndpointSPIFFEID, err)
		}
	}
	if err := rel.Validate(); err != nil {
		return rel, nil, nil, federationRefusal(err)
	}
	var b *spiffebundle.Bundle
	var ignored []string
	if len(f.Bundle) > 0 {
		if b, ignored, err = federation.ParseBundle(td, f.Bundle); err != nil {
			return rel, nil, nil, federationRefusal(err)
		}
	}
	return rel, b, ignored, nil
}

func (a *Authority) openFederation(ctx context.Context) error {
	cfg := federation.Config{
		LocalBundle: a.ca.Bundle,
		OnUpdate:    a.saveFederatedBundle,
		Now:         a.now,
		Logger:      a.log.With("component", "federation"),
	}
	if a.cfg.Federation.WebRootsFile != "" {
		pool, err := loadPool(a.cfg.Federation.WebRootsFile)
		if err != nil {
			return err
		}
		cfg.WebRoots = pool
	}
	a.fed = federation.NewManager(cfg)
	stored, err := a.loadFederations(ctx)
	if err != nil {
		return err
	}
	for _, f := range stored {
		rel, b, ignored, err := f.relationship()
		if err == nil {
			err = a.fed.Set(rel, b)
		}
		if err == nil && len(ignored) > 0 {
			// The rules for a peer's keys may have changed since the
			// bundle was stored: what they now leave out is said.
			a.log.Warn("stored federated bundle has keys of unknown type or use, or unreadable ones; they are left out", "trust_domain", f.TrustDomain, "ignored", ignored)
		}
		if err != nil { // one bad record must not keep the authority down
			a.unloaded.Store(f.TrustDomain, fmt.Sprintf("stored relationship not loaded at start: %v; add it again to replace it", err))
			a.log.Error("stored federation relationship not loaded; fix it with mandate admin federation add", "trust_domain", f.TrustDomain, "err", err)
		}
	}
	return a.configuredFederations(ctx, stored)
}

// configuredFederations adds relationships from the config file that are
// not already stored.
func (a *Authority) configuredFederations(ctx context.Context, stored []*Federation) error {
	have := map[string]bool{}
	for _, f := range stored {
		have[f.TrustDomain] = true
	}
	for _, t := range a.cfg.Federation.TrustDomains {
		name := t.TrustDomain
		if td, err := spiffeid.TrustDomainFromString(name); err == nil {
			name = td.Name()
		}
		if have[name] {
			continue
		}
		f, err := t.federation()
		if err != nil {
			return fmt.Errorf("federation.trust_domains: %w", err)
		}
		if _, err := a.addFederation(ctx, f, nil); err != nil {
			return fmt.Errorf("federation %q: %w", t.TrustDomain, err)
		}
	}
	return nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("federation.web_roots_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("federation.web_roots_file %s: no PEM certificates", path)
	}
	return pool, nil
}

func (a *Authority) loadFederations(ctx context.Context) ([]*Federation, error) {
	var out []*Federation
	err := a.store.View(ctx, func(tx store.Tx) error {
		return tx.Scan(bucketFederations, nil, nil, func(_, v []byte) error {
			f := new(Federation)
			if err := decodeRecord(v, f); err != nil {
				return err
			}
			out = append(out, f)
			return nil
		})
	})
	return out, err
}

var (
	// errNoFederation fails the logging of a fetched bundle whose
	// relationship has no record (yet, or any more).
	errNoFederation = errors.New("authority: no federation record")
	// errNewAnchors fails the storing, unlogged, of a fetched bundle
	// whose trust anchors are not those of the stored one.
	errNewAnchors = errors.New("authority: fetched bundle has other trust anchors")
)

// saveFederatedBundle persists a freshly fetched peer bundle; it is the
// federation manager's OnUpdate hook, so a bundle that cannot be stored
// (and logged, where it is) is never used. A bundle with other trust
// anchors than the stored one is stored in the commit that logs it
// (federation.bundle_updated); one that differs only in its sequence
// number or refresh hint is stored without an entry, so that a peer
// changing only those does not add an entry at every fetch.
func (a *Authority) saveFederatedBundle(ctx context.Context, td spiffeid.TrustDomain, b *spiffebundle.Bundle) error {
	a.fedStoreMu.Lock()
	defer a.fedStoreMu.Unlock()
	if td == a.fedPutBack {
		return fmt.Errorf("authority: federation %s is being put back as it was (its replacement could not be stored): not stored", td.Name())
	}
	return a.saveFederatedBundleLocked(ctx, td, b)
}

// saveFederatedBundleLocked is saveFederatedBundle, a.fedStoreMu held.
func (a *Authority) saveFederatedBundleLocked(ctx context.Context, td spiffeid.TrustDomain, b *spiffebundle.Bundle) error {
	doc, err := federation.MarshalBundle(b)
	if err != nil {
		return err
	}
	if err := a.bundlesFit(td, doc); err != nil {
		return err
	}
	anchors := bundleAnchors(b)["anchors_sha256"]
	put := func(tx store.Tx, sameAnchorsOnly bool) error {
		v, err := tx.Get(bucketFederations, []byte(td.String()))
		if errors.Is(err, store.ErrNotFound) {
			return errNoFederation
		}
		if err != nil {
			return err
		}
		f := new(Federation)
		if err := decodeRecord(v, f); err != nil {
			return err
		}
		if sameAnchorsOnly {
			if held, _, err := federation.ParseBundle(td, f.Bundle); err != nil || bundleAnchors(held)["anchors_sha256"] != anchors {
				return errNewAnchors
			}
		}
		f.Bundle = doc
		return putRecord(tx, bucketFederations, td.String(), f)
	}
	err = a.store.Update(ctx, func(tx store.Tx) error { return put(tx, true) })
	if errors.Is(err, errNewAnchors) {
		_, err = a.recordWith(ctx, a.bundleUpdated(td, b), func(tx store.Tx) error { return put(tx, false) })
	}
	if errors.Is(err, errNoFederation) {
		// Being added (its record is not written yet: the fetch is
		// retried) or just deleted. Either way not used unlogged.
		return fmt.Errorf("authority: federation %s has no stored record yet", td.Name())
	}
	if err != nil {
		return err
	}
	a.refreshBundlesWith(td, b)
	return nil
}

// bundleUpdated is the audit event of a peer's bundle replaced by the one
// fetched: its anchors (see bundleAnchors) and sequence number. The
// anchor lists are left out, with digest_only, when they do not all fit
// in one entry.
func (a *Authority) bundleUpdated(td spiffeid.TrustDomain, b *spiffebundle.Bundle) event {
	return a.withAnchors(event{typ: "federation.bundle_updated", subject: td.Name()}, b)
}

// withAnchors is ev with b's anchors (see bundleAnchors) and sequence
// number added to its details (a copy of them). The anchor lists are
// left out, with digest_only, when they do not all fit in one entry.
func (a *Authority) withAnchors(ev event, b *spiffebundle.Bundle) event {
	details := bundleAnchors(b)
	for k, v := range ev.details {
		details[k] = v
	}
	if seq, ok := b.SequenceNumber(); ok {
		details["sequence_number"] = seq
	}
	ev.details = details
	if a.recordable(ev, ErrFederation) != nil {
		delete(details, "x509_authorities")
		delete(details, "jwt_authorities")
		delete(details, "wit_authorities")
		details["digest_only"] = true
	}
	return ev
}

// federationAnchors names each federated trust domain, in order, with
// its bundle endpoint and, once it has a bundle, the bundle's
// anchors_sha256 and sequence number (see bundleAnchors).
func (a *Authority) federationAnchors() []map[string]any {
	out := []map[string]any{}
	for _, r := range a.fed.Relationships() {
		f := map[string]any{"trust_domain": r.TrustDomain.Name(), "bundle_endpoint_url": r.BundleEndpointURL}
		if b, ok := a.fed.Bundle(r.TrustDomain); ok {
			f["anchors_sha256"] = bundleAnchors(b)["anchors_sha256"]
			if seq, ok := b.SequenceNumber(); ok {
				f["sequence_number"] = seq
			}
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(x, y map[string]any) int {
		return strings.Compare(x["trust_domain"].(string), y["trust_domain"].(string))
	})
	return out
}

// bundleAnchors names what a bundle trusts, as the audit log records it:
// x509_authorities, the SHA-256 of each X.509 authority's DER, sorted;
// jwt_authorities, each JWT key's kid and RFC 7638 thumbprint, sorted by
// kid; wit_authorities, the same of its WIT-SVID keys (use "wit-svid"),
// when it has any; their counts; and anchors_sha256, the SHA-256 of
// {"x509_authorities":[…],"jwt_authorities":[…]} encoded as here (no
// whitespace), with ,"wit_authorities":[…] before the closing brace when
// there are WIT-SVID keys (so a bundle without them has the digest it
// always had), which names the same trust anchors the same way whatever
// the bundle's key order, sequence number or refresh hint.
func bundleAnchors(b *spiffebundle.Bundle) map[string]any {
	type jwtKey struct {
		KID        string `json:"kid"`
		Thumbprint string `json:"jwk_thumbprint"`
	}
	keys := func(m map[string]crypto.PublicKey) []jwtKey {
		out := []jwtKey{}
		for kid, pub := range m {
			tp, err := ca.JWKThumbprint(pub)
			if err != nil {
				tp = "" // a key go-jose cannot describe: named by its kid only
			}
			out = append(out, jwtKey{KID: kid, Thumbprint: tp})
		}
		slices.SortFunc(out, func(x, y jwtKey) int { return strings.Compare(x.KID, y.KID) })
		return out
	}
	anchors := struct {
		X509 []string `json:"x509_authorities"`
		JWT  []jwtKey `json:"jwt_authorities"`
		WIT  []jwtKey `json:"wit_authorities,omitempty"`
	}{X509: []string{}, JWT: keys(b.JWTAuthorities()), WIT: keys(b.WITAuthorities())}
	for _, c := range b.X509Authorities() {
		s := sha256.Sum256(c.Raw)
		anchors.X509 = append(anchors.X509, hex.EncodeToString(s[:]))
	}
	slices.Sort(anchors.X509)
	doc, _ := json.Marshal(anchors) // strings and slices: cannot fail
	sum := sha256.Sum256(doc)
	out := map[string]any{
		"anchors_sha256": hex.EncodeToString(sum[:]), "x509_authorities": anchors.X509, "jwt_authorities": anchors.JWT,
		"x509_authority_count": len(anchors.X509), "jwt_authority_count": len(anchors.JWT),
	}
	if len(anchors.WIT) > 0 {
		out["wit_authorities"], out["wit_authority_count"] = anchors.WIT, len(anchors.WIT)
	}
	return out
}

func putRecord(tx store.Tx, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("authority: encode record: %w", err)
	}
	return tx.Put(bucket, []byte(key), b)
}

// AddFederation creates or replaces a federation relationship. When the
// relationship carries no bundle, the peer's bundle is fetched now (an
// https_spiffe endpoint in the peer's own trust domain needs the bundle).
func (a *Authority) AddFederation(ctx context.Context, c *Caller, f *Federation) (*Federation, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	// Checked as it will be logged: normalised (its trust domain without
	// spiffe://, its profile and endpoint ID defaulted).
	if _, _, _, err := f.relationship(); err != nil {
		return nil, err
	}
	ev := federationAdded(c, f)
	if err := a.recordable(ev, ErrFederation); err != nil {
		return nil, err
	}
	// Stored in the commit that logs it: both or neither.
	f, err := a.addFederation(ctx, f, &ev)
	if err != nil {
		return nil, err
	}
	a.log.InfoContext(ctx, "federation added", "trust_domain", f.TrustDomain, "url", f.BundleEndpointURL, "by", c.ID.String())
	return f, nil
}

// federationAdded is the audit event of relationship f added.
func federationAdded(c *Caller, f *Federation) event {
	return event{typ: "federation.added", actor: actorOf(c), subject: f.TrustDomain, details: map[string]any{
		"bundle_endpoint_url": f.BundleEndpointURL, "profile": f.Profile, "endpoint_spiffe_id": f.EndpointSPIFFEID,
	}}
}

// addFederation adds or replaces relationship f; with ev, its record is
// stored in the commit that logs ev.
func (a *Authority) addFederation(ctx context.Context, f *Federation, ev *event) (*Federation, error) {
	rel, b, _, err := f.relationship()
	if err != nil {
		return nil, err
	}
	if rel.TrustDomain == a.td {
		return nil, fmt.Errorf("%w: cannot federate with the own trust domain", ErrFederation)
	}
	a.fedMu.Lock()
	defer a.fedMu.Unlock()
	prevRel, prevBundle, had := a.currentRelationship(rel.TrustDomain)
	if b == nil && had { // replacing a relationship keeps the bundle it holds
		b = prevBundle
	}
	if b != nil {
		if f.Bundle, err = federation.MarshalBundle(b); err != nil {
			return nil, err
		}
		if err := a.bundlesFit(rel.TrustDomain, f.Bundle); err != nil {
			return nil, err
		}
		if ev != nil { // the entry names the anchors trusted from now on
			withB := a.withAnchors(*ev, b)
			ev = &withB
		}
	}
	// The manager first (it validates, and cancels any refresh of the
	// relationship being replaced), then the record; a failed write puts
	// the manager back as it was.
	if err := a.fed.Set(rel, b); err != nil {
		return nil, federationRefusal(err)
	}
	a.dropPending(rel.TrustDomain) // a fetch of the replaced relationship is void
	f.CreatedAt = a.now().UTC()
	// A fetch of the new relationship stores its bundle wholly before
	// the record is replaced, or wholly after: one before is seen below.
	a.fedStoreMu.Lock()
	// Checked again now that no fetch can store meanwhile: a bundle
	// fetched and stored since the check above was checked without this
	// one, and together they may not fit.
	if b != nil {
		err = a.bundlesFit(rel.TrustDomain, f.Bundle)
	}
	if err == nil {
		_, err = a.swapFederationRecord(context.WithoutCancel(ctx), f.TrustDomain, f, ev)
	}
	if err != nil {
		// Putting the manager back waits for a fetch of the relationship
		// not stored, which may be waiting for fedStoreMu to store what
		// it fetched: it is refused instead (saveFederatedBundle).
		a.fedPutBack = rel.TrustDomain
		a.fedStoreMu.Unlock()
		if had {
			err = errors.Join(err, a.fed.Set(prevRel, prevBundle))
		} else {
			a.fed.Remove(rel.TrustDomain)
		}
		a.fedStoreMu.Lock()
		a.fedPutBack = spiffeid.TrustDomain{}
		a.fedStoreMu.Unlock()
		// A rebuild since Set (a fetch stored, the CA changed) took the
		// bundle not stored into those handed out: it is taken out.
		a.refreshBundles()
		return nil, err
	}
	defer a.fedStoreMu.Unlock()
	a.unloaded.Delete(f.TrustDomain) // a record not loaded at start is replaced
	// A fetch that finished before the record was written found no
	// record, and was refused: it is done again now. One that found the
	// replaced record saved into it: what it fetched (published by the
	// manager, or about to be: pending) is stored, so that a restart does
	// not go back to an older bundle.
	a.fed.RefreshSoon(rel.TrustDomain)
	if cur := a.latestFetched(rel.TrustDomain); cur != nil {
		if doc, err := federation.MarshalBundle(cur); err == nil && !bytes.Equal(doc, f.Bundle) {
			if err := a.saveFederatedBundleLocked(context.WithoutCancel(ctx), rel.TrustDomain, cur); err != nil {
				a.log.WarnContext(ctx, "store the fetched bundle of a new federation", "trust_domain", f.TrustDomain, "err", err)
			}
		}
	}
	a.registryChanged()
	a.refreshBundles()
	return f, nil
}

// latestFetched is td's bundle as last fetched: the one stored but not
// yet published by the manager (pending), else the one it holds.
func (a *Authority) latestFetched(td spiffeid.TrustDomain) *spiffebundle.Bundle {
	a.bundleMu.Lock()
	p := a.pending[td]
	a.bundleMu.Unlock()
	if p != nil {
		return p
	}
	_, cur, _ := a.currentRelationship(td)
	return cur
}

// currentRelationship returns the relationship the manager holds for td.
func (a *Authority) currentRelationship(td spiffeid.TrustDomain) (federation.Relationship, *spiffebundle.Bundle, bool) {
	for _, r := range a.fed.Relationships() {
		if r.TrustDomain == td {
			b, _ := a.fed.Bundle(td)
			return r, b, true
		}
	}
	return federation.Relationship{}, nil, false
}

// swapFederationRecord stores f (nil: deletes) under td and returns the
// record it replaced (nil if none); with ev, in the commit that logs ev
// (both durable, or neither).
func (a *Authority) swapFederationRecord(ctx context.Context, td string, f *Federation, ev *event) (*Federation, error) {
	var old *Federation
	apply := func(tx store.Tx) error {
		old = nil
		if v, err := tx.Get(bucketFederations, []byte(td)); err == nil {
			old = new(Federation)
			if err := decodeRecord(v, old); err != nil {
				return err
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if f == nil {
			return tx.Delete(bucketFederations, []byte(td))
		}
		return putRecord(tx, bucketFederations, td, f)
	}
	if ev != nil {
		_, err := a.recordWith(ctx, *ev, apply)
		return old, err
	}
	return old, a.store.Update(ctx, apply)
}

// ListFederations returns every relationship with its refresh status.
func (a *Authority) ListFederations(ctx context.Context, c *Caller) ([]FederationStatus, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	stored, err := a.loadFederations(ctx)
	if err != nil {
		return nil, err
	}
	out := []FederationStatus{}
	for _, f := range stored {
		out = append(out, a.federationStatus(f))
	}
	return out, nil
}

func (a *Authority) federationStatus(f *Federation) FederationStatus {
	fs := FederationStatus{Federation: *f}
	fs.Bundle = nil
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil { // a record the manager refused at start: shown, without status
		fs.LastError = err.Error()
		return fs
	}
	// The sequence is the bundle's own: read apart from it (Status), a
	// refresh between the two reads would show one bundle under
	// another's sequence.
	var seq *uint64
	if b, ok := a.fed.Bundle(td); ok {
		fs.Bundle, _ = federation.MarshalBundle(b)
		if s, ok := b.SequenceNumber(); ok {
			seq = &s
		}
	}
	st, ok := a.fed.Status(td)
	if !ok {
		if why, ok := a.unloaded.Load(f.TrustDomain); ok {
			fs.LastError = why.(string)
		}
		return fs
	}
	fs.BundleSequence = seq
	if !st.LastSuccess.IsZero() {
		fs.LastRefresh = &st.LastSuccess
	}
	if !st.NextRefresh.IsZero() {
		fs.NextRefresh = &st.NextRefresh
	}
	fs.LastError = st.LastError
	return fs
}

// DeleteFederation ends the relationship with td; its bundle stops being
// handed out at once.
func (a *Authority) DeleteFederation(ctx context.Context, c *Caller, td string) error {
	if err := a.require(c, RoleAdmin); err != nil {
		return err
	}
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	tdID, err := trustDomainOf(td) // a path is refused, as when adding
	if err != nil {
		return fmt.Errorf("%w: trust domain %q: %v", ErrInvalidRequest, td, err)
	}
	td = tdID.Name()
	a.fedMu.Lock()
	defer a.fedMu.Unlock()
	// Deleted in the commit that logs it: both or neither.
	_, err = a.recordWith(ctx, event{typ: "federation.deleted", actor: actorOf(c), subject: td}, func(tx store.Tx) error {
		if _, err := tx.Get(bucketFederations, []byte(td)); errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: no federation with %q", ErrNotFound, td)
		} else if err != nil {
			return err
		}
		return tx.Delete(bucketFederations, []byte(td))
	})
	if err != nil {
		// A commit the store reported as failed may still have kept the
		// deletion: then the peer is no longer trusted either (fail
		// closed), and the error still says what the store said.
		if !errors.Is(err, ErrNotFound) && a.store.View(context.WithoutCancel(ctx), func(tx store.Tx) error {
			_, gerr := tx.Get(bucketFederations, []byte(td))
			return gerr
		}) != nil {
			a.fed.Remove(tdID)
			a.registryChanged()
			a.refreshBundles()
		}
		return err
	}
	a.fed.Remove(tdID)
	a.unloaded.Delete(td)
	a.registryChanged()
	a.refreshBundles()
	a.log.InfoContext(ctx, "federation deleted", "trust_domain", td, "by", c.ID.String())
	return nil
}
