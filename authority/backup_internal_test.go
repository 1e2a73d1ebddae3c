package authority

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/store"
)

// A backup, once asked, is made whole and recorded whatever becomes of
// the request that asked it: its context ending (a copy of a large data
// file outlasts the request's deadline, or the client hangs up) does not
// throw the copy away.
func TestBackupOutlivesItsRequest(t *testing.T) {
	a, _ := runAuthority(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b, err := a.MakeBackup(ctx, adminOf(t, a))
	if err != nil {
		t.Fatalf("MakeBackup with the request's context ended: %v", err)
	}
	if _, err := os.Stat(filepath.Join(b.Dir, "mandate.db")); err != nil {
		t.Fatal(err)
	}
	if n := entriesOf(t, a, "backup.created"); n != 1 {
		t.Fatalf("%d backup.created entries, want 1", n)
	}
}

// A backup is written under a partial name and takes its own only once
// whole and checked: a crash meanwhile never leaves a directory named as
// a backup that is not one. What such a crash left is removed by the
// next backup, whatever the data directory is called (a name with glob
// characters too), and nothing outside its own backups/ is.
func TestBackupIsNamedOnlyWhole(t *testing.T) {
	for _, name := range []string{"data", "data[1]", "data*", "data?"} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			// Another directory beside it, which a pattern made of
			// the data directory's name would match.
			other := filepath.Join(parent, "data1", BackupDirName, partialBackupPrefix+"20261127T000000.000000000Z")
			if err := os.MkdirAll(other, 0o700); err != nil {
				t.Fatal(err)
			}
			a, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = filepath.Join(parent, name) })
			root := filepath.Join(a.cfg.DataDir, BackupDirName)
			cutShort := filepath.Join(root, partialBackupPrefix+"20261127T000000.000000000Z")
			if err := os.MkdirAll(filepath.Join(cutShort, "keys"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cutShort, "mandate.db"), []byte("half a copy"), 0o600); err != nil {
				t.Fatal(err)
			}
			var named bool
			defer func() { beforeBackupNamed = nil }()
			beforeBackupNamed = func(work, dir string) {
				named = true
				if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the backup's directory exists before its copy is whole (%v)", err)
				}
				if filepath.Dir(work) != root || !strings.HasPrefix(filepath.Base(work), partialBackupPrefix) {
					t.Errorf("the backup is written in %s, want a partial directory in %s", work, root)
				}
				if _, err := os.Stat(filepath.Join(work, "mandate.db")); err != nil {
					t.Errorf("the partial directory holds no copy: %v", err)
				}
			}
			b, err := a.MakeBackup(t.Context(), adminOf(t, a))
			if err != nil {
				t.Fatal(err)
			}
			if !named {
				t.Fatal("the backup was never renamed into place")
			}
			left, err := os.ReadDir(root)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) != 1 || left[0].Name() != filepath.Base(b.Dir) {
				t.Fatalf("backups/ holds %v, want only the backup made (%s)", left, filepath.Base(b.Dir))
			}
			if _, err := os.Stat(other); err != nil {
				t.Fatalf("a directory outside the data directory's backups/ was removed: %v", err)
			}
		})
	}
}

// A backup asked once the authority has stopped (its audit log among
// it, the store left open) is refused before anything is written: it
// could not be recorded, and no copy of the keys is left on the host
// that the audit log does not show.
func TestBackupRefusedOnceStopped(t *testing.T) {
	a, stop := runAuthority(t)
	admin := adminOf(t, a)
	stop()
	if b, err := a.MakeBackup(t.Context(), admin); !errors.Is(err, ErrStopping) {
		t.Fatalf("MakeBackup with the authority stopped = %+v, %v; want %v", b, err, ErrStopping)
	}
	if left, err := os.ReadDir(filepath.Join(a.cfg.DataDir, BackupDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backups/ = %v, %v after a backup refused, want none", left, err)
	}
}

// A backup that would leave the file system less free space than the
// data file holds, and 64 MiB, is refused before anything is written:
// backups, however many are asked, never stop the authority recording.
func TestBackupLeavesRoom(t *testing.T) {
	a, _ := runAuthority(t)
	fi, err := os.Stat(filepath.Join(a.cfg.DataDir, "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		free uint64
		ok   bool
	}{
		{"room for the copy and as much again", 2*uint64(fi.Size()) + minBackupRoom, true},
		{"room for the copy only", uint64(fi.Size()) + minBackupRoom - 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(f func(string) (uint64, bool)) { diskFree = f }(diskFree)
			diskFree = func(string) (uint64, bool) { return tc.free, true }
			before, _ := os.ReadDir(filepath.Join(a.cfg.DataDir, BackupDirName))
			recorded := entriesOf(t, a, "backup.created")
			_, err := a.MakeBackup(t.Context(), adminOf(t, a))
			after, _ := os.ReadDir(filepath.Join(a.cfg.DataDir, BackupDirName))
			if tc.ok != (err == nil) || !tc.ok && (!errors.Is(err, ErrBackupNoRoom) || len(after) != len(before) || entriesOf(t, a, "backup.created") != recorded) {
				t.Fatalf("MakeBackup with %d bytes free = %v; %d backups before, %d after; want ok=%v, or ErrBackupNoRoom and nothing written", tc.free, err, len(before), len(after), tc.ok)
			}
		})
	}
}

// A backup's directory is named absolute, whatever the data directory's
// path: the answer is read by an admin elsewhere.
func TestBackupDirIsAbsolute(t *testing.T) {
	parent := t.TempDir()
	t.Chdir(parent)
	a, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = "data" })
	b, err := a.MakeBackup(t.Context(), adminOf(t, a))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(parent, "data", BackupDirName); filepath.Dir(b.Dir) != want {
		t.Fatalf("backup dir %q, want one in %s", b.Dir, want)
	}
}

// A backup under way when the authority stops is not left behind it:
// Run returns only once the backup has ended, and one it abandons (its
// copy cut short) is removed and refused with ErrStopping, recorded
// nowhere.
func TestBackupUnderWayAtStop(t *testing.T) {
	a, stop := runAuthority(t)
	admin := adminOf(t, a)
	root := filepath.Join(a.cfg.DataDir, BackupDirName)
	copying := make(chan struct{})
	defer func() { backupCopying = nil }()
	backupCopying = func(abort context.Context) {
		close(copying)
		<-abort.Done()
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.MakeBackup(t.Context(), admin)
		done <- err
	}()
	<-copying
	if left, err := os.ReadDir(root); err != nil || len(left) != 1 {
		t.Fatalf("backups/ holds %v (%v) while the copy is made, want its partial directory", left, err)
	}
	stop() // Run returns
	// Only once the backup has ended: what it wrote is removed already
	// (its caller may hear of it a moment later).
	if left, err := os.ReadDir(root); err != nil || len(left) != 0 {
		t.Errorf("backups/ holds %v (%v) once Run returned, want the abandoned backup removed", left, err)
	}
	if err := <-done; !errors.Is(err, ErrStopping) {
		t.Errorf("MakeBackup cut short by the stop = %v, want %v", err, ErrStopping)
	}
	if n := entriesOf(t, a, "backup.created"); n != 0 {
		t.Errorf("%d backup.created entries for a backup abandoned, want 0", n)
	}
}

// A backup is kept exactly when its backup.created entry is logged: its
// record's time running out while the audit log's commit is under way
// (a stalled fsync) neither removes a backup whose entry is then
// committed, nor keeps one whose commit fails.
func TestBackupKeptWithItsRecord(t *testing.T) {
	errCommit := errors.New("the commit failed")
	for _, tc := range []struct {
		name      string
		commitErr error
	}{
		{"the commit outlasts the record's time", nil},
		{"the commit fails", errCommit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The hooks are set before the authority runs, and put back
			// once it has stopped (cleanups run last first).
			was := recordContext
			t.Cleanup(func() { recordContext, committingEntry = was, nil })
			// The backup's record's time runs out when the test says so;
			// other records are as always.
			expiring, expire := context.WithCancel(context.Background())
			defer expire()
			var backingUp atomic.Bool
			recordContext = func(ctx context.Context) (context.Context, context.CancelFunc) {
				if backingUp.Load() {
					return context.WithCancel(expiring)
				}
				return was(ctx)
			}
			// The commit of the backup's entry ends its record's time,
			// and goes on until MakeBackup has answered, or for a second
			// (MakeBackup waiting for it meanwhile).
			returned := make(chan struct{})
			committingEntry = func(e audit.Entry) error {
				if e.Type != "backup.created" {
					return nil
				}
				expire()
				select {
				case <-returned:
				case <-time.After(time.Second):
				}
				return tc.commitErr
			}
			a, _ := runAuthority(t)
			admin := adminOf(t, a)
			root := filepath.Join(a.cfg.DataDir, BackupDirName)
			backingUp.Store(true)
			b, err := a.MakeBackup(t.Context(), admin)
			backingUp.Store(false)
			close(returned)
			// The log is past the commit before it is read.
			if _, rerr := a.record(t.Context(), event{typ: "test.after"}); rerr != nil {
				t.Fatal(rerr)
			}
			left, rerr := os.ReadDir(root)
			if rerr != nil {
				t.Fatal(rerr)
			}
			recorded := entriesOf(t, a, "backup.created")
			if err == nil {
				if recorded != 1 || len(left) != 1 || left[0].Name() != filepath.Base(b.Dir) {
					t.Fatalf("MakeBackup succeeded; %d backup.created entries, backups/ holds %v: want its entry and its directory", recorded, left)
				}
				return
			}
			if recorded != 0 || len(left) != 0 {
				t.Fatalf("MakeBackup = %v; %d backup.created entries, backups/ holds %v: want no entry and no backup", err, recorded, left)
			}
			if tc.commitErr == nil {
				t.Fatalf("MakeBackup = %v, want the backup made: its entry was committed", err)
			}
		})
	}
}

// A backup takes its name only once its backup.created entry is
// committed: a crash between the two (the process killed) never leaves
// a directory named as a backup that the audit log does not show.
func TestBackupRecordedBeforeNamed(t *testing.T) {
	a, _ := runAuthority(t)
	var recorded, marked int
	defer func() { beforeBackupNamed = nil }()
	beforeBackupNamed = func(work, dir string) {
		recorded = entriesOf(t, a, "backup.created")
		if err := a.store.View(t.Context(), func(tx store.Tx) error {
			_, err := tx.Get(bucketBackups, []byte(filepath.Base(dir)))
			if err == nil {
				marked++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.MakeBackup(t.Context(), adminOf(t, a)); err != nil {
		t.Fatal(err)
	}
	if recorded != 1 || marked != 1 {
		t.Fatalf("when the backup took its name: %d backup.created entries, %d marks in %s; want its entry and its mark committed", recorded, marked, bucketBackups)
	}
}

// What a crash left in backups/ is settled when the authority starts: a
// whole backup whose entry was committed but which had not yet taken
// its name takes it, and a partial directory that no entry records is
// removed.
func TestBackupCutShortSettledAtStart(t *testing.T) {
	a, stop := runAuthority(t)
	b, err := a.MakeBackup(t.Context(), adminOf(t, a))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(b.Dir)
	name := filepath.Base(b.Dir)
	// Cut short after its record, before its name.
	if err := os.Rename(b.Dir, filepath.Join(root, partialBackupPrefix+name)); err != nil {
		t.Fatal(err)
	}
	// Cut short before its record.
	unrecorded := filepath.Join(root, partialBackupPrefix+"20261127T000000.000000000Z")
	if err := os.MkdirAll(filepath.Join(unrecorded, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	a2, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = a.cfg.DataDir })
	left, err := os.ReadDir(filepath.Join(a2.cfg.DataDir, BackupDirName))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Name() != name {
		t.Fatalf("backups/ holds %v after a start, want only the recorded backup %s under its name", left, name)
	}
	if _, err := os.Stat(filepath.Join(b.Dir, "mandate.db")); err != nil {
		t.Fatal(err)
	}
}

// A backups/ that is a link to a directory elsewhere (another volume)
// is where backups are made, and what a crash left there is settled at
// start as in a backups/ of the data directory's own.
func TestBackupsLinkedElsewhereSettledAtStart(t *testing.T) {
	elsewhere := filepath.Join(t.TempDir(), "backups")
	unrecorded := filepath.Join(elsewhere, partialBackupPrefix+"20261127T000000.000000000Z")
	if err := os.MkdirAll(filepath.Join(unrecorded, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	if err := os.Symlink(elsewhere, filepath.Join(dataDir, BackupDirName)); err != nil {
		t.Fatal(err)
	}
	a, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dataDir })
	if _, err := os.Stat(unrecorded); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a partial backup no entry records, in a backups/ linked elsewhere, after a start: %v; want it removed", err)
	}
	b, err := a.MakeBackup(t.Context(), adminOf(t, a))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, filepath.Base(b.Dir), "mandate.db")); err != nil {
		t.Fatalf("the backup is not in the directory backups/ links to: %v", err)
	}
	// A start on it in place, through the link, is refused as one on a
	// backup in backups/ (TestStartOnABackupInPlaceIsRefused).
	cfg := a.cfg
	cfg.DataDir = b.Dir
	if r, err := New(t.Context(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), "cp -a") {
		if err == nil {
			r.Close()
		}
		t.Fatalf("New on the backup %s, through backups/ linked elsewhere = %v, want it refused", b.Dir, err)
	}
}

// The witness's key is backed up whenever the data directory holds it,
// also while audit.witness.logs is empty: a restore that has the
// authority witness again would otherwise make a new key without a
// word, whose cosignatures the logs it witnessed refuse.
func TestBackupKeepsTheWitnessKey(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "org-b.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	w, stop := runAuthorityWith(t, Options{}, func(c *Config) { c.Audit.Witness.Logs = []string{vkey} })
	stop()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	a, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = w.cfg.DataDir })
	b, err := a.MakeBackup(t.Context(), adminOf(t, a))
	if err != nil {
		t.Fatal(err)
	}
	witnessKey, witnessVKey := WitnessPaths(a.cfg.DataDir)
	for _, path := range []string{witnessKey, witnessVKey} {
		rel, _ := filepath.Rel(a.cfg.DataDir, path)
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(b.Dir, rel)); err != nil || string(got) != string(want) {
			t.Errorf("the backup's %s: %v; want the data directory's", rel, err)
		}
	}
}

// A start on a backup where it was made, in a data directory's
// backups/, is refused before it changes anything: it would change the
// backup (no longer the state it was made of), and run a second
// authority with the same keys beside the first (the store's lock is
// the data file's, the backup's another), forking its audit log. A copy
// is restored.
func TestStartOnABackupInPlaceIsRefused(t *testing.T) {
	a, _ := runAuthority(t)
	b, err := a.MakeBackup(t.Context(), adminOf(t, a))
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadDir(b.Dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := a.cfg
	cfg.DataDir = b.Dir
	if r, err := New(t.Context(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), "cp -a") {
		if err == nil {
			r.Close()
		}
		t.Fatalf("New on the backup %s = %v, want it refused, saying to start on a copy", b.Dir, err)
	}
	after, err := os.ReadDir(b.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(names(before), names(after)) {
		t.Fatalf("the backup holds %v after a start refused, want %v as made", names(after), names(before))
	}
	// Its copy elsewhere starts.
	restored := filepath.Join(t.TempDir(), "restored")
	err = filepath.WalkDir(b.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b.Dir, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(restored, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(restored, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = restored })
}

func names(entries []fs.DirEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// The first start on a data directory made of a backup says so: its
// authority.started entry names the backup (what the authority did after
// it is undone, and auditors holding a later checkpoint find the log
// shrunk), and the backup's mark is removed once that is recorded. Later
// starts there, and a start that finds a mark of a smaller log than it
// holds (left by a crash before the removal), name none.
func TestRestoreIsRecorded(t *testing.T) {
	a, _ := runAuthority(t)
	b, err := a.MakeBackup(t.Context(), adminOf(t, a))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(b.Files, func(f BackupFile) bool { return f.Path == restoreMarkName }) {
		t.Fatalf("backup files %+v: want its mark %s", b.Files, restoreMarkName)
	}
	// The restore: a new data directory of the backup's contents.
	dir := t.TempDir()
	err = filepath.WalkDir(b.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b.Dir, path)
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(dir, restoreMarkName)
	markData, err := os.ReadFile(mark)
	if err != nil {
		t.Fatal(err)
	}
	// start runs an authority on dir until it has recorded its start,
	// and returns what that entry (the log's last authority.started)
	// says it was restored from.
	var seen *uint64 // the index of the latest start recorded on dir
	start := func(t *testing.T) any {
		t.Helper()
		r, stop := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dir })
		// The start is recorded once the log runs: a stop before that
		// would leave it unrecorded.
		var got []AuditEntry
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var err error
			if got, _, err = r.SearchAudit(t.Context(), adminOf(t, r), audit.Query{Type: "authority.started", Limit: 100}); err != nil {
				t.Fatal(err)
			}
			if n := len(got); n > 0 && got[n-1].Index >= b.AuditTreeSize && (seen == nil || got[n-1].Index > *seen) || time.Now().After(deadline) {
				break
			}
		}
		if n := len(got); n > 0 {
			seen = &got[n-1].Index
		}
		stop()
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || got[len(got)-1].Index < b.AuditTreeSize {
			t.Fatalf("%d authority.started entries, none after the backup's %d", len(got), b.AuditTreeSize)
		}
		var entry struct {
			Details map[string]any `json:"details"`
		}
		if err := json.Unmarshal(got[len(got)-1].Entry, &entry); err != nil {
			t.Fatal(err)
		}
		return entry.Details["restored_from"]
	}
	want := map[string]any{"backup": filepath.Base(b.Dir), "created_at": b.CreatedAt.Format(time.RFC3339Nano), "audit_tree_size": float64(b.AuditTreeSize)}
	if got := start(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("the first start on the restored directory: restored_from %v, want %v", got, want)
	}
	if _, err := os.Stat(mark); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the restore mark after the first start: %v, want removed", err)
	}
	if got := start(t); got != nil {
		t.Fatalf("a second start on the restored directory: restored_from %v, want none", got)
	}
	// A mark left by a crash between the record and its removal.
	if err := os.WriteFile(mark, markData, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := start(t); got != nil {
		t.Fatalf("a start with a mark of a smaller log: restored_from %v, want none", got)
	}
	if _, err := os.Stat(mark); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a mark of a smaller log after a start: %v, want removed", err)
	}
	// A mark of a smaller log whose start was never recorded: the
	// authority logged other entries, then stopped (a crash) before its
	// authority.started entry. The next start records it.
	unrecorded := restoreMark{Backup: "20261127T000000.000000000Z", CreatedAt: b.CreatedAt, AuditTreeSize: b.AuditTreeSize}
	data, err := json.Marshal(unrecorded)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mark, data, 0o600); err != nil {
		t.Fatal(err)
	}
	want["backup"] = unrecorded.Backup
	if got := start(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("a start with a mark of a smaller log whose start was not recorded: restored_from %v, want %v", got, want)
	}
	if _, err := os.Stat(mark); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the mark after its start was recorded: %v, want removed", err)
	}
	// The data directory the backup was made of is no restore.
	if _, err := os.Stat(filepath.Join(a.cfg.DataDir, restoreMarkName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the live data directory's %s: %v, want none", restoreMarkName, err)
	}
}

// An admin asking for the CA's status while a backup copies the data
// file is answered at once, not once the copy (minutes, for a large
// store) is over: the copy here lasts until the answer has come (it
// never came before, the test then ending at its deadline).
func TestCAStatusAnsweredDuringABackup(t *testing.T) {
	a, _ := runAuthority(t)
	admin := adminOf(t, a)
	copying, release := make(chan struct{}), make(chan struct{})
	defer func() { backupCopying = nil }()
	backupCopying = func(abort context.Context) {
		close(copying)
		select {
		case <-release:
		case <-abort.Done():
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.MakeBackup(t.Context(), admin)
		done <- err
	}()
	<-copying
	answered := make(chan error, 1)
	go func() {
		_, err := a.CAStatus(admin)
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			t.Errorf("CAStatus during a backup = %v", err)
		}
	case err := <-done:
		t.Fatalf("the backup ended (%v) before it was let go", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("MakeBackup = %v", err)
	}
}
