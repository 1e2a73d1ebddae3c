package delegation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/delegation"
)

func statusTestCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: "org-b.example"}}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

// TestStatusClientChecksEveryConnection: once org-b's root leaves the
// bundle (say, it was compromised), a status client no longer believes
// a server it connected to under that root, not even over a connection
// it already has.
func TestStatusClientChecksEveryConnection(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("org-b.example")
	server := spiffeid.RequireFromPath(td, "/mandate/server")
	oldRoot, oldKey := statusTestCA(t)
	newRoot, _ := statusTestCA(t)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(server.String())
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, oldRoot, leafKey.Public(), oldKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idx := uint64(1)
		json.NewEncoder(w).Encode(delegation.StatusAnswer{ID: "hop1", Status: delegation.StatusActive, LogIndex: &idx, LeafHash: "00"})
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}}
	srv.StartTLS()
	defer srv.Close()

	bundle := x509bundle.New(td)
	bundle.AddX509Authority(oldRoot)
	hc := delegation.NewStatusClient(bundle, server)
	if _, err := delegation.FetchStatus(context.Background(), hc, srv.URL, "hop1"); err != nil {
		t.Fatalf("first FetchStatus = %v", err)
	}
	// org-b rotates: the old root leaves the bundle.
	bundle.SetX509Authorities([]*x509.Certificate{newRoot})
	if st, err := delegation.FetchStatus(context.Background(), hc, srv.URL, "hop1"); err == nil {
		t.Errorf("FetchStatus after the server's root left the bundle = %q, want a refused connection", st.Status)
	}
	// A fresh client refuses it, as it should.
	if _, err := delegation.FetchStatus(context.Background(), delegation.NewStatusClient(bundle, server), srv.URL, "hop1"); err == nil {
		t.Error("fresh client accepted")
	}
}

// statusIssuer is org-b.example's status server as FetchStatus meets
// it: fetch serves h over TLS with an X509-SVID of
// spiffe://org-b.example/mandate/server and asks it for hop1's status.
func statusIssuer(t *testing.T) (fetch func(h http.HandlerFunc) (*delegation.StatusAnswer, error)) {
	td := spiffeid.RequireTrustDomainFromString("org-b.example")
	server := spiffeid.RequireFromPath(td, "/mandate/server")
	root, rootKey := statusTestCA(t)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(server.String())
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, root, leafKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.New(td)
	bundle.AddX509Authority(root)
	return func(h http.HandlerFunc) (*delegation.StatusAnswer, error) {
		srv := httptest.NewUnstartedServer(h)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}}
		srv.StartTLS()
		defer srv.Close()
		return delegation.FetchStatus(context.Background(), delegation.NewStatusClient(bundle, server), srv.URL, "hop1")
	}
}

// TestFetchStatusReadsTheWholeAnswer: an issuer's answer is read whole
// or not at all. One cut short after a complete-looking document (the
// connection closed before the length it announced), or one longer than
// the bound whose first 16 KiB read as an answer, is no status: never
// "active" taken from a part of it. Nor is one whose headers are longer
// than the bound: they are not read whole.
func TestFetchStatusReadsTheWholeAnswer(t *testing.T) {
	fetch := statusIssuer(t)
	active := `{"id":"hop1","status":"active","log_index":1,"leaf_hash":"00"}`
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
		ok   bool
	}{
		{"whole", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, active) }, true},
		{"cut short", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5000")
			io.WriteString(w, active)
		}, false},
		{"longer than the bound", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, active+strings.Repeat(" ", 17<<10)+`{"id":"hop1","status":"revoked"}`)
		}, false},
		{"headers within the bound", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Pad", strings.Repeat("a", 8<<10))
			io.WriteString(w, active)
		}, true},
		{"headers longer than the bound", func(w http.ResponseWriter, r *http.Request) {
			// Read whole, as net/http reads headers (up to 10 MiB
			// unless told otherwise), for every status request.
			w.Header().Set("X-Pad", strings.Repeat("a", 1<<20))
			io.WriteString(w, active)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := fetch(tc.h)
			switch {
			case tc.ok && (err != nil || st.Status != delegation.StatusActive):
				t.Fatalf("FetchStatus = %+v, %v; want active", st, err)
			case !tc.ok && !errors.Is(err, delegation.ErrStatusUnknown):
				t.Fatalf("FetchStatus = %+v, %v; want ErrStatusUnknown", st, err)
			}
		})
	}
}

// TestFetchStatusErrorsAreBounded: an answer that is not one is refused
// with an error that says why without quoting the issuer at length: the
// error reaches public status answers (503) and the server's refusals.
func TestFetchStatusErrorsAreBounded(t *testing.T) {
	fetch := statusIssuer(t)
	long := strings.Repeat("\u00e9x", 5<<10) // 15 KiB
	for _, tc := range []struct {
		name, answer string
	}{
		{"an answer for another hop", `{"id":"` + long + `","status":"active","log_index":1,"leaf_hash":"00"}`},
		{"an unknown status", `{"id":"hop1","status":"` + long + `","log_index":1,"leaf_hash":"00"}`},
		{"a member of the wrong type", `{"id":"hop1","status":"active","log_index":"` + long + `"}`},
		{"not JSON", `{"id":"hop1",` + long},
		// Go's HTTP client quotes a malformed status line whole.
		{"a malformed status line", "HTTP/1.1 " + strings.Repeat("A", 12<<10) + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fetch(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(tc.answer, "HTTP/") {
					conn, bw, err := w.(http.Hijacker).Hijack()
					if err != nil {
						t.Error(err)
						return
					}
					defer conn.Close()
					bw.WriteString(tc.answer)
					bw.Flush()
					return
				}
				io.WriteString(w, tc.answer)
			})
			if !errors.Is(err, delegation.ErrStatusUnknown) {
				t.Fatalf("FetchStatus = %v, want ErrStatusUnknown", err)
			}
			if n := len(err.Error()); n > 512 {
				t.Errorf("FetchStatus's error is %d bytes: %.200s...", n, err)
			}
		})
	}
}

// TestFetchStatusUnreachable: an issuer that could not be asked (no
// server there, or a server that is not the issuer's) is told apart,
// as ErrStatusUnreachable, from the issuer's own answer that says no
// status (an HTTP error, an answer that is not one): a caller points at
// its --status address only in the first case.
func TestFetchStatusUnreachable(t *testing.T) {
	fetch := statusIssuer(t)
	closed := httptest.NewTLSServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct {
		name        string
		fetch       func() error
		unreachable bool
	}{
		{"no server there", func() error {
			_, err := delegation.FetchStatus(context.Background(), http.DefaultClient, closed.URL, "hop1")
			return err
		}, true},
		{"a server that is not the issuer's", func() error {
			other := httptest.NewTLSServer(http.NotFoundHandler()) // httptest's own certificate
			defer other.Close()
			bundle := x509bundle.New(spiffeid.RequireTrustDomainFromString("org-b.example"))
			bundle.AddX509Authority(other.Certificate())
			_, err := delegation.FetchStatus(context.Background(), delegation.NewStatusClient(bundle, spiffeid.RequireFromString("spiffe://org-b.example/mandate/server")), other.URL, "hop1")
			return err
		}, true},
		{"the issuer answers 503", func() error {
			_, err := fetch(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "peer down", http.StatusServiceUnavailable)
			})
			return err
		}, false},
		{"the issuer answers what is not an answer", func() error {
			_, err := fetch(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{") })
			return err
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.fetch()
			if !errors.Is(err, delegation.ErrStatusUnknown) {
				t.Fatalf("FetchStatus = %v, want ErrStatusUnknown", err)
			}
			if got := errors.Is(err, delegation.ErrStatusUnreachable); got != tc.unreachable {
				t.Errorf("FetchStatus = %v: unreachable %v, want %v", err, got, tc.unreachable)
			}
		})
	}
}
