package api

import (
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SetWorkTime sets the time a request's work may take once it has been
// read (requestTimeout in production), before s serves.
func SetWorkTime(s *Server, d time.Duration) { s.workTime = d }

// HoldEntryBundleReads takes every turn to read an entry bundle of s
// until the returned function gives them back.
func HoldEntryBundleReads(s *Server) (release func()) {
	for range cap(s.entryReads) {
		s.entryReads <- struct{}{}
	}
	return func() {
		for range cap(s.entryReads) {
			<-s.entryReads
		}
	}
}

// CountChainVerifications counts the client certificate chains every
// server verifies until t ends. Call it before any server starts: its
// cleanup must come after theirs.
func CountChainVerifications(t testing.TB) *atomic.Int64 {
	n := new(atomic.Int64)
	orig := verifySVID
	verifySVID = func(certs []*x509.Certificate, src x509bundle.Source, opts ...x509svid.VerifyOption) (spiffeid.ID, [][]*x509.Certificate, error) {
		n.Add(1)
		return orig(certs, src, opts...)
	}
	t.Cleanup(func() { verifySVID = orig })
	return n
}
