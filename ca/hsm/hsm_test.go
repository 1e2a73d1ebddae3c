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
	cfg := hsmtest.Token(t, "mandate")
	m, err := hsm.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.GenerateKey(context.Background(), "x509-0a1b", ca.KeyTypeECP256); err != nil {
		t.Fatal(err)
	}
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
	// reset closes every session of the token in this process, as the
	// token does when it restarts: the login goes with them.
	reset := func() {
		t.Helper()
		p := pkcs11.New(cfg.Module) // the module this process loaded
		if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			t.Fatal(err)
		}
		slots, err := p.GetSlotList(true)
		if err != nil || len(slots) == 0 {
			t.Fatalf("slots: %v, %v", slots, err)
		}
		if err := p.CloseAllSessions(slots[0]); err != nil {
			t.Fatal(err)
		}
	}
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
