package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"

	"go.etcd.io/bbolt"
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
// page size and flags (4 bytes each), the root bucket (its root page id
// and sequence, 8 bytes each), the freelist page id, the page count (the
// high-water mark), the transaction id and the FNV-64a checksum of what
// precedes it in the meta (8 each).
const (
	metaRootAt     = pageHeaderSize + 16
	metaFreelistAt = pageHeaderSize + 32
	metaPagesAt    = pageHeaderSize + 40
	metaTxIDAt     = pageHeaderSize + 48
	metaChecksumAt = pageHeaderSize + 56
)

// freelistPageFlag is a freelist page's flags; noFreelist is a meta's
// freelist page id when bbolt did not write one (NoFreelistSync).
const (
	freelistPageFlag = 0x10
	noFreelist       = ^uint64(0)
)

// meta is what the check reads of the meta bbolt opened the file with:
// the root bucket's page, the freelist's page and the page count.
type meta struct {
	root, freelist, pages uint64
}

// readMeta returns the meta bbolt opened f with: of its two metas, the
// valid one of transaction txid (a read transaction's id is its meta's).
func readMeta(f io.ReaderAt, pageSize int, txid uint64) (meta, error) {
	b := make([]byte, metaChecksumAt+8)
	for i := range int64(2) {
		if _, err := f.ReadAt(b, i*int64(pageSize)); err != nil {
			return meta{}, fmt.Errorf("meta page %d: %w", i, err)
		}
		h := fnv.New64a()
		h.Write(b[pageHeaderSize:metaChecksumAt])
		if binary.LittleEndian.Uint64(b[metaTxIDAt:]) == txid && binary.LittleEndian.Uint64(b[metaChecksumAt:]) == h.Sum64() {
			return meta{
				root:     binary.LittleEndian.Uint64(b[metaRootAt:]),
				freelist: binary.LittleEndian.Uint64(b[metaFreelistAt:]),
				pages:    binary.LittleEndian.Uint64(b[metaPagesAt:]),
			}, nil
		}
	}
	return meta{}, fmt.Errorf("no valid meta page of transaction %d", txid)
}

// bitmap is a bit per page id.
type bitmap []uint64

func newBitmap(pages uint64) bitmap { return make(bitmap, (pages+63)/64) }
func (b bitmap) has(id uint64) bool { return b[id/64]&(1<<(id%64)) != 0 }
func (b bitmap) set(id uint64)      { b[id/64] |= 1 << (id % 64) }

// checkPages checks, reading f (the data file) and never the memory map,
// every page of the file m describes, in one pass: the tree of pages
// reachable from the root bucket (walkTree: each page read once), the
// freelist, and that every page below the high-water mark is either
// reachable, once, or free, never both. It finds what bbolt's own
// consistency check (Tx.Check) finds: a page reached twice or past the
// file, a page neither a branch nor a leaf, keys out of order (on a page,
// or outside the range of the branch element leading to it), a page
// listed free twice or free and reachable, a page neither reachable nor
// free.
func checkPages(f io.ReaderAt, pageSize int, m meta) error {
	if m.pages < 2 {
		return fmt.Errorf("the meta counts %d pages, fewer than its own two", m.pages)
	}
	reached, freed := newBitmap(m.pages), newBitmap(m.pages)
	reached.set(0) // the metas
	reached.set(1)
	if m.freelist != noFreelist {
		if err := readFreelist(f, pageSize, m, reached, freed); err != nil {
			return err
		}
	}
	if err := walkTree(f, pageSize, m.root, m.pages, reached, freed); err != nil {
		return err
	}
	if m.freelist == noFreelist {
		// bbolt takes every page not reachable as free: none is
		// unaccounted for.
		return nil
	}
	for id := range m.pages {
		if !reached.has(id) && !freed.has(id) {
			return fmt.Errorf("page %d is neither reachable nor free", id)
		}
	}
	return nil
}

// readFreelist reads the freelist page (and those it overflows into),
// marking them reached, and marks every page id it lists freed: each
// must lie in the file's pages, and be listed once. The list is read a
// part at a time, so that a damaged count costs no more memory than a
// whole one.
func readFreelist(f io.ReaderAt, pageSize int, m meta, reached, freed bitmap) error {
	id := m.freelist
	if id < 2 || id >= m.pages {
		return fmt.Errorf("the freelist's page id %d is outside the file's pages 2..%d", id, m.pages-1)
	}
	head := make([]byte, pageHeaderSize+8)
	if _, err := f.ReadAt(head, int64(id)*int64(pageSize)); err != nil {
		return fmt.Errorf("freelist page %d: %w", id, err)
	}
	if got := binary.LittleEndian.Uint64(head[0:]); got != id {
		return fmt.Errorf("freelist page %d holds the id %d", id, got)
	}
	if flags := binary.LittleEndian.Uint16(head[8:]); flags != freelistPageFlag {
		return fmt.Errorf("freelist page %d has flags %#x, not a freelist's", id, flags)
	}
	overflow := uint64(binary.LittleEndian.Uint32(head[12:]))
	if overflow >= m.pages-id {
		return fmt.Errorf("freelist page %d runs %d pages past the file's %d", id, overflow, m.pages)
	}
	for i := id; i <= id+overflow; i++ {
		reached.set(i)
	}
	// A count of 0xFFFF says the count is the first element.
	first, count := uint64(0), uint64(binary.LittleEndian.Uint16(head[10:]))
	if count == 0xFFFF {
		first, count = 1, binary.LittleEndian.Uint64(head[pageHeaderSize:])
	}
	size := uint64(overflow+1) * uint64(pageSize)
	if count > (size-pageHeaderSize)/8-first {
		return fmt.Errorf("freelist page %d lists %d pages, more than its %d pages hold", id, count, overflow+1)
	}
	const chunk = 8192 // ids read at a time
	buf := make([]byte, 8*min(count, chunk))
	at := int64(id)*int64(pageSize) + pageHeaderSize + int64(first)*8
	for done := uint64(0); done < count; {
		n := min(count-done, chunk)
		b := buf[:8*n]
		if _, err := f.ReadAt(b, at+int64(done)*8); err != nil {
			return fmt.Errorf("freelist page %d: %w", id, err)
		}
		for i := range n {
			free := binary.LittleEndian.Uint64(b[8*i:])
			switch {
			case free < 2 || free >= m.pages:
				return fmt.Errorf("the freelist lists page %d, outside the file's pages 2..%d", free, m.pages-1)
			case freed.has(free):
				return fmt.Errorf("the freelist lists page %d twice", free)
			case reached.has(free):
				return fmt.Errorf("page %d is the freelist's own, and listed free", free)
			}
			freed.set(free)
		}
		done += n
	}
	return nil
}

// pageRef is a page to read: its id, and the range its keys must lie in
// (lo included, hi excluded; nil: no bound), from the branch element
// leading to it.
type pageRef struct {
	id     uint64
	lo, hi []byte
}

// walkTree reads every page reachable from the root bucket (root, a
// page id) through f, the data file, and checks what bbolt would follow
// blindly, and what its consistency check checks: each page id is below
// the high-water mark hwm and names itself, no page is reached twice (a
// cycle would make bbolt's check and its cursors recurse without end),
// nor one freed lists (freed may be nil), each page is a branch or a
// leaf, each element's key and value lie inside its page, and keys
// ascend, within the range of the branch element leading to their
// page. Pages reached are marked in reached. bbolt's own check runs in a
// goroutine of its own, where a page id past the end of the mapped file
// is a fault that ends the process: this walk reads the file and never
// the memory map. Pages are read with f.ReadAt, so that a short file is
// an error, not a fault.
func walkTree(f io.ReaderAt, pageSize int, root, hwm uint64, reached, freed bitmap) error {
	stack := []pageRef{{id: root}}
	buf := make([]byte, pageSize)
	for len(stack) > 0 {
		ref := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		id := ref.id
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
			if reached.has(i) {
				return fmt.Errorf("page %d is reached twice", i)
			}
			if freed != nil && freed.has(i) {
				return fmt.Errorf("page %d is reachable, and listed free", i)
			}
			reached.set(i)
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
			// its element table, its keys and its buckets' values.
			run = fileRun{f: f, off: int64(id) * int64(pageSize), n: n, head: page}
		}
		var err error
		if stack, err = pageChildren(run, stack, pageSize, ref.lo, ref.hi); err != nil {
			return fmt.Errorf("page %d: %w", id, err)
		}
	}
	return nil
}

// maxRunRead bounds the run of pages (a page and those it overflows
// into) walkTree reads whole; a longer one is read in part (fileRun).
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
// pages of buckets it holds included) and appends to children the pages
// it points to: a branch's children, each with the range of keys between
// its element's and the next one's, the root pages of buckets stored in a
// leaf, each a tree of its own. Its keys must ascend, and lie in lo..hi
// (lo included, hi excluded; nil: no bound). Of a leaf, only the keys
// and the values of buckets are read, each value at most a page
// (pageSize): a bucket's value is its header, and an inline bucket's
// page, which bbolt keeps to a quarter of a page.
func pageChildren(page pageRun, children []pageRef, pageSize int, lo, hi []byte) ([]pageRef, error) {
	head, err := page.read(0, pageHeaderSize)
	if err != nil {
		return nil, fmt.Errorf("a page of %d bytes: %w", page.size(), err)
	}
	flags := binary.LittleEndian.Uint16(head[8:])
	count := int(binary.LittleEndian.Uint16(head[10:]))
	switch {
	case flags != branchPageFlag && flags != leafPageFlag:
		return nil, fmt.Errorf("flags %#x: not a branch or leaf page", flags)
	case flags == branchPageFlag && count == 0:
		return nil, errors.New("a branch page without elements")
	}
	table, err := page.read(pageHeaderSize, int64(count)*pageElementSize)
	if err != nil {
		return nil, fmt.Errorf("%d elements do not fit in %d bytes", count, page.size())
	}
	// key reads element i's key, at pos from the element, of ksize bytes;
	// end is where the element's data (its key, and a leaf's value)
	// ends. As bbolt writes a page, the data of each element follows the
	// element table and the element before it, and no key is longer
	// than bbolt.MaxKeySize: so no byte of the page is read as a key
	// twice, however its elements are damaged.
	dataEnd := uint64(pageHeaderSize + count*pageElementSize)
	key := func(i int, pos, ksize, end uint64) ([]byte, error) {
		at := uint64(pageHeaderSize + i*pageElementSize)
		switch {
		case ksize > bbolt.MaxKeySize:
			return nil, fmt.Errorf("element %d's key is %d bytes, more than bbolt's %d", i, ksize, bbolt.MaxKeySize)
		case at+pos < dataEnd:
			return nil, fmt.Errorf("element %d's data overlaps the element table or the element before it", i)
		}
		dataEnd = end
		k, err := page.read(int64(at+pos), int64(ksize))
		if err != nil {
			return nil, fmt.Errorf("element %d's key: %w", i, err)
		}
		return k, nil
	}
	var prev []byte // the key before, or nil
	inOrder := func(i int, k []byte) error {
		switch {
		case i > 0 && bytes.Compare(prev, k) >= 0:
			return fmt.Errorf("key %d (%x) is not above the key before it (%x)", i, clipKey(k), clipKey(prev))
		case lo != nil && bytes.Compare(k, lo) < 0, hi != nil && bytes.Compare(k, hi) >= 0:
			return fmt.Errorf("key %d (%x) lies outside the range %x..%x of the branch element leading to its page", i, clipKey(k), clipKey(lo), clipKey(hi))
		}
		prev = k
		return nil
	}
	first := len(children) // a branch's children, pushed in reverse below
	for i := range count {
		at := pageHeaderSize + i*pageElementSize
		e := table[i*pageElementSize : (i+1)*pageElementSize]
		switch flags {
		case branchPageFlag:
			pos, ksize := uint64(binary.LittleEndian.Uint32(e[0:])), uint64(binary.LittleEndian.Uint32(e[4:]))
			if uint64(at)+pos+ksize > uint64(page.size()) {
				return nil, fmt.Errorf("element %d lies past the page", i)
			}
			k, err := key(i, pos, ksize, uint64(at)+pos+ksize)
			if err != nil {
				return nil, err
			}
			if err := inOrder(i, k); err != nil {
				return nil, err
			}
			// Its range: from its key to the next element's (or this
			// page's upper bound), set once that one is read.
			children = append(children, pageRef{id: binary.LittleEndian.Uint64(e[8:]), lo: bytes.Clone(k), hi: hi})
			if i > 0 {
				children[len(children)-2].hi = children[len(children)-1].lo
			}
		case leafPageFlag:
			eflags := binary.LittleEndian.Uint32(e[0:])
			pos := uint64(binary.LittleEndian.Uint32(e[4:]))
			ksize, vsize := uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
			end := uint64(at) + pos + ksize + vsize
			if end > uint64(page.size()) {
				return nil, fmt.Errorf("element %d lies past the page", i)
			}
			k, err := key(i, pos, ksize, end)
			if err != nil {
				return nil, err
			}
			if err := inOrder(i, k); err != nil {
				return nil, err
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
				children = append(children, pageRef{id: root}) // a tree of its own: no range
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
			if children, err = pageChildren(memRun(inline), children, pageSize, nil, nil); err != nil {
				return nil, fmt.Errorf("element %d's inline bucket: %w", i, err)
			}
		}
	}
	if flags == branchPageFlag {
		// Read in key order: the stack pops the last pushed first.
		slices.Reverse(children[first:])
	}
	return children, nil
}

// clipKey is at most the first 32 bytes of a key, for an error.
func clipKey(k []byte) []byte { return k[:min(len(k), 32)] }
