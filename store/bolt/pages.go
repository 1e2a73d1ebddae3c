package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
)

// bbolt's page format (go.etcd.io/bbolt/internal/common), as written on
// disk: a 16-byte header (id, flags, element count, overflow pages),
// then 16-byte elements whose key and value positions are relative to
// the element itself.
const (
	pageHeaderSize  = 16
	pageElementSize = 16
	bucketHeaderLen = 16 // a bucket's value: root page id, sequence; an inline bucket's page follows

	branchPageFlag = 0x01
	leafPageFlag   = 0x02
	bucketLeafFlag = 0x01
)

// A meta page (pages 0 and 1): the page header, then magic, version,
// page size and flags (4 bytes each), the root bucket (16), the freelist
// page id, the page count (the high-water mark), the transaction id and
// the FNV-64a checksum of what precedes it in the meta (8 each).
const (
	metaPagesAt    = pageHeaderSize + 40
	metaTxIDAt     = pageHeaderSize + 48
	metaChecksumAt = pageHeaderSize + 56
)

// metaPages returns the page count of the meta bbolt opened f with:
// of its two metas, the valid one of transaction txid (a read
// transaction's id is its meta's).
func metaPages(f io.ReaderAt, pageSize int, txid uint64) (uint64, error) {
	meta := make([]byte, metaChecksumAt+8)
	for i := range int64(2) {
		if _, err := f.ReadAt(meta, i*int64(pageSize)); err != nil {
			return 0, fmt.Errorf("meta page %d: %w", i, err)
		}
		h := fnv.New64a()
		h.Write(meta[pageHeaderSize:metaChecksumAt])
		if binary.LittleEndian.Uint64(meta[metaTxIDAt:]) == txid && binary.LittleEndian.Uint64(meta[metaChecksumAt:]) == h.Sum64() {
			return binary.LittleEndian.Uint64(meta[metaPagesAt:]), nil
		}
	}
	return 0, fmt.Errorf("no valid meta page of transaction %d", txid)
}

// walkPages reads every page reachable from the root bucket (root, a
// page id) through f, the data file, and checks what bbolt would follow
// blindly: each page id is below the high-water mark hwm and names
// itself, no page is reached twice (a cycle would make bbolt's check
// and its cursors recurse without end), each page is a branch or a leaf,
// and each element's key and value lie inside its page. bbolt's own
// check runs in a goroutine of its own, where a page id past the end of
// the mapped file is a fault that ends the process: this walk, which
// reads the file and never the memory map, runs first. Pages are read
// with f.ReadAt, so that a short file is an error, not a fault.
func walkPages(f io.ReaderAt, pageSize int, root, hwm uint64) error {
	seen := make([]uint64, (hwm+63)/64) // a bit per page
	stack := []uint64{root}
	buf := make([]byte, pageSize)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if id < 2 || id >= hwm {
			return fmt.Errorf("page id %d is outside the file's pages 2..%d", id, hwm-1)
		}
		page := buf[:pageSize]
		if _, err := f.ReadAt(page, int64(id)*int64(pageSize)); err != nil {
			return fmt.Errorf("page %d: %w", id, err)
		}
		if got := binary.LittleEndian.Uint64(page[0:]); got != id {
			return fmt.Errorf("page %d holds the id %d", id, got)
		}
		overflow := uint64(binary.LittleEndian.Uint32(page[12:]))
		if overflow >= hwm-id {
			return fmt.Errorf("page %d runs %d pages past the file's %d", id, overflow, hwm)
		}
		for i := id; i <= id+overflow; i++ {
			if seen[i/64]&(1<<(i%64)) != 0 {
				return fmt.Errorf("page %d is reached twice", i)
			}
			seen[i/64] |= 1 << (i % 64)
		}
		var run pageRun = memRun(page)
		if n := int64(overflow+1) * int64(pageSize); n <= maxRunRead {
			if overflow > 0 {
				if cap(buf) < int(n) {
					buf = append(buf[:pageSize], make([]byte, int(n)-pageSize)...)
				}
				page = buf[:n]
				if _, err := f.ReadAt(page[pageSize:], int64(id+1)*int64(pageSize)); err != nil {
					return fmt.Errorf("page %d: %w", id, err)
				}
				run = memRun(page)
			}
		} else {
			// A run longer than that (a large value's, or a damaged
			// header's claim, up to the file's size) is read in part:
			// its element table and its buckets' values.
			run = fileRun{f: f, off: int64(id) * int64(pageSize), n: n, head: page}
		}
		children, err := pageChildren(run, nil, pageSize)
		if err != nil {
			return fmt.Errorf("page %d: %w", id, err)
		}
		stack = append(stack, children...)
	}
	return nil
}

// maxRunRead bounds the run of pages (a page and those it overflows
// into) walkPages reads whole; a longer one is read in part (fileRun).
const maxRunRead = 1 << 20

// pageRun is a page and the pages it overflows into, as pageChildren
// reads them: its size, and n bytes at off within it.
type pageRun interface {
	size() int64
	read(off, n int64) ([]byte, error)
}

// memRun is a run read whole, or an inline bucket's page.
type memRun []byte

func (m memRun) size() int64 { return int64(len(m)) }

func (m memRun) read(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > int64(len(m)) {
		return nil, fmt.Errorf("%d bytes at %d lie past the page", n, off)
	}
	return m[off : off+n], nil
}

// fileRun is a long run, read from the file a part at a time: head is
// its first page, already read.
type fileRun struct {
	f      io.ReaderAt
	off, n int64
	head   []byte
}

func (r fileRun) size() int64 { return r.n }

func (r fileRun) read(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > r.n {
		return nil, fmt.Errorf("%d bytes at %d lie past the page", n, off)
	}
	if off+n <= int64(len(r.head)) {
		return r.head[off : off+n], nil
	}
	b := make([]byte, n)
	if _, err := r.f.ReadAt(b, r.off+off); err != nil {
		return nil, err
	}
	return b, nil
}

// pageChildren checks one page (its header and elements, the inline
// pages of buckets it holds included) and appends to children the ids of
// the pages it points to: a branch's children, the root pages of buckets
// stored in a leaf. Of a leaf, only the values of buckets are read, each
// at most a page (pageSize): a bucket's value is its header, and an
// inline bucket's page, which bbolt keeps to a quarter of a page.
func pageChildren(page pageRun, children []uint64, pageSize int) ([]uint64, error) {
	head, err := page.read(0, pageHeaderSize)
	if err != nil {
		return nil, fmt.Errorf("a page of %d bytes: %w", page.size(), err)
	}
	flags := binary.LittleEndian.Uint16(head[8:])
	count := int(binary.LittleEndian.Uint16(head[10:]))
	table, err := page.read(pageHeaderSize, int64(count)*pageElementSize)
	if err != nil {
		return nil, fmt.Errorf("%d elements do not fit in %d bytes", count, page.size())
	}
	for i := range count {
		at := pageHeaderSize + i*pageElementSize
		e := table[i*pageElementSize : (i+1)*pageElementSize]
		switch flags {
		case branchPageFlag:
			pos, ksize := uint64(binary.LittleEndian.Uint32(e[0:])), uint64(binary.LittleEndian.Uint32(e[4:]))
			if uint64(at)+pos+ksize > uint64(page.size()) {
				return nil, fmt.Errorf("element %d lies past the page", i)
			}
			children = append(children, binary.LittleEndian.Uint64(e[8:]))
		case leafPageFlag:
			eflags := binary.LittleEndian.Uint32(e[0:])
			pos := uint64(binary.LittleEndian.Uint32(e[4:]))
			ksize, vsize := uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
			end := uint64(at) + pos + ksize + vsize
			if end > uint64(page.size()) {
				return nil, fmt.Errorf("element %d lies past the page", i)
			}
			if eflags&bucketLeafFlag == 0 {
				continue
			}
			if vsize < bucketHeaderLen || vsize > uint64(pageSize) {
				return nil, fmt.Errorf("element %d is a bucket of %d bytes", i, vsize)
			}
			value, err := page.read(int64(end-vsize), int64(vsize))
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			if root := binary.LittleEndian.Uint64(value); root != 0 {
				children = append(children, root)
				continue
			}
			// An inline bucket: its page is the rest of the value.
			inline := value[bucketHeaderLen:]
			if len(inline) < pageHeaderSize {
				return nil, fmt.Errorf("element %d is an inline bucket of %d bytes", i, len(value))
			}
			if f := binary.LittleEndian.Uint16(inline[8:]); f != leafPageFlag {
				return nil, fmt.Errorf("element %d is an inline bucket whose page has flags %#x, not a leaf's", i, f)
			}
			if children, err = pageChildren(memRun(inline), children, pageSize); err != nil {
				return nil, fmt.Errorf("element %d's inline bucket: %w", i, err)
			}
		default:
			return nil, fmt.Errorf("flags %#x: not a branch or leaf page", flags)
		}
	}
	switch {
	case flags != branchPageFlag && flags != leafPageFlag:
		return nil, fmt.Errorf("flags %#x: not a branch or leaf page", flags)
	case flags == branchPageFlag && count == 0:
		return nil, errors.New("a branch page without elements")
	}
	return children, nil
}
