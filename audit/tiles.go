package audit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/tlog"

	"mandate.dev/mandate/store"
)

// TileHeight is the height of the log's tiles (C2SP tlog-tiles): a tile
// holds up to 1<<TileHeight = 256 hashes, and an entry bundle as many
// entries.
const TileHeight = 8

// Errors of TileData. The API answers both as "not found" (tlog-tiles
// clients ask for tiles by address, and a malformed one names none).
var (
	// ErrBadTilePath: the path is not a tlog-tiles tile or entry bundle
	// path in canonical form.
	ErrBadTilePath = errors.New("audit: malformed tile path")
	// ErrNoTile: the tile is not (yet) in the tree of the latest
	// checkpoint.
	ErrNoTile = errors.New("audit: no such tile")
)

// maxTilePathLen is far above the longest valid path (about 45 bytes).
const maxTilePathLen = 128

// TileData returns a resource of the C2SP tlog-tiles read path
// (https://c2sp.org/tlog-tiles) of the tree of the latest checkpoint, by
// its path below the log's prefix:
//
//   - "tile/<L>/<N>[.p/<W>]": the hash tile at level L, index N (encoded
//     in 3-digit path elements, "x001/234"), of width W (256 when there is
//     no ".p/<W>"): the concatenated 32-byte hashes of the tree nodes at
//     level 8·L, indexes N·256 to N·256+W-1.
//   - "tile/entries/<N>[.p/<W>]": the entry bundle N: the entries N·256 to
//     N·256+W-1, each as a 2-byte big-endian length and the entry's bytes.
//
// A tile is served when all its hashes or entries are in the tree of the
// latest checkpoint (a partial tile of any such width, not only the
// latest's); else the error matches ErrNoTile. A path that is not in the
// specification's canonical form (no leading slash, levels 0 to 63,
// widths 1 to 255, no leading zeros) fails with ErrBadTilePath.
//
// The bytes of a tile never change: a full tile (without ".p/") may be
// cached forever. A partial tile is superseded by wider ones as the log
// grows, and is served only as long as the log chooses.
func (l *Log) TileData(ctx context.Context, path string) ([]byte, error) {
	t, err := parseTilePath(path)
	if err != nil {
		return nil, err
	}
	if size := l.Size(); !tileInTree(t, size) {
		return nil, fmt.Errorf("%w: %s (tree size %d)", ErrNoTile, path, size)
	}
	var b []byte
	err = l.cfg.Store.View(ctx, func(tx store.Tx) error {
		if t.L == -1 {
			b, err = entryBundle(tx, t)
		} else {
			b, err = hashTile(tx, t)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", path, err)
	}
	return b, nil
}

// parseTilePath parses a tlog-tiles path into the tlog.Tile of height
// TileHeight it names, with L = -1 for an entry bundle (as tlog does for
// its "data" tiles). Only canonical paths are accepted: the tlog-tiles
// form of t.Path() is path.
func parseTilePath(path string) (tlog.Tile, error) {
	bad := func() (tlog.Tile, error) {
		if len(path) > 64 {
			path = path[:64] + "..."
		}
		return tlog.Tile{}, fmt.Errorf("%w: %q", ErrBadTilePath, path)
	}
	if len(path) > maxTilePathLen {
		return bad()
	}
	rest, ok := strings.CutPrefix(path, "tile/")
	if !ok {
		return bad()
	}
	// tlog's paths name the height, and its entry tiles "data".
	var tp string
	if n, ok := strings.CutPrefix(rest, "entries/"); ok {
		tp = fmt.Sprintf("tile/%d/data/%s", TileHeight, n)
	} else if strings.HasPrefix(rest, "data/") {
		return bad()
	} else {
		tp = fmt.Sprintf("tile/%d/%s", TileHeight, rest)
	}
	t, err := tlog.ParseTilePath(tp) // checks the form: t.Path() == tp
	if err != nil || t.H != TileHeight || t.L > 63 || t.N < 0 {
		return bad()
	}
	return t, nil
}

// tileInTree reports whether every hash (or entry) of t is in the tree of
// the given size.
func tileInTree(t tlog.Tile, size uint64) bool {
	level := max(t.L, 0)
	if level*TileHeight >= 64 || t.N < 0 || t.W < 1 || t.W > 1<<TileHeight {
		return false
	}
	count := size >> (level * TileHeight) // nodes at the tile's bottom level
	n := uint64(t.N)
	if n > count>>TileHeight {
		return false
	}
	return uint64(t.W) <= count-n<<TileHeight
}

// hashTile reads the stored nodes of hash tile t.
func hashTile(tx store.Tx, t tlog.Tile) ([]byte, error) {
	level := byte(t.L * TileHeight)
	first := uint64(t.N) << TileHeight
	out := make([]byte, 0, t.W*tlog.HashSize)
	next := first
	err := tx.Scan(bucketNodes, []byte{level}, nodeKey(compact.NewNodeID(uint(level), first)), func(k, v []byte) error {
		if len(k) != 9 || binary.BigEndian.Uint64(k[1:]) != next || len(v) != tlog.HashSize {
			return corrupt("tree node %d.%d: missing or malformed", level, next)
		}
		out = append(out, v...)
		if next++; next == first+uint64(t.W) {
			return store.ErrStopScan
		}
		return nil
	})
	if err == nil && next != first+uint64(t.W) {
		err = corrupt("tree node %d.%d: missing", level, next)
	}
	return out, err
}

// TilePath is the C2SP tlog-tiles path of tile t (of height
// TileHeight; L -1 for an entry bundle): "tile/<L>/<N>[.p/<W>]" or
// "tile/entries/<N>[.p/<W>]", N in 3-digit path elements ("x001/234").
func TilePath(t tlog.Tile) string {
	// tlog's paths name the height, and its entry tiles "data".
	p := strings.Replace(t.Path(), fmt.Sprintf("tile/%d/", t.H), "tile/", 1)
	return strings.Replace(p, "tile/data/", "tile/entries/", 1)
}

// ParseEntryBundle reads the w entries of an entry bundle (each a 2-byte
// big-endian length and the entry's bytes): anything else, fewer or
// more entries, a length past the end, bytes after the last, is an
// error. The entries are slices of b.
func ParseEntryBundle(b []byte, w int) ([][]byte, error) {
	if w < 0 {
		return nil, fmt.Errorf("audit: entry bundle: a width of %d", w)
	}
	entries := make([][]byte, 0, min(w, len(b)/2))
	for len(b) > 0 && len(entries) < w {
		if len(b) < 2 {
			return nil, errors.New("audit: entry bundle: a length cut short")
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return nil, fmt.Errorf("audit: entry bundle: entry %d is cut short", len(entries))
		}
		entries, b = append(entries, b[2:2+l]), b[2+l:]
	}
	if len(entries) != w || len(b) != 0 {
		return nil, fmt.Errorf("audit: entry bundle: not %d entries alone", w)
	}
	return entries, nil
}

// entryBundle reads the entries of entry bundle t.
func entryBundle(tx store.Tx, t tlog.Tile) ([]byte, error) {
	first := uint64(t.N) << TileHeight
	var out []byte
	next := first
	err := tx.Scan(bucketEntries, nil, entryKey(first), func(k, v []byte) error {
		if len(k) != 8 || binary.BigEndian.Uint64(k) != next {
			return corrupt("entry %d: missing", next)
		}
		if len(v) > math.MaxUint16 {
			return corrupt("entry %d: %d bytes do not fit an entry bundle", next, len(v))
		}
		if out == nil {
			out = make([]byte, 0, t.W*(2+len(v)))
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(v)))
		out = append(out, v...)
		if next++; next == first+uint64(t.W) {
			return store.ErrStopScan
		}
		return nil
	})
	if err == nil && next != first+uint64(t.W) {
		err = corrupt("entry %d: missing", next)
	}
	return out, err
}
