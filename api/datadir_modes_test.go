package api_test

import (
	"io/fs"
	"net/http"
	"path/filepath"
	"slices"
	"testing"

	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/authority"
)

// Every file of the data directory that holds a secret (the CA's keys,
// the audit log's key, the admin credential's key, the TPM session key,
// the store) is readable by its owner only, in directories Mandate made
// that only the owner may enter, in a backup too; what is left readable to others is
// public: bundles, certificates, the log's verifier key, a backup's
// description.
func TestDataDirectorySecretsAreOwnerOnly(t *testing.T) {
	te := startTPM(t, 7, tpmSetup{ek: tpmdevice.EKECC, allowlist: true})
	if _, err := te.attest(nil, nil); err != nil { // the TPM session key is made
		t.Fatal(err)
	}
	var b authority.Backup
	if err := te.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/backups", map[string]any{}, &b); err != nil {
		t.Fatal(err)
	}
	public := []string{"bundle.pem", "svid.pem", "log.vkey", "backup.json"}
	var secrets []string
	err := filepath.WalkDir(te.dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(te.dataDir, path)
		switch perm := fi.Mode().Perm(); {
		case path == te.dataDir: // the operator's; Mandate refuses it only writable by others
			if perm&0o022 != 0 {
				t.Errorf("the data directory is mode %v; want only its owner to write it", perm)
			}
		case d.IsDir():
			if perm&0o077 != 0 {
				t.Errorf("directory %s is mode %v; want only its owner to enter it", rel, perm)
			}
		case slices.Contains(public, d.Name()):
			if perm&0o022 != 0 {
				t.Errorf("%s is mode %v; want only its owner to write it", rel, perm)
			}
		default:
			secrets = append(secrets, filepath.ToSlash(rel))
			if perm&0o077 != 0 {
				t.Errorf("%s is mode %v; want 0600", rel, perm)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	backup, _ := filepath.Rel(te.dataDir, b.Dir)
	for _, want := range []string{"mandate.db", "audit/log.key", "admin/svid.key", "tpm/session.key", backup + "/mandate.db"} {
		if !slices.Contains(secrets, filepath.ToSlash(want)) {
			t.Errorf("no %s among the files checked %v: the test checks less than it says", want, secrets)
		}
	}
	if !slices.ContainsFunc(secrets, func(p string) bool { return filepath.Dir(p) == "keys" }) {
		t.Errorf("no CA key among the files checked %v", secrets)
	}
}
