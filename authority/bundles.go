package authority

import (
	"encoding/json"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/ca/federation"
)

// bundleSet is an immutable snapshot of every bundle this authority hands
// out: its own and those of federated trust domains, with their JSON
// encoding computed once.
type bundleSet struct {
	gen  uint64 // bumped whenever the content changes; never 0
	own  *spiffebundle.Bundle
	byTD map[spiffeid.TrustDomain]*spiffebundle.Bundle
	json json.RawMessage              // {"<td>": <SPIFFE bundle>, ...}
	size map[spiffeid.TrustDomain]int // each bundle's share of json
}

// maxBundlesBytes bounds the bundles handed out with every SVID, all
// trust domains together, well within what clients read of an answer
// (4 MiB): a federated bundle that would take them past it is refused,
// so that no peer, nor a few together, can make every SVID answer too
// large to be read.
const maxBundlesBytes = 3 << 20

// bundlesFit refuses doc as td's bundle if the bundles handed out would
// then exceed maxBundlesBytes.
func (a *Authority) bundlesFit(td spiffeid.TrustDomain, doc []byte) error {
	total := len(doc) + len(td.String()) + 6
	if set := a.bundles.Load(); set != nil {
		for t, n := range set.size {
			if t != td {
				total += n
			}
		}
	}
	if total > maxBundlesBytes {
		return fmt.Errorf("%w: with this bundle of %s (%d bytes), the bundles handed out with every SVID would take %d bytes, past the %d allowed",
			ErrFederation, td.Name(), len(doc), total, maxBundlesBytes)
	}
	return nil
}

// refreshBundles rebuilds the snapshot from the CA and the federation
// manager. It is called whenever either changes.
func (a *Authority) refreshBundles() { a.refreshBundlesWith(spiffeid.TrustDomain{}, nil) }

// refreshBundlesWith is refreshBundles with a freshly fetched federated
// bundle that the manager publishes only after its OnUpdate hook (the
// caller) returns. The bundle is kept as pending, and used instead of the
// manager's copy until the manager holds it too, so that no rebuild in
// between can bring back a bundle the peer has replaced.
func (a *Authority) refreshBundlesWith(td spiffeid.TrustDomain, fresh *spiffebundle.Bundle) {
	a.bundleMu.Lock()
	defer a.bundleMu.Unlock()
	if fresh != nil {
		a.pending[td] = fresh
	}
	set := &bundleSet{own: a.ca.Bundle(), byTD: map[spiffeid.TrustDomain]*spiffebundle.Bundle{}}
	set.byTD[a.td] = set.own
	for _, b := range a.fed.Bundles() {
		if b.TrustDomain() != a.td {
			set.byTD[b.TrustDomain()] = b
		}
	}
	federated := map[spiffeid.TrustDomain]bool{}
	for _, r := range a.fed.Relationships() {
		federated[r.TrustDomain] = true
	}
	for ptd, p := range a.pending {
		held, ok := set.byTD[ptd]
		switch {
		case !federated[ptd]: // the relationship has ended
			delete(a.pending, ptd)
		case ok && held.Equal(p): // the manager has caught up
			delete(a.pending, ptd)
		default:
			set.byTD[ptd] = p
		}
	}
	set.json, set.size = a.encodeBundles(set.byTD)
	set.gen = 1
	if prev := a.bundles.Load(); prev != nil {
		set.gen = prev.gen
		if !sameBundles(prev.byTD, set.byTD) {
			set.gen++
		}
	}
	a.bundles.Store(set)
}

// dropPending forgets a fetched bundle not yet published by the manager.
func (a *Authority) dropPending(td spiffeid.TrustDomain) {
	a.bundleMu.Lock()
	defer a.bundleMu.Unlock()
	delete(a.pending, td)
}

// encodeBundles encodes the bundles as one JSON object, and says how many
// bytes each takes in it (its document, its key, quotes and separators).
func (a *Authority) encodeBundles(byTD map[spiffeid.TrustDomain]*spiffebundle.Bundle) (json.RawMessage, map[spiffeid.TrustDomain]int) {
	docs := map[string]json.RawMessage{}
	size := map[spiffeid.TrustDomain]int{}
	for td, b := range byTD {
		doc, err := federation.MarshalBundle(b)
		if err != nil {
			a.log.Error("encode bundle", "trust_domain", td.String(), "err", err)
			continue
		}
		docs[td.String()] = doc
		size[td] = len(doc) + len(td.String()) + 6
	}
	out, _ := json.Marshal(docs)
	return out, size
}

// sameBundles reports whether two snapshots trust exactly the same
// bundles (compared as bundles: JSON key order is not stable).
func sameBundles(a, b map[spiffeid.TrustDomain]*spiffebundle.Bundle) bool {
	if len(a) != len(b) {
		return false
	}
	for td, x := range a {
		if y, ok := b[td]; !ok || !x.Equal(y) {
			return false
		}
	}
	return true
}

// BundleGeneration changes whenever any bundle the authority trusts
// changes (a CA rotation, a federated peer's update, a relationship added
// or removed). Verifications made against an older generation must be
// made again.
func (a *Authority) BundleGeneration() uint64 { return a.bundles.Load().gen }

// BundlesJSON is the "bundles" member of every answer that carries an
// SVID: this trust domain's bundle and every federated one.
func (a *Authority) BundlesJSON() json.RawMessage { return a.bundles.Load().json }

// Bundle is this trust domain's SPIFFE bundle (do not modify).
func (a *Authority) Bundle() *spiffebundle.Bundle { return a.bundles.Load().own }

// GetBundleForTrustDomain implements spiffebundle.Source over the snapshot.
func (a *Authority) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if b, ok := a.bundles.Load().byTD[td]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%w: no bundle for trust domain %q", ErrNotFound, td)
}

// GetX509BundleForTrustDomain implements x509bundle.Source over the
// snapshot, so client X509-SVIDs can be verified with x509svid.Verify.
func (a *Authority) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := a.GetBundleForTrustDomain(td)
	if err != nil {
		return nil, err
	}
	return b.X509Bundle(), nil
}

// GetJWTBundleForTrustDomain implements jwtbundle.Source over the
// snapshot, so JWT-SVIDs can be validated with jwtsvid.ParseAndValidate.
func (a *Authority) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	b, err := a.GetBundleForTrustDomain(td)
	if err != nil {
		return nil, err
	}
	return b.JWTBundle(), nil
}
