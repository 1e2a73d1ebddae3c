package authority

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A data directory whose store was lost or emptied, or whose audit key
// is missing, is refused before anything is made: starting anew would
// fork the audit log (a second log under the same key) and replace the
// CA. A first start cut short between making the log's key and storing
// the log, or between storing it and linking the key, starts.
func TestDataDirWithALostStoreIsRefused(t *testing.T) {
	ctx := context.Background()
	newDir := func(t *testing.T) (Config, func() error) {
		t.Helper()
		cfg := Config{TrustDomain: "org-a.example", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
		cfg.SetDefaults()
		return cfg, func() error {
			a, err := New(ctx, cfg, Options{})
			if err == nil {
				a.Close()
			}
			return err
		}
	}
	keys := func(t *testing.T, cfg Config) []string {
		t.Helper()
		var names []string
		for _, sub := range []string{"keys", "audit"} {
			ents, _ := os.ReadDir(filepath.Join(cfg.DataDir, sub))
			for _, e := range ents {
				names = append(names, sub+"/"+e.Name())
			}
		}
		return names
	}
	db := func(cfg Config) string { return filepath.Join(cfg.DataDir, "mandate.db") }
	keyPath := func(cfg Config) string { k, _ := AuditPaths(cfg.DataDir); return k }
	// dbState is the store's contents' digest, or why it has none: a
	// refused start leaves it as it found it.
	dbState := func(cfg Config) string {
		data, err := os.ReadFile(db(cfg))
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%d bytes, sha256 %x", len(data), sha256.Sum256(data))
	}

	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, cfg Config)
		want   string
	}{
		{"store removed", func(t *testing.T, cfg Config) {
			if err := os.Remove(db(cfg)); err != nil {
				t.Fatal(err)
			}
		}, "mandate.db is missing, but"},
		// What a partial restore leaves: the CA's keys without the store
		// that names them, nor the audit log's key.
		{"store and audit directory removed", func(t *testing.T, cfg Config) {
			if err := os.Remove(db(cfg)); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Dir(keyPath(cfg))); err != nil {
				t.Fatal(err)
			}
		}, "mandate.db is missing, but"},
		// What a restore whose copy of mandate.db was cut short (a
		// full disk) before audit/ was copied leaves.
		{"store emptied and audit directory removed", func(t *testing.T, cfg Config) {
			if err := os.Truncate(db(cfg), 0); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Dir(keyPath(cfg))); err != nil {
				t.Fatal(err)
			}
		}, "mandate.db is empty, but"},
		{"store emptied", func(t *testing.T, cfg Config) {
			if err := os.Truncate(db(cfg), 0); err != nil {
				t.Fatal(err)
			}
		}, "mandate.db is empty, but"},
		{"audit key removed", func(t *testing.T, cfg Config) {
			if err := os.Remove(keyPath(cfg)); err != nil {
				t.Fatal(err)
			}
		}, "audit signing key"},
		{"CA keys removed", func(t *testing.T, cfg Config) {
			if err := os.RemoveAll(caKeyDir(cfg.DataDir)); err != nil {
				t.Fatal(err)
			}
		}, "/keys) from a backup"},
		// Others may change what the authority trusts: refused at every
		// start, not only the first.
		{"audit directory others may write to", func(t *testing.T, cfg Config) {
			if err := os.Chmod(filepath.Dir(keyPath(cfg)), 0o777); err != nil {
				t.Fatal(err)
			}
		}, "group or others may replace the files in it"},
		{"store others may write to", func(t *testing.T, cfg Config) {
			if err := os.Chmod(db(cfg), 0o666); err != nil {
				t.Fatal(err)
			}
		}, "group or others may change it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, start := newDir(t)
			if err := start(); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, cfg)
			before, dbBefore := keys(t, cfg), dbState(cfg)
			for range 2 { // refused, and refused again: nothing was made the first time
				if err := start(); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("start = %v, want a refusal saying %q", err, tc.want)
				}
			}
			if after := keys(t, cfg); strings.Join(after, " ") != strings.Join(before, " ") {
				t.Errorf("key files after the refusals %v, before %v", after, before)
			}
			if after := dbState(cfg); after != dbBefore {
				t.Errorf("mandate.db after the refusals: %s, before: %s", after, dbBefore)
			}
		})
	}

	t.Run("first start cut short before the log was stored", func(t *testing.T) {
		cfg, start := newDir(t)
		if err := os.MkdirAll(filepath.Dir(keyPath(cfg)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyPath(cfg)+".new", []byte("a key made by a start that never stored its log\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := start(); err != nil {
			t.Fatalf("start = %v", err)
		}
		if _, err := os.Stat(keyPath(cfg)); err != nil {
			t.Errorf("log key after the start: %v", err)
		}
	})
	t.Run("first start cut short before the key was linked", func(t *testing.T) {
		cfg, start := newDir(t)
		if err := start(); err != nil {
			t.Fatal(err)
		}
		key, _ := os.ReadFile(keyPath(cfg))
		if err := os.Rename(keyPath(cfg), keyPath(cfg)+".new"); err != nil {
			t.Fatal(err)
		}
		if err := start(); err != nil {
			t.Fatalf("start = %v", err)
		}
		if got, err := os.ReadFile(keyPath(cfg)); err != nil || string(got) != string(key) {
			t.Errorf("log key after the start: %v; want the stored log's key linked in place", err)
		}
	})
}

// A second authority started on a data directory one is running on
// (two organisations started from one directory) is refused with what
// to do: stop the other, or give this one its own data directory.
func TestDataDirInUseIsRefusedWithWhatToDo(t *testing.T) {
	ctx := context.Background()
	cfg := Config{TrustDomain: "org-a.example", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	cfg.SetDefaults()
	a, err := New(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	other := cfg
	other.TrustDomain = "org-b.example"
	b, err := New(ctx, other, Options{})
	if err == nil {
		b.Close()
		t.Fatal("a second authority started on a data directory in use")
	}
	for _, want := range []string{"is locked by another process", "is using the data directory " + cfg.DataDir, "another data directory (--data-dir, data_dir)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New on a data directory in use: %v, want it to say %q", err, want)
		}
	}
}

// A data file and an audit signing key of different data directories
// (a restore that took mandate.db from one backup and audit/ from
// another, or from the data directory it was copied over) are refused
// saying so, and what to do, not only that the stored log is
// inconsistent, as a damaged file would be.
func TestDataDirOfMixedStoreAndLogKeyIsRefusedWithWhatToDo(t *testing.T) {
	ctx := context.Background()
	dirs := make([]Config, 2)
	for i := range dirs {
		dirs[i] = Config{TrustDomain: "org-a.example", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
		dirs[i].SetDefaults()
		a, err := New(ctx, dirs[i], Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	other, _ := AuditPaths(dirs[1].DataDir)
	key, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := AuditPaths(dirs[0].DataDir)
	if err := os.WriteFile(mine, key, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(ctx, dirs[0], Options{})
	if err == nil {
		a.Close()
		t.Fatal("an authority started on a data file with another data directory's audit signing key")
	}
	for _, want := range []string{"does not verify with key", "mandate.db and audit/", "from one backup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New with another data directory's audit key: %v, want it to say %q", err, want)
		}
	}
}
