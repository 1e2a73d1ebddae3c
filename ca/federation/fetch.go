package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"mandate.dev/mandate/ca/presented"
	"mandate.dev/mandate/echo"
)

// DefaultMaxBundleBytes is the default Config.MaxBundleBytes: 1 MiB, far
// more than any real bundle (a few kilobytes per authority).
const DefaultMaxBundleBytes int64 = 1 << 20

const (
	// maxResponseHeaderBytes bounds the response headers of a bundle
	// endpoint (net/http's default is 10 MiB).
	maxResponseHeaderBytes = 64 << 10
	// maxCauseText bounds the text of a bundle parse error taken into our
	// error: parse errors may quote pieces of the peer's document.
	maxCauseText = 256
	// maxTransportText bounds the text of a connection, TLS or HTTP error
	// taken into our error: Go's HTTP client quotes a malformed status
	// line or header of the peer's (up to maxResponseHeaderBytes), and
	// certificate errors name what the peer's certificate holds. It is
	// larger than maxCauseText so that an unexpected endpoint ID and the
	// one expected (each up to 2048 bytes, usually far less) are said.
	maxTransportText = 1024
)

// fetch retrieves rel's bundle from its endpoint with the profile's
// authentication and the bounds documented on the package: one GET within
// Config.FetchTimeout, no redirects, status 200 only, a body of at most
// Config.MaxBundleBytes, parsed by ParseBundle as rel.TrustDomain (so the
// returned bundle is always for it; keys it ignores are logged).
//
// Every fetch uses its own transport with keep-alives disabled, closed
// when fetch returns. Fetches of one relationship are seconds to hours
// apart, so connection reuse would save little, and it would weaken
// https_spiffe: a reused connection was authenticated against the bundle
// held when it was opened, which may since have dropped the root it chained
// to. This way every fetch does a fresh TLS handshake (no session
// resumption: no session cache is configured) against the current bundles,
// as go-spiffe's federation.FetchBundle did, and no connection or goroutine
// outlives the fetch.
func (m *Manager) fetch(ctx context.Context, rel Relationship) (*spiffebundle.Bundle, error) {
	td, url := rel.TrustDomain, rel.BundleEndpointURL
	var tlsCfg *tls.Config
	switch rel.Profile {
	case ProfileHTTPSSPIFFE:
		// The server must present an X.509-SVID for exactly the endpoint ID,
		// chaining to that ID's trust domain bundle from the combined source.
		tlsCfg = presented.TLSClientConfig(m.CombinedSource(), authorizeEndpoint(rel.EndpointSPIFFEID))
	case ProfileHTTPSWeb:
		// Web PKI: WebRoots (nil: system roots) and the URL's host name,
		// which the transport sets as ServerName.
		tlsCfg = &tls.Config{RootCAs: m.cfg.WebRoots, MinVersion: tls.VersionTLS12}
	default: // unreachable: Set validates
		return nil, fmt.Errorf("federation: %q: unknown bundle endpoint profile %q", td, rel.Profile)
	}

	transport := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment, // as FetchBundle (a clone of http.DefaultTransport)
		DialContext:            (&net.Dialer{}).DialContext,
		TLSClientConfig:        tlsCfg,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{
		Transport: transport,
		// Do not follow redirects: the 3xx answer is returned and refused
		// below for not being 200.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	ctx, cancel := context.WithTimeout(ctx, m.cfg.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("federation: fetching bundle of %q from %s: %w", td, url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		// The URL is said once; what the peer sent is cut.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("federation: fetching bundle of %q from %s: %w", td, url, boundedError{err: err, limit: maxTransportText})
	}
	// Closing without draining is fine: the connection is not reused.
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The code only: the reason phrase and body are the peer's text.
		msg := fmt.Sprintf("federation: fetching bundle of %q from %s: unexpected http status %d", td, url, resp.StatusCode)
		if text := http.StatusText(resp.StatusCode); text != "" {
			msg += " (" + text + ")"
		}
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			msg += "; redirects are not followed"
		}
		return nil, errors.New(msg)
	}

	limit := m.cfg.MaxBundleBytes
	// Read one byte more than allowed to tell "exactly the limit" from "over".
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("federation: reading bundle of %q from %s: %w", td, url, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("federation: bundle from %s exceeds %d bytes", url, limit)
	}
	b, ignored, err := ParseBundle(td, body)
	if err != nil {
		return nil, fmt.Errorf("federation: parsing bundle of %q from %s: %w", td, url, boundedError{err: err})
	}
	if len(ignored) > 0 {
		m.cfg.Logger.Warn("federation: fetched bundle has keys of unknown type or use, or unreadable ones; ignoring them",
			"trust_domain", td.Name(), "url", url, "ignored", ignored)
	}
	return b, nil
}

// authorizeEndpoint accepts exactly the endpoint ID want, as go-spiffe's
// tlsconfig.AuthorizeID does, and says which ID the relationship expects
// when the endpoint presents another: a SPIRE server presents
// spiffe://<td>/spire/server, not the default spiffe://<td>/mandate/server,
// and the fix is to name its ID (endpoint_spiffe_id), which go-spiffe's
// "unexpected ID" does not say.
func authorizeEndpoint(want spiffeid.ID) tlsconfig.Authorizer {
	return func(got spiffeid.ID, _ [][]*x509.Certificate) error {
		if got != want {
			return fmt.Errorf("unexpected ID %q: the endpoint presented it, but the relationship's endpoint_spiffe_id is %q", got, want)
		}
		return nil
	}
}

// boundedError wraps an error whose text may quote peer-supplied data
// (e.g. a JSON or JWK parse error) and cuts that text to limit bytes
// (maxCauseText if 0), so a hostile peer cannot flood logs and
// Status.LastError. errors.Is and errors.As still see the wrapped error.
type boundedError struct {
	err   error
	limit int
}

func (e boundedError) Error() string {
	if e.limit == 0 {
		return echo.Cut(e.err.Error(), maxCauseText)
	}
	return echo.Cut(e.err.Error(), e.limit)
}

func (e boundedError) Unwrap() error { return e.err }
