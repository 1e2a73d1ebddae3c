package client_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"mandate.dev/mandate/client"
)

// proxyChildEnv names, in a child process of the test binary, the
// authority to call through HTTPS_PROXY (its URL, then its root in PEM).
const proxyChildEnv = "MANDATE_CLIENT_TEST_PROXY_CHILD"

func TestMain(m *testing.M) {
	if v := os.Getenv(proxyChildEnv); v != "" {
		server, rootPEM, _ := strings.Cut(v, "\n")
		block, _ := pem.Decode([]byte(rootPEM))
		root, err := x509.ParseCertificate(block.Bytes)
		if err == nil {
			var c *client.Client
			if c, err = client.New(client.Config{Server: server, Bundle: []*x509.Certificate{root}, Timeout: 30 * time.Second}); err == nil {
				_, err = c.ListAgents(context.Background())
				var p *client.Problem
				if errors.As(err, &p) && p.Status == http.StatusTeapot {
					err = nil // the authority's answer, reached through the proxy
				}
			}
		}
		if err != nil {
			io.WriteString(os.Stderr, err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A client reaches its authority through the proxy HTTPS_PROXY names, as
// Go's, gRPC's (SPIRE's agent) and most command-line clients do: a host
// that must go through one reaches its authority, the TLS session (the
// authority authenticated, the caller's X509-SVID) end to end through
// the tunnel.
func TestClientGoesThroughHTTPSProxy(t *testing.T) {
	p := newTestPKI(t, "org-a.example")
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, `{"type": "https://mandate.dev/problems/teapot", "title": "Teapot", "status": 418}`)
	}))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{p.leaf(t, "spiffe://org-a.example/mandate/server")}}
	s.StartTLS()
	t.Cleanup(s.Close)
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())

	var mu sync.Mutex
	var asked []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Method+" "+r.Host)
		mu.Unlock()
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.Dial("tcp", s.Listener.Addr().String())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.Close()
		w.WriteHeader(http.StatusOK)
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		go func() { io.Copy(up, rw); up.Close() }()
		io.Copy(conn, bufio.NewReader(up))
	}))
	t.Cleanup(proxy.Close)

	server := "https://authority.example:" + port
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.root.Raw})
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); !strings.HasSuffix(strings.ToLower(name), "_proxy") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, proxyChildEnv+"="+server+"\n"+string(rootPEM), "HTTPS_PROXY="+proxy.URL)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("a call to %s through HTTPS_PROXY: %v: %s", server, err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0] != "CONNECT authority.example:"+port {
		t.Errorf("the proxy was asked %q, want one CONNECT authority.example:%s", asked, port)
	}
}
