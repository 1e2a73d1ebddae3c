package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/credfile"
)

// countingListener is an authority that answers nothing: it counts the
// connections made to it and closes them.
func countingListener(t *testing.T) (url string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	return "https://" + ln.Addr().String(), conns
}

// A command that writes its answer to --out checks, before it asks the
// authority anything, that it can write there: an SVID, a JWT-SVID or a
// delegation issued (and logged) and then not written is lost. The check
// leaves nothing behind where it looked.
func TestCLIOutCheckedBeforeTheAuthorityIsAsked(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cred := selfSigned(t, "spiffe://mandate.localhost/agent/a", time.Now().Add(-time.Minute), time.Now().Add(time.Hour), true)
	creds := filepath.Join(dir, "creds")
	if err := credfile.Write(credfile.In(creds), []*x509.Certificate{cred.cert}, cred.key, []*x509.Certificate{cred.cert}); err != nil {
		t.Fatal(err)
	}
	_, vkey, err := note.GenerateKey(rand.Reader, "mandate.localhost/audit")
	if err != nil {
		t.Fatal(err)
	}
	aFile := filepath.Join(dir, "a-file")
	if err := os.WriteFile(aFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(dir, "shared") // group and others may write in it
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "out")
	if err := os.Mkdir(good, 0o700); err != nil {
		t.Fatal(err)
	}

	commands := []struct {
		name string
		args func(server, out string) []string
		file bool // --out names a file, else a credential directory
	}{
		{"svid jwt", func(s, o string) []string {
			return []string{"svid", "jwt", "--creds", creds, "--audience", "x", "--server", s, "--out", o}
		}, true},
		{"delegate request", func(s, o string) []string {
			return []string{"delegate", "request", "--creds", creds, "--delegatee", "spiffe://mandate.localhost/agent/b", "--scope", "s", "--principal", "p", "--server", s, "--out", o}
		}, true},
		{"audit prove", func(s, o string) []string {
			return []string{"audit", "prove", "1", "--creds", creds, "--vkey", vkey, "--server", s, "--out", o}
		}, true},
		{"svid x509", func(s, o string) []string {
			return []string{"svid", "x509", "--spiffe-id", "spiffe://mandate.localhost/agent/a", "--creds", creds, "--server", s, "--out", o}
		}, false},
		{"node attest", func(s, o string) []string {
			return []string{"node", "attest", "--tpm", "simulator", "--ek", "ecc", "--bundle", filepath.Join(creds, "bundle.pem"), "--server", s, "--out", o}
		}, false},
	}
	for _, cmd := range commands {
		// Where nothing can be written: a directory missing (a credential
		// directory is made, with its parents), a path through a file, a
		// file that is a directory, a credential directory others may
		// write in.
		unwritable := []string{filepath.Join(aFile, "x"), filepath.Join(aFile, "y", "x")}
		if cmd.file {
			unwritable = append(unwritable, filepath.Join(dir, "no-such-dir", "x"), good)
		} else {
			unwritable = append(unwritable, shared)
		}
		for _, out := range unwritable {
			t.Run(cmd.name+" "+strings.TrimPrefix(out, dir), func(t *testing.T) {
				url, conns := countingListener(t)
				err := run(context.Background(), cmd.args(url, out), io.Discard, io.Discard)
				if err == nil || !strings.Contains(err.Error(), "--out "+out) {
					t.Errorf("mandate %s --out %s = %v, want it refused naming --out", cmd.name, out, err)
				}
				if n := conns.Load(); n != 0 {
					t.Errorf("mandate %s --out %s asked the authority (%d connections) before finding it cannot write there", cmd.name, out, n)
				}
			})
		}
		// Where it can write, it asks, and leaves nothing of its check.
		t.Run(cmd.name+" writable", func(t *testing.T) {
			url, conns := countingListener(t)
			out := filepath.Join(good, "tok")
			if !cmd.file {
				out = filepath.Join(good, "cred")
			}
			err := run(context.Background(), cmd.args(url, out), io.Discard, io.Discard)
			if err == nil || strings.Contains(err.Error(), "--out") || conns.Load() == 0 {
				t.Errorf("mandate %s --out %s = %v after %d connections, want the authority asked (and unreachable)", cmd.name, out, err, conns.Load())
			}
			entries, err := os.ReadDir(good)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if cmd.file || e.Name() != "cred" {
					t.Errorf("%s left %s in --out's directory", cmd.name, e.Name())
				}
			}
			os.RemoveAll(filepath.Join(good, "cred"))
		})
	}
}
