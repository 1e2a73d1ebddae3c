package audit

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"
)

func TestLoadOrCreateSigner(t *testing.T) {
	const name = "org-a.example/audit"
	path := filepath.Join(t.TempDir(), "audit", "log.key")
	s, vkey, err := LoadOrCreateSigner(path, name)
	if err != nil {
		t.Fatalf("LoadOrCreateSigner(new) = %v, want nil", err)
	}
	if fi, err := os.Stat(path); err != nil || (runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600) {
		t.Fatalf("key file: Stat = %v, %v, want mode 0600", fi, err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || (runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700) {
		t.Fatalf("key directory: Stat = %v, %v, want mode 0700", fi, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("key directory holds %d files, want 1 (no temporary file left)", len(entries))
	}

	// The verifier key verifies what the signer signs.
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("note.NewVerifier(%q) = %v, want nil", vkey, err)
	}
	msg, err := note.Sign(&note.Note{Text: "hello\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Errorf("note.Open(signed note) = %v, want nil", err)
	}

	// Loading again returns the same key.
	s2, vkey2, err := LoadOrCreateSigner(path, name)
	if err != nil || vkey2 != vkey || s2.KeyHash() != s.KeyHash() {
		t.Errorf("LoadOrCreateSigner(existing) = %v, %q, %v, want the same key %q", s2, vkey2, err, vkey)
	}

	// Another name is refused.
	if _, _, err := LoadOrCreateSigner(path, "other.example/audit"); err == nil {
		t.Errorf("LoadOrCreateSigner(other name) = nil error, want error")
	}
}

// TestParseSignerKey covers keys whose base64 contains '+' (and '/').
func TestParseSignerKey(t *testing.T) {
	for range 50 {
		skey, vkey, err := GenerateKey("org-a.example/audit")
		if err != nil {
			t.Fatal(err)
		}
		s, got, err := parseSignerKey(skey)
		if err != nil || got != vkey || s.Name() != "org-a.example/audit" {
			t.Fatalf("parseSignerKey() = %q, %v, want %q, nil", got, err, vkey)
		}
	}
}

func TestLoadSignerRefuses(t *testing.T) {
	skey, _, err := GenerateKey("org-a.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.SplitN(skey, "+", 5)[4]
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
	}{
		{"world-readable", skey + "\n", 0o644},
		{"malformed", "PRIVATE+KEY+org-a.example/audit+00000000+" + secret + "\n", 0o600},
		{"verifier key", "org-a.example/audit+00000000+AAAA\n", 0o600},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.key")
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreateSigner(path, "org-a.example/audit")
			if err == nil {
				t.Fatalf("LoadOrCreateSigner() = nil error, want error")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("LoadOrCreateSigner() error %q contains the key", err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != tc.content {
				t.Errorf("LoadOrCreateSigner() changed the refused file")
			}
		})
	}
}

func TestLoadOrCreateSignerBadName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.key")
	if _, _, err := LoadOrCreateSigner(path, "bad name+"); err == nil {
		t.Errorf("LoadOrCreateSigner(bad name) = nil error, want error")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadOrCreateSigner(bad name) left a file: Stat = %v", err)
	}
}

func TestDefaultOrigin(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("org-a.example")
	if got, want := DefaultOrigin(td), "org-a.example/audit"; got != want {
		t.Errorf("DefaultOrigin(%v) = %q, want %q", td, got, want)
	}
}
