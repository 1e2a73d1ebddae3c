//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
)

// notifyListener is the service manager's end of NOTIFY_SOCKET: every
// datagram it receives, as its assignments.
type notifyListener struct {
	msgs chan map[string]string
}

func listenNotify(t *testing.T, name string) *notifyListener {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l := &notifyListener{msgs: make(chan map[string]string, 1024)}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(l.msgs)
				return
			}
			m := map[string]string{}
			for _, line := range strings.Split(strings.TrimSuffix(string(buf[:n]), "\n"), "\n") {
				k, v, _ := strings.Cut(line, "=")
				m[k] = v
			}
			l.msgs <- m
		}
	}()
	return l
}

// next is the next message that has key, after any other (WATCHDOG=1
// among them, which seen counts).
func (l *notifyListener) next(t *testing.T, key string, seen map[string]int) map[string]string {
	t.Helper()
	deadline := time.After(60 * time.Second) // not to hang: never reached when it works
	for {
		select {
		case m, ok := <-l.msgs:
			if !ok {
				t.Fatalf("the notify socket closed before %s=", key)
			}
			for k := range m {
				seen[k]++
			}
			if _, ok := m[key]; ok {
				return m
			}
			if _, ok := m["STOPPING"]; ok {
				t.Fatalf("STOPPING=1 (%v) came before %s=", m, key)
			}
		case <-deadline:
			t.Fatalf("no %s= notification came", key)
		}
	}
}

// startNotifiedServe runs serve in-process with the policies in pdir
// and returns its URL once it printed it, its data directory, its
// log, a stop and what it returned.
func startNotifiedServe(t *testing.T, dir string) (url, pdir string, logs *syncBuffer, stop func() error) {
	t.Helper()
	pdir = filepath.Join(dir, "policies")
	if _, err := cli(t, "", dir, "policy", "export", "--dir", pdir); err != nil {
		t.Fatalf("policy export: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out, logs := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	args := []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "mandate-data"), "--policy-dir", pdir}
	go func() { done <- run(ctx, args, out, logs) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		if m := servingRE.FindStringSubmatch(out.String()); m != nil {
			return m[1], pdir, logs, stop
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v; log:\n%s", err, logs)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("serve did not start; log:\n%s", logs)
	return
}

// healthz is the status code of url's /healthz, trusting the bundle of
// the data directory in dir.
func healthz(t *testing.T, url, dir string) int {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(dir, "mandate-data", "admin", "bundle.pem"))
	roots := x509.NewCertPool()
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("the authority's bundle: %v", err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// monotonicNow is CLOCK_MONOTONIC in µs, as the test reads it.
func monotonicNow(t *testing.T) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Sec)*1_000_000 + uint64(ts.Nsec)/1_000
}

// TestServeNotifiesServiceManager: under systemd (Type=notify or
// notify-reload) serve says READY=1 once it answers, RELOADING=1 with
// the monotonic time and then READY=1 around a SIGHUP policy reload,
// saying whether the reload was refused, STOPPING=1 when a stop
// begins, and WATCHDOG=1 when a watchdog is asked for; NOTIFY_SOCKET is
// no longer in its environment once read, for no child to inherit it.
func TestServeNotifiesServiceManager(t *testing.T) {
	for _, tc := range []struct {
		name   string
		socket func(dir string) string
		// watchdogPID is WATCHDOG_PID ("" for no watchdog): WATCHDOG=1
		// is sent only when it names this process.
		watchdogPID string
	}{
		{"socket path", func(dir string) string { return filepath.Join(dir, "notify") }, ""},
		{"abstract socket, with a watchdog", func(string) string {
			return fmt.Sprintf("@mandate-test-notify-%d-%d", os.Getpid(), time.Now().UnixNano())
		}, strconv.Itoa(os.Getpid())},
		{"another process's watchdog", func(dir string) string { return filepath.Join(dir, "notify") }, "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			socket := tc.socket(dir)
			l := listenNotify(t, socket)
			t.Setenv("NOTIFY_SOCKET", socket)
			if tc.watchdogPID != "" {
				t.Setenv("WATCHDOG_USEC", "100000")
				t.Setenv("WATCHDOG_PID", tc.watchdogPID)
			}
			url, pdir, logs, stop := startNotifiedServe(t, dir)
			seen := map[string]int{}

			ready := l.next(t, "READY", seen)
			if ready["READY"] != "1" || !strings.Contains(ready["STATUS"], "serving on "+url+",") {
				t.Errorf("the first READY message: %v; want READY=1 and a STATUS saying where it serves", ready)
			}
			if code := healthz(t, url, dir); code != http.StatusOK {
				t.Errorf("/healthz once READY=1 was sent: %d, want 200", code)
			}
			for _, v := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
				if val, ok := os.LookupEnv(v); ok {
					t.Errorf("%s=%q is still in the environment once serve runs: a child would inherit it", v, val)
				}
			}

			reload := func(want string) {
				t.Helper()
				before := monotonicNow(t)
				if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
				m := l.next(t, "RELOADING", seen)
				after := monotonicNow(t)
				if us, err := strconv.ParseUint(m["MONOTONIC_USEC"], 10, 64); m["RELOADING"] != "1" || err != nil || us < before || us > after {
					t.Errorf("the reload's message: %v; want RELOADING=1 and a MONOTONIC_USEC between %d and %d (CLOCK_MONOTONIC when it was sent)", m, before, after)
				}
				if m := l.next(t, "READY", seen); m["READY"] != "1" || !strings.Contains(m["STATUS"], want) {
					t.Errorf("after a reload: %v; want READY=1 and a STATUS saying %q", m, want)
				}
			}
			reload("policies reloaded")
			// A policy that does not compile: the reload is refused, and
			// the authority serves on with the revision it had.
			if err := os.WriteFile(filepath.Join(pdir, "broken.rego"), []byte("package mandate.broken\n\nallow if {\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			reload("policy reload refused")

			mine := tc.watchdogPID == strconv.Itoa(os.Getpid())
			if mine {
				l.next(t, "WATCHDOG", seen)
			}
			if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("serve stopped with %v; log:\n%s", err, logs)
			}
			if m := l.next(t, "STOPPING", seen); m["STOPPING"] != "1" {
				t.Errorf("the stop's message: %v; want STOPPING=1", m)
			}
			if !mine && seen["WATCHDOG"] > 0 {
				t.Errorf("%d WATCHDOG=1 sent with WATCHDOG_PID=%q, not this process's", seen["WATCHDOG"], tc.watchdogPID)
			}
			if strings.Contains(logs.String(), "cannot notify") {
				t.Errorf("serve could not notify:\n%s", logs)
			}
		})
	}
}

// TestServeNotifyFailureOnlyWarns: a NOTIFY_SOCKET nobody listens at
// does not stop the authority: it serves, reloads and stops as ever,
// and says once that it cannot notify.
func TestServeNotifyFailureOnlyWarns(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "nobody-listens"))
	url, _, logs, stop := startNotifiedServe(t, dir)
	servingLine(t, logs, make(chan error))
	if code := healthz(t, url, dir); code != http.StatusOK {
		t.Errorf("/healthz: %d, want 200", code)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(logs.String(), "msg=\"policy reloaded\""); {
		if time.Now().After(deadline) {
			t.Fatalf("no reload after SIGHUP; log:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("serve stopped with %v; log:\n%s", err, logs)
	}
	if n := strings.Count(logs.String(), "cannot notify the service manager"); n != 1 || !strings.Contains(logs.String(), "level=WARN msg=\"cannot notify the service manager") {
		t.Errorf("serve said %d times at warning level that it cannot notify, want once; log:\n%s", n, logs)
	}
}

// TestNodeRunNotifiesServiceManager: under systemd (Type=notify) node
// run says READY=1 once the node holds a valid credential, with a
// STATUS naming the node and the Workload API's socket, which by then
// answers the workloads; WATCHDOG=1 when a watchdog is asked for; and
// STOPPING=1 when it stops, saying whether it was asked to or the
// authority refuses the node for good. NOTIFY_SOCKET is no longer in its
// environment once read.
func TestNodeRunNotifiesServiceManager(t *testing.T) {
	dir, url, nodeID := serveSyncedNode(t) // a ban is heard at once
	mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/planner", "--node-id", nodeID)
	sock := filepath.Join(dir, "workload.sock")
	serving := []string{"--workload-api", sock, "--workload", "uid:" + strconv.Itoa(os.Getuid()) + "=spiffe://mandate.localhost/agent/planner"}

	// start runs node run with args under a NOTIFY_SOCKET (and a
	// watchdog, if asked), and waits for its READY=1.
	start := func(t *testing.T, watchdog bool, args ...string) (l *notifyListener, seen map[string]int, ready map[string]string, stop func() error, done <-chan error, logs *syncBuffer) {
		t.Helper()
		socket := filepath.Join(t.TempDir(), "notify")
		l = listenNotify(t, socket)
		t.Setenv("NOTIFY_SOCKET", socket)
		if watchdog {
			t.Setenv("WATCHDOG_USEC", "100000")
			t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		t.Cleanup(cancel)
		logs, done = nodeRun(ctx, args...)
		seen = map[string]int{}
		ready = l.next(t, "READY", seen)
		return l, seen, ready, func() error { cancel(); return <-done }, done, logs
	}

	for _, tc := range []struct {
		name     string
		args     []string
		watchdog bool
		status   string
	}{
		{"with the Workload API and a watchdog", serving, true, "node " + nodeID + " holds a valid credential; serving the SPIFFE Workload API on " + sock},
		{"without the Workload API", nil, false, "node " + nodeID + " holds a valid credential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, seen, ready, stop, _, logs := start(t, tc.watchdog, tc.args...)
			if ready["READY"] != "1" || ready["STATUS"] != tc.status {
				t.Errorf("the READY message: %v; want READY=1 and STATUS=%s", ready, tc.status)
			}
			if tc.args != nil {
				// Listening by then: a workload started after node run
				// connects, and gets its SVID, at its first try.
				c, err := net.Dial("unix", sock)
				if err != nil {
					t.Fatalf("the Workload API socket once READY=1 was sent: %v", err)
				}
				c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+sock))
				if err != nil || svid.ID.String() != "spiffe://mandate.localhost/agent/planner" {
					t.Errorf("FetchX509SVID once READY=1 was sent = %v, %v; want the planner's", svid, err)
				}
			}
			for _, v := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
				if val, ok := os.LookupEnv(v); ok {
					t.Errorf("%s=%q is still in the environment once node run runs", v, val)
				}
			}
			if tc.watchdog {
				l.next(t, "WATCHDOG", seen)
			}
			if err := stop(); err != nil {
				t.Fatalf("node run = %v, want it stopped cleanly; log:\n%s", err, logs)
			}
			if m := l.next(t, "STOPPING", seen); m["STOPPING"] != "1" || m["STATUS"] != "stopping, as asked" {
				t.Errorf("the stop's message: %v; want STOPPING=1 and STATUS=stopping, as asked", m)
			}
			if !tc.watchdog && seen["WATCHDOG"] > 0 {
				t.Errorf("%d WATCHDOG=1 sent without a watchdog asked for", seen["WATCHDOG"])
			}
			if strings.Contains(logs.String(), "cannot notify") {
				t.Errorf("node run could not notify:\n%s", logs)
			}
		})
	}

	t.Run("the node banned", func(t *testing.T) {
		l, seen, _, _, done, logs := start(t, false, serving...)
		mustCLI(t, url, dir, "admin", "node", "ban", nodeID, "--reason", "compromised")
		m := l.next(t, "STOPPING", seen)
		if want := "stopping: the authority refuses this node for good (node-banned)"; m["STOPPING"] != "1" || !strings.HasPrefix(m["STATUS"], want) {
			t.Errorf("the stop's message: %v; want STOPPING=1 and a STATUS starting %q", m, want)
		}
		if err := <-done; err == nil || !strings.Contains(err.Error(), "node-banned") {
			t.Errorf("node run of a node banned = %v, want it stopped saying node-banned; log:\n%s", err, logs)
		}
		// Banned at its start: it is never ready.
		socket := filepath.Join(t.TempDir(), "notify")
		l = listenNotify(t, socket)
		t.Setenv("NOTIFY_SOCKET", socket)
		if err := run(context.Background(), []string{"node", "run"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "node-banned") {
			t.Errorf("node run of a node banned = %v, want it refused saying node-banned", err)
		}
		seen = map[string]int{}
		if m := l.next(t, "STOPPING", seen); seen["READY"] > 0 || !strings.Contains(m["STATUS"], "(node-banned)") {
			t.Errorf("node run of a node banned at its start sent %v (READY=1 %d times), want STOPPING=1 saying node-banned and no READY=1", m, seen["READY"])
		}
	})
}

// TestNodeRunTPMNotifiesServiceManager: node run --tpm is ready once
// its first attestation is done, the Workload API answering by then.
func TestNodeRunTPMNotifiesServiceManager(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	url := serveSensorOnTPM(t, dir)
	ek := strings.TrimSpace(mustCLI(t, "", dir, "node", "ek", "--tpm", "simulator", "--ek", "ecc", "--quiet"))
	t.Setenv("MANDATE_SERVER", url)
	socket := filepath.Join(dir, "notify")
	l := listenNotify(t, socket)
	t.Setenv("NOTIFY_SOCKET", socket)
	sock := filepath.Join(dir, "workload.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logs, done := nodeRun(ctx, "--tpm", "simulator", "--ek", "ecc", "--workload-api", sock,
		"--workload", "uid:"+strconv.Itoa(os.Getuid())+"=spiffe://mandate.localhost/agent/sensor")
	seen := map[string]int{}
	m := l.next(t, "READY", seen)
	if want := "node spiffe://mandate.localhost/node/tpm/" + ek + " holds a valid credential; serving the SPIFFE Workload API on " + sock; m["READY"] != "1" || m["STATUS"] != want {
		t.Errorf("the READY message: %v; want READY=1 and STATUS=%s", m, want)
	}
	if _, ok := tpmCredential("mandate-node"); !ok {
		t.Error("READY=1 sent before the node's credential was written")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the Workload API socket once READY=1 was sent: %v", err)
	}
	c.Close()
	// A workload asking as soon as the node is ready gets its SVID, not
	// the failure of a call made before the node was attested.
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil || svid.ID.String() != "spiffe://mandate.localhost/agent/sensor" {
		t.Errorf("FetchX509SVID once READY=1 was sent = %v, %v; want the sensor's", svid, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("node run --tpm = %v; log:\n%s", err, logs)
	}
	if m := l.next(t, "STOPPING", seen); m["STOPPING"] != "1" || m["STATUS"] != "stopping, as asked" {
		t.Errorf("the stop's message: %v; want STOPPING=1 and STATUS=stopping, as asked", m)
	}
}
