package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/client"
)

// A bundles object naming one trust domain twice is refused: which
// bundle would be meant depends on the map's order.
func TestParseBundlesRefusesATrustDomainNamedTwice(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString("org-a.example"))
	if err := b.AddJWTAuthority("k", key.Public()); err != nil {
		t.Fatal(err)
	}
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.ParseBundles(map[string]json.RawMessage{"org-a.example": doc}); err != nil {
		t.Fatalf("ParseBundles of one bundle = %v", err)
	}
	_, err = client.ParseBundles(map[string]json.RawMessage{"org-a.example": doc, "spiffe://org-a.example": doc})
	if err == nil || !strings.Contains(err.Error(), "named twice") {
		t.Errorf("ParseBundles of org-a.example named twice = %v; want it refused", err)
	}
}
