package main

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fdLimitEnv makes TestServeWithFewFileDescriptorsHelper run: as a child
// process, a serve that may open only a few more files once it serves.
const fdLimitEnv = "MANDATE_TEST_SERVE_FD_LIMIT"

// TestServeOutOfFileDescriptorsIsLogged: a server that can accept no
// connection (the process is out of file descriptors) says so in its log
// at the default level, while a connection that closes before its TLS
// handshake (a port scan, a health check over plain TCP), which anyone
// can cause, stays out of it.
func TestServeOutOfFileDescriptorsIsLogged(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts the open files in /proc/self/fd")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeWithFewFileDescriptorsHelper$")
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

// TestServeWithFewFileDescriptorsHelper is the child process of
// TestServeOutOfFileDescriptorsIsLogged: serve, then a limit of open
// files a few above those it holds.
func TestServeWithFewFileDescriptorsHelper(t *testing.T) {
	dataDir := os.Getenv(fdLimitEnv)
	if dataDir == "" {
		t.Skip("run by TestServeOutOfFileDescriptorsIsLogged")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, &out, os.Stderr)
	}()
	url := waitServing(t, &out, done)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = uint64(len(fds) + 4)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("Mandate is serving on " + url + "\nfd limit set\n")
	<-done
}
