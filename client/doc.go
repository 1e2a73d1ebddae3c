// Package client is a Go client for a Mandate authority's HTTPS API, used
// by the mandate CLI, its benchmarks and tests, and by any Go program that
// wants identities from Mandate.
//
// It always authenticates the server as the X509-SVID
// spiffe://<trust domain>/mandate/server against a trust bundle it is
// given, and authenticates itself with an X509-SVID when it has one (mTLS).
// Error answers become *Problem errors carrying the RFC 9457 type.
package client
