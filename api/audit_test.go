package api_test

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"mandate.dev/mandate/api"
	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
)

// auditCheckpoint fetches and verifies the signed checkpoint with the
// verifier key the authority wrote to <data dir>/audit/log.vkey, using
// sumdb/note and transparency-dev/formats (code Mandate did not write).
func (e *env) auditCheckpoint(c *http.Client) *log.Checkpoint {
	e.t.Helper()
	resp, err := c.Get(e.url + "/v1/audit/checkpoint")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		e.t.Fatalf("GET checkpoint = %d %s", resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" { // a cache must not answer an older one
		e.t.Errorf("GET checkpoint: Cache-Control %q, want no-cache", cc)
	}
	_, vkeyPath := authority.AuditPaths(e.dataDir)
	vkey, err := os.ReadFile(vkeyPath)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		e.t.Fatal(err)
	}
	n, err := note.Open(body, note.VerifierList(v))
	if err != nil {
		e.t.Fatalf("note.Open(checkpoint) = %v", err)
	}
	cp := new(log.Checkpoint)
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		e.t.Fatalf("checkpoint: %v", err)
	}
	if cp.Origin != e.td.Name()+"/audit" {
		e.t.Errorf("checkpoint origin = %q, want %s/audit", cp.Origin, e.td.Name())
	}
	return cp
}

type auditEntryAnswer struct {
	Index          uint64          `json:"index"`
	Entry          json.RawMessage `json:"entry"`
	EntryB64       []byte          `json:"entry_b64"`
	LeafHash       string          `json:"leaf_hash"`
	TreeSize       uint64          `json:"tree_size"`
	InclusionProof [][]byte        `json:"inclusion_proof"`
	Checkpoint     string          `json:"checkpoint"`
}

// TestAuditLogRecordsAndProves runs the identity flows and checks that
// every event is in the log, each entry's inclusion proof verifies against
// the signed checkpoint, and later checkpoints are consistent with earlier
// ones — all with transparency-dev/merkle's proof package.
func TestAuditLogRecordsAndProves(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	admin := e.adminRaw()
	first := e.auditCheckpoint(admin)

	node := e.joinNode()
	agentID := e.registerAgent("hello", node.id)
	agent := e.agentSVID(node, agentID)
	if _, err := e.client(agent.chain, agent.key).JWTSVID(ctx, "", []string{"api.example"}); err != nil {
		t.Fatal(err)
	}
	tok, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, csr, _ := client.NewKeyAndCSR()
	if _, err := e.client(nil, nil).Join(ctx, tok.Token, csr); err != nil {
		t.Fatal(err)
	}
	_, replayCSR, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = e.client(nil, nil).Join(ctx, tok.Token, replayCSR) // a replay (another key): refused, and recorded
	_, _ = e.client(nil, nil).Join(ctx, "no-such-token", csr) // a guess: refused, only logged

	cp := e.auditCheckpoint(admin)
	types := map[string]int{}
	var issued []map[string]any
	for i := range cp.Size {
		var ans auditEntryAnswer
		if err := e.admin.Do(ctx, "GET", fmt.Sprintf("/v1/audit/entries/%d", i), nil, &ans); err != nil {
			t.Fatalf("GET entry %d = %v", i, err)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(ans.EntryB64)
		if hex.EncodeToString(leaf) != ans.LeafHash || !bytes.Equal(ans.EntryB64, ans.Entry) || ans.TreeSize != cp.Size {
			t.Fatalf("entry %d: leaf hash or bytes inconsistent: %+v", i, ans)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, leaf, ans.InclusionProof, cp.Hash); err != nil {
			t.Errorf("entry %d: inclusion proof does not verify: %v", i, err)
		}
		var ent map[string]any
		if err := json.Unmarshal(ans.Entry, &ent); err != nil {
			t.Fatal(err)
		}
		types[ent["type"].(string)]++
		if ent["type"] == "svid.issued" {
			issued = append(issued, ent)
		}
		// The start names the CA's authorities: those made (or rotated)
		// while starting, before a ca.rotated entry could be recorded.
		if ent["type"] == "authority.started" {
			auths, _ := ent["details"].(map[string]any)["authorities"].([]any)
			kinds := map[any]bool{}
			for _, au := range auths {
				if m, ok := au.(map[string]any); ok && m["id"] != "" && m["state"] == "active" {
					kinds[m["kind"]] = true
				}
			}
			if !kinds["x509"] || !kinds["jwt"] {
				t.Errorf("authority.started names authorities %v, want the active X.509 and JWT ones", auths)
			}
		}
	}
	for _, want := range []string{"authority.started", "join_token.created", "node.attested", "agent.registered", "svid.issued", "node.attestation_refused"} {
		if types[want] == 0 {
			t.Errorf("no %s entry in the log (have %v)", want, types)
		}
	}
	if types["node.attestation_refused"] != 1 {
		t.Errorf("%d node.attestation_refused entries, want 1 (the replay; not the guess)", types["node.attestation_refused"])
	}
	subjects := map[any]bool{}
	for _, ent := range issued {
		subjects[ent["subject"]] = true
	}
	for _, id := range []string{authority.AdminID(e.td).String(), authority.ServerID(e.td).String(), agentID} { // a node's own SVID is in node.attested
		if !subjects[id] {
			t.Errorf("no svid.issued entry for %s: every issuance is recorded", id)
		}
	}
	for _, ent := range issued {
		if ent["subject"] != agentID {
			continue
		}
		parties, _ := ent["accountable"].([]any)
		if len(parties) != 1 || parties[0].(map[string]any)["responsible_party"] != "ops@example.com" {
			t.Errorf("svid.issued for %s has accountable %v, want the registration's responsible party", agentID, ent["accountable"])
		}
	}

	var cons struct {
		From, To uint64
		Proof    [][]byte
	}
	if err := e.admin.Do(ctx, "GET", fmt.Sprintf("/v1/audit/proofs/consistency?from=%d&to=%d", first.Size, cp.Size), nil, &cons); err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, first.Size, cp.Size, cons.Proof, first.Hash, cp.Hash); err != nil {
		t.Errorf("consistency %d→%d does not verify: %v", first.Size, cp.Size, err)
	}
}

func TestAuditReadRefusals(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node := e.joinNode()
	size := e.auditCheckpoint(e.adminRaw()).Size
	tests := []struct {
		name, path, want string
		c                *client.Client
	}{
		{"index out of range", fmt.Sprintf("/v1/audit/entries/%d", size+5), "audit-entry-not-found", e.admin},
		{"index beyond tree_size", "/v1/audit/entries/3?tree_size=2", "audit-entry-not-found", e.admin},
		{"tree_size beyond the log", fmt.Sprintf("/v1/audit/entries/0?tree_size=%d", size+100), "invalid-tree-size", e.admin},
		{"bad index", "/v1/audit/entries/-1", "invalid-request", e.admin},
		{"huge index", "/v1/audit/entries/99999999999999999999999", "invalid-request", e.admin},
		{"zero tree_size", "/v1/audit/entries/0?tree_size=0", "invalid-request", e.admin},
		{"from after to", "/v1/audit/proofs/consistency?from=3&to=1", "invalid-tree-size", e.admin},
		{"to beyond the log", fmt.Sprintf("/v1/audit/proofs/consistency?from=1&to=%d", size+100), "invalid-tree-size", e.admin},
		{"missing from", "/v1/audit/proofs/consistency?to=1", "invalid-request", e.admin},
		// A query parameter is never dropped: a search that lost its
		// filter would answer with every entry.
		{"search filter with a bad escape", "/v1/audit/search?spiffe_id=spiffe://org-a.example/agent/a%zz", "invalid-request", e.admin},
		{"search limit with a bad escape", "/v1/audit/search?limit=%zz", "invalid-request", e.admin},
		{"search parameter misspelt", "/v1/audit/search?spife_id=spiffe://org-a.example/agent/a", "invalid-request", e.admin},
		{"search filter given twice", "/v1/audit/search?type=svid.issued&type=node.attested", "invalid-request", e.admin},
		{"search filter given empty", "/v1/audit/search?spiffe_id=&type=svid.issued", "invalid-request", e.admin},
		{"search limit given empty", "/v1/audit/search?limit=", "invalid-request", e.admin},
		{"tree_size with a bad escape", "/v1/audit/entries/0?tree_size=%zz&tree_size=1", "invalid-request", e.admin},
		{"consistency parameter unknown", "/v1/audit/proofs/consistency?from=1&to=2&first=1", "invalid-request", e.admin},
		{"node may not read", "/v1/audit/checkpoint", "forbidden", e.client(node.chain, node.key)},
		{"anonymous may not read", "/v1/audit/entries/0", "unauthenticated", e.client(nil, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.c.Do(ctx, "GET", tt.path, nil, nil); problemName(err) != tt.want {
				t.Errorf("GET %s = %v, want problem %s", tt.path, err, tt.want)
			}
		})
	}
}

// TestFederatedAuditor: an auditor of another organisation, named in
// audit.auditors, reads the log with its own SVID.
func TestFederatedAuditor(t *testing.T) {
	b := start(t, "org-b.example")
	nodeB := b.joinNode()
	aud := b.agentSVID(nodeB, b.registerAgent("auditor", nodeB.id))
	a := start(t, "org-a.example", func(c *authority.Config) { c.Audit.Auditors = []string{aud.id.String()} })
	a.federate(b)
	c := a.rawClient(aud.chain, aud.key)
	cp := a.auditCheckpoint(c)
	if cp.Size == 0 {
		t.Error("federated auditor read an empty log; want the federation event at least")
	}
}

// TestAuditSearch finds entries by SPIFFE ID and type, page by page; every
// hit carries an inclusion proof that verifies.
func TestAuditSearch(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node := e.joinNode()
	agentID := e.registerAgent("hello", node.id)
	for range 3 {
		e.agentSVID(node, agentID)
	}
	type page struct {
		Entries       []auditEntryAnswer `json:"entries"`
		NextPageToken string             `json:"next_page_token"`
	}
	search := func(q string) []auditEntryAnswer {
		var all []auditEntryAnswer
		token := ""
		for range 100 {
			var p page
			path := "/v1/audit/search?" + q
			if token != "" {
				path += "&page_token=" + token
			}
			if err := e.admin.Do(ctx, "GET", path, nil, &p); err != nil {
				t.Fatalf("GET %s = %v", path, err)
			}
			all = append(all, p.Entries...)
			if token = p.NextPageToken; token == "" {
				return all
			}
		}
		t.Fatal("search did not end")
		return nil
	}
	hits := search("spiffe_id=" + agentID + "&type=svid.issued&limit=1")
	if len(hits) != 3 {
		t.Fatalf("search for the agent's svid.issued entries found %d, want 3", len(hits))
	}
	for _, h := range hits {
		var ent struct{ Type, Subject string }
		_ = json.Unmarshal(h.Entry, &ent)
		if ent.Type != "svid.issued" || ent.Subject != agentID {
			t.Errorf("hit %d is %s about %s", h.Index, ent.Type, ent.Subject)
		}
		cp := e.auditCheckpointFrom(h.Checkpoint)
		leaf := rfc6962.DefaultHasher.HashLeaf(h.EntryB64)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, h.Index, cp.Size, leaf, h.InclusionProof, cp.Hash); err != nil {
			t.Errorf("hit %d: inclusion proof: %v", h.Index, err)
		}
	}
	if all := search("spiffe_id=" + agentID); len(all) < 4 {
		t.Errorf("search by SPIFFE ID found %d entries, want the registration and three issuances", len(all))
	}
	// The earliest time there is as until selects nothing: refused, not
	// read as no bound (which would answer every entry).
	for _, until := range []string{"0001-01-01T00:00:00Z", "0001-01-01T01:00:00%2B01:00"} {
		var p page
		err := e.admin.Do(ctx, "GET", "/v1/audit/search?until="+until, nil, &p)
		if problemName(err) != "invalid-query" {
			t.Errorf("search until=%s = %d entries, %v; want invalid-query", until, len(p.Entries), err)
		}
	}
	for q, want := range map[string]string{"limit=1000": "invalid-query", "since=yesterday": "invalid-request", "spiffe_id=not-an-id": "invalid-query", "page_token=x": "invalid-request"} {
		if err := e.admin.Do(ctx, "GET", "/v1/audit/search?"+q, nil, nil); problemName(err) != want {
			t.Errorf("search %s = %v, want %s", q, err, want)
		}
	}
}

// auditCheckpointFrom verifies a checkpoint note carried in an answer.
func (e *env) auditCheckpointFrom(text string) *log.Checkpoint {
	e.t.Helper()
	_, vkeyPath := authority.AuditPaths(e.dataDir)
	vkey, _ := os.ReadFile(vkeyPath)
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		e.t.Fatal(err)
	}
	n, err := note.Open([]byte(text), note.VerifierList(v))
	if err != nil {
		e.t.Fatalf("checkpoint: %v", err)
	}
	cp := new(log.Checkpoint)
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		e.t.Fatal(err)
	}
	return cp
}

// tileReader reads tlog tiles over the API, for golang.org/x/mod/sumdb/tlog.
type tileReader struct {
	e *env
	c *http.Client
}

func (r tileReader) Height() int { return 8 }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		// x/mod writes the Go checksum database's paths (tile/8/L/N,
		// tile/8/data/N); C2SP tlog-tiles has no height segment and calls
		// the data tiles entries.
		path := strings.Replace(strings.Replace(tile.Path(), "tile/8/data/", "tile/entries/", 1), "tile/8/", "tile/", 1)
		resp, err := r.c.Get(r.e.url + "/" + path)
		if err != nil {
			return nil, err
		}
		out[i], _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("GET %s = %d %s", path, resp.StatusCode, out[i])
		}
	}
	return out, nil
}

func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// TestTlogTilesReadPath reads the log the way generic tlog tools and
// witnesses do (C2SP tlog-tiles), verified with golang.org/x/mod/sumdb/tlog;
// public only when audit.public_read_path is set.
func TestTlogTilesReadPath(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) { c.Audit.PublicReadPath = true })
	for range 3 {
		e.joinNode()
	}
	public := e.rawClient(nil, nil)
	resp, err := public.Get(e.url + "/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /checkpoint = %d %s", resp.StatusCode, body)
	}
	if h := resp.Header.Get("X-Content-Type-Options"); h != "nosniff" { // a browser must not read a signed note as HTML
		t.Errorf("GET /checkpoint: X-Content-Type-Options %q, want nosniff", h)
	}
	cp := e.auditCheckpointFrom(string(body))
	var root tlog.Hash
	copy(root[:], cp.Hash)
	hr := tlog.TileHashReader(tlog.Tree{N: int64(cp.Size), Hash: root}, tileReader{e, public})
	got, err := tlog.TreeHash(int64(cp.Size), hr)
	if err != nil || got != root {
		t.Fatalf("tlog.TreeHash over the served tiles = %v, %v; want the checkpoint's root", got, err)
	}
	bundle, err := tileReader{e, public}.ReadTiles([]tlog.Tile{{H: 8, L: -1, N: 0, W: int(cp.Size)}})
	if err != nil {
		t.Fatalf("entry bundle: %v", err)
	}
	data := bundle[0]
	for i := int64(0); i < int64(cp.Size); i++ {
		if len(data) < 2 {
			t.Fatalf("entry bundle ends before entry %d", i)
		}
		n := int(data[0])<<8 | int(data[1])
		entry := data[2 : 2+n]
		data = data[2+n:]
		p, err := tlog.ProveRecord(int64(cp.Size), i, hr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, int64(cp.Size), root, i, tlog.RecordHash(entry)); err != nil {
			t.Errorf("entry %d from the bundle: %v", i, err)
		}
	}
	// A tile beyond the log (served once the log grows) and a malformed
	// path: 404, which no cache may keep.
	for _, path := range []string{"/tile/0/999", "/tile/entries/001", "/tile/0/000.p/0"} {
		resp, err := public.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s = %d, Cache-Control %q; want 404, no-store", path, resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
	}
	// Every tile is immutable, a partial one too (its width is in its
	// address); entry bundles come gzip-compressed to a client that
	// takes it, as tlog-tiles says they SHOULD.
	partial := fmt.Sprintf("/tile/entries/000.p/%d", cp.Size)
	for _, tc := range []struct{ accept, encoding string }{{"gzip", "gzip"}, {"gzip;q=0", ""}, {"gzip;Q=0", ""}, {"gzip;x=1;q=0.0", ""}, {"", ""}, {"br, GZIP;q=0.5", "gzip"}, {"*", ""}} {
		req, _ := http.NewRequest(http.MethodGet, e.url+partial, nil)
		if tc.accept != "" {
			req.Header.Set("Accept-Encoding", tc.accept)
		} else {
			req.Header.Set("Accept-Encoding", "identity")
		}
		resp, err := public.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Header.Get("Content-Encoding") != tc.encoding || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") ||
			resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s, Accept-Encoding %q: Content-Encoding %q, Cache-Control %q, X-Content-Type-Options %q; want %q, immutable and nosniff",
				partial, tc.accept, resp.Header.Get("Content-Encoding"), resp.Header.Get("Cache-Control"), resp.Header.Get("X-Content-Type-Options"), tc.encoding)
			continue
		}
		if tc.encoding == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if raw, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(raw, bundle[0]) {
			t.Errorf("GET %s, Accept-Encoding %q: the bundle differs from the one read before", partial, tc.accept)
		}
	}

	vk, err := public.Get(e.url + "/v1/audit/verifier-key")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(vk.Body)
	vk.Body.Close()
	_, vkeyPath := authority.AuditPaths(e.dataDir)
	if onDisk, _ := os.ReadFile(vkeyPath); string(served) != string(onDisk) || !strings.HasPrefix(string(served), "org-a.example/audit+") {
		t.Errorf("GET /v1/audit/verifier-key = %q, want log.vkey's %q", served, onDisk)
	}
	if h := vk.Header.Get("X-Content-Type-Options"); h != "nosniff" { // the key's name is the configured origin, any printable text
		t.Errorf("GET /v1/audit/verifier-key: X-Content-Type-Options %q, want nosniff", h)
	}

	private := start(t, "org-b.example")
	if err := private.client(nil, nil).Do(ctxT(t), "GET", "/checkpoint", nil, nil); problemName(err) != "unauthenticated" {
		t.Errorf("anonymous GET /checkpoint without public_read_path = %v, want unauthenticated", err)
	}
	if _, err := private.admin.GetRaw(ctxT(t), "/checkpoint"); err != nil {
		t.Errorf("admin GET /checkpoint = %v", err)
	}
}

// A client given one authority's bundle and another's server says so,
// naming both trust domains.
func TestClientOfAnotherAuthoritysServer(t *testing.T) {
	a, b := start(t, "org-a.example"), start(t, "org-b.example")
	c, err := client.New(client.Config{Server: a.url, Bundle: b.bundle})
	if err != nil {
		t.Fatal(err)
	}
	var doc json.RawMessage
	err = c.Do(ctxT(t), http.MethodGet, "/v1/bundle", nil, &doc)
	if err == nil || !strings.Contains(err.Error(), `the server is an authority of trust domain "org-a.example", and the trust bundle given is "org-b.example"'s`) {
		t.Errorf("GET with another authority's bundle = %v, want both trust domains named", err)
	}
	// A trust domain given that the bundle contradicts is said to be the
	// caller's mistake, before any connection.
	_, err = client.New(client.Config{Server: a.url, Bundle: a.bundle, TrustDomain: spiffeid.RequireTrustDomainFromString("org-b.example")})
	if err == nil || !strings.Contains(err.Error(), `the trust domain given is "org-b.example", and the trust bundle given is "org-a.example"'s`) {
		t.Errorf("a client told org-b.example with org-a.example's bundle = %v, want both named", err)
	}
	// Nothing listening at the server's address is said so.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + l.Addr().String()
	l.Close()
	c, err = client.New(client.Config{Server: closed, Bundle: a.bundle})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctxT(t), http.MethodGet, "/v1/bundle", nil, &doc); err == nil || !strings.Contains(err.Error(), "nothing listens at "+closed) {
		t.Errorf("GET from a closed port = %v, want it said that nothing listens there", err)
	}
}

// Entry bundles are built whole in memory and held until their reader
// has taken them: at most a few are read and sent at once, anyone's with
// audit.public_read_path. One beyond them waits its turn, within its
// request's time (then 503 timeout, which no cache may keep); hash tiles
// and the checkpoint do not wait.
func TestEntryBundleReadsWaitTheirTurn(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) { c.Audit.PublicReadPath = true })
	e.joinNode()
	srv, ln := e.serveWithWorkTime(200 * time.Millisecond)
	url := "https://" + ln.Addr().String()
	public := e.rawClient(nil, nil)
	get := func(path string) (int, string, []byte) {
		t.Helper()
		resp, err := public.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Cache-Control"), body
	}
	_, _, cp := get("/checkpoint")
	size := e.auditCheckpointFrom(string(cp)).Size
	bundle := fmt.Sprintf("/tile/entries/000.p/%d", size)
	hashes := fmt.Sprintf("/tile/0/000.p/%d", size)

	release := api.HoldEntryBundleReads(srv)
	code, cc, body := get(bundle)
	var p api.Problem
	if err := json.Unmarshal(body, &p); err != nil || code != 503 || p.Type != api.ProblemBase+"timeout" || cc != "no-store" {
		t.Errorf("GET %s while every turn is taken = %d %.300s (Cache-Control %q), want 503 timeout, no-store", bundle, code, body, cc)
	}
	for _, path := range []string{hashes, "/checkpoint"} {
		if code, _, body := get(path); code != 200 {
			t.Errorf("GET %s while every entry bundle turn is taken = %d %s, want 200", path, code, body)
		}
	}
	release()
	if code, _, body := get(bundle); code != 200 {
		t.Errorf("GET %s once turns are free = %d %s, want 200", bundle, code, body)
	} else if _, err := audit.ParseEntryBundle(body, int(size)); err != nil {
		t.Errorf("GET %s once turns are free: %v", bundle, err)
	}
}
