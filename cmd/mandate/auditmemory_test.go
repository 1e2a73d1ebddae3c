package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/credfile"
)

// audit chain's memory (--remember) is made as a private directory: a
// missing one is made 0700, with its missing parents; one that group or
// others may write to is refused, and nothing is written in it: they
// could remove or roll back what it remembers (an older checkpoint,
// validly signed), so that a later run proves a log consistent with
// less than this auditor saw.
func TestAuditMemoryIsPrivate(t *testing.T) {
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "other.event", Actor: audit.ActorSystem}))
	raw := []byte(l.checkpoint(""))
	cp, err := openCheckpoint(raw, v)
	if err != nil {
		t.Fatal(err)
	}
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
			if err := lv.recall(dir); err != nil {
				t.Fatal(err)
			}
			kept, err := lv.keep()
			_, serr := os.Stat(lv.file(logKey(v)))
			if !tc.ok {
				if !errors.Is(err, credfile.ErrNotPrivate) || serr == nil {
					t.Fatalf("keep in %s = %v, %v (written: %v); want it refused (%v), nothing written", tc.name, kept, err, serr == nil, credfile.ErrNotPrivate)
				}
				return
			}
			if err != nil || len(kept) != 1 || serr != nil {
				t.Fatalf("keep = %v, %v (%v); want the checkpoint remembered", kept, err, serr)
			}
			if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm()&0o022 != 0 {
				t.Fatalf("the memory: %v, %v; want a directory only this user may write to", fi.Mode(), err)
			}
		})
	}
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
