package audit

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/store"
)

// The store buckets of the log; see the package documentation.
const (
	bucketEntries = "audit_entries"
	bucketNodes   = "audit_tree"
	bucketState   = "audit_state"
)

// Keys in bucketState.
var (
	keyTree       = []byte("tree")
	keyCheckpoint = []byte("checkpoint")
)

var (
	hasher  = rfc6962.DefaultHasher
	factory = &compact.RangeFactory{Hash: hasher.HashChildren}
)

// ErrCorrupt is matched by the error of Open (and of Run, when the log
// re-reads its state after a failed commit) when the stored log is
// inconsistent: the tree state, nodes, entries and checkpoint do not agree,
// or the state went backwards. It is fatal to the log.
var ErrCorrupt = errors.New("audit: stored log is inconsistent")

// treeState is the durable state of the tree at one size. Values are
// immutable once built: hashes and checkpoint are never modified in place.
type treeState struct {
	size       uint64
	hashes     [][]byte // the compact range [0, size), left to right
	root       []byte
	checkpoint []byte // the signed note for (size, root)
}

// wireTree is the JSON value under keyTree.
type wireTree struct {
	Size  uint64   `json:"size"`
	Root  []byte   `json:"root"`
	Range [][]byte `json:"range"`
}

func entryKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), index)
}

func nodeKey(id compact.NodeID) []byte {
	k := make([]byte, 9)
	k[0] = byte(id.Level)
	binary.BigEndian.PutUint64(k[1:], id.Index)
	return k
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// putState writes the tree state and its checkpoint.
func putState(tx store.Tx, st treeState) error {
	b, err := json.Marshal(wireTree{Size: st.size, Root: st.root, Range: st.hashes})
	if err != nil {
		return err
	}
	if err := tx.Put(bucketState, keyTree, b); err != nil {
		return err
	}
	return tx.Put(bucketState, keyCheckpoint, st.checkpoint)
}

// readState reads the tree state and checks it against the stored nodes,
// entries and checkpoint. found is false when the log was never written
// (and nothing of it is in the store).
func readState(tx store.Tx, origin string, v note.Verifier) (st treeState, found bool, err error) {
	b, err := tx.Get(bucketState, keyTree)
	if errors.Is(err, store.ErrNotFound) {
		return treeState{}, false, checkEmpty(tx)
	}
	if err != nil {
		return treeState{}, false, fmt.Errorf("audit: read tree state: %w", err)
	}
	if st, err = decodeTree(b); err != nil {
		return treeState{}, false, err
	}
	if err := checkTree(tx, st); err != nil {
		return treeState{}, false, err
	}
	if st.checkpoint, err = tx.Get(bucketState, keyCheckpoint); err != nil {
		return treeState{}, false, corrupt("checkpoint: %v", err)
	}
	if err := checkCheckpoint(st, origin, v); err != nil {
		return treeState{}, false, err
	}
	return st, true, nil
}

// checkEmpty checks that a log without state holds nothing.
func checkEmpty(tx store.Tx) error {
	_, err := tx.Get(bucketEntries, entryKey(0))
	switch {
	case err == nil:
		return corrupt("entries stored but no tree state")
	case errors.Is(err, store.ErrNotFound):
		_, err = tx.Get(bucketState, keyCheckpoint)
		if err == nil {
			return corrupt("checkpoint stored but no tree state")
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
	}
	return fmt.Errorf("audit: read state: %w", err)
}

// decodeTree parses the tree state and checks that its compact range
// hashes to its root.
func decodeTree(b []byte) (treeState, error) {
	var w wireTree
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return treeState{}, corrupt("tree state: %v", err)
	}
	for _, h := range w.Range {
		if len(h) != hasher.Size() {
			return treeState{}, corrupt("tree state: hash of %d bytes", len(h))
		}
	}
	r, err := factory.NewRange(0, w.Size, w.Range)
	if err != nil {
		return treeState{}, corrupt("tree state: %v", err)
	}
	root := rootOf(r)
	if !bytes.Equal(root, w.Root) {
		return treeState{}, corrupt("tree state: root %x, but its compact range hashes to %x", w.Root, root)
	}
	return treeState{size: w.Size, hashes: w.Range, root: root}, nil
}

// rootOf returns the root hash of a range starting at 0; the empty tree's
// root is the hash of the empty string.
func rootOf(r *compact.Range) []byte {
	root, err := r.GetRootHash(nil)
	if err != nil {
		panic(err) // unreachable: every range here begins at 0
	}
	if root == nil {
		return hasher.EmptyRoot()
	}
	return root
}

// checkTree checks that the stored nodes of the compact range are the
// state's, that the last entry hashes to its leaf, and that no entry lies
// beyond the tree.
func checkTree(tx store.Tx, st treeState) error {
	for i, id := range compact.RangeNodes(0, st.size, nil) {
		h, err := tx.Get(bucketNodes, nodeKey(id))
		if err != nil {
			return corrupt("tree node %d.%d: %v", id.Level, id.Index, err)
		}
		if !bytes.Equal(h, st.hashes[i]) {
			return corrupt("tree node %d.%d differs from the tree state", id.Level, id.Index)
		}
	}
	switch _, err := tx.Get(bucketEntries, entryKey(st.size)); {
	case err == nil:
		return corrupt("entry %d stored beyond the tree size %d", st.size, st.size)
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("audit: read entry %d: %w", st.size, err)
	}
	if st.size == 0 {
		return nil
	}
	last := st.size - 1
	e, err := tx.Get(bucketEntries, entryKey(last))
	if err != nil {
		return corrupt("last entry %d: %v", last, err)
	}
	leaf, err := tx.Get(bucketNodes, nodeKey(compact.NewNodeID(0, last)))
	if err != nil {
		return corrupt("leaf %d: %v", last, err)
	}
	if !bytes.Equal(leaf, hasher.HashLeaf(e)) {
		return corrupt("entry %d does not hash to its stored leaf", last)
	}
	return nil
}

// checkCheckpoint checks that st.checkpoint is signed by v and names the
// state's origin, size and root.
func checkCheckpoint(st treeState, origin string, v note.Verifier) error {
	n, err := note.Open(st.checkpoint, note.VerifierList(v))
	if err != nil {
		return corrupt("checkpoint does not verify with key %s+%08x: %v", v.Name(), v.KeyHash(), err)
	}
	var cp log.Checkpoint
	rest, err := cp.Unmarshal([]byte(n.Text))
	if err != nil || len(rest) > 0 {
		return corrupt("checkpoint: malformed (%v)", err)
	}
	switch {
	case cp.Origin != origin:
		return corrupt("checkpoint origin %q, want %q", cp.Origin, origin)
	case cp.Size != st.size:
		return corrupt("checkpoint size %d, tree state size %d", cp.Size, st.size)
	case !bytes.Equal(cp.Hash, st.root):
		return corrupt("checkpoint root differs from the tree state's")
	}
	return nil
}

// signCheckpoint returns the signed C2SP checkpoint of a tree.
func signCheckpoint(origin string, s note.Signer, size uint64, root []byte) ([]byte, error) {
	text := log.Checkpoint{Origin: origin, Size: size, Hash: root}.Marshal()
	b, err := note.Sign(&note.Note{Text: string(text)}, s)
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	return b, nil
}
