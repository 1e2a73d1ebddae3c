package authority

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// RFC 5280 (Appendix A.1) bounds the length of the Subject attributes
// it names: a relying party may refuse a certificate with a longer one.
var subjectBounds = map[string]int{
	"2.5.4.3":  64,  // commonName
	"2.5.4.5":  64,  // serialNumber
	"2.5.4.6":  2,   // countryName
	"2.5.4.7":  128, // localityName
	"2.5.4.8":  128, // stateOrProvinceName
	"2.5.4.10": 64,  // organizationName
	"2.5.4.11": 64,  // organizationalUnitName
	"2.5.4.12": 64,  // title
}

// certOf is a self-signed certificate of subject, to read back as relying
// parties do.
func certOf(t *testing.T, subject pkix.Name) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: subject, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// An agent SVID names its host node within RFC 5280's bounds on the
// Subject's attributes, whatever the node ID's length, and the node is
// read back from it.
func TestHostNodeSubjectWithinBounds(t *testing.T) {
	for _, node := range []string{
		"spiffe://mandate.localhost/node/join/c1b621d808e49c07",
		"spiffe://mandate.localhost/node/tpm/" + strings.Repeat("ab", 32),
		"spiffe://" + strings.Repeat("a", 200) + ".example/node/join/c1b621d808e49c07",
	} {
		t.Run(node[:40], func(t *testing.T) {
			id := spiffeid.RequireFromString(node)
			cert := certOf(t, hostNodeSubject(id))
			for _, atv := range cert.Subject.Names {
				max, ok := subjectBounds[atv.Type.String()]
				if s, _ := atv.Value.(string); ok && len(s) > max {
					t.Errorf("attribute %s is %d characters long, RFC 5280 allows %d: %q", atv.Type, len(s), max, s)
				}
			}
			got, err := HostNode(cert)
			if err != nil || got != id {
				t.Errorf("HostNode = %v, %v; want %v", got, err, id)
			}
		})
	}
}

// Agent SVIDs issued before the host node moved out of the OU still
// name it: their agents renew with them.
func TestHostNodeReadsOU(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://mandate.localhost/node/join/c1b621d808e49c07")
	cert := certOf(t, pkix.Name{Organization: []string{"Mandate"}, OrganizationalUnit: []string{"mandate-host-node=" + id.String()}})
	if got, err := HostNode(cert); err != nil || got != id {
		t.Errorf("HostNode = %v, %v; want %v", got, err, id)
	}
	other := certOf(t, pkix.Name{Organization: []string{"Mandate"}, ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 13}, Value: "not a host node"}}})
	if _, err := HostNode(other); err == nil {
		t.Error("HostNode of a certificate naming no host node: no error")
	}
}
