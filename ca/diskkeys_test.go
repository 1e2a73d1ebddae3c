package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/credfile"
)

func TestDiskKeyManager(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "a", "keys")
	km, err := ca.NewDiskKeyManager(dir)
	if err != nil {
		t.Fatal(err)
	}
	assertMode(t, dir, 0o700)
	for _, tt := range []struct {
		kt    ca.KeyType
		curve elliptic.Curve
	}{{ca.KeyTypeECP256, elliptic.P256()}, {ca.KeyTypeECP384, elliptic.P384()}} {
		id := "key-" + string(tt.kt)
		s, err := km.GenerateKey(ctx, id, tt.kt)
		if err != nil {
			t.Fatalf("GenerateKey(%s): %v", tt.kt, err)
		}
		if pub := s.Public().(*ecdsa.PublicKey); pub.Curve != tt.curve {
			t.Errorf("%s: curve = %s", tt.kt, pub.Curve.Params().Name)
		}
		assertMode(t, filepath.Join(dir, id+".pem"), 0o600)
		// A fresh manager reads the same key back from disk.
		km2, err := ca.NewDiskKeyManager(dir)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := km2.GetKey(ctx, id)
		if err != nil {
			t.Fatalf("GetKey: %v", err)
		}
		if !s2.Public().(*ecdsa.PublicKey).Equal(s.Public()) {
			t.Error("reloaded key differs")
		}
		if _, err := km.GenerateKey(ctx, id, tt.kt); err == nil {
			t.Error("GenerateKey overwrote an existing key")
		}
		if err := km.DeleteKey(ctx, id); err != nil {
			t.Fatalf("DeleteKey: %v", err)
		}
		if _, err := km2.GetKey(ctx, id); err == nil {
			// km2 cached it; a fresh manager must not find it.
			km3, _ := ca.NewDiskKeyManager(dir)
			if _, err := km3.GetKey(ctx, id); !errors.Is(err, ca.ErrKeyNotFound) {
				t.Errorf("GetKey after delete: %v, want ErrKeyNotFound", err)
			}
		}
		if _, err := km.GetKey(ctx, id); !errors.Is(err, ca.ErrKeyNotFound) {
			t.Errorf("GetKey after delete: %v, want ErrKeyNotFound", err)
		}
		if err := km.DeleteKey(ctx, id); !errors.Is(err, ca.ErrKeyNotFound) {
			t.Errorf("second DeleteKey: %v, want ErrKeyNotFound", err)
		}
	}
	if _, err := km.GenerateKey(ctx, "x", ca.KeyType("rsa-1024")); err == nil {
		t.Error("unknown key type accepted")
	}
}

func TestDiskKeyManagerRejectsBadKeyIDs(t *testing.T) {
	km, err := ca.NewDiskKeyManager(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range []string{"", ".", "..", "../x", "a/b", `a\b`, ".hidden", "a b", strings.Repeat("k", 129)} {
		if _, err := km.GenerateKey(ctx, id, ca.KeyTypeECP256); err == nil {
			t.Errorf("GenerateKey(%q) accepted", id)
		}
		if _, err := km.GetKey(ctx, id); err == nil || errors.Is(err, ca.ErrKeyNotFound) {
			t.Errorf("GetKey(%q) = %v, want an invalid id error", id, err)
		}
		if err := km.DeleteKey(ctx, id); err == nil {
			t.Errorf("DeleteKey(%q) accepted", id)
		}
	}
}

func TestDiskKeyManagerPermissions(t *testing.T) {
	ctx := context.Background()
	t.Run("directory others may write to refused, never changed", func(t *testing.T) {
		for mode, ok := range map[os.FileMode]bool{0o700: true, 0o755: true, 0o775: false, 0o777: false} {
			dir := filepath.Join(t.TempDir(), "keys")
			if err := os.Mkdir(dir, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, mode); err != nil {
				t.Fatal(err)
			}
			_, err := ca.NewDiskKeyManager(dir)
			if ok != (err == nil) || !ok && !errors.Is(err, credfile.ErrNotPrivate) {
				t.Errorf("mode %v: NewDiskKeyManager = %v, want ok=%v (or ErrNotPrivate)", mode, err, ok)
			}
			assertMode(t, dir, mode)
		}
	})
	t.Run("readable key file refused", func(t *testing.T) {
		dir := t.TempDir()
		km, err := ca.NewDiskKeyManager(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := km.GenerateKey(ctx, "k", ca.KeyTypeECP256); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, "k.pem"), 0o644); err != nil {
			t.Fatal(err)
		}
		km2, _ := ca.NewDiskKeyManager(dir)
		_, err = km2.GetKey(ctx, "k")
		if err == nil {
			t.Fatal("accepted a world-readable key file")
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Error("error mentions key material")
		}
	})
	t.Run("stale temp files removed", func(t *testing.T) {
		dir := t.TempDir()
		stale := filepath.Join(dir, ".tmp-k.pem-123")
		if err := os.WriteFile(stale, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ca.NewDiskKeyManager(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(stale); !os.IsNotExist(err) {
			t.Error("stale temporary file not removed")
		}
	})
	t.Run("corrupt key file", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "k.pem"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		km, _ := ca.NewDiskKeyManager(dir)
		if _, err := km.GetKey(ctx, "k"); err == nil || errors.Is(err, ca.ErrKeyNotFound) {
			t.Errorf("GetKey on corrupt file = %v", err)
		}
	})
}

func TestCAKeyFilesArePrivate(t *testing.T) {
	c, env := newTestCA(t, nil)
	files := keyFiles(t, env.keyDir)
	if len(files) != len(c.Status()) {
		t.Fatalf("key files = %v, want one per authority (%d)", files, len(c.Status()))
	}
	assertMode(t, env.keyDir, 0o700)
	for _, f := range files {
		assertMode(t, filepath.Join(env.keyDir, f), 0o600)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}
