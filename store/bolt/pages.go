package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
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
		if overflow > 0 {
			if n := int(overflow+1) * pageSize; cap(buf) < n {
				buf = append(buf[:pageSize], make([]byte, n-pageSize)...)
			}
			page = buf[:int(overflow+1)*pageSize]
			if _, err := f.ReadAt(page[pageSize:], int64(id+1)*int64(pageSize)); err != nil {
				return fmt.Errorf("page %d: %w", id, err)
			}
		}
		children, err := pageChildren(page, nil)
		if err != nil {
			return fmt.Errorf("page %d: %w", id, err)
		}
		stack = append(stack, children...)
	}
	return nil
}

// pageChildren checks one page (its header and elements, the inline
// pages of buckets it holds included) and appends to children the ids of
// the pages it points to: a branch's children, the root pages of buckets
// stored in a leaf.
func pageChildren(page []byte, children []uint64) ([]uint64, error) {
	flags := binary.LittleEndian.Uint16(page[8:])
	count := int(binary.LittleEndian.Uint16(page[10:]))
	if pageHeaderSize+count*pageElementSize > len(page) {
		return nil, fmt.Errorf("%d elements do not fit in %d bytes", count, len(page))
	}
	for i := range count {
		at := pageHeaderSize + i*pageElementSize
		e := page[at : at+pageElementSize]
		switch flags {
		case branchPageFlag:
			pos, ksize := uint64(binary.LittleEndian.Uint32(e[0:])), uint64(binary.LittleEndian.Uint32(e[4:]))
			if uint64(at)+pos+ksize > uint64(len(page)) {
				return nil, fmt.Errorf("element %d lies past the page", i)
			}
			children = append(children, binary.LittleEndian.Uint64(e[8:]))
		case leafPageFlag:
			eflags := binary.LittleEndian.Uint32(e[0:])
			pos := uint64(binary.LittleEndian.Uint32(e[4:]))
			ksize, vsize := uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
			end := uint64(at) + pos + ksize + vsize
			if end > uint64(len(page)) {
				return nil, fmt.Errorf("element %d lies past the page", i)
			}
			if eflags&bucketLeafFlag == 0 {
				continue
			}
			value := page[end-vsize : end]
			if len(value) < bucketHeaderLen {
				return nil, fmt.Errorf("element %d is a bucket of %d bytes", i, len(value))
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
			var err error
			if children, err = pageChildren(inline, children); err != nil {
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
