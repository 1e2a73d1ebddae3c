package ca

import (
	"crypto/rsa"
	"crypto/x509"
	"fmt"
)

// MaxChainRSABits is the largest RSA key of a certificate chain a client
// presents (CheckPresentedChain): crypto/tls's own bound on the keys of
// a client certificate chain. An RSA signature check costs about the
// square of the key's size, so a chain carrying, say, a 150,000-bit key
// would make a single verification take seconds.
const MaxChainRSABits = maxRSABits

// CheckPresentedChain refuses a certificate chain a client presents (an
// X509-SVID and its intermediates) that would cost far more to verify
// than any X509-SVID: a certificate with an RSA key of more than
// MaxChainRSABits. It is meant to run before the chain is verified.
func CheckPresentedChain(certs []*x509.Certificate) error {
	for i, c := range certs {
		if k, ok := c.PublicKey.(*rsa.PublicKey); ok && k.N != nil && k.N.BitLen() > MaxChainRSABits {
			return fmt.Errorf("certificate %d has an RSA key of %d bits (at most %d)", i, k.N.BitLen(), MaxChainRSABits)
		}
	}
	return nil
}
