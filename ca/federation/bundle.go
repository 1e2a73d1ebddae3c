package federation

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrNoAuthorities is wrapped by the errors about a peer's bundle that
// has no authority left to trust (none given, or only keys that are
// ignored): holding it would trust nothing of the peer, and clients
// refuse the document it encodes to.
var ErrNoAuthorities = errors.New("federation: bundle has no authorities")

// bundleDocument is a SPIFFE bundle document with its keys left unread.
type bundleDocument struct {
	Keys        *[]json.RawMessage `json:"keys"`
	Sequence    *uint64            `json:"spiffe_sequence,omitempty"`
	RefreshHint *int64             `json:"spiffe_refresh_hint,omitempty"`
}

// ParseBundle reads doc, a SPIFFE bundle document of trust domain td (a
// peer's, fetched, given by an administrator or stored). A bundle with no
// authorities is refused with ErrNoAuthorities.
func ParseBundle(td spiffeid.TrustDomain, doc []byte) (*spiffebundle.Bundle, error) {
	b, err := spiffebundle.Parse(td, doc)
	if err != nil {
		return nil, err
	}
	if b.Empty() {
		return nil, ErrNoAuthorities
	}
	return b, nil
}

// MarshalBundle encodes b as go-spiffe does, except that a bundle without
// authorities has "keys": [] rather than null: the member MUST be present
// (§4.1.3), and go-spiffe refuses a document without it, so one such
// bundle among those handed out would make clients refuse them all.
func MarshalBundle(b *spiffebundle.Bundle) ([]byte, error) {
	doc, err := b.Marshal()
	if err != nil || !b.Empty() {
		return doc, err
	}
	var d bundleDocument
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("federation: encode bundle: %w", err)
	}
	d.Keys = &[]json.RawMessage{}
	return json.Marshal(d)
}
