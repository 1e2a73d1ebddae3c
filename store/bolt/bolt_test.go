package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/storetest"
)

// mustOpen opens path, failing t on error. The caller closes the store.
func mustOpen(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open(%q) = %v, want nil", path, err)
	}
	return s
}

// openTemp opens a new store in t's temporary directory, closed when t
// ends.
func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mandate.db")
	s := mustOpen(t, path)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	})
	return s, path
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		path := filepath.Join(t.TempDir(), "mandate.db")
		reopen := func() store.Store { return mustOpen(t, path) }
		return mustOpen(t, path), reopen
	})
}

func TestFileMode(t *testing.T) {
	_, path := openTemp(t)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		t.Errorf("mode of %s = %v, want %v", path, got, fs.FileMode(0o600))
	}
}

func TestOpenLocked(t *testing.T) {
	_, path := openTemp(t)
	const timeout = 200 * time.Millisecond
	begin := time.Now()
	s, err := Open(path, Options{Timeout: timeout})
	elapsed := time.Since(begin)
	if err == nil {
		s.Close()
		t.Fatalf("second Open(%q) = nil, want %v", path, ErrLocked)
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open(%q) = %v, want %v", path, err, ErrLocked)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("second Open(%q) error %q does not name the file", path, err)
	}
	if elapsed < timeout/2 || elapsed > timeout+2*time.Second {
		t.Errorf("second Open(%q) failed after %v, want about %v", path, elapsed, timeout)
	}
}

func TestOpenAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	s := mustOpen(t, path)
	if err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.Put("b", []byte("k"), []byte("v"))
	}); err != nil {
		t.Fatalf("Update(Put) = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}

	s = mustOpen(t, path) // the lock was released
	defer s.Close()
	err := s.View(t.Context(), func(tx store.Tx) error {
		got, err := tx.Get("b", []byte("k"))
		if err != nil || string(got) != "v" {
			t.Errorf("Get(%q) after reopen = %q, %v, want %q, nil", "k", got, err, "v")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View() = %v, want nil", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{"missing parent directory", filepath.Join(dir, "missing", "mandate.db")},
		{"not a bbolt file", garbage},
		{"directory", dir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.path, Options{Timeout: 100 * time.Millisecond})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) = nil, want error", tc.path)
			}
			if !strings.HasPrefix(err.Error(), "store/bolt: ") || errors.Is(err, ErrLocked) {
				t.Errorf("Open(%q) = %v, want a store/bolt error other than %v", tc.path, err, ErrLocked)
			}
			if damaged := tc.path == garbage; errors.Is(err, ErrDamaged) != damaged {
				t.Errorf("Open(%q) = %v; ErrDamaged: %v, want %v", tc.path, err, !damaged, damaged)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open created the missing parent directory: Stat = %v", err)
	}
}

// A file bbolt refuses to open at all (neither meta page valid, or cut
// shorter than two pages) is damaged, and said so with what to do, as a
// file damaged deeper inside is.
func TestOpenUnreadableFileIsDamaged(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch func(t *testing.T, path string)
	}{
		{"zeros", func(t *testing.T, path string) { write(t, path, make([]byte, 64<<10)) }},
		{"text", func(t *testing.T, path string) { write(t, path, []byte("hello\n")) }},
		{"both meta pages zeroed", func(t *testing.T, path string) { writeAt(t, path, make([]byte, 2*4096), 0) }},
		// A byte of each meta's root page id changed: their checksums
		// no longer match.
		{"both meta pages changed", func(t *testing.T, path string) {
			writeAt(t, path, []byte{0xff}, 16+24)
			writeAt(t, path, []byte{0xff}, 4096+16+24)
		}},
		{"cut to one page", func(t *testing.T, path string) {
			if err := os.Truncate(path, 4096); err != nil {
				t.Fatal(err)
			}
		}},
		{"cut inside the second page", func(t *testing.T, path string) {
			if err := os.Truncate(path, 6000); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, path := mustOpenNew(t)
			if err := s.Update(t.Context(), func(tx store.Tx) error { return tx.Put("a", []byte("k"), []byte("v")) }); err != nil {
				t.Fatal(err)
			}
			s.Close()
			tc.patch(t, path)
			for _, check := range []bool{false, true} {
				s, err := Open(path, Options{Check: check})
				if err == nil {
					s.Close()
				}
				if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "restore it from a backup") {
					t.Errorf("Open(Check: %v) = %v, want ErrDamaged", check, err)
				}
			}
		})
	}
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, path string, b []byte, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

func TestTxAfterCallback(t *testing.T) {
	s, _ := openTemp(t)
	var leaked store.Tx
	if err := s.Update(t.Context(), func(tx store.Tx) error {
		leaked = tx
		return nil
	}); err != nil {
		t.Fatalf("Update() = %v, want nil", err)
	}
	if err := leaked.Put("b", []byte("k"), []byte("v")); err == nil {
		t.Errorf("Put on a Tx after its callback returned = nil, want error")
	}
	if _, err := leaked.Get("b", []byte("k")); err == nil {
		t.Errorf("Get on a Tx after its callback returned = nil, want error")
	}
}

func TestEmptyBucketName(t *testing.T) {
	s, _ := openTemp(t)
	err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.Put("", []byte("k"), []byte("v"))
	})
	if err == nil {
		t.Errorf("Put(%q, %q) = nil, want error", "", "k")
	}
}

// A bucket name longer than bbolt's longest key is refused: bbolt would
// store it, and the start's check, which takes a key that long for a
// damaged page, would then refuse the file.
func TestLongBucketName(t *testing.T) {
	s, path := openTemp(t)
	long := strings.Repeat("b", bbolt.MaxKeySize+1)
	err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.Put(long, []byte("k"), []byte("v"))
	})
	if err == nil {
		t.Errorf("Put(a bucket name of %d bytes) = nil, want error", len(long))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{Check: true})
	if err != nil {
		t.Fatalf("Open(Check) after the Put = %v", err)
	}
	s.Close()
}

// A damaged data file is an error, never a panic: at Open when bbolt
// cannot even read it, at Open with Check when a page deep inside is
// wrong, and in a transaction that meets such a page without Check.
func TestDamagedFile(t *testing.T) {
	ctx := t.Context()
	// A store of several pages: 300 values of 1 KiB over 3 buckets.
	fill := func(t *testing.T) string {
		t.Helper()
		s, path := mustOpenNew(t)
		if err := s.Update(ctx, func(tx store.Tx) error {
			for i := range 300 {
				if err := tx.Put([]string{"a", "b", "c"}[i%3], []byte(fmt.Sprintf("k%04d", i)), make([]byte, 1024)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// zeroPageHolding zeroes the page the key is stored in: a leaf page
	// the metas and the freelist do not need.
	zeroPageHolding := func(t *testing.T, path, key string) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		at := bytes.Index(b, []byte(key))
		if at < 0 {
			t.Fatalf("%s not in the file", key)
		}
		page := int64(at / 4096)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(make([]byte, 4096), page*4096); err != nil {
			t.Fatal(err)
		}
	}
	// Cut at several lengths: what bbolt meets first varies (a freelist
	// page past the end, a page that is not one), and a read past the
	// end of the memory-mapped file is a fault, not a panic.
	for _, pages := range []int64{3, 4, 8, 16, 40} {
		t.Run(fmt.Sprintf("truncated to %d pages", pages), func(t *testing.T) {
			for _, check := range []bool{true, false} {
				// A file of its own each time: a panic inside bbolt's
				// Open leaves the file locked until the process ends.
				path := fill(t)
				if err := os.Truncate(path, pages*4096); err != nil {
					t.Fatal(err)
				}
				s, err := Open(path, Options{Check: check})
				if err == nil && !check { // bbolt may open it: the damage is met later
					err = s.View(ctx, func(tx store.Tx) error {
						for i := range 300 {
							if _, err := tx.Get([]string{"a", "b", "c"}[i%3], []byte(fmt.Sprintf("k%04d", i))); err != nil {
								return err
							}
						}
						return nil
					})
					s.Close()
				} else if err == nil {
					s.Close()
				}
				if !errors.Is(err, ErrDamaged) {
					t.Fatalf("Open(Check: %v) of a truncated file, then reading it = %v, want ErrDamaged", check, err)
				}
			}
		})
	}
	t.Run("a page zeroed", func(t *testing.T) {
		path := fill(t)
		zeroPageHolding(t, path, "k0001")
		if s, err := Open(path, Options{Check: true}); !errors.Is(err, ErrDamaged) {
			if err == nil {
				s.Close()
			}
			t.Fatalf("Open(Check) = %v, want ErrDamaged", err)
		}
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("Open without Check = %v, want the damage found later", err)
		}
		defer s.Close()
		err = s.View(ctx, func(tx store.Tx) error {
			_, err := tx.Get("b", []byte("k0001"))
			return err
		})
		if !errors.Is(err, ErrDamaged) {
			t.Fatalf("View over the zeroed page = %v, want ErrDamaged", err)
		}
		// From then on every transaction fails at once (bbolt may hold
		// its lock for good after a damaged page), never waits.
		if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("a", []byte("x"), []byte("y")) }); !errors.Is(err, ErrDamaged) {
			t.Fatalf("Update after the damage = %v, want ErrDamaged", err)
		}
	})
	// A meta (checksum and all) whose page count is past the file:
	// bbolt's Size, count × page size, wraps past 2^63, to below zero
	// or to the file's own size. Each is refused as damage, not a
	// panic in the page walk or a check visiting 2^52 page ids.
	for _, pages := range []uint64{1 << 40, 1<<51 + 1<<50, 1<<52 + 3, 1<<52 + 4} {
		t.Run(fmt.Sprintf("a meta of %d pages", pages), func(t *testing.T) {
			s, path := mustOpenNew(t)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != 4*4096 {
				t.Fatalf("a new file of %d bytes, want 4 pages", len(b))
			}
			for _, meta := range []int{0, 4096} {
				binary.LittleEndian.PutUint64(b[meta+metaPagesAt:], pages)
				h := fnv.New64a()
				h.Write(b[meta+pageHeaderSize : meta+metaChecksumAt])
				binary.LittleEndian.PutUint64(b[meta+metaChecksumAt:], h.Sum64())
			}
			write(t, path, b)
			s, err = Open(path, Options{Check: true})
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("Open(Check) = %v, want ErrDamaged", err)
			}
		})
	}
	t.Run("a whole file passes the check", func(t *testing.T) {
		// Branch pages (fill), a value over several pages, a bucket
		// small enough to be kept inline, an empty value.
		path := fill(t)
		s := mustOpen(t, path)
		big := bytes.Repeat([]byte("v"), 5*4096+17)
		if err := s.Update(ctx, func(tx store.Tx) error {
			if err := tx.Put("big", []byte("k"), big); err != nil {
				return err
			}
			if err := tx.Put("small", []byte("k"), []byte("v")); err != nil {
				return err
			}
			return tx.Put("small", []byte("e"), nil)
		}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if db, err := bbolt.Open(path, 0o600, nil); err == nil {
			_ = db.View(func(tx *bbolt.Tx) error {
				if r := tx.Bucket([]byte("small")).Root(); r != 0 {
					t.Errorf("bucket small has root page %d, want it inline (0)", r)
				}
				return nil
			})
			db.Close()
		}
		s, err := Open(path, Options{Check: true})
		if err != nil {
			t.Fatalf("Open(Check) of a whole file = %v", err)
		}
		defer s.Close()
		if err := s.View(ctx, func(tx store.Tx) error {
			if v, err := tx.Get("big", []byte("k")); err != nil || !bytes.Equal(v, big) {
				return fmt.Errorf("big value: %d bytes, %v", len(v), err)
			}
			_, err := tx.Get("a", []byte("k0297"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	})
	// Page ids that point where bbolt's check (in a goroutine of its
	// own, where a fault cannot be recovered) would crash the process
	// reading past the mapped file, or recurse without end.
	for _, tc := range []struct {
		name string
		// patch changes the file b: root is the page of bucket "a"'s
		// root (a branch page), at the offset of "a"'s header in the
		// top-level leaf.
		patch func(b []byte, root uint64, at int)
		want  string
	}{
		{"a bucket's root far past the file", func(b []byte, root uint64, at int) {
			binary.LittleEndian.PutUint64(b[at:], 1<<30)
		}, "outside the file's pages"},
		{"a branch pointing to itself", func(b []byte, root uint64, at int) {
			binary.LittleEndian.PutUint64(b[root*4096+16+8:], root)
		}, "reached twice"},
		{"a branch pointing to the top-level leaf", func(b []byte, root uint64, at int) {
			binary.LittleEndian.PutUint64(b[root*4096+16+8:], uint64(at/4096))
		}, "reached twice"},
		{"a branch element's key past its page", func(b []byte, root uint64, at int) {
			binary.LittleEndian.PutUint32(b[root*4096+16:], 1<<20)
		}, "past the page"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := fill(t)
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			var root, top uint64
			err = db.View(func(tx *bbolt.Tx) error {
				root, top = uint64(tx.Bucket([]byte("a")).Root()), uint64(tx.Cursor().Bucket().Root())
				return nil
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if flags := binary.LittleEndian.Uint16(b[root*4096+8:]); flags != 0x01 {
				t.Fatalf("bucket a's root page has flags %#x, want a branch's", flags)
			}
			header := append([]byte("a"), binary.LittleEndian.AppendUint64(nil, root)...)
			i := bytes.Index(b[top*4096:(top+1)*4096], header)
			if i < 0 {
				t.Fatal("bucket a's header is not in the top-level leaf")
			}
			tc.patch(b, root, int(top*4096)+i+1)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{Check: true})
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open(Check) = %v, want ErrDamaged saying %q", err, tc.want)
			}
		})
	}
	t.Run("a fault reading the mapped file, wherever met, is damage", func(t *testing.T) {
		s, _ := openTemp(t)
		// What debug.SetPanicOnFault panics with for a fault at a real
		// address (here: as the copy of a value past the end of a cut
		// file would meet it, in this package's code).
		err := s.View(ctx, func(store.Tx) error { panic(faultAt(0x7f0000001000)) })
		if !errors.Is(err, ErrDamaged) {
			t.Fatalf("View whose read faulted = %v, want ErrDamaged", err)
		}
	})
	t.Run("a caller's own panic goes on", func(t *testing.T) {
		s, _ := openTemp(t)
		defer func() {
			if p := recover(); p != "mine" {
				t.Errorf("recovered %v, want the caller's panic", p)
			}
		}()
		_ = s.Update(ctx, func(store.Tx) error { panic("mine") })
		t.Error("Update returned after its function panicked")
	})
}

// mustOpenNew opens a new store in t's temporary directory; the caller
// closes it.
func mustOpenNew(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mandate.db")
	return mustOpen(t, path), path
}

// faultAt is a panic value like the runtime's for a memory fault at addr.
type faultAt uintptr

func (f faultAt) Error() string { return fmt.Sprintf("unexpected fault address %#x", uintptr(f)) }
func (f faultAt) Addr() uintptr { return uintptr(f) }
