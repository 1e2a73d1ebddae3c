package bolt

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"mandate.dev/mandate/store"
)

// Open's check reads the file's pages with reads of its own, never
// through the memory map the open store keeps: once open, the store holds
// in memory (the process's RSS) the pages its transactions read, not a
// whole file's worth left there by the check.
func TestOpenCheckLeavesTheFileOutOfMemory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	s := mustOpen(t, path)
	for b := range 8 { // 2,048 values of 4 KiB: some 8 MiB over 4 buckets
		if err := s.Update(t.Context(), func(tx store.Tx) error {
			for i := range 256 {
				if err := tx.Put(fmt.Sprintf("b%d", i%4), fmt.Appendf(nil, "k%d-%04d", b, i), make([]byte, 4096)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{Check: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// bbolt reads its metas and freelist through the map, and the
	// kernel maps a few pages around each one read.
	if rss := mappedRSS(t, path); rss > fi.Size()/4 {
		t.Errorf("after Open(Check), %d bytes of the %d-byte file are in the process's memory through its map, want at most %d (the check's reads are its own)", rss, fi.Size(), fi.Size()/4)
	}
}

// mappedRSS is the resident size of this process's mappings of the file
// at path (/proc/self/smaps).
func mappedRSS(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rss int64
	in, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 6 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			in = fields[len(fields)-1] == path
			found = found || in
		case in && len(fields) == 3 && fields[0] == "Rss:":
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			rss += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("no mapping of %s in /proc/self/smaps", path)
	}
	return rss
}
