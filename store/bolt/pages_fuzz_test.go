package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// fuzzPageSize is the page size of the files FuzzWalkPages starts from:
// an eighth of the usual 4096, for inputs the fuzzer can mutate quickly;
// the page format is the same.
const fuzzPageSize = 512

// writtenFile is a data file as bbolt wrote it, with its root bucket's
// page and its high-water mark.
type writtenFile struct {
	file      []byte
	root, hwm uint64
}

// writeBoltFile has bbolt write a small data file at path with fill,
// checks what it wrote with shape (and bbolt's own check), and returns
// it: every page up to its high-water mark.
func writeBoltFile(t testing.TB, path string, fill, shape func(*bbolt.Tx) error) writtenFile {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{PageSize: fuzzPageSize})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fill); err != nil {
		db.Close()
		t.Fatal(err)
	}
	var w writtenFile
	err = db.View(func(tx *bbolt.Tx) error {
		w.root, w.hwm = uint64(tx.Cursor().Bucket().Root()), uint64(tx.Size())/fuzzPageSize
		for e := range tx.Check() {
			return e
		}
		return shape(tx)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(b)) < w.hwm*fuzzPageSize {
		t.Fatalf("bbolt wrote %d bytes, fewer than its %d pages", len(b), w.hwm)
	}
	w.file = b[:w.hwm*fuzzPageSize]
	return w
}

// seedFiles are the data files FuzzWalkPages starts from, each as bbolt
// wrote it: buckets over several pages (branch pages), a bucket nested in
// another with pages of its own, buckets small enough to be kept inline
// (one of them nested), a value over several pages, empty values; a file
// of two buckets, one inline in the other (a bucket that holds a bucket
// is never inline); a file with no bucket at all.
func seedFiles(t testing.TB) []writtenFile {
	dir := t.TempDir()
	put := func(tx *bbolt.Tx, path []string, key string, value []byte) error {
		b, err := tx.CreateBucketIfNotExists([]byte(path[0]))
		for _, name := range path[1:] {
			if err != nil {
				return err
			}
			b, err = b.CreateBucketIfNotExists([]byte(name))
		}
		if err != nil {
			return err
		}
		return b.Put([]byte(key), value)
	}
	// page says what bbolt wrote as the page id: "branch", "leaf" or
	// "inline" (0), and over how many pages.
	page := func(tx *bbolt.Tx, id uint64) string {
		if id == 0 {
			return "inline"
		}
		p, err := tx.Page(int(id))
		if err != nil || p == nil {
			return fmt.Sprintf("page %d: %v", id, err)
		}
		return fmt.Sprintf("%s+%d", p.Type, p.OverflowCount)
	}
	wantPages := func(tx *bbolt.Tx, want map[string]string) error {
		for path, w := range want {
			var b *bbolt.Bucket
			for i, name := range bytes.Split([]byte(path), []byte("/")) {
				if i == 0 {
					b = tx.Bucket(name)
				} else {
					b = b.Bucket(name)
				}
			}
			if got := page(tx, uint64(b.Root())); got != w {
				return fmt.Errorf("bucket %s's root is %s, want %s", path, got, w)
			}
		}
		return nil
	}
	return []writtenFile{
		writeBoltFile(t, filepath.Join(dir, "empty.db"), func(*bbolt.Tx) error { return nil }, func(*bbolt.Tx) error { return nil }),
		writeBoltFile(t, filepath.Join(dir, "full.db"), func(tx *bbolt.Tx) error {
			for i := range 24 {
				if err := put(tx, []string{[]string{"a", "b"}[i%2]}, fmt.Sprintf("k%03d", i), bytes.Repeat([]byte{'v'}, 40)); err != nil {
					return err
				}
			}
			for i := range 16 {
				if err := put(tx, []string{"a", "nested"}, fmt.Sprintf("n%03d", i), bytes.Repeat([]byte{'n'}, 40)); err != nil {
					return err
				}
			}
			for _, kv := range []struct {
				path       []string
				key, value string
			}{{[]string{"a", "tiny"}, "t", "x"}, {[]string{"small"}, "k", "v"}, {[]string{"small"}, "e", ""}} {
				if err := put(tx, kv.path, kv.key, []byte(kv.value)); err != nil {
					return err
				}
			}
			return put(tx, []string{"big"}, "k", bytes.Repeat([]byte{'B'}, 3*fuzzPageSize+17))
		}, func(tx *bbolt.Tx) error {
			return wantPages(tx, map[string]string{
				"a": "branch+0", "a/nested": "branch+0", "a/tiny": "inline",
				"b": "branch+0", "small": "inline", "big": "leaf+3",
			})
		}),
		writeBoltFile(t, filepath.Join(dir, "inline.db"), func(tx *bbolt.Tx) error {
			return put(tx, []string{"only", "inline"}, "k", []byte("v"))
		}, func(tx *bbolt.Tx) error {
			return wantPages(tx, map[string]string{"only": "leaf+0", "only/inline": "inline"})
		}),
	}
}

// countingReader is the data file for walkPages: it counts the reads
// and refuses any past limit, so that a walk that does not end is a
// failure rather than a hang.
type countingReader struct {
	r     *bytes.Reader
	reads uint64
	limit uint64
}

var errTooManyReads = errors.New("too many reads")

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	if c.reads++; c.reads > c.limit {
		return 0, errTooManyReads
	}
	return c.r.ReadAt(p, off)
}

// FuzzWalkPages feeds walkPages (and checkPages) data files: as bbolt
// wrote them, then changed. It must never panic, must end having read each page at most
// once (plus once for the pages a page overflows into), and must accept
// every file bbolt wrote.
func FuzzWalkPages(f *testing.F) {
	files := seedFiles(f)
	for _, w := range files {
		f.Add(w.file, w.root, w.hwm)
	}
	// Pages read past the file's end, and roots outside it.
	f.Add(files[1].file, files[1].root, files[1].hwm+1)
	f.Add(files[1].file, uint64(0), files[1].hwm)
	f.Add(files[1].file[:len(files[1].file)-fuzzPageSize/2], files[1].root, files[1].hwm)
	written := make(map[string]writtenFile, len(files))
	for _, w := range files {
		written[string(w.file)] = w
	}
	f.Fuzz(func(t *testing.T, file []byte, root, hwm uint64) {
		// The caller's high-water mark is at most the file's pages
		// (Store.check refuses a file shorter than its pages first);
		// one more reaches a short read.
		pages := uint64(len(file)) / fuzzPageSize
		hwm %= pages + 2
		r := &countingReader{r: bytes.NewReader(file), limit: 2*hwm + 1}
		err := walkPages(r, fuzzPageSize, root, hwm)
		if errors.Is(err, errTooManyReads) {
			t.Fatalf("walkPages read more than %d times over %d pages: it would not end", r.limit, hwm)
		}
		if w, ok := written[string(file)]; ok && root == w.root && hwm == w.hwm && err != nil {
			t.Fatalf("walkPages refuses a file bbolt wrote: %v", err)
		}
		// The whole check, with the freelist the first meta names: it
		// never panics, and ends.
		freelist := noFreelist
		if len(file) >= metaFreelistAt+8 {
			freelist = binary.LittleEndian.Uint64(file[metaFreelistAt:])
		}
		r = &countingReader{r: bytes.NewReader(file), limit: 4*hwm + 8}
		if err := checkPages(r, fuzzPageSize, meta{root: root, freelist: freelist, pages: hwm}); errors.Is(err, errTooManyReads) {
			t.Fatalf("checkPages read more than %d times over %d pages: it would not end", r.limit, hwm)
		}
	})
}

// FuzzWalkPagesOfWrittenFiles has bbolt write data files of shapes the
// fuzzer chooses, over several transactions (so that pages are freed and
// reused): walkPages must accept every one (bbolt can leave a page
// unaccounted for, see the seeds, which walkPages does not look for),
// and checkPages refuse one exactly when bbolt's own check does. ops is read three bytes at a
// time: an operation, a bucket path (one to three of "a" and "b") and a
// key or value size.
func FuzzWalkPagesOfWrittenFiles(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 1})
	// Many keys in one bucket (branch pages), a value over several
	// pages, nested buckets, deletions in later transactions.
	var many []byte
	for k := range byte(40) {
		many = append(many, 1, k%4<<2, k)
	}
	f.Add(append(many, 0, 0, 0, 1, 5, 250, 2, 0, 3, 0, 0, 0, 3, 4, 0, 1, 9, 1))
	// b/b/a, then b/a made and b deleted in one transaction: bbolt
	// (v1.5.0) leaves one of b's pages neither reachable nor free (its
	// own check says "unreachable unfreed"). The walk reads reachable
	// pages only, and accepts the file.
	f.Add([]byte("1.02001%0070"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 300 {
			return // a hundred operations are plenty, and keep each run short
		}
		path := filepath.Join(t.TempDir(), "f.db")
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{PageSize: fuzzPageSize, NoSync: true, NoGrowSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		// names is the bucket path b names; bucket opens it (creating
		// its buckets if create), or is nil.
		names := func(b byte) [][]byte {
			var path [][]byte
			for i := range int(b&3)%3 + 1 {
				path = append(path, []byte{"ab"[b>>(2+i)&1]})
			}
			return path
		}
		bucket := func(tx *bbolt.Tx, path [][]byte, create bool) *bbolt.Bucket {
			b := tx.Cursor().Bucket() // the root bucket
			for _, name := range path {
				if create {
					b, _ = b.CreateBucketIfNotExists(name)
				} else {
					b = b.Bucket(name)
				}
				if b == nil {
					return nil
				}
			}
			return b
		}
		for len(ops) > 0 {
			// One transaction: up to an operation 0.
			err := db.Update(func(tx *bbolt.Tx) error {
				for ; len(ops) >= 3; ops = ops[3:] {
					op, where, n := ops[0], ops[1], ops[2]
					key := fmt.Appendf(nil, "k%d", n%32)
					switch op % 5 {
					case 0:
						ops = ops[3:]
						return nil
					case 1:
						if b := bucket(tx, names(where), true); b != nil {
							if err := b.Put(key, bytes.Repeat([]byte{n}, int(n)*int(n)/8)); err != nil {
								return err
							}
						}
					case 2:
						if b := bucket(tx, names(where), false); b != nil {
							if err := b.Delete(key); err != nil {
								return err
							}
						}
					case 3:
						path := names(where)
						if parent := bucket(tx, path[:len(path)-1], false); parent != nil {
							_ = parent.DeleteBucket(path[len(path)-1]) // absent: nothing to do
						}
					case 4:
						if b := bucket(tx, names(where), true); b != nil {
							if err := b.SetSequence(uint64(n)); err != nil {
								return err
							}
						}
					}
				}
				ops = nil
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		var w writtenFile
		if err := db.View(func(tx *bbolt.Tx) error {
			w.root, w.hwm = uint64(tx.Cursor().Bucket().Root()), uint64(tx.Size())/fuzzPageSize
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		file, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		if err := walkPages(file, fuzzPageSize, w.root, w.hwm); err != nil {
			t.Fatalf("walkPages refuses a file bbolt wrote: %v", err)
		}
		// The whole check (the freelist too) refuses the file exactly
		// when bbolt's own check does.
		var bboltErr error
		if err := db.View(func(tx *bbolt.Tx) error {
			for e := range tx.Check() {
				if bboltErr == nil {
					bboltErr = e
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkFile(t, b); (err == nil) != (bboltErr == nil) {
			t.Fatalf("checkPages = %v, bbolt's own check = %v: want both to accept the file or both to refuse it", err, bboltErr)
		}
	})
}
