package main

import (
	"bytes"
	"context"
	"io"
	"net"
	neturl "net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/credfile"
)

// heldProxy forwards TCP connections to upstream, each only once release
// is closed; arrived is closed when the first connection comes.
func heldProxy(t *testing.T, upstream string) (addr string, arrived, release chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	arrived, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	closed := false
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns { // the clients' idle connections among them
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				once.Do(func() { close(arrived) })
				<-release
				u, err := net.Dial("tcp", upstream)
				if err != nil {
					return
				}
				defer u.Close()
				track(u)
				go func() { _, _ = io.Copy(u, c); u.Close() }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().String(), arrived, release
}

// heldJoin starts node join with token into out, asking the authority
// at url through a proxy that holds the join's request back: it returns
// once the request has arrived there. release lets it on; done then
// gives the join's error, and stdout what it printed.
func heldJoin(t *testing.T, url, token, out string) (stdout *bytes.Buffer, done <-chan error, release func()) {
	t.Helper()
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	held, arrived, rel := heldProxy(t, u.Host)
	stdout = new(bytes.Buffer)
	ended := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ended <- run(ctx, []string{"node", "join", "--server", "https://" + held, "--bundle", "mandate-data/admin/bundle.pem",
			"--token", strings.TrimSpace(token), "--out", out, "--quiet"}, stdout, io.Discard)
	}()
	select {
	case <-arrived:
	case err := <-ended:
		t.Fatalf("the join ended before it asked the authority: %v", err)
	}
	return stdout, ended, func() { close(rel) }
}

// heldIn is the SPIFFE ID of the credential in out.
func heldIn(t *testing.T, out string) string {
	t.Helper()
	chain, _, _, err := credfile.Load(credfile.In(out))
	if err != nil {
		t.Fatalf("the credential in --out: %v", err)
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// Two joins into one --out at once (each with its own token): the second
// is refused while the first runs, rather than both passing the check of
// --out before either wrote, and the later write leaving a credential
// other than the one the earlier join reported, its key gone.
func TestNodeJoinsIntoOneOutAtOnce(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	tokens := [2]string{joinToken(t, url, dir), joinToken(t, url, dir)}
	out := filepath.Join(dir, "node")
	// The first join asks the authority (its key written in --out),
	// and its answer is held back...
	firstOut, firstDone, release := heldJoin(t, url, tokens[0], out)
	// ...while the second runs, from start to end.
	secondOut, secondErr := cli(t, url, dir, "node", "join", "--bundle", "mandate-data/admin/bundle.pem",
		"--token", tokens[1], "--out", out, "--quiet")
	release()
	firstErr := <-firstDone

	onDisk := heldIn(t, out)
	for _, j := range []struct {
		name string
		err  error
		out  string
	}{{"first", firstErr, firstOut.String()}, {"second", secondErr, secondOut}} {
		if id := strings.TrimSpace(j.out); j.err == nil && id != onDisk {
			t.Errorf("the %s join reported %s, but --out holds the credential of %s: the %s node's key is lost", j.name, id, onDisk, j.name)
		}
	}
	if firstErr != nil {
		t.Errorf("the first join = %v", firstErr)
	}
	if secondErr == nil || !strings.Contains(secondErr.Error(), "another command is writing") {
		t.Errorf("the second join, while the first runs = %v, want it refused", secondErr)
	}
}

// A TPM node attested into the --out of a join under way (the join's
// answer held back): the attestation is refused, rather than written and
// then replaced by the join's credential, its key gone.
func TestNodeAttestWhileAJoinRunsInItsOut(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	out := filepath.Join(dir, "node")
	ek, err := cli(t, "", dir, "node", "ek", "--tpm", "simulator", "--ek", "ecc", "--out", out, "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	profile, err := cli(t, "", dir, "node", "pcrs", "--tpm", "simulator", "--out", out, "--pcrs", "0-7", "--profile", "edge-v1")
	if err != nil {
		t.Fatal(err)
	}
	url := serveTrustingTPM(t, dir, strings.TrimSpace(ek), profile)
	joinOut, joinDone, release := heldJoin(t, url, joinToken(t, url, dir), out)
	attested, attestErr := cli(t, url, dir, "node", "attest", "--tpm", "simulator", "--ek", "ecc", "--out", out, "--quiet")
	release()
	joinErr := <-joinDone

	onDisk := heldIn(t, out)
	if id := strings.TrimSpace(attested); attestErr == nil && id != onDisk {
		t.Errorf("node attest reported %s, but --out holds the credential of %s: its key is lost", id, onDisk)
	}
	if id := strings.TrimSpace(joinOut.String()); joinErr != nil || id != onDisk {
		t.Errorf("the join = %q, %v; --out holds the credential of %s", id, joinErr, onDisk)
	}
	if attestErr == nil || !strings.Contains(attestErr.Error(), "another command is writing") {
		t.Errorf("node attest while a join runs in its --out = %v, want it refused", attestErr)
	}
}

// An agent's SVID fetched into the --out of a join under way (the join's
// answer held back): refused, rather than written and then replaced by
// the join's credential, its key gone.
func TestSVIDX509WhileAJoinRunsInItsOut(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	nodeID := joinNode(t, url, dir, "host")
	const agent = "spiffe://mandate.localhost/agent/a1"
	mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", agent, "--node-id", nodeID)
	out := filepath.Join(dir, "shared")
	joinOut, joinDone, release := heldJoin(t, url, joinToken(t, url, dir), out)
	_, svidErr := cli(t, url, dir, "svid", "x509", "--spiffe-id", agent, "--creds", "host", "--out", out)
	release()
	joinErr := <-joinDone

	onDisk := heldIn(t, out)
	if svidErr == nil && onDisk != agent {
		t.Errorf("svid x509 reported %s, but --out holds the credential of %s: its key is lost", agent, onDisk)
	}
	if id := strings.TrimSpace(joinOut.String()); joinErr != nil || id != onDisk {
		t.Errorf("the join = %q, %v; --out holds the credential of %s", id, joinErr, onDisk)
	}
	if svidErr == nil || !strings.Contains(svidErr.Error(), "another command is writing") {
		t.Errorf("svid x509 while a join runs in its --out = %v, want it refused", svidErr)
	}
}
