package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/credfile"
)

// audit chain's memory (--remember) is made as a private directory: a
// missing one is made 0700, with its missing parents; one that group or
// others may write to is refused, nothing read from it and nothing
// written in it: they could remove or roll back what it remembers (an
// older checkpoint, validly signed), so that a run proves a log
// consistent with less than this auditor saw.
func TestAuditMemoryIsPrivate(t *testing.T) {
	v, cp, raw := oneCheckpoint(t)
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
		ok   bool
	}{
		{"missing, its parent too", func(t *testing.T) string { return filepath.Join(t.TempDir(), "a", "mem") }, true},
		{"private", func(t *testing.T) string { return t.TempDir() }, true},
		{"others may read it", func(t *testing.T) string { return chmodded(t, 0o755) }, true},
		{"group may write to it", func(t *testing.T) string { return chmodded(t, 0o770) }, false},
		{"anyone may write to it", func(t *testing.T) string { return chmodded(t, 0o777) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir(t)
			lv := newLogViews()
			lv.of(v, nil)(cp, raw)
			if err := lv.recall(dir); !tc.ok {
				if !errors.Is(err, credfile.ErrNotPrivate) {
					t.Fatalf("recall from %s = %v; want it refused (%v)", tc.name, err, credfile.ErrNotPrivate)
				}
				// keep checks again: the directory may have been made
				// writable by others since recall.
				kept, err := lv.keep()
				if _, serr := os.Stat(lv.file(logKey(v))); !errors.Is(err, credfile.ErrNotPrivate) || serr == nil {
					t.Fatalf("keep in %s = %v, %v (written: %v); want it refused (%v), nothing written", tc.name, kept, err, serr == nil, credfile.ErrNotPrivate)
				}
				return
			} else if err != nil {
				t.Fatal(err)
			}
			kept, err := lv.keep()
			_, serr := os.Stat(lv.file(logKey(v)))
			if err != nil || len(kept) != 1 || serr != nil {
				t.Fatalf("keep = %v, %v (%v); want the checkpoint remembered", kept, err, serr)
			}
			if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm()&0o022 != 0 {
				t.Fatalf("the memory: %v, %v; want a directory only this user may write to", fi.Mode(), err)
			}
		})
	}
}

// A checkpoint remembered in a private directory, in a file group or
// others may write to (its mode changed since), is not read: recall
// refuses the memory, rather than prove the logs consistent with
// whatever another user put there.
func TestAuditMemoryFileIsPrivate(t *testing.T) {
	v, cp, raw := oneCheckpoint(t)
	dir := t.TempDir()
	lv := newLogViews()
	lv.of(v, nil)(cp, raw)
	if err := lv.recall(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := lv.keep(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		perm os.FileMode
		ok   bool
	}{{0o600, true}, {0o644, true}, {0o620, false}, {0o666, false}} {
		if err := os.Chmod(lv.file(logKey(v)), tc.perm); err != nil {
			t.Fatal(err)
		}
		again := newLogViews()
		again.of(v, nil)(cp, raw)
		err := again.recall(dir)
		if tc.ok && (err != nil || len(again.recalled) != 1) {
			t.Errorf("recall of a checkpoint file of mode %v = %v (%d recalled), want it read", tc.perm, err, len(again.recalled))
		}
		if !tc.ok && (!errors.Is(err, credfile.ErrNotPrivate) || len(again.recalled) != 0) {
			t.Errorf("recall of a checkpoint file of mode %v = %v (%d recalled), want it refused (%v)", tc.perm, err, len(again.recalled), credfile.ErrNotPrivate)
		}
	}
}

// oneCheckpoint is a log's signed checkpoint (raw, and read as cp)
// after one entry, and the log's verifier.
func oneCheckpoint(t *testing.T) (note.Verifier, *log.Checkpoint, []byte) {
	t.Helper()
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "other.event", Actor: audit.ActorSystem}))
	raw := []byte(l.checkpoint(""))
	cp, err := openCheckpoint(raw, v)
	if err != nil {
		t.Fatal(err)
	}
	return v, cp, raw
}

// chmodded is a new directory of mode perm.
func chmodded(t *testing.T, perm os.FileMode) string {
	dir := filepath.Join(t.TempDir(), "mem")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		t.Fatal(err)
	}
	return dir
}

// audit verify's memory (--state), which every audit command holds the
// log to, is refused as --remember's files are: a state file group or
// others may write to is neither read (by audit verify, show, tail,
// search, prove or chain) nor written over by audit verify, rather than
// prove the log consistent with whatever another user put there.
func TestAuditStateIsPrivate(t *testing.T) {
	v, cp, raw := oneCheckpoint(t)
	for _, tc := range []struct {
		perm os.FileMode
		ok   bool
	}{{0o600, true}, {0o644, true}, {0o620, false}, {0o666, false}} {
		t.Run(tc.perm.String(), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "mandate-audit.state")
			if err := os.WriteFile(file, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(file, tc.perm); err != nil {
				t.Fatal(err)
			}
			for _, strict := range []bool{true, false} {
				lv := newLogViews()
				lv.of(v, nil)(cp, raw)
				got, _, err := lv.recallState(file, v, strict)
				if tc.ok && (err != nil || got == nil) {
					t.Errorf("recallState (strict %v) of a state file of mode %v = %v, %v; want it read", strict, tc.perm, got, err)
				}
				if !tc.ok && (!errors.Is(err, credfile.ErrNotPrivate) || got != nil) {
					t.Errorf("recallState (strict %v) of a state file of mode %v = %v, %v; want it refused (%v)", strict, tc.perm, got, err, credfile.ErrNotPrivate)
				}
			}
			err := keepState(t.Context(), nil, v, file, cp, raw)
			if tc.ok && err != nil {
				t.Errorf("keepState over a state file of mode %v = %v", tc.perm, err)
			}
			if !tc.ok && !errors.Is(err, credfile.ErrNotPrivate) {
				t.Errorf("keepState over a state file of mode %v = %v; want it refused (%v)", tc.perm, err, credfile.ErrNotPrivate)
			}
			if fi, err := os.Stat(file); err != nil || (!tc.ok && fi.Mode().Perm() != tc.perm) {
				t.Errorf("the state file after keepState: %v, %v; want it left as it was", fi.Mode(), err)
			}
		})
	}
}
