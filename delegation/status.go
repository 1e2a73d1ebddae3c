package delegation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"mandate.dev/mandate/ca/presented"
	"mandate.dev/mandate/echo"
)

// ErrStatusUnknown is returned when an issuer could not tell a hop's
// status: unreachable, not the issuer, or an answer that is not one.
var ErrStatusUnknown = errors.New("delegation: status unknown")

// ErrStatusUnreachable is ErrStatusUnknown for an issuer that could not
// be asked at all: no connection, or a server that is not the issuer's
// (its certificate is not the issuer's server SVID). Any other failure
// is the issuer's answer (an HTTP error, an answer that is not one).
var ErrStatusUnreachable = fmt.Errorf("%w: the issuer's server could not be asked", ErrStatusUnknown)

// StatusTimeout bounds one status request.
const StatusTimeout = 5 * time.Second

// StatusAnswer is an issuer's answer at GET /v1/delegations/{id}/status.
type StatusAnswer struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"` // StatusActive, StatusRevoked or StatusExpired
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    string    `json:"reason,omitempty"`
	LogIndex  *uint64   `json:"log_index"`
	LeafHash  string    `json:"leaf_hash"` // hex
}

// NewStatusClient is the HTTP client FetchStatus asks an issuer with: its
// server must present an X509-SVID of server (spiffe://<td>/mandate/server
// of the hop's issuer) valid in bundles when the request is made (no
// connection is kept: one made under a root since removed from bundles
// is never used again); redirects are not followed; answer headers of
// more than 16 KiB are refused (net/http would read up to 10 MiB of them).
func NewStatusClient(bundles x509bundle.Source, server spiffeid.ID) *http.Client {
	return &http.Client{Timeout: StatusTimeout,
		Transport: &http.Transport{TLSClientConfig: presented.TLSClientConfig(bundles, tlsconfig.AuthorizeID(server)), DisableKeepAlives: true,
			MaxResponseHeaderBytes: maxStatusAnswer,
			// Through the proxy the environment names (HTTPS_PROXY,
			// NO_PROXY), as federated bundles are fetched: a host whose
			// outbound traffic must go through one reaches its peers'
			// status endpoints too.
			Proxy: http.ProxyFromEnvironment},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// FetchStatus asks the authority at base (https://host:port), with a
// client of NewStatusClient, for the status of hop id. An issuer answers
// for the hops above its own too. The answer is bounded (an answer cut
// short, or longer than 16 KiB, its headers or its body, is none); every failure
// matches ErrStatusUnknown: a verifier treats it as "not known to hold".
func FetchStatus(ctx context.Context, hc *http.Client, base, id string) (*StatusAnswer, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: %q is not an https URL", ErrStatusUnknown, base)
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/v1/delegations/" + url.PathEscape(id) + "/status"
	u.RawQuery, u.Fragment = "", ""
	ctx, cancel := context.WithTimeout(ctx, StatusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStatusUnknown, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The URL is said once, and what the issuer's server sent (Go's
		// client quotes a malformed status line or header whole) is cut.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrStatusUnreachable, u.Host, echo.Cut(err.Error(), maxTransportText))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s answered %d for %s", ErrStatusUnknown, u.Host, resp.StatusCode, id)
	}
	// The whole answer or nothing: a prefix of one cut short (the
	// connection closed, the time up) or too long is never read as if it
	// were the answer.
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s, for %s: reading the answer: %v", ErrStatusUnknown, u.Host, id, err)
	}
	if len(body) > maxStatusAnswer {
		return nil, fmt.Errorf("%w: %s, for %s: an answer of more than %d bytes", ErrStatusUnknown, u.Host, id, maxStatusAnswer)
	}
	out, err := statusAnswerOf(body, id)
	if err != nil {
		return nil, fmt.Errorf("%w: %s, for %s: %v", ErrStatusUnknown, u.Host, id, err)
	}
	return out, nil
}

// maxStatusAnswer bounds what FetchStatus reads of an answer: its body,
// and (NewStatusClient) its headers.
const maxStatusAnswer = 16 << 10

// statusAnswerOf reads an issuer's status answer for hop id: JSON with
// no member twice, the hop asked about, a known status. A reason that is
// not plain text (an older authority's, or a hostile one's) is kept
// escaped, as a Go string literal: it is printed, and the revocation it
// explains still counts.
func statusAnswerOf(body []byte, id string) (*StatusAnswer, error) {
	out := new(StatusAnswer)
	// Invalid UTF-8 is read too (as U+FFFD, in the reason then escaped):
	// the answer's status counts whatever its reason says.
	if err := jsonv2.Unmarshal(body, out, asEncodingJSON, jsontext.AllowInvalidUTF8(true)); err != nil {
		return nil, fmt.Errorf("unreadable answer: %v", err)
	}
	switch {
	case out.ID != id:
		return nil, fmt.Errorf("an answer for %s", echo.Quote(out.ID, maxQuoted))
	case out.Status != StatusActive && out.Status != StatusRevoked && out.Status != StatusExpired:
		return nil, fmt.Errorf("status %s", echo.Quote(out.Status, maxQuoted))
	}
	if !IsPlainText(out.Reason) {
		out.Reason = strconv.QuoteToASCII(out.Reason)
	}
	return out, nil
}

// maxQuoted bounds what an error quotes of an issuer's answer (an id, a
// status): the error reaches public status answers and refusals.
const maxQuoted = 64

// maxTransportText bounds what an error says of a failed connection,
// TLS handshake or HTTP exchange with an issuer's server: larger than
// maxQuoted, so that a certificate's unexpected ID is said (IDs are
// short in practice), and small enough for the public answers the
// error reaches.
const maxTransportText = 400
