package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
)

// ErrBackupUnderWay is a backup asked while another is being made.
var ErrBackupUnderWay = errors.New("authority: a backup is already being made")

// ErrBackupNoRoom is a backup that would leave the data directory's file
// system without room for the authority to go on.
var ErrBackupNoRoom = errors.New("authority: no room for a backup")

// ErrStopping is work refused, or abandoned, because the authority is stopping.
var ErrStopping = errors.New("authority: stopping")

// minBackupRoom is the least free space a backup leaves on the data
// directory's file system, besides as much as the data file holds: the
// room the authority goes on recording in.
const minBackupRoom = 64 << 20

// diskFree is freeBytes (a variable for tests).
var diskFree = freeBytes

// BackupDirName is the directory of the data directory backups are
// written in.
const BackupDirName = "backups"

// Backup is a copy of an authority's state made while it runs: what a
// data directory needs for the authority to start from it. It is the
// answer of POST /v1/admin/backups, as the Go client reads it.
type Backup = client.Backup

// BackupFile is one file of a backup, its path relative to the backup's
// directory.
type BackupFile = client.BackupFile

// backupStore is a store that can copy itself whole while in use.
type backupStore interface {
	Backup(ctx context.Context, w io.Writer) (int64, error)
}

// MakeBackup writes a consistent copy of the authority's state into a new
// directory <data dir>/backups/<UTC time> (0700, files 0600, each synced):
// mandate.db as of one read transaction, the CA's keys that the copied
// CA state needs (keys/: those of its active and prepared authorities)
// and the audit log's keys (audit/log.key, audit/log.vkey; and the
// witness's, audit/witness.key and witness.vkey, when it has one), made while
// no CA rotation runs, so that the keys are those the copied state names,
// and its mark (restoreMarkName), with which the first start on a data
// directory made of it says so.
// Requests are served meanwhile. The admin credential (made again at
// start) and the TPM challenge key (outstanding challenges are then
// unknown, and asked again) are not copied. The backup is recorded in
// the audit log (backup.created, with its mark in bucketBackups in the
// same commit) before it takes its name and is reported: the record
// waits for its commit however long that takes, and a backup whose entry
// is not logged is removed; one whose entry may be (the store failed,
// and could not be read after) is kept under its partial name and
// refused with errBackupMayBeRecorded (its mark settles it at the next
// start or backup). It holds private keys: move it off the host to
// storage as private as the data directory. One backup is made at a
// time (ErrBackupUnderWay). Once begun, it is finished even if ctx ends
// meanwhile (the request's deadline passes, its client hangs up); only
// the end of Run abandons one whose record has not begun (below),
// removed and refused with ErrStopping before the audit log stops, and
// refuses any asked after (ErrStopping). It is written as
// backups/.partial-<time>, recorded once whole and checked, then
// renamed: one cut short by a crash is never under a backup's name
// without its record. What such a crash left is settled at the next
// start (and by the next backup): named if its record was committed,
// removed if not.
func (a *Authority) MakeBackup(ctx context.Context, c *Caller) (*Backup, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	bs, ok := a.store.(backupStore)
	if !ok {
		return nil, fmt.Errorf("authority: the store cannot be copied while in use")
	}
	if !a.backupMu.TryLock() {
		return nil, ErrBackupUnderWay
	}
	defer a.backupMu.Unlock()
	// Once begun, a backup is made whole and recorded whatever becomes of
	// the request: copying a large data file outlasts the request's
	// deadline, and a copy thrown away then would make a large authority
	// one that can never be backed up. Only the authority's stop abandons
	// it (abort), and waits for it to be removed before the audit log
	// stops: a backup is never left on disk without its record.
	ctx = context.WithoutCancel(ctx)
	abort, done, err := a.backups.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	// Its record comes only once the copy is made: the audit log's
	// commits do not wait for it meanwhile (group commit).
	a.audit.Unexpect(ctx)

	// Absolute: the answer names it for an admin elsewhere.
	root, err := filepath.Abs(filepath.Join(a.cfg.DataDir, BackupDirName))
	if err != nil {
		return nil, fmt.Errorf("authority: backup: %w", err)
	}
	if err := credfile.PrivateDir(root); err != nil {
		return nil, fmt.Errorf("authority: backup: %w", err)
	}
	// What a backup cut short by a crash left (a partial directory) is
	// settled first: named if recorded, else removed (no backup, and it
	// takes room).
	a.settleBackups(ctx, root)
	// A backup is a copy of the data file on the file system the
	// authority records on: one that would leave less room than the data
	// file holds (and minBackupRoom) is refused, so that backups, however
	// many are asked, never stop the authority from recording.
	if fi, err := os.Stat(filepath.Join(a.cfg.DataDir, "mandate.db")); err != nil {
		return nil, fmt.Errorf("authority: backup: %w", err)
	} else if free, known := diskFree(root); known {
		if need := uint64(fi.Size()) + max(uint64(fi.Size()), minBackupRoom); free < need {
			return nil, fmt.Errorf("%w: %d bytes free, a backup needs %d (a copy of the data file, %d bytes, and as much again, at least 64 MiB, left free): move or delete backups in %s",
				ErrBackupNoRoom, free, need, fi.Size(), root)
		}
	}
	now := a.now().UTC()
	name := now.Format("20060102T150405.000000000Z")
	b := &Backup{Dir: filepath.Join(root, name), CreatedAt: now}
	// Written under a partial name, and given its own once whole and
	// checked: a directory of backups/ with its name is never a copy
	// cut short (the process killed meanwhile).
	work := filepath.Join(root, partialBackupPrefix+name)
	if err := os.Mkdir(work, 0o700); err != nil {
		return nil, fmt.Errorf("authority: backup: %w", err)
	}
	err = a.ca.Still(func(keyIDs []string) error {
		f, err := backupFile(work, "mandate.db", func(w io.Writer) error {
			_, err := bs.Backup(ctx, &copyWriter{w: w, abort: abort})
			return err
		})
		if err != nil {
			return err
		}
		b.Files = append(b.Files, f)
		// The keys the copied state needs, not every file of keys/ (the
		// keys of authorities gone are no use to a restore); none of
		// those in a token (ca.pkcs11), which keeps them: with one, the
		// files of keys/ left from before it are the only ones.
		var srcs []string
		for _, id := range keyIDs {
			if a.caKeys == nil {
				continue
			}
			path := a.caKeys.Path(id)
			if _, err := os.Lstat(path); a.hsm != nil && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			srcs = append(srcs, path)
		}
		auditKey, auditVKey := AuditPaths(a.cfg.DataDir)
		srcs = append(srcs, auditKey, auditVKey)
		// The witness's, whenever it has one: also while
		// audit.witness.logs is empty, for a restore that has the
		// authority witness again to cosign with the key the logs
		// it witnessed know.
		witnessKey, witnessVKey := WitnessPaths(a.cfg.DataDir)
		for _, path := range []string{witnessKey, witnessVKey} {
			if _, err := os.Lstat(path); a.witness != nil || err == nil {
				srcs = append(srcs, path)
			}
		}
		for _, src := range srcs {
			rel, err := filepath.Rel(a.cfg.DataDir, src)
			if err != nil {
				return fmt.Errorf("authority: backup: %w", err)
			}
			f, err := backupFile(work, rel, func(w io.Writer) error { return copyFrom(src, w) })
			if err != nil {
				return err
			}
			b.Files = append(b.Files, f)
		}
		return nil
	})
	if err == nil {
		b.AuditTreeSize, err = a.backedUpTreeSize(ctx, filepath.Join(work, "mandate.db"))
	}
	if err == nil {
		// What the backup is, for a start on a data directory made of it
		// to say so (checkRestored).
		var f BackupFile
		f, err = backupFile(work, restoreMarkName, func(w io.Writer) error {
			return json.NewEncoder(w).Encode(restoreMark{Backup: name, CreatedAt: now, AuditTreeSize: b.AuditTreeSize})
		})
		if err == nil {
			b.Files = append(b.Files, f)
		}
	}
	if err == nil {
		err = credfile.SyncDir(work)
	}
	// Abandoned (the authority stopping) until its record begins; once
	// begun, it is recorded and named: the stop waits for that.
	if err == nil && abort.Err() != nil {
		err = errAbandoned
	}
	// Recorded before it takes its name: a crash between the two leaves
	// a partial directory that its mark (bucketBackups) says is whole and
	// recorded, named at the next start (settleBackups); never a
	// directory named as a backup that the audit log does not show.
	if err == nil {
		err = a.recordBackup(ctx, c, b, work)
	}
	if errors.Is(err, errBackupMayBeRecorded) {
		// Neither removed nor reported made: its entry may be in the
		// log. Its mark settles it at the next start or backup.
		a.log.ErrorContext(ctx, "backup kept: its record may have been written", "dir", work, "err", err)
		return nil, err
	}
	if err != nil {
		// What was written is no backup: removed, not left to be taken
		// for one, nor left as a copy of the keys the audit log does not
		// show.
		rerr := os.RemoveAll(work)
		if rerr == nil {
			rerr = credfile.SyncDir(root) // not back after a crash
		}
		if rerr != nil {
			a.log.ErrorContext(ctx, "remove a backup that failed", "dir", work, "err", rerr)
		}
		if abort.Err() != nil {
			a.log.WarnContext(ctx, "backup abandoned: the authority is stopping", "dir", work, "removed", rerr == nil)
			return nil, errAbandoned
		}
		return nil, err
	}
	if beforeBackupNamed != nil {
		beforeBackupNamed(work, b.Dir)
	}
	if err := nameBackup(work, b.Dir); err != nil {
		a.log.ErrorContext(ctx, "backup recorded, but not named", "dir", work, "err", err)
		return nil, fmt.Errorf("authority: backup: recorded (backup.created, dir %s), but it could not take its name: %w; it is kept in %s, and takes its name at the next start or backup", name, err, work)
	}
	a.log.InfoContext(ctx, "backup made", "dir", b.Dir, "audit_tree_size", b.AuditTreeSize)
	return b, nil
}

// bucketBackups holds the backups the audit log recorded: each is put
// there in the commit of its backup.created entry.
const bucketBackups = "backups" // backup directory's name → the entry's details (JSON)

// errBackupMayBeRecorded is a backup whose record failed in a way that
// leaves unknown whether its entry is in the log.
var errBackupMayBeRecorded = errors.New("authority: backup: its record may have been written")

// recordBackup records b (backup.created) with its mark in bucketBackups,
// in the same commit: it waits for the commit whatever the time taken (a
// stalled fsync), so that its answer says whether the entry is logged.
// A commit the store reported as failed may still have kept the entry:
// then the mark says it was (nil), or, if the mark cannot be read, the
// error matches errBackupMayBeRecorded. Any other error means the entry
// is not logged.
func (a *Authority) recordBackup(ctx context.Context, c *Caller, b *Backup, work string) error {
	name := filepath.Base(b.Dir)
	details := map[string]any{"dir": name, "files": len(b.Files), "audit_tree_size": b.AuditTreeSize}
	mark, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("authority: backup: %w", err)
	}
	_, err = a.recordWith(ctx, event{typ: "backup.created", actor: c.ID.String(), details: details}, func(tx store.Tx) error {
		return tx.Put(bucketBackups, []byte(name), mark)
	})
	if err == nil {
		return nil
	}
	switch verr := a.store.View(ctx, func(tx store.Tx) error {
		_, gerr := tx.Get(bucketBackups, []byte(name))
		return gerr
	}); {
	case verr == nil:
		a.log.WarnContext(ctx, "backup recorded, though the store reported its commit failed", "dir", b.Dir, "err", err)
		return nil
	case errors.Is(verr, store.ErrNotFound):
		return err
	default:
		return fmt.Errorf("%w, and is kept in %s: %v (and reading whether it was: %v); the next start or backup names it %s if it was, and removes it if not",
			errBackupMayBeRecorded, work, err, verr, name)
	}
}

// errAbandoned is a backup the authority's stop cut short.
var errAbandoned = fmt.Errorf("%w: the backup under way was abandoned and what it had written removed: ask for it again once the authority is back", ErrStopping)

// backupGate lets the authority's stop abandon the backup under way and
// wait for it to end, and refuses backups once the authority has stopped.
type backupGate struct {
	mu      sync.Mutex
	stopped bool
	abort   context.CancelFunc // of the backup under way, if any
	wg      sync.WaitGroup
}

// begin starts a backup: abort ends when the stop abandons it, and done
// must be called once it has ended (recorded, or removed).
func (g *backupGate) begin(ctx context.Context) (abort context.Context, done func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return nil, nil, fmt.Errorf("%w: no backup is made", ErrStopping)
	}
	abort, cancel := context.WithCancel(ctx)
	g.abort = cancel
	g.wg.Add(1)
	return abort, func() {
		g.mu.Lock()
		g.abort = nil
		g.mu.Unlock()
		cancel()
		g.wg.Done()
	}, nil
}

// stop refuses backups from now on, abandons the one under way (unless
// it has taken its name: it is then being recorded) and waits for it to
// end.
func (g *backupGate) stop() {
	g.mu.Lock()
	g.stopped = true
	if g.abort != nil {
		g.abort()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// partialBackupPrefix begins the name of a backup being written.
const partialBackupPrefix = ".partial-"

// beforeBackupNamed, when set (tests), is called with a backup's partial
// directory, whole and checked, and the name it is about to take.
var beforeBackupNamed func(work, dir string)

// settleBackups settles what backups cut short by a crash left in root
// (a backup's own failures remove theirs): a partial directory whose
// mark is in bucketBackups was recorded, whole and checked, before the
// crash came, and takes its name; one without is no backup and is
// removed. One whose mark cannot be read is left for the next time.
// They are found by name among root's entries, not by a pattern made of
// root's path: a data directory whose name holds glob characters would
// miss its own, or match another directory's.
func (a *Authority) settleBackups(ctx context.Context, root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		a.log.ErrorContext(ctx, "list backups cut short", "dir", root, "err", err)
		return
	}
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), partialBackupPrefix)
		if !ok {
			continue
		}
		dir := filepath.Join(root, e.Name())
		err := a.store.View(ctx, func(tx store.Tx) error {
			_, err := tx.Get(bucketBackups, []byte(name))
			return err
		})
		switch {
		case err == nil && e.IsDir():
			if err := nameBackup(dir, filepath.Join(root, name)); err != nil {
				a.log.ErrorContext(ctx, "name a recorded backup cut short", "dir", dir, "err", err)
				continue
			}
			a.log.InfoContext(ctx, "named a recorded backup cut short before its name", "dir", filepath.Join(root, name))
		case err == nil || errors.Is(err, store.ErrNotFound):
			if err := os.RemoveAll(dir); err != nil {
				a.log.ErrorContext(ctx, "remove a backup cut short", "dir", dir, "err", err)
				continue
			}
			if err := credfile.SyncDir(root); err != nil {
				a.log.ErrorContext(ctx, "remove a backup cut short", "dir", dir, "err", err)
				continue
			}
			a.log.InfoContext(ctx, "removed a backup cut short", "dir", dir)
		default:
			a.log.ErrorContext(ctx, "read whether a backup cut short was recorded", "dir", dir, "err", err)
		}
	}
}

// settleBackupsAtStart settles the data directory's backups/ (see
// settleBackups), if it exists and only this user may change it. A
// backups/ that links to a directory elsewhere (another volume) is
// settled there, as MakeBackup writes there.
func (a *Authority) settleBackupsAtStart(ctx context.Context) {
	root := filepath.Join(a.cfg.DataDir, BackupDirName)
	fi, err := os.Stat(root)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil && !fi.IsDir() {
		err = fmt.Errorf("%w: %s is not a directory", credfile.ErrNotPrivate, root)
	}
	if err == nil {
		err = credfile.CheckOwnWritable(root, fi)
	}
	if err != nil {
		a.log.WarnContext(ctx, "backups cut short by a crash are not looked for", "dir", root, "err", err)
		return
	}
	a.settleBackups(ctx, root)
}

// nameBackup gives the partial directory work of a recorded backup its
// name dir, durably. An existing dir is never replaced.
func nameBackup(work, dir string) error {
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		if err == nil {
			err = fmt.Errorf("%s: %w", dir, fs.ErrExist)
		}
		return err
	}
	if err := os.Rename(work, dir); err != nil {
		return err
	}
	return credfile.SyncDir(filepath.Dir(dir))
}

// backupFile writes rel (a path relative to the backup's directory dir)
// with write, 0600 in a directory of mode 0700, synced, and describes it.
func backupFile(dir, rel string, write func(io.Writer) error) (BackupFile, error) {
	path := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return BackupFile{}, fmt.Errorf("authority: backup: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return BackupFile{}, fmt.Errorf("authority: backup: %w", err)
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	err = write(cw)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = credfile.SyncDir(filepath.Dir(path))
	}
	if err != nil {
		return BackupFile{}, fmt.Errorf("authority: backup %s: %w", rel, err)
	}
	return BackupFile{Path: filepath.ToSlash(rel), Bytes: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// copyFrom copies the file at src to w.
func copyFrom(src string, w io.Writer) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// backupCopying, when set (tests), is called once a backup's copy of the
// data file has begun (its first bytes written), with the context that
// ends when the backup is abandoned.
var backupCopying func(abort context.Context)

// copyWriter is the writer of a backup's copy of the data file.
type copyWriter struct {
	w     io.Writer
	abort context.Context
	began bool
}

func (c *copyWriter) Write(p []byte) (int, error) {
	if c.abort.Err() != nil {
		return 0, errAbandoned
	}
	n, err := c.w.Write(p)
	if !c.began && backupCopying != nil {
		c.began = true
		backupCopying(c.abort)
	}
	return n, err
}

// countWriter counts what it passes on.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// backedUpTreeSize opens the copied store and checks its audit log as a
// start would (see audit.Log.CheckCopy), after the store's check of
// every page (bolt.Options.Check): what is reported as a backup is one
// the authority can start from. It returns the copy's tree size.
func (a *Authority) backedUpTreeSize(ctx context.Context, path string) (uint64, error) {
	st, err := bolt.Open(path, bolt.Options{Check: true})
	if err != nil {
		return 0, fmt.Errorf("authority: backup: the copy does not open: %w", err)
	}
	defer st.Close()
	size, err := a.audit.CheckCopy(ctx, st)
	if err != nil {
		return 0, fmt.Errorf("authority: backup: the copy's audit log: %w", err)
	}
	return size, nil
}

// checkNotABackup refuses a data directory that is a backup where it
// was made, <data dir>/backups/<name> of a data directory: an authority
// started on it would change the backup (no longer the state it was
// made of) and, the store's lock being the data file's, could run beside
// the authority it is a backup of, with the same CA and audit log keys,
// forking the log. A backup is restored by starting on a copy of it.
func checkNotABackup(dataDir string) error {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("authority: data dir: %w", err)
	}
	// The path as given (through a backups/ that links elsewhere), and
	// the directory it leads to.
	dirs := []string{dir}
	if resolved, err := filepath.EvalSymlinks(dir); err == nil && resolved != dir {
		dirs = append(dirs, resolved)
	}
	home := ""
	for _, dir := range dirs {
		backups := filepath.Dir(dir)
		if filepath.Base(backups) != BackupDirName {
			continue
		}
		if _, err := os.Lstat(filepath.Join(filepath.Dir(backups), "mandate.db")); err == nil {
			home = filepath.Dir(backups)
			break
		}
	}
	if home == "" {
		return nil
	}
	return fmt.Errorf("authority: the data directory %s is a backup, in the %s/ of the data directory %s: started on it, the authority would change the backup, and could run beside the authority of %s with the same keys, forking its audit log. "+
		"To restore it, stop the authority of %s and start one on a copy: cp -a %s/. restored/ && mandate serve --data-dir restored",
		dataDir, BackupDirName, home, home, home, dataDir)
}

// restoreMarkName is the file of a backup that says which backup it is
// (restoreMark). A data directory made of the backup holds it until the
// authority's first start there has recorded that it started from it;
// the data directory the authority runs on never holds it otherwise.
const restoreMarkName = "backup.json"

// restoreMark is what restoreMarkName holds.
type restoreMark struct {
	Backup        string    `json:"backup"` // the backup directory's name under backups/
	CreatedAt     time.Time `json:"created_at"`
	AuditTreeSize uint64    `json:"audit_tree_size"` // the size of the log the backup holds
}

// checkRestored looks for a restore mark in the data directory (once the
// audit log is open, before anything is recorded): on the first start on
// a data directory made of a backup (the mark names the log's size), it
// warns that what the authority did after the backup is undone, and
// authority.started names the backup (recordStart, which then removes
// the mark). A mark of a smaller log than the stored one is removed when
// an authority.started entry after its size names its backup (a crash
// came between that record and the mark's removal), and otherwise taken
// as a restore not yet recorded (a crash came after other entries, before
// that one); one that cannot be read, or names a larger log, is left with
// a warning.
func (a *Authority) checkRestored(ctx context.Context) {
	path := filepath.Join(a.cfg.DataDir, restoreMarkName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var m restoreMark
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	size := a.audit.Size()
	switch {
	case err != nil:
		a.log.WarnContext(ctx, "the data directory holds a backup's mark that cannot be read: whether it was restored from a backup is unknown", "path", path, "err", err)
	case m.AuditTreeSize < size:
		// Entries logged since the backup: its start was recorded, unless
		// the authority stopped (a crash) after logging others but before
		// its authority.started entry.
		switch recorded, err := a.restoreRecorded(ctx, m); {
		case err != nil:
			a.log.WarnContext(ctx, "the data directory holds a backup's mark, and whether its start was recorded is unknown: left as it is", "path", path, "backup", m.Backup, "err", err)
		case recorded:
			a.removeRestoreMark(ctx)
		default:
			a.restored(ctx, m)
		}
	case m.AuditTreeSize == size:
		a.restored(ctx, m)
	default:
		a.log.WarnContext(ctx, "the data directory holds a backup's mark of a larger audit log than it holds: left as it is", "path", path, "backup", m.Backup, "audit_tree_size", m.AuditTreeSize, "stored_tree_size", size)
	}
}

// restored says that the authority starts from backup m, and has its
// authority.started entry name it.
func (a *Authority) restored(ctx context.Context, m restoreMark) {
	a.restoredFrom = &m
	a.log.WarnContext(ctx, "started from a backup: what the authority did after the backup was made is undone. "+
		"Revocations, node bans and join token withdrawals made since are not in force, join tokens used since can be used again, "+
		"agent and federation changes made since are reverted, and nodes, delegations and audit entries made since are unknown here (the log's next entries take their indexes). "+
		"Revoke, ban and withdraw again what was since, and re-apply the changes; docs/api.md, Backups, says how to find them",
		"backup", m.Backup, "backup_created_at", m.CreatedAt, "audit_tree_size", m.AuditTreeSize)
}

// restoreRecorded reports whether the log holds, from index
// m.AuditTreeSize on, the authority.started entry naming backup m.
func (a *Authority) restoreRecorded(ctx context.Context, m restoreMark) (bool, error) {
	q := audit.Query{Type: "authority.started", Limit: audit.MaxSearchLimit}
	if m.AuditTreeSize > 0 {
		q.After, q.HasAfter = m.AuditTreeSize-1, true
	}
	for {
		indexes, next, err := a.audit.Search(ctx, q)
		if err != nil {
			return false, err
		}
		for _, i := range indexes {
			b, err := a.audit.Entry(ctx, i)
			if err != nil {
				return false, err
			}
			e, err := audit.Decode(b)
			if err != nil {
				return false, err
			}
			var d struct {
				RestoredFrom *restoreMark `json:"restored_from"`
			}
			if e.ReadDetails(&d) == nil && d.RestoredFrom != nil && d.RestoredFrom.Backup == m.Backup {
				return true, nil
			}
		}
		if next == nil {
			return false, nil
		}
		q.After, q.HasAfter = *next, true
	}
}

// removeRestoreMark removes the data directory's restore mark, durably.
func (a *Authority) removeRestoreMark(ctx context.Context) {
	err := os.Remove(filepath.Join(a.cfg.DataDir, restoreMarkName))
	if err == nil {
		err = credfile.SyncDir(a.cfg.DataDir)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.ErrorContext(ctx, "remove the restore mark", "err", err)
	}
}
