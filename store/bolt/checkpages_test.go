package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
)

// checkFile runs checkPages over a data file of fuzzPageSize pages, as
// its newest valid meta describes it.
func checkFile(t testing.TB, file []byte) error {
	t.Helper()
	m, err := readMeta(bytes.NewReader(file), fuzzPageSize, maxTx(file))
	if err != nil {
		return err
	}
	return checkPages(bytes.NewReader(file), fuzzPageSize, m)
}

// bboltCheck is bbolt's own consistency check of the file at path.
func bboltCheck(t *testing.T, path string) error {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	var first error
	err = db.View(func(tx *bbolt.Tx) error {
		// Every error is read: the check runs in a goroutine of its
		// own, reading the memory map, until it has sent them all.
		for e := range tx.Check() {
			if first == nil {
				first = e
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return first
}

// The check finds, reading the file, each kind of damage bbolt's own
// consistency check finds (and finds it where that one does too): keys
// out of order, on a page or against the branch element leading to it;
// a page listed free twice; a page both reachable and listed free; a page
// neither reachable nor free.
func TestCheckPagesFindsWhatBboltsCheckFinds(t *testing.T) {
	// Bucket a over several leaves under a branch page (keys k000..k039),
	// and a freelist holding the pages a second transaction freed.
	fill := func(t *testing.T) (path string, w writtenFile, free []uint64) {
		path = filepath.Join(t.TempDir(), "f.db")
		w = writeBoltFile(t, path, func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucket([]byte("a"))
			if err != nil {
				return err
			}
			for i := range 40 {
				if err := b.Put(fmt.Appendf(nil, "k%03d", i), bytes.Repeat([]byte{'v'}, 40)); err != nil {
					return err
				}
			}
			return nil
		}, func(tx *bbolt.Tx) error { return nil })
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("a")).Put([]byte("k000"), []byte("w")) }); err != nil {
			t.Fatal(err)
		}
		if err := db.View(func(tx *bbolt.Tx) error {
			w.root, w.hwm = uint64(tx.Cursor().Bucket().Root()), uint64(tx.Size())/fuzzPageSize
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		w.file = b
		if err := checkFile(t, w.file); err != nil {
			t.Fatalf("checkPages refuses the file bbolt wrote: %v", err)
		}
		m, err := readMeta(bytes.NewReader(b), fuzzPageSize, maxTx(b))
		if err != nil {
			t.Fatal(err)
		}
		fl := b[m.freelist*fuzzPageSize:]
		for i := range int(binary.LittleEndian.Uint16(fl[10:])) {
			free = append(free, binary.LittleEndian.Uint64(fl[pageHeaderSize+8*i:]))
		}
		if len(free) < 2 {
			t.Fatalf("the freelist lists %d pages, want at least 2", len(free))
		}
		return path, w, free
	}
	// freelistAt is the offset of the freelist's page in the file.
	freelistAt := func(b []byte) int {
		m, err := readMeta(bytes.NewReader(b), fuzzPageSize, maxTx(b))
		if err != nil {
			t.Fatal(err)
		}
		return int(m.freelist) * fuzzPageSize
	}
	// leaves is bucket a's root (a branch page's offset) and the pages
	// of its leaves, in key order.
	leaves := func(t *testing.T, b []byte) (branch int, ids []uint64) {
		t.Helper()
		var root uint64
		db, err := bbolt.Open(writeTemp(t, b), 0o600, &bbolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		err = db.View(func(tx *bbolt.Tx) error { root = uint64(tx.Bucket([]byte("a")).Root()); return nil })
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		branch = int(root) * fuzzPageSize
		if binary.LittleEndian.Uint16(b[branch+8:]) != branchPageFlag {
			t.Fatal("bucket a's root is not a branch page")
		}
		for e := range int(binary.LittleEndian.Uint16(b[branch+10:])) {
			ids = append(ids, binary.LittleEndian.Uint64(b[branch+pageHeaderSize+e*pageElementSize+8:]))
		}
		return branch, ids
	}
	for _, tc := range []struct {
		name  string
		patch func(t *testing.T, b []byte, free []uint64)
		want  string
	}{
		{"two keys swapped on a leaf", func(t *testing.T, b []byte, _ []uint64) {
			at := bytes.Index(b, []byte("k005"))
			copy(b[at:], "k006")
			at = bytes.Index(b[at+4:], []byte("k006")) + at + 4
			copy(b[at:], "k005")
		}, "is not above the key before it"},
		{"a key outside its branch element's range", func(t *testing.T, b []byte, _ []uint64) {
			_, ids := leaves(t, b)
			last := int(ids[len(ids)-1]) * fuzzPageSize
			e := last + pageHeaderSize
			b[e+int(binary.LittleEndian.Uint32(b[e+4:]))] = 'a' // the first key of the last leaf, now below its range
		}, "lies outside the range"},
		{"two branch elements swapped", func(t *testing.T, b []byte, _ []uint64) {
			branch, _ := leaves(t, b)
			e0, e1 := branch+pageHeaderSize, branch+pageHeaderSize+pageElementSize
			p0, p1 := binary.LittleEndian.Uint64(b[e0+8:]), binary.LittleEndian.Uint64(b[e1+8:])
			binary.LittleEndian.PutUint64(b[e0+8:], p1)
			binary.LittleEndian.PutUint64(b[e1+8:], p0)
		}, "lies outside the range"},
		{"a page listed free twice", func(t *testing.T, b []byte, free []uint64) {
			binary.LittleEndian.PutUint64(b[freelistAt(b)+pageHeaderSize+8:], free[0])
		}, "twice"},
		{"a reachable page listed free", func(t *testing.T, b []byte, free []uint64) {
			_, ids := leaves(t, b)
			binary.LittleEndian.PutUint64(b[freelistAt(b)+pageHeaderSize:], ids[0])
		}, "listed free"},
		{"a page neither reachable nor free", func(t *testing.T, b []byte, free []uint64) {
			at := freelistAt(b)
			binary.LittleEndian.PutUint16(b[at+10:], binary.LittleEndian.Uint16(b[at+10:])-1)
		}, "neither reachable nor free"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, w, free := fill(t)
			b := bytes.Clone(w.file)
			tc.patch(t, b, free)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := bboltCheck(t, path); err == nil {
				t.Fatal("bbolt's own check accepts the damaged file: the case shows nothing")
			}
			if err := checkFile(t, b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkPages = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// maxTx is the transaction id of the file's newest valid meta.
func maxTx(b []byte) uint64 {
	var best uint64
	for i := range 2 {
		id := binary.LittleEndian.Uint64(b[i*fuzzPageSize+metaTxIDAt:])
		if _, err := readMeta(bytes.NewReader(b), fuzzPageSize, id); err == nil && id > best {
			best = id
		}
	}
	return best
}

// writeTemp writes b to a new file in t's temporary directory.
func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
