package authority

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// bundleSet is an immutable snapshot of every bundle this authority hands
// out: its own and those of federated trust domains, with their JSON
// encoding computed once.
type bundleSet struct {
	gen  uint64 // bumped whenever the content changes; never 0
	own  *spiffebundle.Bundle
	byTD map[spiffeid.TrustDomain]*spiffebundle.Bundle
	json json.RawMessage // {"<td>": <SPIFFE bundle>, ...}
}

// refreshBundles rebuilds the snapshot from the CA and the federation
// manager. It is called whenever either changes.
func (a *Authority) refreshBundles() { a.refreshBundlesWith(spiffeid.TrustDomain{}, nil) }

// refreshBundlesWith is refreshBundles with one federated bundle taken from
// the argument instead of the manager (which publishes it only after its
// OnUpdate hook, the caller, returns).
func (a *Authority) refreshBundlesWith(td spiffeid.TrustDomain, fresh *spiffebundle.Bundle) {
	a.bundleMu.Lock()
	defer a.bundleMu.Unlock()
	set := &bundleSet{own: a.ca.Bundle(), byTD: map[spiffeid.TrustDomain]*spiffebundle.Bundle{}}
	set.byTD[a.td] = set.own
	if a.fed != nil {
		for _, b := range a.fed.Bundles() {
			if b.TrustDomain() != a.td {
				set.byTD[b.TrustDomain()] = b
			}
		}
	}
	if fresh != nil {
		set.byTD[td] = fresh
	}
	docs := map[string]json.RawMessage{}
	for td, b := range set.byTD {
		doc, err := b.Marshal()
		if err != nil {
			a.log.Error("encode bundle", "trust_domain", td.String(), "err", err)
			continue
		}
		docs[td.String()] = doc
	}
	set.json, _ = json.Marshal(docs) // map keys sorted: equal content, equal bytes
	set.gen = 1
	if prev := a.bundles.Load(); prev != nil {
		set.gen = prev.gen
		if !bytes.Equal(prev.json, set.json) {
			set.gen++
		}
	}
	a.bundles.Store(set)
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
