package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/ca/presented"
)

// requestTimeout bounds the work one request may cause, from when its
// body has been read (the time a body takes to arrive is bounded by
// http.read_timeout, and is not taken from its work's).
const requestTimeout = 10 * time.Second

// Server serves the authority's HTTPS API. The cached server certificate is
// guarded by certMu; everything else is set in New and read-only after.
type Server struct {
	a       *authority.Authority
	log     *slog.Logger
	handler http.Handler
	metrics *metrics
	limit   *rateLimit
	maxBody int64
	// workTime bounds a request's work once its body has been read
	// (requestTimeout; tests shorten it).
	workTime time.Duration
	// writeTime is http.write_timeout: the time to answer, set again
	// from the end of a request's body.
	writeTime time.Duration

	certMu sync.Mutex
	cert   *tls.Certificate
	certAt time.Time // when cert must be replaced
	// certGen is the bundle generation cert was last found to verify
	// with this trust domain's bundle at.
	certGen uint64
	// renewing is a renewal of cert under way, in the background (one of
	// renewals, which Serve waits for before it returns).
	renewing bool
	renewals sync.WaitGroup
	// certErr is why no certificate could be made, until certErrAt: asked
	// again sooner, it is answered without minting (or logging) again.
	certErr   error
	certErrAt time.Time

	// entryReads holds a token for each entry bundle being read and
	// sent (at most maxEntryBundleReads at once).
	entryReads chan struct{}
}

// maxEntryBundleReads bounds the entry bundles read and sent at once: a
// bundle is built whole in memory (up to 256 entries of 64 KiB each,
// 16 MiB) and held until its reader has taken it, so that many readers,
// slow ones or anyone's with audit.public_read_path, cannot make the
// server hold more than 8 of them (128 MiB at most, usually far less).
const maxEntryBundleReads = 8

// New builds the API server for a.
func New(a *authority.Authority) (*Server, error) {
	s := &Server{a: a, log: a.Logger().With("component", "api"), maxBody: a.Config().HTTP.MaxBodyBytes, workTime: requestTimeout,
		writeTime: a.Config().HTTP.WriteTimeout.D(), entryReads: make(chan struct{}, maxEntryBundleReads)}
	s.metrics = newMetrics()
	s.metrics.reg.MustRegister(auditCounters(a.AuditStats)...)
	s.metrics.reg.MustRegister(signingKeyGauges(a.SigningExpiry)...)
	s.metrics.reg.MustRegister(policyReloadCounters(a.PolicyReloads)...)
	s.metrics.reg.MustRegister(evictionCounters(a.NodeEvictions)...)
	s.metrics.reg.MustRegister(federationGauges{a.FederationRefreshes})
	s.metrics.reg.MustRegister(witnessGauges(a.WitnessCosigned)...)
	s.limit = newRateLimit(a.Config().HTTP.RateLimit, a.Now, s.log, s.metrics)
	mux, err := s.routes()
	if err != nil {
		return nil, err
	}
	s.handler = s.middleware(mux)
	return s, nil
}

// Handler is the API's HTTP handler (it expects TLS connections made with
// TLSConfig, and treats requests without a client certificate as public).
func (s *Server) Handler() http.Handler { return s.handler }

// TLSConfig is the listener's TLS configuration: TLS 1.3 only, the
// authority's own X509-SVID as server certificate, and an optional client
// X509-SVID verified against the bundles the authority holds.
func (s *Server) TLSConfig() *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// HTTP/1.1, the one protocol served (httpServer), named here:
		// the configuration each connection gets of its own (below) is
		// a clone of this one, not of the copy the HTTP server adds it to.
		NextProtos: []string{"http/1.1"},
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.serverCert(context.Background())
		},
		// VerifyConnection, unlike VerifyPeerCertificate, also runs when a
		// client resumes a TLS session, so a resumed session is checked
		// against the bundles held now, not those of its first handshake.
		VerifyConnection: func(cs tls.ConnectionState) error { return s.verifyConnection(cs, nil) },
	}
	cfg := base.Clone()
	// A connection served by Serve (its context holds its connAuth) is
	// verified by a configuration of its own, which records the bundle
	// generation its handshake verified the client chain against: its
	// first request verifies it again only if the bundles changed since.
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		ca, _ := hello.Context().Value(connAuthKey{}).(*connAuth)
		if ca == nil {
			return nil, nil // cfg itself
		}
		own := base.Clone()
		own.VerifyConnection = func(cs tls.ConnectionState) error { return s.verifyConnection(cs, ca) }
		return own, nil
	}
	return cfg
}

// maxClientChain bounds the client certificate chain.
const maxClientChain = 8

// verifyConnection checks the client certificate chain, if one was sent,
// as an X509-SVID of a trust domain whose bundle the authority holds,
// and records in ca (if not nil) the bundle generation it was verified
// against. The generation is read before the chain is verified: bundles
// changed meanwhile leave an older one recorded, and the chain is
// verified again at the next request (reverify).
func (s *Server) verifyConnection(cs tls.ConnectionState, ca *connAuth) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	gen := s.a.BundleGeneration()
	if err := s.verifyChain(cs.PeerCertificates); err != nil {
		s.metrics.tlsRefused.Inc()
		return err
	}
	if ca != nil {
		ca.gen.Store(gen)
	}
	return nil
}

func (s *Server) verifyChain(certs []*x509.Certificate) error {
	if len(certs) > maxClientChain {
		return errors.New("client certificate chain too long")
	}
	_, _, err := verifySVID(certs, s.a)
	return err
}

// verifySVID is presented.Verify; tests replace it to count verifications.
var verifySVID = presented.Verify

// connAuth is per-connection authentication state: the bundle generation
// against which the connection's client certificate was last verified
// (0: not yet), in its handshake or at a request. A keep-alive connection
// is re-verified when the bundles change, so a root dropped from a bundle
// (a rotation, a federation ended) stops authenticating connections that
// were opened before.
//
// refused is the bundle generation at which the chain, verified again,
// no longer verified (0: none): the connection's later requests under
// the same bundles are refused at once, neither verified nor counted
// again; bundles that change again are verified against anew.
type connAuth struct{ gen, refused atomic.Uint64 }

type connAuthKey struct{}

func connContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connAuthKey{}, new(connAuth))
}

// serverCert returns the authority's TLS certificate. One is minted
// (an audit commit) in the handshake only when none is valid: at start
// (Serve mints it before it accepts anything), or after renewals failed
// until it expired. Once half of its life has passed it is renewed in the
// background, and handshakes are answered with it meanwhile: none waits
// on a mint, nor so risks its own deadline (5 s, Limits and timeouts).
func (s *Server) serverCert(ctx context.Context) (*tls.Certificate, error) {
	s.certMu.Lock()
	defer s.certMu.Unlock()
	now := s.a.Now()
	if gen := s.a.BundleGeneration(); s.cert != nil && gen != s.certGen {
		// The bundle changed: a certificate whose CA left it (revoked,
		// mandate admin ca revoke) verifies nowhere, and is made anew.
		if s.verifies(s.cert, now) {
			s.certGen = gen
		} else {
			s.log.Warn("the server certificate no longer verifies with the trust bundle (its CA revoked?): making another")
			s.cert = nil
		}
	}
	// A certificate past its NotAfter is never served, even when its
	// renewal is due later (one that failed is tried again a minute on).
	if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
		if !now.Before(s.certAt) && !s.renewing {
			s.renewing = true
			s.renewals.Go(s.renewCert)
		}
		return s.cert, nil
	}
	// None is valid: one that expired is as good as none.
	if s.certErr != nil && now.Before(s.certErrAt) {
		return nil, s.certErr
	}
	cert, renewAt, err := s.mintCert(ctx)
	if err != nil && ctx.Err() != nil {
		return nil, err // the server stops (Serve's ctx): no failure to tell
	}
	if err != nil {
		// Every handshake fails: said in the log (once a minute), not
		// only to clients as an "internal error" alert.
		s.log.Error("make server certificate", "err", err)
		s.certErr, s.certErrAt = err, now.Add(time.Minute)
		return nil, err
	}
	s.cert, s.certAt, s.certErr, s.certGen = cert, renewAt, nil, s.a.BundleGeneration()
	return cert, nil
}

// verifies reports whether cert verifies with this trust domain's
// bundle at now.
func (s *Server) verifies(cert *tls.Certificate, now time.Time) bool {
	chain := []*x509.Certificate{cert.Leaf}
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return false
		}
		chain = append(chain, c)
	}
	_, _, err := x509svid.Verify(chain, s.a.Bundle().X509Bundle(), x509svid.WithTime(now))
	return err == nil
}

// renewCert replaces the server certificate, in the background; one that
// cannot be renewed is kept until it expires, and renewing is tried
// again a minute later.
func (s *Server) renewCert() {
	cert, renewAt, err := s.mintCert(context.Background())
	s.certMu.Lock()
	defer s.certMu.Unlock()
	s.renewing = false
	if err != nil {
		s.log.Error("renew server certificate", "err", err)
		s.certAt = s.a.Now().Add(time.Minute)
		return
	}
	// A certificate minted in a handshake meanwhile (the clock moved past
	// the old one's end) may be newer: the later one stays.
	if s.cert == nil || cert.Leaf.NotAfter.After(s.cert.Leaf.NotAfter) {
		s.cert, s.certAt, s.certGen = cert, renewAt, 0 // checked again at the next handshake
	}
}

// mintCert mints a server certificate, and says when it is to be
// renewed: once half of its life has passed.
func (s *Server) mintCert(ctx context.Context) (*tls.Certificate, time.Time, error) {
	svid, key, err := s.a.MintServerSVID(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	now := s.a.Now()
	return cert, now.Add(svid.ExpiresAt.Sub(now) / 2), nil
}

// Serve answers HTTPS on ln until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// The certificate is made before the first connection is accepted,
	// not in its handshake (a failure is logged, and tried again in the
	// handshakes).
	_, _ = s.serverCert(ctx)
	srv := s.httpServer(s.handler, s.TLSConfig())
	srv.ConnContext = connContext
	err := s.serveUntil(ctx, srv, ln)
	// A renewal under way ends before Serve does: the authority may be
	// closed next, and the renewal would then fail on its audit log.
	s.renewals.Wait()
	return err
}

// ServeBundle answers only the SPIFFE bundle endpoint, at every path, on
// ln until ctx is done (the https_web profile's second listener): TLS 1.2
// or later, with the certificate getCert gives (a Web PKI one), and the
// limits, log and shutdown of Serve.
func (s *Server) ServeBundle(ctx context.Context, ln net.Listener, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) error {
	h, err := s.bundleHandler()
	if err != nil {
		return err
	}
	return s.serveUntil(ctx, s.httpServer(h, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert}), ln)
}

// httpServer is an HTTP server with the settings of every listener of the
// authority: the http timeouts, a 16 KiB header limit, HTTP/1.1 only, and
// what net/http reports itself in the server log (httpServerLog).
func (s *Server) httpServer(h http.Handler, tc *tls.Config) *http.Server {
	hc := s.a.Config().HTTP
	return &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		ReadHeaderTimeout: min(5*time.Second, hc.ReadTimeout.D()),
		ReadTimeout:       hc.ReadTimeout.D(),
		WriteTimeout:      hc.WriteTimeout.D(),
		IdleTimeout:       hc.IdleTimeout.D(),
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(httpServerLog{s.log}, "", 0),
		// HTTP/1.1 only: every client of this API speaks it, and the
		// authority keeps HTTP/2's larger attack surface (stream
		// multiplexing, HPACK state) off its listeners.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
}

// serveUntil serves srv on ln, at most http.max_connections at once
// (connLimit), until ctx is done, then shuts it down:
// requests under way may finish, each within the read and write
// timeouts. A connection still busy after them is closed: the stop was
// asked for, and is no failure.
func (s *Server) serveUntil(ctx context.Context, srv *http.Server, ln net.Listener) error {
	lim := newConnLimit(s.a.Config().HTTP.MaxConnections, s.log, s.metrics)
	srv.ConnState = lim.state
	ln = lim.listen(ln)
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	grace := srv.ReadTimeout + srv.WriteTimeout
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		s.log.Warn("stopping: connections still busy after the read and write timeouts were closed", "grace", grace)
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// httpServerLog writes to the server log what net/http's server reports
// itself. What any client can cause is at debug level: a TLS handshake
// that fails (a port scan, a client without the bundle, a certificate
// refused: mandate_tls_client_certificates_refused_total counts those)
// and a query with a semicolon. Anything else is an error the operator
// must see: connections that cannot be accepted (the process is out of
// file descriptors), a panic outside the handlers.
type httpServerLog struct{ log *slog.Logger }

func (h httpServerLog) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	level := slog.LevelError
	if strings.HasPrefix(msg, "http: TLS handshake error") || strings.HasPrefix(msg, "http: URL query contains semicolon") {
		level = slog.LevelDebug
	}
	h.log.Log(context.Background(), level, msg)
	return len(p), nil
}
