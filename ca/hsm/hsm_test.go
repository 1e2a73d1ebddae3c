package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/ca/hsm"
	"mandate.dev/mandate/ca/hsm/hsmtest"
)

// A key made in the token signs, is found again by its id once the
// token is opened anew (as after a restart), is made only once, and is
// gone once deleted.
func TestKeysInTheToken(t *testing.T) {
	cfg := hsmtest.Token(t, "mandate")
	ctx := context.Background()
	m, err := hsm.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("a certificate"))
	for _, tc := range []struct {
		id    string
		kt    ca.KeyType
		curve elliptic.Curve
	}{{"x509-0a1b", ca.KeyTypeECP256, elliptic.P256()}, {"jwt-2c3d", ca.KeyTypeECP384, elliptic.P384()}} {
		s, err := m.GenerateKey(ctx, tc.id, tc.kt)
		if err != nil {
			t.Fatalf("GenerateKey(%s): %v", tc.id, err)
		}
		pub, ok := s.Public().(*ecdsa.PublicKey)
		if !ok || pub.Curve != tc.curve {
			t.Fatalf("GenerateKey(%s, %s): a %T key", tc.id, tc.kt, s.Public())
		}
		sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Errorf("%s's signature does not verify: %v", tc.id, err)
		}
		if _, err := m.GenerateKey(ctx, tc.id, tc.kt); err == nil {
			t.Errorf("GenerateKey(%s) again: made a second key of one id", tc.id)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil { // as an authority stopped twice
		t.Fatalf("closed again: %v", err)
	}

	m, err = hsm.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.GetKey(ctx, "x509-0a1b")
	if err != nil {
		t.Fatalf("GetKey after the token was opened anew: %v", err)
	}
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Errorf("the key found again does not sign: %v", err)
	}
	if err := m.DeleteKey(ctx, "x509-0a1b"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"x509-0a1b", "x509-ffff"} {
		if _, err := m.GetKey(ctx, id); !errors.Is(err, ca.ErrKeyNotFound) {
			t.Errorf("GetKey(%s) of no key = %v, want ErrKeyNotFound", id, err)
		}
		if err := m.DeleteKey(ctx, id); !errors.Is(err, ca.ErrKeyNotFound) {
			t.Errorf("DeleteKey(%s) of no key = %v, want ErrKeyNotFound", id, err)
		}
	}
	if _, err := m.GetKey(ctx, "jwt-2c3d"); err != nil {
		t.Errorf("the other key went with the deleted one: %v", err)
	}
	if _, err := m.GetKey(ctx, "../x"); err == nil {
		t.Error("GetKey took an id KeyManager ids may not be")
	}
}

// A token that cannot be opened is said so, without the PIN; a
// configuration that names no module, token or PIN is refused before.
func TestOpenRefuses(t *testing.T) {
	cfg := hsmtest.Token(t, "mandate")
	for _, tc := range []struct {
		name string
		cfg  hsm.Config
	}{
		{"a wrong PIN", hsm.Config{Module: cfg.Module, TokenLabel: cfg.TokenLabel, PIN: "0000-wrong"}},
		{"no such token", hsm.Config{Module: cfg.Module, TokenLabel: "other", PIN: cfg.PIN}},
		{"no such module", hsm.Config{Module: "/nonexistent/libpkcs11.so", TokenLabel: cfg.TokenLabel, PIN: cfg.PIN}},
		{"a relative module", hsm.Config{Module: "libsofthsm2.so", TokenLabel: cfg.TokenLabel, PIN: cfg.PIN}},
		{"no token", hsm.Config{Module: cfg.Module, PIN: cfg.PIN}},
		{"no PIN", hsm.Config{Module: cfg.Module, TokenLabel: cfg.TokenLabel}},
	} {
		m, err := hsm.Open(tc.cfg)
		if err == nil {
			m.Close()
			t.Errorf("%s: opened", tc.name)
			continue
		}
		if tc.cfg.PIN != "" && strings.Contains(err.Error(), tc.cfg.PIN) {
			t.Errorf("%s: the error shows the PIN: %v", tc.name, err)
		}
	}
}

// A module that another user could have replaced (it runs in the
// authority's process, with the PIN and every signature) is refused
// before it is loaded: one group or others may write to, or in a
// directory they may write to, or a link to such a file; a copy only
// this user may change opens.
func TestOpenRefusesAModuleOthersCouldReplace(t *testing.T) {
	cfg := hsmtest.Token(t, "mandate")
	lib, err := os.ReadFile(hsmtest.Module)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	install := func(t *testing.T, dirMode, mode os.FileMode) string {
		t.Helper()
		d, err := os.MkdirTemp(dir, "lib")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(d, "libsofthsm2.so")
		if err := os.WriteFile(path, lib, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, dirMode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name   string
		module func(t *testing.T) string
		ok     bool
	}{
		{"this user's only", func(t *testing.T) string { return install(t, 0o755, 0o755) }, true},
		{"in a sticky directory others may write to", func(t *testing.T) string { return install(t, 0o777|os.ModeSticky, 0o755) }, true},
		{"a link to this user's only", func(t *testing.T) string {
			link := filepath.Join(t.TempDir(), "libpkcs11.so")
			if err := os.Symlink(install(t, 0o755, 0o755), link); err != nil {
				t.Fatal(err)
			}
			return link
		}, true},
		{"writable by group", func(t *testing.T) string { return install(t, 0o755, 0o775) }, false},
		{"writable by others", func(t *testing.T) string { return install(t, 0o755, 0o757) }, false},
		{"in a directory others may write to", func(t *testing.T) string { return install(t, 0o777, 0o755) }, false},
		{"a link to one in a directory others may write to", func(t *testing.T) string {
			link := filepath.Join(t.TempDir(), "libpkcs11.so")
			if err := os.Symlink(install(t, 0o777, 0o755), link); err != nil {
				t.Fatal(err)
			}
			return link
		}, false},
		{"a link to a link in a directory others may write to", func(t *testing.T) string {
			d, err := os.MkdirTemp(dir, "links")
			if err != nil {
				t.Fatal(err)
			}
			hop, link := filepath.Join(d, "hop.so"), filepath.Join(t.TempDir(), "libpkcs11.so")
			if err := os.Symlink(install(t, 0o755, 0o755), hop); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(hop, link); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, 0o777); err != nil {
				t.Fatal(err)
			}
			return link
		}, false},
		{"a directory", func(t *testing.T) string { return t.TempDir() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := hsm.Open(hsm.Config{Module: tc.module(t), TokenLabel: cfg.TokenLabel, PIN: cfg.PIN})
			if err == nil {
				m.Close()
			}
			switch {
			case tc.ok && err != nil:
				t.Errorf("Open = %v, want the token opened", err)
			case !tc.ok && err == nil:
				t.Error("opened")
			case !tc.ok && strings.Contains(tc.name, "writ") && !errors.Is(err, hsm.ErrModuleNotTrusted):
				t.Errorf("Open = %v, want ErrModuleNotTrusted", err)
			}
		})
	}
}

// A key made in the token never leaves it: asked for its private value
// (CKA_VALUE) through the PKCS#11 module itself, the token refuses, and
// says it is sensitive and not extractable.
func TestPrivateKeyStaysInTheToken(t *testing.T) {
	cfg, m, _ := tokenWithKey(t)
	if err := m.Close(); err != nil { // the module is unloaded: opened again below
		t.Fatal(err)
	}

	p := pkcs11.New(cfg.Module)
	if p == nil {
		t.Fatal("the module does not load")
	}
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer p.Destroy()
	defer p.Finalize()
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) == 0 {
		t.Fatalf("slots: %v, %v", slots, err)
	}
	sh, err := p.OpenSession(slots[0], pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(sh)
	if err := p.Login(sh, pkcs11.CKU_USER, cfg.PIN); err != nil {
		t.Fatal(err)
	}
	if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, []byte("x509-0a1b"))}); err != nil {
		t.Fatal(err)
	}
	objs, _, err := p.FindObjects(sh, 2)
	p.FindObjectsFinal(sh)
	if err != nil || len(objs) != 1 {
		t.Fatalf("private keys of the id: %v, %v", objs, err)
	}
	if v, err := p.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil && len(v) > 0 && len(v[0].Value) > 0 {
		t.Error("the token gave out the private key's value")
	}
	attrs, err := p.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil)})
	if err != nil || len(attrs) != 3 || attrs[0].Value[0] != 1 || attrs[1].Value[0] != 0 || attrs[2].Value[0] != 1 {
		t.Errorf("the private key is not sensitive, not extractable and a token object: %v, %v", attrs, err)
	}
}

// BenchmarkSign measures one ES256 signature by a key in the token
// (SoftHSM here: a hardware token is slower) beside one by a key in
// memory, as ca.DiskKeyManager's: what ca.pkcs11 costs each X509-SVID,
// JWT-SVID and delegation token.
func BenchmarkSign(b *testing.B) {
	cfg := hsmtest.Token(b, "mandate")
	m, err := hsm.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	inToken, err := m.GenerateKey(context.Background(), "jwt-bench", ca.KeyTypeECP256)
	if err != nil {
		b.Fatal(err)
	}
	inMemory, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("a token"))
	for _, s := range []struct {
		name   string
		signer crypto.Signer
	}{{"token", inToken}, {"memory", inMemory}} {
		b.Run(s.name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.signer.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// A token that forgets this process (its sessions closed, its login
// gone: an HSM restarted, a network HSM's connection made again) is
// logged in to anew by the next signature, which is made: the keys the
// CA holds go on signing, and new ones are made, without a restart.
func TestSignaturesOutliveATokenReset(t *testing.T) {
	cfg := hsmtest.Token(t, "mandate")
	ctx := context.Background()
	m, err := hsm.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	made, err := m.GenerateKey(ctx, "x509-0a1b", ca.KeyTypeECP384)
	if err != nil {
		t.Fatal(err)
	}
	found, err := m.GetKey(ctx, "x509-0a1b")
	if err != nil {
		t.Fatal(err)
	}
	reset := func() { resetToken(t, cfg) }
	digest := sha512.Sum384([]byte("a certificate"))
	for round := range 2 {
		reset()
		for _, s := range []crypto.Signer{made, found} {
			sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA384)
			if err != nil || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
				t.Errorf("round %d: after the token forgot this process, the signature = %v", round, err)
			}
		}
	}
	reset()
	if _, err := m.GenerateKey(ctx, "jwt-2c3d", ca.KeyTypeECP256); err != nil {
		t.Errorf("after the token forgot this process, GenerateKey = %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := made.Sign(rand.Reader, digest[:], crypto.SHA384); err == nil {
		t.Error("a key signed after its KeyManager was closed")
	}
}

// module is the PKCS#11 module cfg names as this process loaded it, and
// the slot of its token.
func module(t *testing.T, cfg hsm.Config) (*pkcs11.Ctx, uint) {
	t.Helper()
	p := pkcs11.New(cfg.Module) // the module this process loaded
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatal(err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) == 0 {
		t.Fatalf("slots: %v, %v", slots, err)
	}
	return p, slots[0]
}

// resetToken closes every session of the token in this process, as the
// token does when it restarts: the login goes with them.
func resetToken(t *testing.T, cfg hsm.Config) {
	t.Helper()
	p, slot := module(t, cfg)
	if err := p.CloseAllSessions(slot); err != nil {
		t.Fatal(err)
	}
}

// setPIN changes the token's user PIN from old to pin, logged in with
// old if login, and resets the token (resetToken).
func setPIN(t *testing.T, cfg hsm.Config, old, pin string, login bool) {
	t.Helper()
	p, slot := module(t, cfg)
	sess, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if login {
		if err := p.Login(sess, pkcs11.CKU_USER, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SetPIN(sess, old, pin); err != nil {
		t.Fatal(err)
	}
	resetToken(t, cfg)
}

// A token that refuses the PIN when it is logged in to anew (the PIN
// changed meanwhile) is not logged in to again: each wrong PIN counts
// towards the token locking it. The signatures fail, saying so without
// the PIN, even once the PIN is the configured one again, until a
// restart.
func TestAPINRefusedIsNotTriedAgain(t *testing.T) {
	cfg, m, k := tokenWithKey(t)
	digest := sha256.Sum256([]byte("a certificate"))
	now := time.Now()
	hsm.SetOpen(m, crypto11.Configure, func() time.Time { return now })
	setPIN(t, cfg, cfg.PIN, "0000-new", false) // logged in already, by m

	_, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)) || !strings.Contains(err.Error(), "pin_file") || strings.Contains(err.Error(), cfg.PIN) {
		t.Fatalf("a signature once the token refuses the PIN: %v, want the refusal, what to do, not the PIN", err)
	}
	setPIN(t, cfg, "0000-new", cfg.PIN, true)
	now = now.Add(time.Hour) // past any pause
	if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); !errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)) {
		t.Errorf("a signature after the PIN was refused: %v, want the refusal again, the token not logged in to", err)
	}
	m2, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("the token opened anew, as after a restart: %v", err)
	}
	defer m2.Close()
	k2, err := m2.GetKey(context.Background(), "x509-0a1b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
		t.Errorf("a signature after a restart: %v", err)
	}
}

// A token that cannot be opened anew (down, or unreachable) is not tried
// again for 1 s, then 2, 4… up to 30 s: meanwhile the signatures fail at
// once, saying why and until when. Once it opens, the signatures go on,
// and the next outage starts at 1 s again.
func TestATokenDownIsTriedAgainAfterAPause(t *testing.T) {
	cfg, m, k := tokenWithKey(t)
	digest := sha256.Sum256([]byte("a certificate"))
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	tries := 0
	down := true
	hsm.SetOpen(m, func(c *crypto11.Config) (*crypto11.Context, error) {
		tries++
		if down {
			return nil, errors.New("connection refused")
		}
		return crypto11.Configure(c)
	}, func() time.Time { return now })

	sign := func() error {
		_, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
		return err
	}
	resetToken(t, cfg)
	// At each step: the time passed since the last, and the tries made
	// in all once a signature failed then.
	for i, step := range []struct {
		after time.Duration
		tries int
	}{
		{0, 1},                       // tried: the pause is 1 s
		{0, 1},                       // within it
		{999 * time.Millisecond, 1},  // within it
		{time.Millisecond, 2},        // tried: the pause is 2 s
		{1500 * time.Millisecond, 2}, // within it
		{500 * time.Millisecond, 3},  // tried: 4 s
		{4 * time.Second, 4},         // 8 s
		{8 * time.Second, 5},         // 16 s
		{16 * time.Second, 6},        // 30 s, the longest
		{30 * time.Second, 7},        // 30 s again
		{29 * time.Second, 7},
	} {
		now = now.Add(step.after)
		err := sign()
		if err == nil || !strings.Contains(err.Error(), "connection refused") || tries != step.tries {
			t.Fatalf("step %d: %v after %d tries to open the token, want the token's error after %d", i, err, tries, step.tries)
		}
		if strings.Count(err.Error(), "connection refused") != 1 {
			t.Errorf("step %d: %v, want the cause said once", i, err)
		}
	}
	down = false
	now = now.Add(time.Second)
	if err := sign(); err != nil || tries != 8 {
		t.Fatalf("the token up again: %v after %d tries, want a signature after 8", err, tries)
	}
	// Another outage waits 1 s first again.
	down = true
	resetToken(t, cfg)
	if err := sign(); err == nil || tries != 9 {
		t.Fatalf("another outage: %v after %d tries, want a failure after 9", err, tries)
	}
	now = now.Add(time.Second)
	if err := sign(); err == nil || tries != 10 {
		t.Errorf("another outage, 1 s later: %v after %d tries, want a new try (10)", err, tries)
	}
}

// tokenWithKey is a token opened, closed at the test's end, and a P-256
// key x509-0a1b made in it.
func tokenWithKey(t *testing.T) (hsm.Config, *hsm.KeyManager, crypto.Signer) {
	t.Helper()
	cfg := hsmtest.Token(t, "mandate")
	m, err := hsm.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	k, err := m.GenerateKey(context.Background(), "x509-0a1b", ca.KeyTypeECP256)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, m, k
}

// After the token forgot this process (its login gone, which hides the
// private keys), a key looked up or deleted before any signature logged
// in again is still found: the token is logged in to anew, and the key
// looked for again. A key deleted so is gone from the token.
func TestKeysFoundAfterATokenReset(t *testing.T) {
	cfg, m, _ := tokenWithKey(t)
	ctx := context.Background()
	if _, err := m.GenerateKey(ctx, "jwt-2c3d", ca.KeyTypeECP256); err != nil {
		t.Fatal(err)
	}
	other, err := hsm.Open(cfg) // as after a restart: no key found yet
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	resetToken(t, cfg)
	k, err := other.GetKey(ctx, "x509-0a1b")
	if err != nil {
		t.Fatalf("GetKey after a reset: %v", err)
	}
	digest := sha256.Sum256([]byte("a certificate"))
	if sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil || !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Errorf("the key found after a reset signs: %v", err)
	}
	resetToken(t, cfg)
	if err := m.DeleteKey(ctx, "jwt-2c3d"); err != nil {
		t.Fatalf("DeleteKey after a reset: %v", err)
	}
	if _, err := other.GetKey(ctx, "jwt-2c3d"); !errors.Is(err, ca.ErrKeyNotFound) {
		t.Errorf("the key deleted after a reset: GetKey = %v, want ErrKeyNotFound", err)
	}
	if _, err := m.GetKey(ctx, "none-such"); !errors.Is(err, ca.ErrKeyNotFound) {
		t.Errorf("GetKey of no key = %v, want ErrKeyNotFound", err)
	}
}
