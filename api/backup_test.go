package api_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
)

// An admin's backup is a data directory the authority starts from as it
// was: the same CA, registrations and audit log (every entry of the
// backup's tree size, the same bytes). Its files are private, their
// digests as reported, and it is in the audit log; nobody else may ask
// for one.
func TestBackupRestores(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	agent := e.registerAgent("worker", node.id)
	e.agentSVID(node, agent)

	var b authority.Backup
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/backups", map[string]any{}, &b); err != nil {
		t.Fatalf("backup: %v", err)
	}
	if filepath.Dir(b.Dir) != filepath.Join(e.dataDir, "backups") || b.AuditTreeSize == 0 {
		t.Fatalf("backup %+v: want a directory of <data dir>/backups and the log's size", b)
	}
	if fi, err := os.Stat(b.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("backup directory: %v, %v; want mode 0700", fi, err)
	}
	var paths []string
	for _, f := range b.Files {
		paths = append(paths, f.Path)
		data, err := os.ReadFile(filepath.Join(b.Dir, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		fi, _ := os.Stat(filepath.Join(b.Dir, f.Path))
		if int64(len(data)) != f.Bytes || hex.EncodeToString(sum[:]) != f.SHA256 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %d bytes, sha256 %x, mode %v; reported %d bytes, sha256 %s; want mode 0600", f.Path, len(data), sum, fi.Mode().Perm(), f.Bytes, f.SHA256)
		}
	}
	if !slices.Contains(paths, "mandate.db") || !slices.Contains(paths, "audit/log.key") || !slices.Contains(paths, "audit/log.vkey") ||
		!slices.ContainsFunc(paths, func(p string) bool { return strings.HasPrefix(p, "keys/") }) {
		t.Fatalf("backup files %v: want mandate.db, the CA's keys and the audit log's", paths)
	}
	// The CA's keys copied are those of its authorities in use.
	var caStatus struct {
		Authorities []struct {
			KeyID string `json:"key_id"`
			State string `json:"state"`
		} `json:"authorities"`
	}
	if err := e.admin.Do(ctxT(t), http.MethodGet, "/v1/admin/ca", nil, &caStatus); err != nil {
		t.Fatal(err)
	}
	var inUse []string
	for _, a := range caStatus.Authorities {
		if a.State != "old" {
			inUse = append(inUse, "keys/"+a.KeyID+".pem")
		}
	}
	copied := slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return !strings.HasPrefix(p, "keys/") })
	if slices.Sort(inUse); !slices.Equal(slices.Sorted(slices.Values(copied)), inUse) {
		t.Errorf("CA keys copied %v, want those of the authorities in use %v", copied, inUse)
	}
	if got := e.auditOf("backup.created", ""); len(got) != 1 || got[0]["dir"] != filepath.Base(b.Dir) {
		t.Fatalf("backup.created entries: %v", got)
	}
	for name, c := range map[string]*client.Client{"a node": e.client(node.chain, node.key), "nobody": e.client(nil, nil)} {
		if err := c.Do(ctxT(t), http.MethodPost, "/v1/admin/backups", map[string]any{}, nil); problemName(err) != "forbidden" && problemName(err) != "unauthenticated" {
			t.Errorf("a backup asked by %s = %v, want refused", name, err)
		}
	}
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/backups", map[string]any{"dir": "/tmp"}, nil); problemName(err) != "unknown-field" {
		t.Errorf("a backup asked with a directory = %v, want unknown-field", err)
	}

	// A copy of the backup as a data directory (as a restore makes it:
	// a start on the backup in its place is refused): the authority
	// starts from it.
	restoredDir := filepath.Join(t.TempDir(), "restored")
	err := filepath.WalkDir(b.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b.Dir, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(restoredDir, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(restoredDir, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, "org-a.example", func(c *authority.Config) { c.DataDir = restoredDir })
	if !slices.EqualFunc(r.bundle, e.bundle, func(x, y *x509.Certificate) bool { return x.Equal(y) }) {
		t.Fatal("the restored authority's X.509 roots differ from the original's")
	}
	agents, err := r.admin.ListAgents(ctxT(t))
	if err != nil || len(agents) != 1 || agents[0].SPIFFEID != agent {
		t.Fatalf("the restored authority's agents: %+v, %v", agents, err)
	}
	last := strconv.FormatUint(b.AuditTreeSize-1, 10)
	var orig, restored struct {
		LeafHash string `json:"leaf_hash"`
	}
	if err := e.admin.Do(ctxT(t), http.MethodGet, "/v1/audit/entries/"+last, nil, &orig); err != nil {
		t.Fatal(err)
	}
	if err := r.admin.Do(ctxT(t), http.MethodGet, "/v1/audit/entries/"+last, nil, &restored); err != nil || restored.LeafHash != orig.LeafHash {
		t.Fatalf("entry %s of the restored log: %+v, %v; the original's leaf hash %s", last, restored, err, orig.LeafHash)
	}
}
