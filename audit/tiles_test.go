package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// tileReader is a tlog.TileReader reading through Log.TileData.
type tileReader struct {
	t *testing.T
	l *Log
}

func (r tileReader) Height() int { return 8 }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	var out [][]byte
	for _, tile := range tiles {
		b, err := r.l.TileData(r.t.Context(), TilePath(tile))
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// parseBundle splits an entry bundle into its entries.
func parseBundle(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("entry bundle: %d bytes left, want a 2-byte length", len(b))
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			t.Fatalf("entry bundle: entry of %d bytes, %d left", n, len(b)-2)
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out
}

// bigEntry returns an entry that encodes to exactly MaxEntrySize bytes.
func bigEntry(t *testing.T) Entry {
	e := testEntry(1_000_000, 0)
	e.Details = []byte(`{"pad":""}`)
	pad := MaxEntrySize - len(mustEncode(t, e))
	e.Details = fmt.Appendf(nil, `{"pad":"%s"}`, strings.Repeat("p", pad))
	if n := len(mustEncode(t, e)); n != MaxEntrySize {
		t.Fatalf("big entry of %d bytes, want %d", n, MaxEntrySize)
	}
	return e
}

// TestTiles serves every hash tile and entry bundle of logs of several
// sizes up to 600 and verifies them with golang.org/x/mod/sumdb/tlog
// against the signed checkpoints: tree hashes, record proofs, tree
// (consistency) proofs, and the entries' hashes.
func TestTiles(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	ctx := t.Context()
	type tree struct {
		size int64
		root tlog.Hash
	}
	var trees []tree
	n := 0
	for _, size := range []int{1, 2, 255, 256, 257, 300, 511, 512, 513, 600} {
		var in []Entry
		for ; n < size; n++ {
			if n == 258 {
				in = append(in, bigEntry(t))
			} else {
				in = append(in, testEntry(n, n%50))
			}
		}
		appendAll(t, l, in)
		cp := openCheckpoint(t, l.Checkpoint())
		if cp.Size != uint64(size) {
			t.Fatalf("checkpoint size %d, want %d", cp.Size, size)
		}
		trees = append(trees, tree{int64(cp.Size), tlog.Hash(cp.Hash)})
	}
	entries := make([][]byte, l.Size())
	for i := range entries {
		b, err := l.Entry(ctx, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		entries[i] = b
	}
	last := trees[len(trees)-1]
	lastReader := tlog.TileHashReader(tlog.Tree{N: last.size, Hash: last.root}, tileReader{t, l.Log})

	served := 0
	for _, tr := range trees {
		hr := tlog.TileHashReader(tlog.Tree{N: tr.size, Hash: tr.root}, tileReader{t, l.Log})
		if h, err := tlog.TreeHash(tr.size, hr); err != nil || h != tr.root {
			t.Fatalf("size %d: tlog.TreeHash = %v, %v, want %v", tr.size, h, err, tr.root)
		}
		// Every tile of the tree: its bytes are the hashes tlog verified.
		for _, tile := range tlog.NewTiles(8, 0, tr.size) {
			path := TilePath(tile)
			got, err := l.TileData(ctx, path)
			if err != nil {
				t.Fatalf("TileData(%q) = %v, want nil", path, err)
			}
			verified, err := tlog.ReadTileData(tile, hr)
			if err != nil {
				t.Fatalf("size %d: tlog.ReadTileData(%s) = %v", tr.size, path, err)
			}
			if !bytes.Equal(got, verified) || len(got) != tile.W*tlog.HashSize {
				t.Fatalf("TileData(%q) = %d bytes, not the %d verified", path, len(got), tile.W*tlog.HashSize)
			}
			served++
			if tile.L != 0 {
				continue
			}
			// Its entry bundle: each entry hashes to the tile's hash.
			bundleTile := tile
			bundleTile.L = -1
			bpath := TilePath(bundleTile)
			b, err := l.TileData(ctx, bpath)
			if err != nil {
				t.Fatalf("TileData(%q) = %v, want nil", bpath, err)
			}
			bundle := parseBundle(t, b)
			if len(bundle) != tile.W {
				t.Fatalf("TileData(%q) = %d entries, want %d", bpath, len(bundle), tile.W)
			}
			for i, e := range bundle {
				index := tile.N*256 + int64(i)
				if !bytes.Equal(e, entries[index]) {
					t.Fatalf("%s: entry %d differs from Entry(%d)", bpath, i, index)
				}
				h, err := tlog.HashFromTile(tile, got, tlog.StoredHashIndex(0, index))
				if err != nil || h != tlog.RecordHash(e) {
					t.Fatalf("%s: entry %d does not hash to the tile's hash (%v)", bpath, i, err)
				}
			}
			served++
		}
		// Record proofs for every entry, and consistency with the last tree.
		for i := range tr.size {
			p, err := tlog.ProveRecord(tr.size, i, hr)
			if err != nil {
				t.Fatalf("tlog.ProveRecord(%d, %d) = %v", tr.size, i, err)
			}
			if err := tlog.CheckRecord(p, tr.size, tr.root, i, tlog.RecordHash(entries[i])); err != nil {
				t.Fatalf("tlog.CheckRecord(%d, %d) = %v", tr.size, i, err)
			}
		}
		p, err := tlog.ProveTree(last.size, tr.size, lastReader)
		if err != nil {
			t.Fatalf("tlog.ProveTree(%d, %d) = %v", last.size, tr.size, err)
		}
		if err := tlog.CheckTree(p, last.size, last.root, tr.size, tr.root); err != nil {
			t.Fatalf("tlog.CheckTree(%d, %d) = %v", last.size, tr.size, err)
		}
	}
	t.Logf("served and verified %d tiles and bundles", served)

	// Tiles not (yet) in the tree of size 600, and malformed paths.
	for _, path := range []string{
		"tile/0/002", "tile/0/002.p/89", "tile/0/002.p/255", "tile/0/003.p/1", "tile/1/000.p/3",
		"tile/1/000", "tile/1/001.p/1", "tile/2/000.p/1", "tile/7/000.p/1", "tile/8/000.p/1",
		"tile/63/000.p/1", "tile/entries/002", "tile/entries/002.p/89", "tile/entries/003.p/1",
		"tile/0/x001/000", "tile/entries/x999/x999/x999/x999/x999/999", "tile/1/x009/x223/x372/x036/x854/775.p/1",
	} {
		if _, err := l.TileData(ctx, path); !errors.Is(err, ErrNoTile) {
			t.Errorf("TileData(%q) = %v, want %v", path, err, ErrNoTile)
		}
	}
	for _, path := range []string{"tile/0/002.p/88", "tile/1/000.p/2", "tile/entries/002.p/88", "tile/0/001.p/1", "tile/entries/000.p/255"} {
		if _, err := l.TileData(ctx, path); err != nil {
			t.Errorf("TileData(%q) = %v, want nil", path, err)
		}
	}
	for _, path := range badTilePaths {
		if _, err := l.TileData(ctx, path); !errors.Is(err, ErrBadTilePath) {
			t.Errorf("TileData(%q) = %v, want %v", path, err, ErrBadTilePath)
		}
	}
}

var badTilePaths = []string{
	"", "tile", "tile/", "tile/0", "tile/0/", "/tile/0/000", "tile/0/000/", "tile/0/1", "tile/0/0001",
	"tile/0/x000/001", "tile/0/x001", "tile/0/001/x001", "tile/00/000", "tile/-1/000", "tile/+1/000",
	"tile/64/000", "tile/1000/000", "tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/01",
	"tile/0/000.p/", "tile/0/000.p", "tile/0/000.p/-1", "tile/0/000.p/1/", "tile/data/000",
	"tile/entries/", "tile/entries/1", "tile/entries/000.p/256", "tile/entries/entries/000",
	"tile/8/0/000", "tile/8/data/000", "tile/x/000", "tile/0/abc", "tile/0/-01", "tile/0/+01",
	"checkpoint", "tile/0/x-01/000", "tile/ 0/000", "tile/0/000 ", "TILE/0/000",
	"tile/0/" + strings.Repeat("x001/", 40) + "000",
}

func TestTilesEmptyLog(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	for _, path := range []string{"tile/0/000.p/1", "tile/entries/000.p/1", "tile/0/000"} {
		if _, err := l.TileData(t.Context(), path); !errors.Is(err, ErrNoTile) {
			t.Errorf("TileData(%q) on an empty log = %v, want %v", path, err, ErrNoTile)
		}
	}
	for _, path := range badTilePaths {
		if _, err := parseTilePath(path); !errors.Is(err, ErrBadTilePath) {
			t.Errorf("parseTilePath(%q) = %v, want %v", path, err, ErrBadTilePath)
		}
	}
}

// FuzzTilePath checks that parsing never panics, accepts only canonical
// paths, and that the test for a tile being in a tree agrees with exact
// arithmetic.
func FuzzTilePath(f *testing.F) {
	for _, p := range badTilePaths {
		f.Add(p, uint64(600))
	}
	for _, p := range []string{"tile/0/000", "tile/0/x001/234", "tile/1/000.p/17", "tile/entries/000.p/3",
		"tile/entries/x123/x456/789", "tile/7/000.p/255", "tile/63/x999/999.p/1"} {
		f.Add(p, uint64(1<<64-1))
		f.Add(p, uint64(70000))
	}
	f.Fuzz(func(t *testing.T, path string, size uint64) {
		tile, err := parseTilePath(path)
		if err != nil {
			if !errors.Is(err, ErrBadTilePath) {
				t.Fatalf("parseTilePath(%q) = %v, want %v", path, err, ErrBadTilePath)
			}
			return
		}
		if p := TilePath(tile); p != path {
			t.Fatalf("parseTilePath(%q) = %+v, whose path is %q", path, tile, p)
		}
		if tile.H != 8 || tile.L < -1 || tile.L > 63 || tile.N < 0 || tile.W < 1 || tile.W > 256 {
			t.Fatalf("parseTilePath(%q) = %+v, out of range", path, tile)
		}
		// In the tree iff (N·256 + W) · 256^L <= size.
		level := max(tile.L, 0)
		need := new(big.Int).Lsh(big.NewInt(tile.N), 8)
		need.Add(need, big.NewInt(int64(tile.W)))
		need.Lsh(need, uint(8*level))
		want := need.Cmp(new(big.Int).SetUint64(size)) <= 0
		if got := tileInTree(tile, size); got != want {
			t.Fatalf("tileInTree(%+v, %d) = %v, want %v", tile, size, got, want)
		}
	})
}

func TestTilePath(t *testing.T) {
	for _, c := range []struct {
		tile tlog.Tile
		want string
	}{
		{tlog.Tile{H: 8, L: -1, N: 0, W: 256}, "tile/entries/000"},
		{tlog.Tile{H: 8, L: -1, N: 0, W: 5}, "tile/entries/000.p/5"},
		{tlog.Tile{H: 8, L: -1, N: 1000, W: 256}, "tile/entries/x001/000"},
		{tlog.Tile{H: 8, L: -1, N: 1234, W: 255}, "tile/entries/x001/234.p/255"},
		{tlog.Tile{H: 8, L: -1, N: 1234067, W: 256}, "tile/entries/x001/x234/067"},
		{tlog.Tile{H: 8, L: 0, N: 7, W: 256}, "tile/0/007"},
		{tlog.Tile{H: 8, L: 2, N: 1234, W: 3}, "tile/2/x001/234.p/3"},
	} {
		if got := TilePath(c.tile); got != c.want {
			t.Errorf("TilePath(%+v) = %q, want %q", c.tile, got, c.want)
		}
	}
}

// FuzzEntryBundle: an entry bundle from a server is read as the w
// entries it holds exactly, or refused; what is read is what a bundle
// of those entries would be, byte for byte.
func FuzzEntryBundle(f *testing.F) {
	f.Add([]byte{0, 1, 'a', 0, 0}, 2)
	f.Add([]byte{0, 3, 'a'}, 1)
	f.Add([]byte{0, 1, 'a', 0}, 1)
	f.Add([]byte{}, 0)
	f.Add([]byte{0xff, 0xff}, 1)
	f.Fuzz(func(t *testing.T, b []byte, w int) {
		entries, err := ParseEntryBundle(b, w)
		if err != nil {
			return
		}
		if len(entries) != w {
			t.Fatalf("ParseEntryBundle(%x, %d) read %d entries", b, w, len(entries))
		}
		var again []byte
		for _, e := range entries {
			again = binary.BigEndian.AppendUint16(again, uint16(len(e)))
			again = append(again, e...)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("ParseEntryBundle(%x, %d) = %q, which a bundle writes as %x", b, w, entries, again)
		}
	})
}
