package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// benchConn is one keep-alive HTTP/1.1 connection over TLS 1.3 mTLS, used
// by one load-generator worker: it writes a prepared request and reads the
// answer on the same goroutine, so that the generator spends as little of
// the shared CPU as it can. Requests and answers are ordinary HTTP/1.1; the
// server cannot tell it from any other client.
type benchConn struct {
	addr string
	cfg  *tls.Config
	reqs [][]byte // sent in turn
	sent int
	once bool // each of reqs is sent once: then the connection is spent
	conn *tls.Conn
	lr   *readLimit // under br: bounds what an answer's header may take
	br   *bufio.Reader
	body bytes.Buffer
}

const (
	// maxBenchHeader bounds the status line and headers of an answer.
	maxBenchHeader = 64 << 10
	// maxBenchBody bounds an answer's body.
	maxBenchBody = 4 << 20
)

// readLimit reads from r until n bytes are read, then fails.
type readLimit struct {
	r io.Reader
	n int64
}

func (l *readLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("the answer's header is longer than %d bytes", maxBenchHeader)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// newBenchConn prepares a connection that POSTs body to server+path,
// again and again.
func newBenchConn(server, path string, body []byte, cfg *tls.Config) (*benchConn, error) {
	return prepareBenchConn(server, path, [][]byte{body}, cfg)
}

// newBenchConnBodies prepares a connection that POSTs bodies in turn to
// server+path, each once: after the last it is spent (a load run ends
// then), so that no request is ever sent twice.
func newBenchConnBodies(server, path string, bodies [][]byte, cfg *tls.Config) (*benchConn, error) {
	c, err := prepareBenchConn(server, path, bodies, cfg)
	if err == nil {
		c.once = true
	}
	return c, err
}

func prepareBenchConn(server, path string, bodies [][]byte, cfg *tls.Config) (*benchConn, error) {
	u, err := url.Parse(server)
	if err != nil {
		return nil, err
	}
	if len(bodies) == 0 {
		return nil, fmt.Errorf("bench: no request body")
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	c := &benchConn{addr: addr, cfg: cfg}
	for _, body := range bodies {
		head := "POST " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nContent-Type: application/json\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\n\r\n"
		c.reqs = append(c.reqs, append([]byte(head), body...))
	}
	return c, nil
}

// spent reports whether every request of a connection that sends each
// once has been sent.
func (c *benchConn) spent() bool { return c.once && c.sent >= len(c.reqs) }

// do sends the request once and returns the answer's status and body (valid
// until the next call). A broken connection is redialled on the next call.
func (c *benchConn) do(ctx context.Context) (int, []byte, error) {
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			return 0, nil, err
		}
	}
	status, err := c.roundTrip()
	if err != nil {
		c.close()
		return 0, nil, err
	}
	return status, c.body.Bytes(), nil
}

func (c *benchConn) dial(ctx context.Context) error {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: c.cfg}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return fmt.Errorf("bench: dial: %w", err)
	}
	c.conn = conn.(*tls.Conn)
	c.lr = &readLimit{r: c.conn}
	c.br = bufio.NewReaderSize(c.lr, 16<<10)
	return nil
}

func (c *benchConn) roundTrip() (int, error) {
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := c.reqs[c.sent%len(c.reqs)]
	c.sent++
	if _, err := c.conn.Write(req); err != nil {
		return 0, fmt.Errorf("bench: write: %w", err)
	}
	// The header within maxBenchHeader bytes read (beyond what was read
	// with the answer before), the body within maxBenchBody: a server
	// that sends more fails the request, never the load generator.
	c.lr.n = maxBenchHeader
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, fmt.Errorf("bench: read answer: %w", err)
	}
	c.lr.n = math.MaxInt64
	c.body.Reset()
	_, err = c.body.ReadFrom(io.LimitReader(resp.Body, maxBenchBody+1))
	resp.Body.Close()
	if err == nil && c.body.Len() > maxBenchBody {
		// The rest is still on the connection: it is closed (by do).
		err = fmt.Errorf("the answer's body is longer than %d bytes", maxBenchBody)
	}
	if err != nil {
		return 0, fmt.Errorf("bench: read answer: %w", err)
	}
	if resp.Close {
		c.close()
	}
	return resp.StatusCode, nil
}

func (c *benchConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}
