package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// process is what was read of a caller's process when it connected
// (readProcess), checked to be of the process that connected.
type process struct {
	// err is why the process could not be read or checked: nothing
	// below is known, and no selector that asks it matches.
	err error
	// exe is the path of its executable, "" when that path no longer
	// names the file it runs (pathErr says why).
	exe     string
	pathErr error
	// file is its executable, open (while a sha256 selector may ask
	// its digest), and key names its contents; nil when its contents
	// cannot be trusted (fileErr says why).
	file    *os.File
	fileErr error
	key     fileKey
	// groups are its supplementary group ids.
	groups []uint32
	// cgroup is its cgroup v2 path, "" when it has none this process
	// can name (cgroupErr says why).
	cgroup    string
	cgroupErr error
}

func (p *process) close() {
	if p != nil && p.file != nil {
		_ = p.file.Close()
	}
}

// procNeeds is what the entries' selectors ask of a caller's process:
// its executable's path, its contents, its supplementary groups, its
// cgroup.
type procNeeds struct{ exe, file, groups, cgroup bool }

func (n procNeeds) any() bool { return n.exe || n.file || n.groups || n.cgroup }

// needsOf is what the selectors of entries ask of the process of the
// caller who: only those of the entries that its ids do not rule out
// (an entry with uid:1000 beside its path asks nothing of another
// user's callers, which are then not read).
func needsOf(entries []Entry, who Caller) procNeeds {
	var n procNeeds
	for _, e := range entries {
		if !idsAllow(e, who) {
			continue
		}
		for _, s := range e.Selectors {
			switch s.Kind {
			case "path":
				n.exe = true
			case "sha256":
				n.exe, n.file = true, true
			case "supplementary_gid", "supplementary_group":
				n.groups = true
			case "cgroup", "systemd_unit", "container_id", "pod_uid":
				n.cgroup = true
			}
		}
	}
	return n
}

// idsAllow reports whether no selector of e on the caller's user or
// primary group id rules who out.
func idsAllow(e Entry, who Caller) bool {
	for _, s := range e.Selectors {
		if match, known := idsMatch(s, who); known && !match {
			return false
		}
	}
	return true
}

// readTimeout bounds the reading of a caller's process when it
// connects: an executable on a file system that does not answer holds
// no more than its own connection.
const readTimeout = 10 * time.Second

// fileKey names a file's contents: the same key, the same contents
// (a running executable cannot be written, and any write changes its
// ctime).
type fileKey struct {
	dev, ino           uint64
	size, mtime, ctime int64
}

// Bounds of the executables' digests.
const (
	// maxExecutableBytes bounds an executable hashed: a caller running
	// a larger one matches no sha256 selector.
	maxExecutableBytes = 1 << 30
	// maxDigests bounds the digests kept, by fileKey.
	maxDigests = 1024
	// maxHashing bounds the digests computed at once: one that hangs
	// (an executable on a file system that does not answer) holds its
	// slot, and the callers after wait for one, no longer than their
	// calls last. The digests one user id's callers started hold at
	// most maxHashingPerUID of them: one user's that hang, or that
	// hash one large executable after another, leave the others'.
	maxHashing       = 4
	maxHashingPerUID = 1
)

var hashing = newSlots(maxHashing, maxHashingPerUID)

// digests are the SHA-256 digests of the callers' executables, each
// computed once per fileKey and kept: the callers asking for one being
// computed wait for it, each no longer than its call lasts.
type digests struct {
	mu    sync.Mutex
	done  map[fileKey]string
	doing map[fileKey]*digestCall
}

type digestCall struct {
	done chan struct{}
	sum  string
	err  error
}

func newDigests() *digests {
	return &digests{done: map[fileKey]string{}, doing: map[fileKey]*digestCall{}}
}

// of is the hex SHA-256 digest of f, whose contents key names, or why
// it could not be computed (the file larger than maxExecutableBytes,
// or changed since key was read). A digest not known is computed once
// (by a goroutine of its own, which ends when f is read, or closed),
// in a slot of the caller's user id uid, while ctx lasts.
func (d *digests) of(ctx context.Context, f *os.File, key fileKey, uid uint32) (string, error) {
	if key.size > maxExecutableBytes {
		return "", fmt.Errorf("the executable is %d bytes, more than the %d hashed", key.size, maxExecutableBytes)
	}
	c, sum, ok, _ := d.look(key, false)
	if c == nil && !ok {
		// A slot first, then a second look, which starts it unless
		// another caller has meanwhile.
		release, err := hashing.take(ctx, uid)
		if err != nil {
			return "", fmt.Errorf("the executable's digest: %w", err)
		}
		var mine bool
		if c, sum, ok, mine = d.look(key, true); mine {
			go func() {
				defer release()
				d.compute(c, f, key)
			}()
		} else {
			release()
		}
	}
	if ok {
		return sum, nil
	}
	select {
	case <-c.done:
		return c.sum, c.err
	case <-ctx.Done():
		return "", fmt.Errorf("the executable's digest: %w", ctx.Err())
	}
}

// look is the digest of key when known (ok), else its computation under
// way, if any, or, when start and none is, a new one (created: its
// caller starts it).
func (d *digests) look(key fileKey, start bool) (c *digestCall, sum string, ok, created bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sum, ok := d.done[key]; ok {
		return nil, sum, true, false
	}
	if c = d.doing[key]; c == nil && start {
		c = &digestCall{done: make(chan struct{})}
		d.doing[key] = c
		created = true
	}
	return c, "", false, created
}

func (d *digests) compute(c *digestCall, f *os.File, key fileKey) {
	c.sum, c.err = hashFile(f, key)
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.doing, key)
	if c.err == nil {
		if len(d.done) >= maxDigests {
			for k := range d.done { // any one
				delete(d.done, k)
				break
			}
		}
		d.done[key] = c.sum
	}
	close(c.done)
}

// hashFile is the hex SHA-256 digest of f, which must be as key says
// before and after it is read.
func hashFile(f *os.File, key fileKey) (string, error) {
	changed := errors.New("the executable changed since the caller connected")
	if fi, err := f.Stat(); err != nil || keyOf(fi) != key {
		return "", changed
	}
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, 0, key.size+1))
	if err != nil {
		return "", fmt.Errorf("the executable's digest: %w", err)
	}
	if fi, err := f.Stat(); err != nil || keyOf(fi) != key || n != key.size {
		return "", changed
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
