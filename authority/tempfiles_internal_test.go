package authority

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"mandate.dev/mandate/credfile"
)

// Temporary files a crash left where the authority writes its own files
// (the store, the admin credential, the audit keys), parts of keys among
// them, are gone after the next start, whatever their age.
func TestStartRemovesTemporaryFilesACrashLeft(t *testing.T) {
	dir := t.TempDir()
	first, stop := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dir })
	stop()
	first.Close()
	auditKey, _ := AuditPaths(dir)
	left := []string{
		filepath.Join(dir, ".tmp-mandate.db-42"),
		filepath.Join(filepath.Dir(AdminPaths(dir).Key), ".tmp-svid.key-123"),
		filepath.Join(filepath.Dir(auditKey), ".tmp-log.key.new-456"),
		filepath.Join(filepath.Dir(auditKey), ".tmp-log.vkey-789"),
	}
	for _, p := range left {
		if err := os.WriteFile(p, []byte("part of a key"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kept := filepath.Join(dir, "admin", "notes.txt")
	if err := os.WriteFile(kept, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dir })
	for _, p := range left {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after a start: %v, want it removed", filepath.Base(p), err)
		}
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("a file of another name: %v, want it kept", err)
	}
}

// The maintenance loop looks at the admin credential again before half
// its life has passed: a minute at most, sooner for one the CA capped at
// its own expiry near a rotation, and at least a second.
func TestAdminRefreshWait(t *testing.T) {
	clock := &testClock{now: time.Now().Truncate(time.Second)} // as certificates say it
	dir := t.TempDir()
	a := &Authority{cfg: Config{DataDir: dir}, now: clock.Now}
	if got := a.adminRefreshWait(); got != time.Minute {
		t.Errorf("no credential: %s, want a minute", got)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name              string
		notBefore, expiry time.Duration // from now
		want              time.Duration
	}{
		{"twelve hours", 0, 12 * time.Hour, time.Minute},
		{"a minute, capped at the CA's expiry", 0, time.Minute, 30 * time.Second},
		{"past half its life", -50 * time.Second, 10 * time.Second, time.Second},
	} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: clock.Now().Add(tc.notBefore), NotAfter: clock.Now().Add(tc.expiry)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		p := AdminPaths(dir)
		if err := os.MkdirAll(filepath.Dir(p.Cert), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p.Cert, credfile.EncodeCertsPEM([]*x509.Certificate{cert}), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := a.adminRefreshWait(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// The published verifier key (audit/log.vkey, audit verify's default key
// on the host) is only this user's to change: one left writable by
// others, or replaced by a link, is written anew at the next start, as
// the signing key says.
func TestStartRewritesAVerifierKeyOthersMayChange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, vkey string)
	}{
		{"writable by others", func(t *testing.T, vkey string) {
			if err := os.Chmod(vkey, 0o666); err != nil {
				t.Fatal(err)
			}
		}},
		{"a link to another file", func(t *testing.T, vkey string) {
			other := filepath.Join(t.TempDir(), "elsewhere.vkey")
			b, err := os.ReadFile(vkey)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(other, b, 0o666); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(vkey); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(other, vkey); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first, stop := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dir })
			want := first.AuditVerifierKey() + "\n"
			stop()
			first.Close()
			_, vkey := AuditPaths(dir)
			tc.tamper(t, vkey)
			runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dir })
			fi, err := os.Lstat(vkey)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
				t.Errorf("log.vkey after a start: %v, want a file of mode 0644", fi.Mode())
			}
			if b, err := os.ReadFile(vkey); err != nil || string(b) != want {
				t.Errorf("log.vkey after a start = %q, %v; want %q", b, err, want)
			}
		})
	}
}
