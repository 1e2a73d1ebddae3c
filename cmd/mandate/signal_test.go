package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeSecondSignalStopsAtOnce: a stop (SIGTERM) waits for the
// requests in progress, here one whose body never comes; a second signal
// meanwhile ends the process at once, as an operator who asks twice
// expects.
func TestServeSecondSignalStopsAtOnce(t *testing.T) {
	dir, bin := buildMandate(t)
	dataDir, addr := filepath.Join(dir, "data"), freeAddr(t)
	cmd, _, stderr := startServeProcess(t, bin, dataDir, addr, true)
	stopping, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		logs, said := bufio.NewScanner(stderr), false
		for logs.Scan() {
			if !said && strings.Contains(logs.Text(), "stopping: finishing the requests in progress") {
				said = true
				close(stopping)
			}
		}
	}()
	conn := dialServe(t, dataDir, addr)
	// The headers and the start of a body that never ends: the server
	// reads it until http.read_timeout.
	if _, err := fmt.Fprintf(conn, "POST /v1/nodes/join HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", addr); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopping:
	case <-ended:
		t.Fatal("serve ended its log before it said it was stopping")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("serve after a stop and a second interrupt: %v; want ended by the interrupt", cmd.ProcessState)
	}
}

// TestServeStopsAsAskedWithItsLogGone: a server whose log's reader has
// gone (a closed pipe, as when Ctrl-C ends "serve | tee" with it) still
// stops as asked on SIGTERM: the request in progress is answered and the
// exit status is 0, not an end by SIGPIPE at the first line it logs.
func TestServeStopsAsAskedWithItsLogGone(t *testing.T) {
	dir, bin := buildMandate(t)
	dataDir, addr := filepath.Join(dir, "data"), freeAddr(t)
	cmd, _, stderr := startServeProcess(t, bin, dataDir, addr, true)
	if err := stderr.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	conn := dialServe(t, dataDir, addr)
	// The request is in progress once its handler reads the body: the
	// server then asks for it (100 Continue).
	body := `{"token": "not-a-token"}`
	if _, err := fmt.Fprintf(conn, "POST /v1/nodes/join HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", addr, len(body)); err != nil {
		t.Fatal(err)
	}
	answers := bufio.NewReader(conn)
	if cont, err := http.ReadResponse(answers, nil); err != nil || cont.StatusCode != http.StatusContinue {
		t.Fatalf("the server did not ask for the body: %v %v", cont, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The stop has begun once the listener refuses connections.
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := io.WriteString(conn, body); err != nil {
		t.Errorf("the body of the request in progress: %v", err)
	} else if resp, err := http.ReadResponse(answers, nil); err != nil {
		t.Errorf("the request in progress was not answered: %v", err)
	} else {
		resp.Body.Close()
	}
	_ = cmd.Wait()
	if !cmd.ProcessState.Success() {
		t.Errorf("serve stopped by SIGTERM with its log gone: %v; want exit status 0", cmd.ProcessState)
	}
}

// dialServe is a TLS connection to the authority at addr whose data
// directory is dataDir, trusting its bundle; closed when the test ends.
func dialServe(t *testing.T, dataDir, addr string) *tls.Conn {
	t.Helper()
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(dataDir, "admin", "bundle.pem"))
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("the authority's bundle: %v", err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
