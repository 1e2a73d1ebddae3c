package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca/presented"
)

// DefaultServer is the address of an authority started with no flags.
const DefaultServer = "https://127.0.0.1:8443"

// maxAnswer bounds the size of an answer the client reads.
const maxAnswer = 4 << 20

// maxAnswerHeaders bounds an answer's headers (net/http would read up to
// 10 MiB of them): an authority's are a few hundred bytes, and the
// client also asks other organisations' authorities (mandate audit
// chain --verify).
const maxAnswerHeaders = 64 << 10

// Problem is an RFC 9457 error answer.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// Reasons and DecisionID come with a policy deny.
	Reasons    []string `json:"reasons"`
	DecisionID string   `json:"decision_id"`
	// Code is the error code of an answer that is no problem document
	// but an error in OPA's shape (the Data API: "invalid_parameter",
	// "internal_error", ...; Detail is its message) or RFC 6749's
	// (POST /v1/token: "invalid_scope", "invalid_request", ...; Detail
	// is its error_description). Its Type is then about:blank.
	Code string `json:"-"`
	// RetryAfter is the answer's Retry-After when it is a number of
	// seconds, at most a day (429 rate-limited: the caller is over its
	// rate; nothing of the request was done): how long to wait before
	// asking again. 0 when it has none.
	RetryAfter time.Duration `json:"-"`
}

// RetryDelay is p's RetryAfter: how long the authority asked not to be
// asked again, 0 for no such wish. Code that waits before retrying a
// call may ask an error for it through this method alone, without
// importing this package.
func (p *Problem) RetryDelay() time.Duration { return p.RetryAfter }

// Error says what the authority answered (its code, when it has one,
// in place of its type), each line of each field as
// Printable shows it (an authority is not trusted to send plain text;
// a detail of several lines, such as a policy's compile errors, keeps
// them) and at most maxShown bytes of it (an answer that was no problem
// document is its detail).
func (p *Problem) Error() string {
	typ := p.Type
	if p.Code != "" {
		typ = p.Code
	}
	if p.Detail == "" || strings.EqualFold(p.Detail, p.Title) { // nothing more than the title
		return fmt.Sprintf("%d %s (%s)", p.Status, shownField(p.Title), shownField(typ))
	}
	if startsWithWords(p.Detail, p.Title) { // the title, and more: said once
		return fmt.Sprintf("%d %s (%s)", p.Status, shownField(p.Detail), shownField(typ))
	}
	return fmt.Sprintf("%d %s: %s (%s)", p.Status, shownField(p.Title), shownField(p.Detail), shownField(typ))
}

// startsWithWords reports whether s begins with the words of prefix (in
// any case), followed by no more letters or digits of the last word.
func startsWithWords(s, prefix string) bool {
	if prefix == "" || len(s) <= len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return false
	}
	next := s[len(prefix)]
	return !('a' <= next && next <= 'z' || 'A' <= next && next <= 'Z' || '0' <= next && next <= '9' || next >= 0x80)
}

// maxShown bounds what Problem.Error shows of each field.
const maxShown = 1024

func shownField(s string) string {
	more := ""
	if len(s) > maxShown {
		cut := maxShown
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s, more = s[:cut], "..."
	}
	return PrintableLines(s) + more
}

// PrintableLines is s with each of its lines as Printable shows it: its
// line breaks kept, nothing else that is not printable.
func PrintableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = Printable(l)
	}
	return strings.Join(lines, "\n")
}

// Printable is s as it may be shown on a terminal or in a line of a
// log: as is when it is valid UTF-8 whose every character is printable
// (strconv.IsPrint: no control characters, no format characters such as
// bidirectional overrides or zero-width spaces), else quoted with those
// escaped (strconv.Quote). Text an authority sends (a problem's detail,
// a logged entry) can then neither start a line of its own, nor move the
// cursor, nor hide what follows it.
func Printable(s string) string {
	if utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// Name is the last segment of the problem type, e.g. "join-token-used".
func (p *Problem) Name() string { return p.Type[strings.LastIndex(p.Type, "/")+1:] }

// Config says whom to talk to and as whom.
type Config struct {
	// Server is the base URL, https://HOST[:PORT] (default
	// DefaultServer); one with a user name or password, a query or a
	// fragment is refused.
	Server string
	// TrustDomain of the authority. Default: that of SVID, else the URI SAN
	// of the first bundle root.
	TrustDomain spiffeid.TrustDomain
	// Bundle are the trust domain's X.509 roots (required), for the
	// client's life: the authority's CA rotations replace them (within
	// its ca.ca_ttl, 24 h by default), so a long-lived caller makes a new
	// Client with the current roots from time to time (an SVID answer's
	// Bundles, or GET /v1/bundle asked with the roots it has), as it does
	// with each new SVID.
	Bundle []*x509.Certificate
	// SVID and Key, when set, authenticate the client (mTLS).
	SVID []*x509.Certificate
	Key  crypto.Signer
	// MaxConns bounds idle keep-alive connections (0: 16).
	MaxConns int
	// Timeout bounds each call (0: 30s). There is no call without one:
	// a negative Timeout is refused.
	Timeout time.Duration
	// BundleFrom and SVIDFrom name where Bundle, and SVID and Key, were
	// read from (a file or a directory), for errors to say which to
	// check (optional).
	BundleFrom, SVIDFrom string
}

// Client calls one authority. It is safe for concurrent use.
type Client struct {
	base    string
	td      spiffeid.TrustDomain
	http    *http.Client
	tls     *tls.Config
	timeout time.Duration
	// bundleFrom and svidFrom are Config's, for errors.
	bundleFrom, svidFrom string
	mtls                 bool // authenticates with an SVID
}

// ownBundle is the one trust domain's bundle a client authenticates its
// authority with. Asked for another trust domain's (the server presented
// an SVID of another), it says which two, rather than go-spiffe's "no
// X.509 bundle found".
type ownBundle struct{ *x509bundle.Bundle }

func (b ownBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != b.TrustDomain() {
		return nil, otherAuthorityError{server: td, bundle: b.TrustDomain()}
	}
	return b.Bundle, nil
}

// otherAuthorityError is a server that presented an SVID of another
// trust domain than the bundle's.
type otherAuthorityError struct{ server, bundle spiffeid.TrustDomain }

func (e otherAuthorityError) Error() string {
	return fmt.Sprintf("the server is an authority of trust domain %q, and the trust bundle given is %q's: give the bundle (or credential) and the server of one authority", e.server.Name(), e.bundle.Name())
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.Server == "" {
		cfg.Server = DefaultServer
	}
	if err := checkServer(cfg.Server); err != nil {
		return nil, err
	}
	if len(cfg.Bundle) == 0 {
		return nil, errors.New("client: a trust bundle is required to authenticate the server")
	}
	td, err := trustDomain(cfg)
	if err != nil {
		return nil, err
	}
	// A trust domain given that the bundle's own CA contradicts is a
	// mistake of the caller's, said as such (not as the server's).
	if btd, ok := bundleTrustDomain(cfg.Bundle); ok && btd != td {
		return nil, fmt.Errorf("client: the trust domain given is %q, and the trust bundle given is %q's: give the trust domain and bundle of one authority", td.Name(), btd.Name())
	}
	bundle := ownBundle{x509bundle.FromX509Authorities(td, cfg.Bundle)}
	authz := tlsconfig.AuthorizeID(spiffeid.RequireFromSegments(td, "mandate", "server"))
	tlsCfg := presented.TLSClientConfig(bundle, authz)
	if len(cfg.SVID) > 0 {
		id, err := x509svid.IDFromCert(cfg.SVID[0])
		if err != nil {
			return nil, fmt.Errorf("client: svid: %w", err)
		}
		if cfg.Key == nil {
			return nil, errors.New("client: an SVID is given without its private key")
		}
		if pub, ok := cfg.Key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cfg.SVID[0].PublicKey) {
			return nil, fmt.Errorf("client: the private key given is not the key of the SVID %s", id)
		}
		svid := &x509svid.SVID{ID: id, Certificates: cfg.SVID, PrivateKey: cfg.Key}
		tlsCfg = presented.MTLSClientConfig(svid, bundle, authz)
	}
	if cfg.Timeout < 0 || cfg.MaxConns < 0 {
		return nil, fmt.Errorf("client: a negative Timeout (%s) or MaxConns (%d): 0 takes the default", cfg.Timeout, cfg.MaxConns)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 16
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	// Through the proxy HTTPS_PROXY names, if any (NO_PROXY, and
	// loopback addresses, go direct), as Go's and gRPC's clients go: TLS
	// runs end to end inside the proxy's tunnel.
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: tlsCfg, MaxIdleConns: cfg.MaxConns, MaxIdleConnsPerHost: cfg.MaxConns,
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second, ForceAttemptHTTP2: false,
		MaxResponseHeaderBytes: maxAnswerHeaders}
	hc := &http.Client{
		Transport: tr,
		// Never followed: a redirect would send the request (a join
		// token, a CSR) where the server was not authenticated, perhaps
		// in clear. The 3xx is returned as a *Problem.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Client{base: strings.TrimRight(cfg.Server, "/"), td: td, http: hc, tls: tlsCfg, timeout: cfg.Timeout,
		bundleFrom: cfg.BundleFrom, svidFrom: cfg.SVIDFrom, mtls: len(cfg.SVID) > 0}, nil
}

// checkServer refuses a server URL the client would misuse: one that
// is not https://HOST[:PORT][/PATH]. A user name or password would be
// sent as Basic credentials and shown in errors (the authority
// authenticates callers by their X509-SVID alone); a query or a
// fragment would come before every API path appended to it. Errors
// never show a password.
func checkServer(server string) error {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		shown := strconv.Quote(server)
		if err == nil {
			shown = strconv.Quote(u.Redacted())
		} else if strings.Contains(server, "@") {
			shown = "given" // it may hold a password
		}
		return fmt.Errorf("client: the server %s is not an https:// URL (as https://127.0.0.1:8443)", shown)
	}
	switch {
	case u.User != nil:
		return fmt.Errorf("client: the server %q holds a user name or password: the authority authenticates callers by their X509-SVID alone; give https://HOST:PORT", u.Redacted())
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(server, "#"):
		return fmt.Errorf("client: the server %q has a query or fragment: give the authority's address alone, as https://HOST:PORT", u.Redacted())
	}
	return nil
}

func trustDomain(cfg Config) (spiffeid.TrustDomain, error) {
	if !cfg.TrustDomain.IsZero() {
		return cfg.TrustDomain, nil
	}
	if len(cfg.SVID) > 0 {
		if id, err := x509svid.IDFromCert(cfg.SVID[0]); err == nil {
			return id.TrustDomain(), nil
		}
	}
	if td, ok := bundleTrustDomain(cfg.Bundle); ok {
		return td, nil
	}
	return spiffeid.TrustDomain{}, errors.New("client: cannot tell the trust domain: give it explicitly")
}

// bundleTrustDomain is the trust domain the bundle's first CA names in
// its URI SAN, as a Mandate CA does (an upstream root names none).
func bundleTrustDomain(bundle []*x509.Certificate) (spiffeid.TrustDomain, bool) {
	for _, u := range bundle[0].URIs {
		if td, err := spiffeid.TrustDomainFromURI(u); err == nil {
			return td, true
		}
	}
	return spiffeid.TrustDomain{}, false
}

// TLSConfig is the client's TLS configuration (server authenticated as the
// authority's X509-SVID; the client's own SVID when it has one), for
// callers that open connections themselves. Do not modify it.
func (c *Client) TLSConfig() *tls.Config { return c.tls }

// Server is the base URL the client calls.
func (c *Client) Server() string { return c.base }

// TrustDomain is the authority's trust domain.
func (c *Client) TrustDomain() spiffeid.TrustDomain { return c.td }

// CloseIdle closes idle keep-alive connections.
func (c *Client) CloseIdle() { c.http.CloseIdleConnections() }

// Do sends a JSON request (body nil for none) and decodes a JSON answer
// into out (nil to discard). A non-2xx answer is returned as *Problem.
// The typed methods cover the API's endpoints but for GET
// /.well-known/jwks.json, GET /.well-known/oauth-authorization-server,
// GET /healthz and GET /metrics (Do and GetRaw read them), and the C2SP
// tlog-tiles read path (GetRaw); Do is also for an endpoint newer than
// this package.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	_, err := c.do(ctx, method, path, body, out)
	return err
}

// call is Do for an answer of type T: the answer, or nil and the error.
func call[T any](ctx context.Context, c *Client, method, path string, body any) (*T, error) {
	out := new(T)
	if err := c.Do(ctx, method, path, body, out); err != nil {
		return nil, err
	}
	return out, nil
}

// do is Do, and returns the certificate chain the authority presented
// on the connection that answered.
func (c *Client) do(ctx context.Context, method, path string, body, out any) ([]*x509.Certificate, error) {
	a, err := c.doWith(ctx, method, path, nil, body, out)
	if err != nil {
		return nil, err
	}
	return a.server, nil
}

// doWith is Do with the request header fields hdr, and returns the
// answer (its body decoded into out).
func (c *Client) doWith(ctx context.Context, method, path string, hdr http.Header, body, out any) (answer, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return answer{}, fmt.Errorf("client: encode request: %w", err)
		}
	}
	a, err := c.send(ctx, method, path, hdr, b)
	if err != nil {
		return answer{}, err
	}
	return a, a.decode(method, path, out)
}

// decode reads the answer's JSON body into out (nil: none wanted).
func (a answer) decode(method, path string, out any) error {
	if out == nil || a.status == http.StatusNoContent {
		return nil
	}
	if len(a.body) == 0 {
		return fmt.Errorf("client: %s %s: the answer (%d) is empty", method, path, a.status)
	}
	if err := json.Unmarshal(a.body, out); err != nil {
		return fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// answer is a 2xx answer: its status, header and whole body, and the
// certificate chain the authority presented on its connection.
type answer struct {
	status int
	header http.Header
	body   []byte
	server []*x509.Certificate
}

// GetRaw fetches path and returns the answer's bytes as they are (for
// answers that are not JSON, such as a signed checkpoint). A non-2xx answer
// is returned as *Problem.
func (c *Client) GetRaw(ctx context.Context, path string) ([]byte, error) {
	a, err := c.send(ctx, http.MethodGet, path, nil, nil)
	return a.body, err
}

// send makes one call with the header fields hdr and the body, when not
// nil, JSON unless hdr says otherwise, and returns a 2xx answer: an
// answer larger than maxAnswer, or one cut short (the connection
// closed, the call's time up), is an error, never a prefix taken for
// the whole. A non-2xx answer is a *Problem.
func (c *Client) send(ctx context.Context, method, path string, hdr http.Header, body []byte) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return answer{}, fmt.Errorf("client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr { // copies: the request's header is its own
		req.Header[k] = slices.Clone(v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return answer{}, c.callError(method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err == nil && ctx.Err() != nil {
		// The body ended as the call's time ran out: it may be cut.
		err = ctx.Err()
	}
	if err != nil {
		return answer{}, fmt.Errorf("client: %s %s: read answer: %w", method, path, err)
	}
	if len(b) > maxAnswer {
		return answer{}, fmt.Errorf("client: %s %s: the answer (%d) is larger than %d bytes", method, path, resp.StatusCode, maxAnswer)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		err := problemFrom(resp.StatusCode, b)
		if p, ok := err.(*Problem); ok {
			p.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
		}
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: b}
	if resp.TLS != nil {
		a.server = resp.TLS.PeerCertificates
	}
	return a, nil
}

// callError says why a call got no answer: the call and the URL once
// (not again in net/http's words), and what to check when the server is
// not there, is not the authority the bundle is for, or refused the
// client's credential (another trust domain's, or one whose CA an admin
// revoked).
func (c *Client) callError(method, path string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) { // "Get "https://…": …" says the call again
		err = ue.Err
	}
	call := fmt.Sprintf("client: %s %s%s", method, c.base, path)
	in := func(from string) string {
		if from == "" {
			return ""
		}
		return " in " + from
	}
	var other otherAuthorityError
	var unknown x509.UnknownAuthorityError
	var op *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: %w (nothing listens at %s: is the authority running there?)", call, err, c.base)
	case errors.As(err, &other):
		return fmt.Errorf("%s: %s", call, other.Error())
	case errors.As(err, &unknown):
		return fmt.Errorf("%s: the server's certificate is not signed by the trust bundle%s: is it the authority that bundle is for? (%w)", call, in(c.bundleFrom), err)
	case c.mtls && errors.As(err, &op) && op.Op == "remote error" && certificateAlert(op.Err):
		return fmt.Errorf("%s: %w%s: is it one of this authority's, or of a trust domain it federates with, and not signed by an X.509 CA revoked since (then get a new one: a node's with mandate node join or attest, an agent's with mandate svid x509 through its node)? (%w)", call, ErrCredentialRefused, in(c.svidFrom), err)
	}
	return fmt.Errorf("%s: %w", call, err)
}

// ErrCredentialRefused is a call over mTLS whose credential the
// authority refused at the handshake: not one of its trust domain's (or a
// federated one's), or signed by an X.509 CA revoked since.
var ErrCredentialRefused = errors.New("the authority refused the credential")

// certificateAlerts are the TLS alerts by which a server refuses the
// client's certificate (RFC 8446, section 6.2): bad_certificate (the
// authority's, its chain verifying with no bundle it holds),
// unsupported_certificate, certificate_revoked, certificate_expired,
// certificate_unknown, unknown_ca, access_denied and
// certificate_required. Any other (internal_error: the server has no
// certificate of its own to serve; handshake_failure, protocol_version)
// says nothing of the client's credential.
var certificateAlerts = []tls.AlertError{42, 43, 44, 45, 46, 48, 49, 116}

// certificateAlert tells whether err, the error of a "remote error"
// (crypto/tls's alert, whose type is not exported, written as
// tls.AlertError writes it), is one of certificateAlerts.
func certificateAlert(err error) bool {
	return err != nil && slices.ContainsFunc(certificateAlerts, func(a tls.AlertError) bool { return err.Error() == a.Error() })
}

// problemFrom is the *Problem of a non-2xx answer with body b. Its Status
// is the answer's, whatever the body says.
func problemFrom(status int, b []byte) error {
	p := &Problem{}
	if err := json.Unmarshal(b, p); err != nil || p.Type == "" {
		p = &Problem{Type: "about:blank", Title: http.StatusText(status), Detail: string(bytes.TrimSpace(b))}
		if status >= 300 && status < 400 {
			p.Detail = "the authority's API never redirects; redirects are not followed"
		}
		p.Code, p.Detail = otherError(b, p.Detail)
	}
	p.Status = status
	return p
}

// retryAfter is a Retry-After header's delay-seconds (RFC 9110
// §10.2.3), at most a day; 0 for none, an HTTP date or anything else.
func retryAfter(h string) time.Duration {
	n, err := strconv.ParseUint(h, 10, 32)
	if errors.Is(err, strconv.ErrRange) { // digits only, too many
		n, err = 86400, nil
	}
	if err != nil {
		return 0
	}
	return time.Duration(min(n, 86400)) * time.Second
}

// otherError reads an error answer in OPA's shape ({"code", "message"})
// or RFC 6749's ({"error", "error_description"}): its code and message.
// Another body has no code, and its detail stays.
func otherError(b []byte, detail string) (code, message string) {
	var e struct {
		Code             string `json:"code"`
		Message          string `json:"message"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	switch {
	case json.Unmarshal(b, &e) != nil:
		return "", detail
	case e.Code != "":
		return e.Code, e.Message
	case e.Error != "":
		return e.Error, e.ErrorDescription
	}
	return "", detail
}
