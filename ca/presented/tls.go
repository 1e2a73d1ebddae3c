package presented

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TLSClientConfig is go-spiffe's tlsconfig.TLSClientConfig (the server
// must present an X509-SVID valid in source that authorizer accepts),
// with the server's chain verified by Verify: a server offering a chain
// of costly intermediates nothing vouches for makes the handshake cost
// the client no signature check with their keys.
func TLSClientConfig(source x509bundle.Source, authorizer tlsconfig.Authorizer) *tls.Config {
	cfg := tlsconfig.TLSClientConfig(source, authorizer)
	cfg.VerifyPeerCertificate = VerifyPeerCertificate(source, authorizer)
	return cfg
}

// MTLSClientConfig is go-spiffe's tlsconfig.MTLSClientConfig (svid as the
// client's certificate), with the server's chain verified by Verify.
func MTLSClientConfig(svid x509svid.Source, source x509bundle.Source, authorizer tlsconfig.Authorizer) *tls.Config {
	cfg := tlsconfig.MTLSClientConfig(svid, source, authorizer)
	cfg.VerifyPeerCertificate = VerifyPeerCertificate(source, authorizer)
	return cfg
}

// VerifyPeerCertificate is go-spiffe's tlsconfig.VerifyPeerCertificate
// with Verify: the peer's chain (raw, as the handshake received it) must
// be an X509-SVID valid in source, which authorizer then accepts.
func VerifyPeerCertificate(source x509bundle.Source, authorizer tlsconfig.Authorizer) func(raw [][]byte, _ [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, 0, len(raw))
		for _, der := range raw {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("x509svid: unable to parse certificate: %w", err)
			}
			certs = append(certs, c)
		}
		id, chains, err := Verify(certs, source)
		if err != nil {
			return err
		}
		return authorizer(id, chains)
	}
}
