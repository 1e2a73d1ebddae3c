package bolt

import (
	"encoding/binary"
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
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err = walkPages(f, fuzzPageSize, w.root, pages)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("walkPages = %v; the run's elements lie in its first page, as bbolt wrote them", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 4<<20 {
		t.Errorf("walkPages allocated %d bytes for a run of %d pages: want it read in part", n, pages-w.root)
	}
}
