package authority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net"
	"time"

	"mandate.dev/mandate/ca"
)

// MintServerSVID issues the authority's own TLS certificate, the X509-SVID
// spiffe://<td>/mandate/server, with a fresh key. Its DNS names and IP
// addresses (localhost and the loopback addresses, and Config.ServerNames)
// let plain HTTPS clients (curl --cacert bundle.pem) connect too.
func (a *Authority) MintServerSVID(ctx context.Context) (*ca.X509SVID, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("authority: server key: %w", err)
	}
	dnsNames, ips := a.serverNames()
	svid, err := a.ca.MintX509SVID(ctx, ca.X509Params{ID: ServerID(a.td), PublicKey: key.Public(), DNSNames: dnsNames, IPAddresses: ips})
	if err != nil {
		return nil, nil, fmt.Errorf("authority: server certificate: %w", err)
	}
	// Minted during a handshake (which holds the others): the wait for
	// its record ends after 10 s, or at ctx's deadline if sooner. The
	// record itself is not abandoned (no record is, once asked for: see
	// recordWith): a certificate given up on here is never used, and the
	// log says it was issued.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	recorded := make(chan error, 1)
	go func() {
		_, err := a.record(ctx, event{typ: "svid.issued", subject: svid.ID.String(), details: map[string]any{
			"kind": "x509", "purpose": "authority server certificate", "serial": svid.SerialNumber.Text(16), "certificate_sha256": CertificateSHA256(svid.Certificates[0]), "expires_at": svid.ExpiresAt.UTC(),
		}})
		recorded <- err
	}()
	select {
	case err := <-recorded:
		if err != nil {
			return nil, nil, err
		}
	case <-wctx.Done():
		return nil, nil, fmt.Errorf("authority: server certificate: its record is not durable yet: %w", wctx.Err())
	}
	return svid, key, nil
}

// serverNames are the DNS names and IP addresses of the authority's
// server certificate: localhost and the loopback addresses, and
// Config.ServerNames.
func (a *Authority) serverNames() ([]string, []net.IP) {
	dnsNames, ips := a.cfg.ServerNames()
	return append([]string{"localhost"}, dnsNames...), append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...)
}

// CAStatus lists the CA's authorities (X.509 CAs and JWT keys) with their
// states, for admins.
func (a *Authority) CAStatus(c *Caller) (any, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	// Not under the CA's lock (ca.Still), which a backup holds while it
	// copies the data file: a rotation that prunes an authority as it is
	// listed may have it shown in the token (pkcs11) when its key was in
	// keys/, until asked again.
	infos := a.ca.Status()
	for i := range infos {
		infos[i].KeyStore = a.keyStore(infos[i].KeyID)
	}
	return map[string]any{"trust_domain": a.td.String(), "authorities": infos}, nil
}
