package api_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/authority"
)

// rawConn is a TLS connection to the server, on which requests are sent
// by hand, so that a test knows which connection is which.
type rawConn struct {
	t *testing.T
	c *tls.Conn
	r *bufio.Reader
}

func (e *env) dialRaw(t *testing.T) (*rawConn, error) {
	cfg := e.client(nil, nil).TLSConfig().Clone()
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}, nil
}

// get sends GET path on the connection and returns the answer's body.
func (rc *rawConn) get(path string) string {
	rc.t.Helper()
	_ = rc.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(rc.c, "GET "+path+" HTTP/1.1\r\nHost: mandate\r\n\r\n"); err != nil {
		rc.t.Fatalf("GET %s: %v", path, err)
	}
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		rc.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		rc.t.Fatalf("GET %s: %s, %v", path, resp.Status, err)
	}
	return string(body)
}

// At http.max_connections, a new connection is taken in place of an
// idle one (closed, as the idle timeout would close it; which one is
// the longest idle, TestConnLimitClosesTheLongestIdle): the other goes
// on serving.
func TestConnectionLimitClosesAnIdleOne(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) { c.HTTP.MaxConnections = 2 })
	idle := []*rawConn{e.mustDialRaw(t), e.mustDialRaw(t)}
	for _, c := range idle {
		c.get("/healthz")
	}
	third := e.mustDialRaw(t)
	metrics := third.get("/metrics")
	if !strings.Contains(metrics, `mandate_http_connections_shed_total{how="idle_closed"} 1`) {
		t.Errorf("metrics after a connection past the limit, want one idle connection closed:\n%s", grepLines(metrics, "mandate_http_connections"))
	}
	// The one closed was closed before the third's handshake was
	// answered: its end is already here, the other's read waits.
	var kept []*rawConn
	for _, c := range idle {
		_ = c.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
			kept = append(kept, c)
		}
	}
	if len(kept) != 1 {
		t.Fatalf("%d of the two idle connections kept open, want 1", len(kept))
	}
	kept[0].get("/healthz")
}

// At http.max_connections with none idle (each in its handshake or its
// request), a new connection is closed unanswered, and counted; one is
// taken again once a connection has closed.
func TestConnectionLimitRefusesWhenNoneIsIdle(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) { c.HTTP.MaxConnections = 2 })
	first, second := e.mustDialRaw(t), e.mustDialRaw(t) // handshaken, no request yet
	if c, err := e.dialRaw(t); err == nil {
		c.c.Close()
		t.Fatal("a connection past the limit, with none idle, was answered")
	}
	metrics := first.get("/metrics")
	if !strings.Contains(metrics, `mandate_http_connections_shed_total{how="refused"} 1`) || !strings.Contains(metrics, "mandate_http_connections_open 2") {
		t.Errorf("metrics after a refused connection, want one refused and two open:\n%s", grepLines(metrics, "mandate_http_connections"))
	}
	second.c.Close()
	// The server counts second out once it has seen it closed.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := e.dialRaw(t)
		if err == nil {
			c.get("/healthz")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection taken after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) mustDialRaw(t *testing.T) *rawConn {
	t.Helper()
	c, err := e.dialRaw(t)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// grepLines is the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for l := range strings.Lines(text) {
		if strings.Contains(l, s) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}
