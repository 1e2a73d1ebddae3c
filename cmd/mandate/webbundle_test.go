package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	stdlog "log"
	"net"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/authority"
)

// webBundleEnv is an authority's https_web bundle listener, served by
// webBundle.serve as mandate serve does.
type webBundleEnv struct {
	addr string
	pool *x509.CertPool
	logs *syncBuffer // the server log, at level debug
}

func startWebBundle(t *testing.T) *webBundleEnv {
	t.Helper()
	dir := t.TempDir()
	logs := &syncBuffer{}
	log := newLogger("debug", logs)
	_, srv := runAuthority(t, dir, authority.Options{Logger: log})
	certFile, keyFile, pool := webCert(t, dir)
	wc := &webCertFiles{certFile: certFile, keyFile: keyFile, log: log}
	if err := wc.load(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &webBundleEnv{addr: ln.Addr().String(), pool: pool, logs: logs}
	w := &webBundle{ln: ln, cert: wc, log: log}
	done := make(chan error, 1)
	go func() { done <- w.serve(ctx, srv) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve = %v", err)
		}
	})
	return e
}

func (e *webBundleEnv) dial(t *testing.T, protos ...string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: e.pool, NextProtos: protos})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// statusLine sends req on c and returns the answer's status line.
func statusLine(t *testing.T, c net.Conn, req string) string {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read the answer: %v (%q)", err, line)
	}
	return strings.TrimSpace(line)
}

// The https_web bundle listener, which faces any client on the web, has
// the API listener's limits and log: a 16 KiB header limit, HTTP/1.1
// only, and net/http's own reports (a failed handshake, which anyone can
// cause) in the server log at debug level, never printed to standard
// error whatever the log level.
func TestWebBundleListenerLimitsAndLog(t *testing.T) {
	var std syncBuffer
	prev := stdlog.Writer()
	stdlog.SetOutput(&std)
	t.Cleanup(func() { stdlog.SetOutput(prev) })
	e := startWebBundle(t)

	if got := statusLine(t, e.dial(t), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "HTTP/1.1 200 OK" {
		t.Fatalf("GET / = %q, want 200", got)
	}
	big := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 32<<10) + "\r\n\r\n"
	if got := statusLine(t, e.dial(t), big); !strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Errorf("32 KiB of headers: %q, want 431", got)
	}
	if p := e.dial(t, "h2", "http/1.1").ConnectionState().NegotiatedProtocol; p == "h2" {
		t.Errorf("HTTP/2 is offered (ALPN %q)", p)
	}

	// Plain HTTP to the TLS port: a handshake error net/http reports.
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := statusLine(t, c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.0 400") {
		t.Fatalf("plain HTTP: %q, want net/http's 400", got)
	}
	const reported = "TLS handshake error"
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(e.logs.String()+std.String(), reported); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the handshake error was not reported; server log:\n%s", e.logs)
		}
	}
	if strings.Contains(std.String(), reported) {
		t.Errorf("the handshake error was printed outside the server log: %q", std.String())
	}
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, reported) && !strings.Contains(l, "level=DEBUG") {
			t.Errorf("logged as %q, want level=DEBUG", l)
		}
	}
}
