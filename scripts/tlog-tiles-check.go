//go:build ignore

// The check scripts/tlog-tiles-torchwood.sh builds (in a module of its
// own, with filippo.io/torchwood from the Go module proxy): a reader of
// the audit log that knows nothing of Mandate but its C2SP read path
// (https://c2sp.org/tlog-tiles) and its verifier key. It
//
//   - fetches /checkpoint and verifies its signature with the key
//     (golang.org/x/mod/sumdb/note) and parses it (torchwood);
//   - given the checkpoint an earlier run saw (STATE), proves the new
//     tree consistent with it from the hash tiles (tlog.ProveTree);
//   - reads every entry through torchwood's Client, which checks each
//     entry bundle against the hash tiles and the checkpoint's root;
//   - checks a few entries against the JSON API's account of them
//     (GET /v1/audit/entries/{index}, entry_b64), and their inclusion
//     proofs (torchwood's Client.Entry);
//
// and then keeps the checkpoint in STATE. It reads as the auditor or
// admin whose credential is in CREDS (svid.pem, svid.key), trusting the
// authority's roots in BUNDLE.
//
//	go run tlog-tiles-check.go URL VKEY STATE BUNDLE CREDS
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("tlog-tiles check: ")
	if len(os.Args) != 6 {
		log.Fatal("usage: tlog-tiles-check URL VKEY STATE BUNDLE CREDS")
	}
	url, vkeyFile, stateFile, bundleFile, creds := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	hc := httpClient(bundleFile, creds)
	fetcher, err := torchwood.NewTileFetcher(url, torchwood.WithHTTPClient(hc), torchwood.WithConcurrencyLimit(8))
	if err != nil {
		log.Fatal(err)
	}
	vkey, err := os.ReadFile(vkeyFile)
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		log.Fatal(err)
	}
	raw, err := fetcher.ReadEndpoint(ctx, "checkpoint")
	if err != nil {
		log.Fatalf("GET /checkpoint: %v", err)
	}
	n, err := note.Open(raw, note.VerifierList(verifier))
	if err != nil {
		log.Fatalf("the checkpoint does not verify with %s: %v", vkeyFile, err)
	}
	cp, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		log.Fatal(err)
	}
	if cp.Origin != verifier.Name() {
		log.Fatalf("checkpoint origin %q, the key's name %q", cp.Origin, verifier.Name())
	}
	fmt.Printf("checkpoint of %s: %d entries, verified with its key\n", cp.Origin, cp.N)

	// Consistent with what an earlier run saw.
	hr := torchwood.TileHashReaderWithContext(ctx, cp.Tree, fetcher)
	switch old, err := os.ReadFile(stateFile); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		log.Fatal(err)
	default:
		prev, err := torchwood.ParseCheckpoint(string(old))
		if err != nil {
			log.Fatal(err)
		}
		proof, err := tlog.ProveTree(cp.N, prev.N, hr)
		if err != nil {
			log.Fatalf("proving size %d consistent with size %d from the hash tiles: %v", cp.N, prev.N, err)
		}
		if err := tlog.CheckTree(proof, cp.N, cp.Hash, prev.N, prev.Hash); err != nil {
			log.Fatalf("the log of %d entries is not consistent with the one of %d seen before: %v", cp.N, prev.N, err)
		}
		fmt.Printf("consistent with the checkpoint of %d entries seen before\n", prev.N)
	}

	// Every entry, each bundle checked against the tree.
	client, err := torchwood.NewClient(fetcher, torchwood.WithTimeout(time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	var count int64
	types := map[string]int{}
	for i, e := range client.Entries(ctx, cp.Tree, 0) {
		if i != count {
			log.Fatalf("entry %d yielded as %d", count, i)
		}
		var v struct {
			V    int    `json:"v"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal(e, &v); err != nil || v.V != 1 || v.Type == "" {
			log.Fatalf("entry %d is not a version 1 entry: %.200q", i, e)
		}
		types[v.Type]++
		count++
	}
	if err := client.Err(); err != nil {
		log.Fatalf("reading the entries: %v", err)
	}
	// The iterator may stop before a partial entry bundle at the end;
	// those entries are read one by one, with their proofs.
	for i := count; i < cp.N; i++ {
		if _, _, err := client.Entry(ctx, cp.Tree, i); err != nil {
			log.Fatalf("entry %d: %v", i, err)
		}
		count++
	}
	fmt.Printf("read and checked all %d entries from the tiles (%d kinds)\n", count, len(types))

	// The same bytes as the API says, with inclusion proofs.
	for _, i := range []int64{0, cp.N / 2, cp.N - 1} {
		e, _, err := client.Entry(ctx, cp.Tree, i)
		if err != nil {
			log.Fatalf("entry %d: %v", i, err)
		}
		var ans struct {
			EntryB64 string `json:"entry_b64"`
		}
		if err := getJSON(ctx, hc, fmt.Sprintf("%s/v1/audit/entries/%d", url, i), &ans); err != nil {
			log.Fatalf("entry %d from the API: %v", i, err)
		}
		if b, err := base64.StdEncoding.DecodeString(ans.EntryB64); err != nil || string(b) != string(e) {
			log.Fatalf("entry %d: the tiles and the API disagree", i)
		}
	}
	fmt.Println("entries 0, the middle one and the last are the API's, byte for byte, and proven in the tree")

	if err := os.WriteFile(stateFile, []byte(n.Text), 0o600); err != nil {
		log.Fatal(err)
	}
}

// httpClient trusts the authority's bundle and presents CREDS's
// svid.pem and svid.key.
func httpClient(bundleFile, creds string) *http.Client {
	pem, err := os.ReadFile(bundleFile)
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		log.Fatalf("no certificate in %s", bundleFile)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(creds, "svid.pem"), filepath.Join(creds, "svid.key"))
	if err != nil {
		log.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func getJSON(ctx context.Context, hc *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %.300s", resp.Status, b)
	}
	return json.Unmarshal(b, v)
}
