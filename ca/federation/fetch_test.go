package federation

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/echo"
)

// endpoint is a bundle endpoint with a custom handler, over real TLS on
// 127.0.0.1, that counts its open connections.
type endpoint struct {
	srv  *httptest.Server
	open atomic.Int64
}

func startEndpoint(t *testing.T, cert tls.Certificate, h http.Handler) *endpoint {
	t.Helper()
	e := &endpoint{}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			e.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			e.open.Add(-1)
		}
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e.srv = srv
	return e
}

func (e *endpoint) url() string { return e.srv.URL + "/bundle" }

func (e *endpoint) rel() Relationship {
	return Relationship{TrustDomain: tdB, BundleEndpointURL: e.url(), Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: endpointB}
}

// waitNoConns checks that the client closed every connection it opened.
func (e *endpoint) waitNoConns(t *testing.T) {
	t.Helper()
	waitFor(t, "the client to close its connections", func() bool { return e.open.Load() == 0 })
}

// expectRefused refreshes tdB, expects a failure whose error starts with
// "federation: " and contains every want and none of avoid, and checks that
// the last-known bundle was kept, OnUpdate not called (if updated is
// non-nil) and the failure recorded. It returns the error.
func expectRefused(t *testing.T, m *Manager, initial *spiffebundle.Bundle, updated *atomic.Bool, want, avoid []string) error {
	t.Helper()
	// A deadline far above FetchTimeout, so a fetch that ignored
	// FetchTimeout would fail the test instead of hanging it. An expiry of
	// this context would record no failure (checked below).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := mustStatus(t, m, tdB).ConsecutiveFailures
	err := m.Refresh(ctx, tdB)
	if err == nil {
		t.Fatal("Refresh succeeded, want refusal")
	}
	if !strings.HasPrefix(err.Error(), "federation: ") {
		t.Errorf("error %q lacks the \"federation: \" prefix", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	for _, a := range avoid {
		if strings.Contains(err.Error(), a) {
			t.Errorf("error %q contains %q", err, a)
		}
	}
	if got := mustBundle(t, m, initial.TrustDomain()); !got.Equal(initial) {
		t.Error("last-known bundle not kept after a refused fetch")
	}
	if updated != nil && updated.Load() {
		t.Error("OnUpdate called for a refused fetch")
	}
	st := mustStatus(t, m, tdB)
	if st.ConsecutiveFailures != before+1 || st.LastError != err.Error() {
		t.Errorf("status after refusal = %+v (failures before: %d)", st, before)
	}
	return err
}

func newRecordingManager(t *testing.T, cfg Config) (*Manager, *atomic.Bool) {
	t.Helper()
	var updated atomic.Bool
	cfg.OnUpdate = func(context.Context, spiffeid.TrustDomain, *spiffebundle.Bundle) error {
		updated.Store(true)
		return nil
	}
	return NewManager(cfg), &updated
}

func marshal(t *testing.T, b *spiffebundle.Bundle) []byte {
	t.Helper()
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestFetchBodySizeLimit(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 2, -1, caB)
	doc := marshal(t, served)
	// A valid bundle document padded with JSON whitespace to 2 MiB: only
	// its size makes it unacceptable.
	huge := append(bytes.Clone(doc), bytes.Repeat([]byte(" "), 2<<20-len(doc))...)

	var mu sync.Mutex
	body := huge
	e := startEndpoint(t, caB.serverCert(t, endpointB), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		b := body
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}))
	setBody := func(b []byte) {
		mu.Lock()
		defer mu.Unlock()
		body = b
	}

	m, updated := newRecordingManager(t, fastConfig()) // default MaxBundleBytes
	if m.cfg.MaxBundleBytes != DefaultMaxBundleBytes || DefaultMaxBundleBytes != 1<<20 {
		t.Fatalf("MaxBundleBytes = %d, want the 1 MiB default", m.cfg.MaxBundleBytes)
	}
	initial := bundleOf(tdB, 1, -1, caB)
	mustSet(t, m, e.rel(), initial)
	err := expectRefused(t, m, initial, updated, nil, []string{"x509-svid", "    "})
	if want := fmt.Sprintf("federation: bundle from %s exceeds %d bytes", e.url(), DefaultMaxBundleBytes); err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
	// Still refused on the next attempt, still keeping the last-known bundle.
	expectRefused(t, m, initial, updated, []string{"exceeds"}, nil)
	e.waitNoConns(t)

	// The limit is inclusive: a body of exactly MaxBundleBytes is accepted,
	// one byte more is not.
	setBody(doc)
	cfg := fastConfig()
	cfg.MaxBundleBytes = int64(len(doc)) - 1
	m2, updated2 := newRecordingManager(t, cfg)
	mustSet(t, m2, e.rel(), initial)
	expectRefused(t, m2, initial, updated2, []string{fmt.Sprintf("exceeds %d bytes", len(doc)-1)}, nil)

	cfg.MaxBundleBytes = int64(len(doc))
	m3, _ := newRecordingManager(t, cfg)
	mustSet(t, m3, e.rel(), initial)
	if err := m3.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("Refresh of a bundle of exactly MaxBundleBytes: %v", err)
	}
	if got := mustBundle(t, m3, tdB); !got.Equal(served) {
		t.Fatal("bundle of exactly MaxBundleBytes not installed")
	}
	e.waitNoConns(t)
}

func TestFetchRefusesNonOKStatus(t *testing.T) {
	caB := newTestCA(t, tdB)
	// The body is a valid bundle: only the status makes it unacceptable.
	doc := marshal(t, bundleOf(tdB, 2, -1, caB))
	for _, tt := range []struct {
		code int
		want string
	}{
		{http.StatusNotFound, "unexpected http status 404 (Not Found)"},
		{http.StatusInternalServerError, "unexpected http status 500 (Internal Server Error)"},
		{http.StatusNoContent, "unexpected http status 204"},
		{299, "unexpected http status 299"},
	} {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			e := startEndpoint(t, caB.serverCert(t, endpointB), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tt.code)
				_, _ = w.Write(doc)
			}))
			m, updated := newRecordingManager(t, fastConfig())
			initial := bundleOf(tdB, 1, -1, caB)
			mustSet(t, m, e.rel(), initial)
			t.Log(expectRefused(t, m, initial, updated, []string{tt.want, e.url()}, []string{"x509-svid", "keys"}))
			e.waitNoConns(t)
		})
	}
}

func TestFetchDoesNotFollowRedirects(t *testing.T) {
	caB := newTestCA(t, tdB)
	doc := marshal(t, bundleOf(tdB, 2, -1, caB))
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			var targetHits atomic.Int64
			mux := http.NewServeMux()
			mux.HandleFunc("/bundle", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/real", code)
			})
			mux.HandleFunc("/real", func(w http.ResponseWriter, _ *http.Request) {
				targetHits.Add(1)
				_, _ = w.Write(doc)
			})
			e := startEndpoint(t, caB.serverCert(t, endpointB), mux)
			m, updated := newRecordingManager(t, fastConfig())
			initial := bundleOf(tdB, 1, -1, caB)
			mustSet(t, m, e.rel(), initial)
			t.Log(expectRefused(t, m, initial, updated, []string{fmt.Sprintf("unexpected http status %d", code), "redirects are not followed"}, []string{"/real"}))
			if n := targetHits.Load(); n != 0 {
				t.Fatalf("redirect target was fetched %d times", n)
			}
			e.waitNoConns(t)
		})
	}
}

func TestFetchTimeout(t *testing.T) {
	caB := newTestCA(t, tdB)
	doc := marshal(t, bundleOf(tdB, 2, -1, caB))
	for _, tt := range []struct {
		name  string
		serve func(w http.ResponseWriter) // before stalling
	}{
		{"no answer", nil}, // takes the connection over and never writes an HTTP answer
		{"headers then no body", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", fmt.Sprint(len(doc)))
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
		}},
		{"body never finishes", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", fmt.Sprint(len(doc)))
			_, _ = w.Write(doc[:len(doc)/2])
			w.(http.Flusher).Flush()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			e := startEndpoint(t, caB.serverCert(t, endpointB), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.serve == nil {
					conn, _, err := w.(http.Hijacker).Hijack()
					if err != nil {
						return
					}
					go func() { <-release; conn.Close() }()
					_, _ = io.Copy(io.Discard, conn) // until the client hangs up
					conn.Close()
					return
				}
				tt.serve(w)
				select { // stall until the client goes away (or the test ends)
				case <-r.Context().Done():
				case <-release:
				}
			}))
			t.Cleanup(func() { close(release) }) // runs before the server's Close

			cfg := fastConfig()
			cfg.FetchTimeout = 200 * time.Millisecond
			m, updated := newRecordingManager(t, cfg)
			initial := bundleOf(tdB, 1, -1, caB)
			mustSet(t, m, e.rel(), initial)
			err := expectRefused(t, m, initial, updated, []string{e.url()}, nil)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %q does not wrap context.DeadlineExceeded", err)
			}
			t.Log(err)
			e.waitNoConns(t)
		})
	}
}

func TestFetchRefusesWrongServerID(t *testing.T) {
	caB := newTestCA(t, tdB)
	var hits atomic.Int64
	doc := marshal(t, bundleOf(tdB, 2, -1, caB))
	wrongID := spiffeid.RequireFromString("spiffe://org-b.example/impostor")
	e := startEndpoint(t, caB.serverCert(t, wrongID), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write(doc)
	}))
	m, updated := newRecordingManager(t, fastConfig())
	initial := bundleOf(tdB, 1, -1, caB)
	mustSet(t, m, e.rel(), initial)
	// The error names both IDs: what the endpoint presented, and what the
	// relationship expects, which is the setting to change.
	t.Log(expectRefused(t, m, initial, updated, []string{"unexpected ID", `"` + wrongID.String() + `"`,
		`endpoint_spiffe_id is "` + endpointB.String() + `"`}, nil))
	if hits.Load() != 0 {
		t.Fatal("request sent to an unauthenticated server")
	}
	e.waitNoConns(t)

	// The same server is accepted once the relationship names its ID: the
	// refusal above was the ID check alone.
	rel := e.rel()
	rel.EndpointSPIFFEID = wrongID
	mustSet(t, m, rel, nil)
	if err := m.Refresh(context.Background(), tdB); err != nil {
		t.Fatalf("Refresh with the server's actual ID: %v", err)
	}
	e.waitNoConns(t)
}

func TestFetchParseErrorIsBounded(t *testing.T) {
	caB := newTestCA(t, tdB)
	// A JWK whose invalid x5u URL go-jose quotes in full in its error:
	// the key is ignored, and the bundle, left without authorities,
	// refused with why.
	long := strings.Repeat("Z", 100<<10)
	doc := []byte(`{"keys":[{"kty":"RSA","use":"x509-svid","n":"AQAB","e":"AQAB","x5u":"https://a/%zz` + long + `"}]}`)
	e := startEndpoint(t, caB.serverCert(t, endpointB), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(doc)
	}))
	m, updated := newRecordingManager(t, fastConfig())
	initial := bundleOf(tdB, 1, -1, caB)
	mustSet(t, m, e.rel(), initial)
	err := expectRefused(t, m, initial, updated, []string{"parsing bundle", echo.Mark}, []string{long[:maxCauseText+1]})
	t.Log(err)
	if len(err.Error()) > 1024 {
		t.Fatalf("error is %d bytes long", len(err.Error()))
	}
	if errors.Unwrap(err) == nil {
		t.Fatal("parse error not wrapped")
	}
	e.waitNoConns(t)
}

func TestBoundedError(t *testing.T) {
	sentinel := errors.New("sentinel")
	short := fmt.Errorf("short: %w", sentinel)
	if got := (boundedError{err: short}).Error(); got != short.Error() {
		t.Fatalf("short error changed: %q", got)
	}
	long := fmt.Errorf("%s: %w", strings.Repeat("é", maxCauseText), sentinel) // 2-byte runes
	b := boundedError{err: long}
	got := b.Error()
	if !utf8.ValidString(got) || !strings.HasSuffix(got, echo.Mark) || len(got) > maxCauseText+len(echo.Mark) {
		t.Fatalf("bounded text = %q", got)
	}
	if !errors.Is(b, sentinel) || !errors.Is(fmt.Errorf("x: %w", b), sentinel) {
		t.Fatal("boundedError hides its cause from errors.Is")
	}
}

// A bundle is held to the limit as it is served from here too (in every
// SVID answer): a document that grows when re-encoded, a kid of
// characters JSON escapes six times over, is refused and the last-known
// bundle kept, or one peer could make every local answer too large.
func TestFetchRefusesABundleThatGrowsWhenEncoded(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 2, -1, caB)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := served.AddJWTAuthority(strings.Repeat("<", 200_000), key.Public()); err != nil {
		t.Fatal(err)
	}
	doc := bytes.ReplaceAll(marshal(t, served), []byte(`\u003c`), []byte("<")) // as a peer may write it
	if len(doc) > int(DefaultMaxBundleBytes) {
		t.Fatalf("the document is %d bytes: it should pass the wire limit", len(doc))
	}
	e := startEndpoint(t, caB.serverCert(t, endpointB), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	m, updated := newRecordingManager(t, fastConfig())
	initial := bundleOf(tdB, 1, -1, caB)
	mustSet(t, m, e.rel(), initial)
	expectRefused(t, m, initial, updated, []string{"bytes encoded, more than"}, nil)
	e.waitNoConns(t)
}

// Keys of a fetched bundle with an unknown key type or use, or that
// cannot be read as keys of their type, are ignored, as the SPIFFE Trust
// Domain and Bundle specification asks (§4.1.3, §4.2.1, §4.2.2): the
// bundle is taken with the others, and the ignored ones are logged. A
// bundle left with no authorities is still refused.
func TestFetchIgnoresUnknownKeys(t *testing.T) {
	caB := newTestCA(t, tdB)
	served := bundleOf(tdB, 2, -1, caB)
	ed448 := `{"kty":"OKP","crv":"Ed448","use":"jwt-svid","kid":"ed448","x":"` + strings.Repeat("A", 76) + `"}`
	hmac := `{"kty":"oct","use":"jwt-svid","kid":"hmac","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}`
	private := privateJWK(t)
	tests := []struct {
		name   string
		keys   []string // added before the served bundle's keys
		noneOf bool     // the served keys are left out: nothing is left
	}{
		{"an unknown key type", []string{`{"kty":"FUTURE","use":"x509-svid"}`}, false},
		{"an unsupported curve", []string{ed448}, false},
		{"an unknown use and key type", []string{`{"kty":"FUTURE","use":"future-svid","x":1}`}, false},
		{"a key that is no object", []string{`"x"`}, false},
		{"a symmetric key", []string{hmac}, false},
		{"a private key", []string{private}, false},
		{"a weak RSA key", []string{weakRSAJWK(t)}, false},
		{"only keys that are ignored", []string{`{"kty":"FUTURE","use":"x509-svid"}`, ed448}, true},
		{"only keys that are not public", []string{hmac, private}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := marshal(t, served)
			extra := strings.Join(tt.keys, ",")
			if tt.noneOf {
				doc = []byte(`{"keys":[` + extra + `],"spiffe_sequence":2}`)
			} else {
				doc = bytes.Replace(doc, []byte(`"keys":[`), []byte(`"keys":[`+extra+`,`), 1)
			}
			e := startEndpoint(t, caB.serverCert(t, endpointB), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write(doc)
			}))
			logs := &logBuffer{}
			cfg := fastConfig()
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			m, updated := newRecordingManager(t, cfg)
			initial := bundleOf(tdB, 1, -1, caB)
			mustSet(t, m, e.rel(), initial)
			if tt.noneOf {
				err := expectRefused(t, m, initial, updated, []string{"no authorities"}, nil)
				if !errors.Is(err, ErrNoAuthorities) {
					t.Errorf("Refresh() = %v, want ErrNoAuthorities", err)
				}
				return
			}
			if err := m.Refresh(context.Background(), tdB); err != nil {
				t.Fatalf("Refresh() = %v, want the bundle taken without the ignored keys", err)
			}
			if got := mustBundle(t, m, tdB); !got.Equal(served) {
				t.Errorf("bundle held = %s, want the served one without the ignored keys", marshal(t, got))
			}
			if doc := marshal(t, mustBundle(t, m, tdB)); bytes.Contains(doc, []byte(`"d"`)) || bytes.Contains(doc, []byte(`"oct"`)) {
				t.Errorf("bundle held encodes secret key material: %s", doc)
			}
			if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "ignoring") || !strings.Contains(s, "key 0") {
				t.Errorf("the ignored key was not logged:\n%s", s)
			}
		})
	}
}

// weakRSAJWK is a jwt-svid JWK of a 1024-bit RSA key.
func weakRSAJWK(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return jwkOf(t, &k.PublicKey, "weak")
}

// privateJWK is a jwt-svid JWK of an EC key pair, private part ("d")
// included.
func privateJWK(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return jwkOf(t, k, "private")
}

// jwkOf is key as a jwt-svid JWK named kid.
func jwkOf(t *testing.T, key any, kid string) string {
	t.Helper()
	doc, err := json.Marshal(jose.JSONWebKey{Key: key, KeyID: kid, Use: "jwt-svid"})
	if err != nil {
		t.Fatal(err)
	}
	return string(doc)
}

// A peer whose answer is not HTTP at all (a status line of tens of
// kilobytes, which Go's HTTP client quotes in its error) does not flood
// the error, Status.LastError and the log: the peer's text in the cause
// is cut, and the error still says what went wrong.
func TestFetchTransportErrorIsBounded(t *testing.T) {
	caB := newTestCA(t, tdB)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{caB.serverCert(t, endpointB)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	long := strings.Repeat("Z", 60<<10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Read(make([]byte, 4096))
				_, _ = io.WriteString(c, "HTTP/1.1 2"+long+"\r\n\r\n")
			}()
		}
	}()
	m, updated := newRecordingManager(t, fastConfig())
	initial := bundleOf(tdB, 1, -1, caB)
	rel := Relationship{TrustDomain: tdB, BundleEndpointURL: "https://" + ln.Addr().String() + "/bundle", Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: endpointB}
	mustSet(t, m, rel, initial)
	err = expectRefused(t, m, initial, updated, []string{"malformed HTTP status code", echo.Mark}, []string{long[:maxTransportText+1], `Get "`})
	if len(err.Error()) > 2*maxTransportText {
		t.Errorf("error is %d bytes long", len(err.Error()))
	}
	if s := mustStatus(t, m, tdB).LastError; len(s) > 2*maxTransportText {
		t.Errorf("Status.LastError is %d bytes long", len(s))
	}
}
