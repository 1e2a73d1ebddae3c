package presented

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// serveTLS answers TLS handshakes on 127.0.0.1 with chain (the leaf's
// key: key) until the test ends, and returns the address.
func serveTLS(t *testing.T, chain []*x509.Certificate, key *ecdsa.PrivateKey) string {
	t.Helper()
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

// A client of TLSClientConfig connects to a server presenting a valid
// X509-SVID that its authorizer accepts (with the ID and chains Verify
// gives), and refuses one whose intermediates nothing vouches for
// without a signature check with their key: the handshake fails as for
// an unknown authority, not at Go's limit of signature checks.
func TestTLSClientConfig(t *testing.T) {
	root := mint(t, "root", true, nil, nil, "spiffe://org-a.example")
	int1 := mint(t, "int1", true, root, nil, "spiffe://org-a.example")
	server := spiffeid.RequireFromString("spiffe://org-a.example/mandate/server")
	leaf := mint(t, "", false, int1, nil, server.String())
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	first := mint(t, "junk", true, nil, key, "spiffe://org-a.example")
	junkLeaf := mint(t, "", false, first, nil, server.String())
	junk := []*x509.Certificate{junkLeaf.cert, first.cert}
	for range 6 {
		junk = append(junk, mint(t, "junk", true, first, key, "spiffe://org-a.example").cert)
	}

	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		key   *ecdsa.PrivateKey
		ok    bool
	}{
		{"a valid X509-SVID", []*x509.Certificate{leaf.cert, int1.cert}, leaf.key, true},
		{"intermediates nothing vouches for", junk, junkLeaf.key, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveTLS(t, tc.chain, tc.key)
			var authorized spiffeid.ID
			cfg := TLSClientConfig(bundle, func(id spiffeid.ID, chains [][]*x509.Certificate) error {
				authorized = id
				if len(chains) == 0 {
					return errors.New("no verified chain")
				}
				return tlsconfig.AuthorizeID(server)(id, chains)
			})
			c, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				c.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("handshake = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && authorized != server {
				t.Errorf("authorizer saw %v, want %v", authorized, server)
			}
			var unknown x509.UnknownAuthorityError
			if !tc.ok && !errors.As(err, &unknown) {
				t.Errorf("handshake = %v, want an unknown authority (the junk never searched)", err)
			}
		})
	}
}
