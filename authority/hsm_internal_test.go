package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/ca/hsm"
	"mandate.dev/mandate/ca/hsm/hsmtest"
)

// With ca.pkcs11, the CA's and the JWT keys are made in the token and
// nowhere else: what the authority signs verifies with its bundle (an
// X509-SVID, a JWT-SVID, as go-spiffe checks them), every key the CA
// uses is in the token, none is in <data dir>/keys, and a restart finds
// them there. Started without the token, the authority refuses to
// start, and says to configure it, rather than make new keys.
func TestCAKeysInAPKCS11Token(t *testing.T) {
	token, pinFile := tokenWithPINFile(t)
	dataDir := t.TempDir()
	withToken := func(c *Config) {
		c.DataDir = dataDir
		c.CA.PKCS11 = PKCS11Config{Module: token.Module, TokenLabel: token.TokenLabel, PINFile: pinFile}
	}
	a, stop := runAuthorityWith(t, Options{}, withToken)
	if a.caKeys != nil || a.hsm == nil {
		t.Fatal("the CA's keys are not in the token")
	}
	if _, _, err := x509svid.Verify(mintX509SVID(t, a).Certificates, a); err != nil {
		t.Errorf("an X509-SVID does not verify with the bundle: %v", err)
	}
	tok, _, err := a.ca.SignJWT(t.Context(), "JWT", map[string]any{"sub": "spiffe://org-a.example/agent/x", "aud": []string{"https://api.example"}, "exp": time.Now().Add(time.Minute).Unix()}, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, a, []string{"https://api.example"}); err != nil {
		t.Errorf("a token the JWT key signed does not verify with the bundle: %v", err)
	}
	var ids []string
	if err := a.ca.Still(func(keyIDs []string) error { ids = keyIDs; return nil }); err != nil {
		t.Fatal(err)
	}
	other, err := hsm.Open(token)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if len(ids) < 2 {
		t.Fatalf("the CA uses %d keys, want an X.509 and a JWT key at least", len(ids))
	}
	for _, id := range ids {
		if _, err := other.GetKey(t.Context(), id); err != nil {
			t.Errorf("the CA's key %s is not in the token: %v", id, err)
		}
	}
	if ents, err := os.ReadDir(caKeyDir(dataDir)); err == nil && len(ents) > 0 || err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s holds %d files (%v), want no key on disk", caKeyDir(dataDir), len(ents), err)
	}
	if got := caKeyStores(t, a); got["pkcs11"] != len(ids) || len(got) != 1 {
		t.Errorf("the CA's status says its keys are in %v, want all %d in pkcs11", got, len(ids))
	}
	bundle := a.Bundle().X509Authorities()
	stop()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	a, stop = runAuthorityWith(t, Options{}, withToken)
	if got := a.Bundle().X509Authorities(); len(got) != len(bundle) || !got[0].Equal(bundle[0]) {
		t.Error("restarted, the authority has another X.509 authority: its keys were not found in the token")
	}
	stop()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	cfg := Config{TrustDomain: "org-a.example", DataDir: dataDir, Listen: "127.0.0.1:0"}
	cfg.SetDefaults()
	if b, err := New(context.Background(), cfg, Options{}); err == nil || !errors.Is(err, ca.ErrKeyNotFound) || !strings.Contains(err.Error(), "ca.pkcs11") {
		if b != nil {
			b.Close()
		}
		t.Errorf("started without the token that holds its keys: %v, want a refusal naming ca.pkcs11", err)
	}
}

// An authority that kept its keys in <data dir>/keys and is given a
// token (ca.pkcs11) goes on with the same CA: what it signed before
// verifies, its keys of keys/ sign until their authorities are
// replaced, and each new key is made in the token. Once the authorities
// of keys/ are gone, so are their files, and every key the CA uses is
// in the token. A backup meanwhile holds the files still used, and no
// key of the token.
func TestCAKeysMoveIntoAPKCS11Token(t *testing.T) {
	dataDir := t.TempDir()
	clock := &stepClock{now: time.Now()}
	token, short, withToken := shortLivedCA(t, dataDir)
	keyIDs := func(a *Authority) []string {
		var ids []string
		if err := a.ca.Still(func(keyIDs []string) error { ids = keyIDs; return nil }); err != nil {
			t.Fatal(err)
		}
		return ids
	}

	a, stop := runAuthorityWith(t, Options{Now: clock.Now}, short)
	before := mintX509SVID(t, a)
	onDisk := len(keyIDs(a))
	stop()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	var log lockedBuffer
	a, stop = runAuthorityWith(t, Options{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&log, nil))}, withToken)
	defer func() { stop(); a.Close() }()
	if got := a.CAKeysOnDisk(); got != onDisk || onDisk < 2 {
		t.Fatalf("with a token, %d of the CA's keys on disk, want the %d made there", got, onDisk)
	}
	if got := caKeyStores(t, a); got["keys_dir"] != onDisk || len(got) != 1 {
		t.Errorf("the CA's status says its keys are in %v, want %d in keys_dir", got, onDisk)
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), fmt.Sprintf("keys_on_disk=%d", onDisk)) {
		t.Errorf("the start did not warn of the keys on disk:\n%s", log.String())
	}
	if _, _, err := x509svid.Verify(before.Certificates, a); err != nil {
		t.Errorf("an X509-SVID issued before the token does not verify: %v", err)
	}
	if _, _, err := x509svid.Verify(mintX509SVID(t, a).Certificates, a); err != nil {
		t.Errorf("an X509-SVID issued with the token does not verify: %v", err)
	}
	b, err := a.MakeBackup(t.Context(), adminOf(t, a))
	if err != nil {
		t.Fatalf("a backup with keys on disk and in the token: %v", err)
	}
	inBackup := 0
	for _, f := range b.Files {
		if strings.HasPrefix(filepath.ToSlash(f.Path), "keys/") {
			inBackup++
		}
	}
	if inBackup != onDisk {
		t.Errorf("the backup holds %d key files, want the %d the CA uses", inBackup, onDisk)
	}

	// Three hours on: the authorities of keys/ expired, replaced by
	// ones whose keys are in the token.
	rotateThrough(t, a, clock, 18, 10*time.Minute)
	if got := a.CAKeysOnDisk(); got != 0 {
		t.Errorf("three hours on, %d of the CA's keys are on disk, want none", got)
	}
	if got := caKeyStores(t, a); got["pkcs11"] < 2 || len(got) != 1 {
		t.Errorf("three hours on, the CA's status says its keys are in %v, want all in pkcs11", got)
	}
	if ents, err := os.ReadDir(caKeyDir(dataDir)); err != nil || len(ents) != 0 {
		t.Errorf("%s holds %d files (%v), want the keys of authorities gone deleted", caKeyDir(dataDir), len(ents), err)
	}
	other, err := hsm.Open(token)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, id := range keyIDs(a) {
		if _, err := other.GetKey(t.Context(), id); err != nil {
			t.Errorf("the CA's key %s is not in the token: %v", id, err)
		}
	}
	if _, _, err := x509svid.Verify(mintX509SVID(t, a).Certificates, a, x509svid.WithTime(clock.Now())); err != nil {
		t.Errorf("an X509-SVID issued by the token's key does not verify: %v", err)
	}
}

// A PIN file others may read, or with no PIN, stops the authority before
// it creates anything; so does a wrong PIN, said without the PIN.
func TestPKCS11PINFile(t *testing.T) {
	token := hsmtest.Token(t, "mandate-ca")
	dir := t.TempDir()
	for _, tc := range []struct {
		name, pin string
		mode      os.FileMode
		want      string
	}{
		{"readable by others", token.PIN, 0o644, "pin_file"},
		{"empty", "\n", 0o600, "one line"},
		{"two lines", token.PIN + "\n" + token.PIN + "\n", 0o600, "one line"},
		{"a wrong PIN", "0000-wrong\n", 0o600, "ca.pkcs11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pinFile := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(pinFile, []byte(tc.pin), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(pinFile, tc.mode); err != nil {
				t.Fatal(err)
			}
			cfg := Config{TrustDomain: "org-a.example", DataDir: filepath.Join(dir, "data-"+strings.ReplaceAll(tc.name, " ", "-")), Listen: "127.0.0.1:0"}
			cfg.CA.PKCS11 = PKCS11Config{Module: token.Module, TokenLabel: token.TokenLabel, PINFile: pinFile}
			cfg.SetDefaults()
			a, err := New(context.Background(), cfg, Options{})
			if err == nil {
				a.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "0000-wrong") || strings.Contains(err.Error(), token.PIN) {
				t.Errorf("New = %v, want an error saying %q, without the PIN", err, tc.want)
			}
			if _, err := os.Stat(cfg.DataDir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the data directory was made (%v) though the token could not be opened", err)
			}
		})
	}
}

// A backup of an authority whose keys are in a token holds none of
// them. Once the CA has rotated on, and the keys of the authorities that
// were active at the backup have expired and been deleted from the
// token, a start on the restored backup replaces those authorities, as
// the rotation would have, rather than refuse: what the new ones sign
// verifies with the bundle.
func TestPKCS11RestoreOfABackupOlderThanItsKeys(t *testing.T) {
	token, pinFile := tokenWithPINFile(t)
	clock := &stepClock{now: time.Now()}
	withToken := func(c *Config) {
		c.CA.PKCS11 = PKCS11Config{Module: token.Module, TokenLabel: token.TokenLabel, PINFile: pinFile}
		c.CA.CATTL, c.CA.JWTKeyTTL, c.CA.X509SVIDTTL = Duration(time.Hour), Duration(time.Hour), Duration(20*time.Minute)
	}
	a, stop := runAuthorityWith(t, Options{Now: clock.Now}, withToken)
	b, err := a.MakeBackup(t.Context(), adminOf(t, a))
	if err != nil {
		t.Fatal(err)
	}
	atBackup := a.Bundle().X509Authorities()
	restore := func() Config {
		dir := t.TempDir()
		err := filepath.WalkDir(b.Dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(b.Dir, path)
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(dir, rel), 0o700)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, rel), data, 0o600)
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{TrustDomain: "org-a.example", DataDir: dir, Listen: "127.0.0.1:0"}
		withToken(&cfg)
		cfg.SetDefaults()
		return cfg
	}
	// Three hours on: the authorities of the backup expired, and their
	// keys were deleted from the token.
	rotateThrough(t, a, clock, 18, 10*time.Minute)
	stop()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := New(context.Background(), restore(), Options{Now: clock.Now})
	if err != nil {
		t.Fatalf("New on a backup whose expired authorities' keys are gone from the token: %v", err)
	}
	defer r.Close()
	_, chains, err := x509svid.Verify(mintX509SVID(t, r).Certificates, r, x509svid.WithTime(clock.Now()))
	if err != nil {
		t.Fatalf("an X509-SVID of the restored authority does not verify with its bundle: %v", err)
	}
	if root := chains[0][len(chains[0])-1]; slices.ContainsFunc(atBackup, root.Equal) {
		t.Error("the restored authority signs with an authority of the backup, which has expired")
	}
}

// tokenWithPINFile is a SoftHSM token for ca.pkcs11, and a file holding
// its PIN (0600).
func tokenWithPINFile(t *testing.T) (hsm.Config, string) {
	t.Helper()
	token := hsmtest.Token(t, "mandate-ca")
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(token.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return token, pinFile
}

// mintX509SVID is an X509-SVID of an agent, signed by a's active X.509 CA.
func mintX509SVID(t *testing.T, a *Authority) *ca.X509SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := a.ca.MintX509SVID(t.Context(), ca.X509Params{ID: spiffeid.RequireFromString("spiffe://org-a.example/agent/x"), PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

// stepClock is a clock a test moves on.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// rotateThrough moves clock on n times by step, a's CA rotating at each
// as its schedule would have it.
func rotateThrough(t *testing.T, a *Authority, clock *stepClock, n int, step time.Duration) {
	t.Helper()
	for range n {
		clock.mu.Lock()
		clock.now = clock.now.Add(step)
		clock.mu.Unlock()
		if _, err := a.ca.Rotate(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// caKeyStores counts the CA's authorities by where their keys are, as
// the CA's status (GET /v1/admin/ca) says.
func caKeyStores(t *testing.T, a *Authority) map[string]int {
	t.Helper()
	st, err := a.CAStatus(adminOf(t, a))
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, info := range st.(map[string]any)["authorities"].([]ca.AuthorityInfo) {
		n[info.KeyStore]++
	}
	return n
}

// An authority whose keys are in a token (all of them, or those made
// since it was given one), started without it (ca.pkcs11 left out) after
// its authorities expired, is refused as one whose authorities are valid
// is: it does not take the keys missing for keys deleted once they
// expired, nor replace its CA with keys made on disk.
func TestPKCS11TokenLeftOutAfterTheAuthoritiesExpired(t *testing.T) {
	for _, movedIn := range []bool{false, true} {
		t.Run(fmt.Sprintf("moved in %v", movedIn), func(t *testing.T) {
			dataDir := t.TempDir()
			clock := &stepClock{now: time.Now()}
			_, short, withToken := shortLivedCA(t, dataDir)
			if movedIn {
				a, stop := runAuthorityWith(t, Options{Now: clock.Now}, short)
				stop()
				if err := a.Close(); err != nil {
					t.Fatal(err)
				}
			}
			a, stop := runAuthorityWith(t, Options{Now: clock.Now}, withToken)
			rotateThrough(t, a, clock, 9, 10*time.Minute) // the active authorities' keys in the token
			if got := caKeyStores(t, a); got["pkcs11"] == 0 {
				t.Fatalf("no key in the token: %v", got)
			}
			stop()
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			clock.mu.Lock()
			clock.now = clock.now.Add(3 * time.Hour)
			clock.mu.Unlock()

			cfg := Config{TrustDomain: "org-a.example", Listen: "127.0.0.1:0"}
			short(&cfg)
			cfg.SetDefaults()
			if b, err := New(context.Background(), cfg, Options{Now: clock.Now}); !errors.Is(err, ca.ErrKeyNotFound) || !strings.Contains(err.Error(), "ca.pkcs11") {
				if b != nil {
					b.Close()
				}
				t.Errorf("started without the token that holds its keys, its authorities expired: %v, want a refusal naming ca.pkcs11", err)
			}
			a, stop = runAuthorityWith(t, Options{Now: clock.Now}, withToken)
			defer func() { stop(); a.Close() }()
			if got := caKeyStores(t, a); got["keys_dir"] != 0 {
				t.Errorf("started again with the token: keys in %v, want none on disk", got)
			}
		})
	}
}

// shortLivedCA configures an authority in dataDir whose X.509 CAs and JWT
// keys live an hour (short), and the same with its keys in a new token
// (withToken), and that token.
func shortLivedCA(t *testing.T, dataDir string) (token hsm.Config, short, withToken func(*Config)) {
	token, pinFile := tokenWithPINFile(t)
	short = func(c *Config) {
		c.DataDir = dataDir
		c.CA.CATTL, c.CA.JWTKeyTTL, c.CA.X509SVIDTTL = Duration(time.Hour), Duration(time.Hour), Duration(20*time.Minute)
	}
	withToken = func(c *Config) {
		short(c)
		c.CA.PKCS11 = PKCS11Config{Module: token.Module, TokenLabel: token.TokenLabel, PINFile: pinFile}
	}
	return token, short, withToken
}
