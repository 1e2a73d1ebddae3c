//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fdLimitEnv makes this test binary, run as a child process, a serve
// that may open only a few more files once it serves (see TestMain).
const fdLimitEnv = "MANDATE_TEST_SERVE_FD_LIMIT"

// TestMain runs the tests, or, in the child process of
// TestServeOutOfFileDescriptorsIsLogged, serveWithFewFileDescriptors.
func TestMain(m *testing.M) {
	if dataDir := os.Getenv(fdLimitEnv); dataDir != "" {
		if err := serveWithFewFileDescriptors(dataDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestServeOutOfFileDescriptorsIsLogged: a server that can accept no
// connection (the process is out of file descriptors) says so in its log
// at the default level, while a connection that closes before its TLS
// handshake (a port scan, a health check over plain TCP), which anyone
// can cause, stays out of it.
func TestServeOutOfFileDescriptorsIsLogged(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fdLimitEnv+"="+filepath.Join(dir, "mandate-data"))
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start; stderr:\n%s", errOut.String())
		}
		if m := servingRE.FindStringSubmatch(out.String()); m != nil && strings.Contains(out.String(), "fd limit set") {
			u, err := url.Parse(m[1])
			if err != nil {
				t.Fatal(err)
			}
			addr = u.Host
		}
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 64 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			break // the backlog is full
		}
		conns = append(conns, c)
	}
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(errOut.String(), "too many open files"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server ran out of file descriptors and its log (level info) does not say so:\n%s", errOut.String())
		}
	}
	for _, line := range strings.Split(errOut.String(), "\n") {
		if strings.Contains(line, "too many open files") && !strings.Contains(line, "level=ERROR") {
			t.Errorf("logged as %q, want level=ERROR", line)
		}
	}
	// The connections, closed before any handshake: nothing at info.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
	}
	time.Sleep(500 * time.Millisecond)
	if strings.Contains(errOut.String(), "TLS handshake error") {
		t.Errorf("failed TLS handshakes are logged at level info:\n%s", errOut.String())
	}
}

// serveWithFewFileDescriptors is the child process of
// TestServeOutOfFileDescriptorsIsLogged: serve, then a limit of open
// files a few above those it holds (counted in /proc/self/fd).
func serveWithFewFileDescriptors(dataDir string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, &out, os.Stderr)
	}()
	var url string
	for deadline := time.Now().Add(30 * time.Second); url == ""; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			return fmt.Errorf("serve ended before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("serve did not start")
		}
		if m := servingRE.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = uint64(len(fds) + 4)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	os.Stdout.WriteString("Mandate is serving on " + url + "\nfd limit set\n")
	return <-done
}
