package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"

	"mandate.dev/mandate/store"
)

// Errors of the read methods for arguments outside the log (the API
// answers ErrIndexOutOfRange as "not found", ErrTreeSize as "bad
// request"). They are wrapped with the values involved.
var (
	// ErrIndexOutOfRange: the index is not below the tree size.
	ErrIndexOutOfRange = errors.New("audit: index out of range")
	// ErrTreeSize: a tree size above the log's size, or from > to.
	ErrTreeSize = errors.New("audit: bad tree size")
)

// LeafHash returns the RFC 6962 leaf hash of an encoded entry:
// SHA-256(0x00 || entry).
func LeafHash(entry []byte) []byte { return hasher.HashLeaf(entry) }

// Checkpoint returns the latest signed checkpoint. Every entry below its
// size is durable.
func (l *Log) Checkpoint() []byte { return bytes.Clone(l.head.Load().checkpoint) }

// Size returns the tree size of the latest checkpoint.
func (l *Log) Size() uint64 { return l.head.Load().size }

// Entry returns the stored bytes of the entry at index.
func (l *Log) Entry(ctx context.Context, index uint64) ([]byte, error) {
	if size := l.Size(); index >= size {
		return nil, fmt.Errorf("%w: index %d, tree size %d", ErrIndexOutOfRange, index, size)
	}
	var b []byte
	err := l.cfg.Store.View(ctx, func(tx store.Tx) error {
		var err error
		b, err = tx.Get(bucketEntries, entryKey(index))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: read entry %d: %w", index, err)
	}
	return b, nil
}

// InclusionProof returns the RFC 9162 inclusion proof of the entry at index
// in the tree of size treeSize (at most Size()).
func (l *Log) InclusionProof(ctx context.Context, index, treeSize uint64) ([][]byte, error) {
	if err := l.checkSize(treeSize); err != nil {
		return nil, err
	}
	if index >= treeSize {
		return nil, fmt.Errorf("%w: index %d, tree size %d", ErrIndexOutOfRange, index, treeSize)
	}
	p, err := proof.Inclusion(index, treeSize)
	if err != nil {
		return nil, err
	}
	return l.rehash(ctx, p)
}

// ConsistencyProof returns the RFC 9162 consistency proof between the trees
// of sizes from and to, from <= to <= Size(). It is empty when from is 0
// or from == to.
func (l *Log) ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, error) {
	if err := l.checkSize(to); err != nil {
		return nil, err
	}
	if from > to {
		return nil, fmt.Errorf("%w: from %d > to %d", ErrTreeSize, from, to)
	}
	p, err := proof.Consistency(from, to)
	if err != nil {
		return nil, err
	}
	return l.rehash(ctx, p)
}

func (l *Log) checkSize(size uint64) error {
	if cur := l.Size(); size > cur {
		return fmt.Errorf("%w: %d, log size %d", ErrTreeSize, size, cur)
	}
	return nil
}

// rehash fetches the nodes of p and computes the proof.
func (l *Log) rehash(ctx context.Context, p proof.Nodes) ([][]byte, error) {
	hashes, err := l.nodes(ctx, p.IDs)
	if err != nil {
		return nil, err
	}
	return p.Rehash(hashes, hasher.HashChildren)
}

// nodes reads the hashes of stored tree nodes in one transaction.
func (l *Log) nodes(ctx context.Context, ids []compact.NodeID) ([][]byte, error) {
	hashes := make([][]byte, len(ids))
	err := l.cfg.Store.View(ctx, func(tx store.Tx) error {
		for i, id := range ids {
			h, err := tx.Get(bucketNodes, nodeKey(id))
			if err != nil {
				return fmt.Errorf("audit: read tree node %d.%d: %w", id.Level, id.Index, err)
			}
			hashes[i] = h
		}
		return nil
	})
	return hashes, err
}
