package bolt

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"go.etcd.io/bbolt"
)

// A page whose header claims a run of overflow pages as long as the
// file (one damaged header) is read in part, its element table and its
// buckets' values: the check's memory stays bounded whatever the file's
// size, instead of growing to the file's.
func TestWalkPagesReadsALongRunInPart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	w := writeBoltFile(t, path, func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("small")) // kept inline in the root bucket's page
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	}, func(*bbolt.Tx) error { return nil })
	const pages = 1 << 17 // 64 MiB of 512-byte pages, a sparse file
	file := w.file
	binary.LittleEndian.PutUint32(file[w.root*fuzzPageSize+12:], uint32(pages-w.root-1))
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, pages*fuzzPageSize); err != nil {
		t.Fatal(err)
	}
	allocated, err := walkAllocating(t, path, w.root, pages)
	if err != nil {
		t.Fatalf("walkPages = %v; the run's elements lie in its first page, as bbolt wrote them", err)
	}
	if allocated > 4<<20 {
		t.Errorf("walkPages allocated %d bytes for a run of %d pages: want it read in part", allocated, pages-w.root)
	}
}

// offsetsReader records the offsets of the reads made of a file.
type offsetsReader struct {
	f       *os.File
	offsets []int64
}

func (r *offsetsReader) ReadAt(p []byte, off int64) (int, error) {
	r.offsets = append(r.offsets, off)
	return r.f.ReadAt(p, off)
}

// The walk reads a bucket's pages in key order: of a bucket written in
// key order, as the audit log's are, that is the file's order, which the
// kernel reads ahead of the check (a store not in the page cache, after
// a reboot, is read at the disk's sequential speed).
func TestWalkPagesReadsInKeyOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	w := writeBoltFile(t, path, func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("entries"))
		if err != nil {
			return err
		}
		for i := range 4000 {
			if err := b.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), make([]byte, 100)); err != nil {
				return err
			}
		}
		return nil
	}, func(*bbolt.Tx) error { return nil })
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &offsetsReader{f: f}
	if err := walkPages(r, fuzzPageSize, w.root, w.hwm); err != nil {
		t.Fatal(err)
	}
	back := 0
	for i := 1; i < len(r.offsets); i++ {
		if r.offsets[i] < r.offsets[i-1] {
			back++
		}
	}
	if len(r.offsets) < 500 || back > len(r.offsets)/10 {
		t.Errorf("of %d page reads, %d went back in the file: want the pages read in key order, mostly forward", len(r.offsets), back)
	}
}

// A page whose header claims a run as long as the file, and whose
// elements claim keys that overlap, each as long as the run holds, is
// damaged: its keys are not read whole, one after another. bbolt writes
// each key at most bbolt.MaxKeySize bytes long, after the element table
// and after the element before it, so the check's reads and memory stay
// within the run's size.
func TestWalkPagesReadsNoKeyTwice(t *testing.T) {
	const pages = 1 << 17 // 64 MiB of 512-byte pages, a sparse file
	cases := []struct {
		name  string
		count int
		ksize func(i int) uint32
	}{
		{"one key of 32 MiB", 1, func(int) uint32 { return 32 << 20 }},
		{"overlapping keys", 4000, func(i int) uint32 { return 16<<10 + uint32(i) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mandate.db")
			w := writeBoltFile(t, path, func(tx *bbolt.Tx) error {
				_, err := tx.CreateBucket([]byte("a"))
				return err
			}, func(*bbolt.Tx) error { return nil })
			file := w.file
			p := file[w.root*fuzzPageSize:]
			binary.LittleEndian.PutUint16(p[8:], leafPageFlag)
			binary.LittleEndian.PutUint16(p[10:], uint16(c.count))
			binary.LittleEndian.PutUint32(p[12:], uint32(pages-w.root-1))
			if err := os.WriteFile(path, file, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, pages*fuzzPageSize); err != nil {
				t.Fatal(err)
			}
			// The element table, written past the first page: every
			// key starts at the same byte, each one longer (so, in
			// order) than the one before.
			table := make([]byte, c.count*pageElementSize)
			data := uint32(c.count * pageElementSize)
			for i := range c.count {
				e := table[i*pageElementSize:]
				binary.LittleEndian.PutUint32(e[4:], data-uint32(i*pageElementSize))
				binary.LittleEndian.PutUint32(e[8:], c.ksize(i))
			}
			writeAt(t, path, table, int64(w.root)*fuzzPageSize+pageHeaderSize)
			n, err := walkAllocating(t, path, w.root, pages)
			if n > 4<<20 {
				t.Errorf("walkPages allocated %d bytes for a run of %d pages", n, pages-w.root)
			}
			if err == nil {
				t.Error("walkPages accepts the page")
			}
		})
	}
}

// walkAllocating walks the pages of the file at path (walkPages), and
// says how many bytes the walk allocated.
func walkAllocating(t *testing.T, path string, root, pages uint64) (uint64, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err = walkPages(f, fuzzPageSize, root, pages)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// walkPages walks the tree of pages reachable from the root bucket
// (root, a page id) through f, the data file (walkTree), with no
// freelist.
func walkPages(f io.ReaderAt, pageSize int, root, hwm uint64) error {
	return walkTree(f, pageSize, root, hwm, newBitmap(hwm), nil)
}
