package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
)

// audit verify --full against a server that lies or lacks its tiles:
// entries read a bundle at a time, or one at a time where a bundle
// cannot be had or read whole, pass only when they hash to the signed
// root; a log that does not is said to be one, whatever the server then
// answers when the first bad entry is looked for.
func TestVerifyFullAgainstAHostileServer(t *testing.T) {
	const size = 300 // a full bundle and a partial one
	tree := testonly.New(rfc6962.DefaultHasher)
	var entries [][]byte
	for i := range size {
		e := fmt.Appendf(nil, `{"index":%d}`, i)
		entries = append(entries, e)
		tree.AppendData(e)
	}
	cp := &log.Checkpoint{Origin: "o", Size: size, Hash: tree.Hash()}
	bundle := func(n, w int, entry func(i int) []byte) []byte {
		var b []byte
		for i := n * 256; i < n*256+w; i++ {
			e := entry(i)
			b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
			b = append(b, e...)
		}
		return b
	}
	same := func(i int) []byte { return entries[i] }
	other := func(i int) []byte {
		if i == 42 {
			return []byte(`{"index":"forged"}`)
		}
		return entries[i]
	}
	for _, tc := range []struct {
		name string
		// tile answers /tile/entries/N[.p/W] for bundle n of width w
		// (nil: 404).
		tile func(n, w int) []byte
		// entry answers entry i with its proof; fail: 503.
		entry func(i int) []byte
		fail  bool
		want  string // "": verified
	}{
		{"true bundles", func(n, w int) []byte { return bundle(n, w, same) }, same, false, ""},
		{"no tiles", nil, same, false, ""},
		{"bundles one entry short", func(n, w int) []byte { return bundle(n, w-1, same) }, same, false, ""},
		{"bundles with an entry more", func(n, w int) []byte { return append(bundle(n, w, same), 0, 1, 0x7b) }, same, false, ""},
		{"a forged entry in bundle and entries", func(n, w int) []byte { return bundle(n, w, other) }, other, false, "first bad entry 42"},
		{"bundles that differ from the entries", func(n, w int) []byte { return bundle(n, w, other) }, same, false, "two versions"},
		{"a forged bundle, the entries then refused", func(n, w int) []byte { return bundle(n, w, other) }, same, true, "do not hash to the signed root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /tile/entries/{n...}", func(w http.ResponseWriter, r *http.Request) {
				name, width := r.PathValue("n"), 256
				if base, p, ok := strings.Cut(name, ".p/"); ok {
					name, width = base, atoi(t, p)
				}
				if tc.tile == nil || strings.Contains(name, "/") {
					http.NotFound(w, r)
					return
				}
				w.Write(tc.tile(atoi(t, name), width))
			})
			mux.HandleFunc("GET /v1/audit/entries/{i}", func(w http.ResponseWriter, r *http.Request) {
				if tc.fail {
					http.Error(w, "unavailable", http.StatusServiceUnavailable)
					return
				}
				i := atoi(t, r.PathValue("i"))
				p, err := tree.InclusionProof(uint64(i), size)
				if err != nil {
					t.Error(err)
				}
				json.NewEncoder(w).Encode(map[string]any{"index": i, "entry_b64": tc.entry(i), "inclusion_proof": p})
			})
			err := verifyFull(t.Context(), fakeServer(t, mux), cp)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("verifyFull = %v, want the log verified", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("verifyFull = %v, want %q", err, tc.want)
			}
		})
	}
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}
