package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

const auditUsage = `Usage: mandate audit <command> [flags]

Commands (mTLS as an auditor or admin: --creds DIR, default <data-dir>/admin):
  checkpoint                 print the latest signed checkpoint
  show INDEX [--json]        print an entry after checking its inclusion proof
  verify [--full]            check the checkpoint's signature and that it is
                             consistent with the last one this auditor saw
                             (kept in --state); fails loudly on a fork.
                             --full also downloads every entry, recomputes
                             the root and names the first entry that does
                             not match

Every check uses the log's verifier key (--vkey: the key, or a file holding
it, default <data-dir>/audit/log.vkey) and code independent of the server:
golang.org/x/mod/sumdb/note and transparency-dev/merkle.
`

// auditFlags are the flags of every audit command.
type auditFlags struct {
	cf                   clientFlags
	dataDir, vkey, state string
	asJSON, full         bool
}

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := map[string]func(context.Context, *auditFlags, *client.Client, note.Verifier, []string, io.Writer) error{
		"checkpoint": auditCheckpointCmd, "show": auditShow, "verify": auditVerify,
	}
	if len(args) == 0 || cmds[args[0]] == nil {
		fmt.Fprint(stderr, auditUsage)
		return usagef("audit: unknown or missing command")
	}
	fs := newFlagSet("audit "+args[0], "audit "+args[0]+" [flags]", stderr)
	f := &auditFlags{}
	fs.StringVar(&f.dataDir, "data-dir", "mandate-data", "the authority's data directory (admin credential, verifier key)")
	f.cf.register(fs, "", "auditor credential directory (default <data-dir>/admin)")
	fs.StringVar(&f.vkey, "vkey", "", "the log's verifier key, or a file holding it (default <data-dir>/audit/log.vkey)")
	fs.StringVar(&f.state, "state", "mandate-audit.state", "file keeping the last checkpoint this auditor verified")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON")
	fs.BoolVar(&f.full, "full", false, "verify: also download every entry, check each against the checkpoint and recompute the root")
	rest, err := splitFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if f.cf.creds == "" {
		f.cf.creds = filepath.Join(f.dataDir, "admin")
	}
	v, err := loadVerifier(f)
	if err != nil {
		return err
	}
	c, err := f.cf.dial(true)
	if err != nil {
		return err
	}
	return cmds[args[0]](ctx, f, c, v, rest, stdout)
}

func loadVerifier(f *auditFlags) (note.Verifier, error) {
	key := f.vkey
	if key == "" {
		key = filepath.Join(f.dataDir, "audit", "log.vkey")
	}
	if b, err := os.ReadFile(key); err == nil {
		key = strings.TrimSpace(string(b))
	} else if f.vkey == "" || !strings.Contains(f.vkey, "+") {
		return nil, fmt.Errorf("verifier key: %w", err)
	}
	v, err := note.NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("verifier key: %w", err)
	}
	return v, nil
}

// fetchCheckpoint fetches the latest checkpoint and verifies it.
func fetchCheckpoint(ctx context.Context, c *client.Client, v note.Verifier) ([]byte, *log.Checkpoint, error) {
	raw, err := c.GetRaw(ctx, "/v1/audit/checkpoint")
	if err != nil {
		return nil, nil, err
	}
	cp, err := openCheckpoint(raw, v)
	return raw, cp, err
}

func openCheckpoint(raw []byte, v note.Verifier) (*log.Checkpoint, error) {
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("checkpoint signature does not verify: %w", err)
	}
	cp := new(log.Checkpoint)
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return cp, nil
}

func auditCheckpointCmd(ctx context.Context, _ *auditFlags, c *client.Client, v note.Verifier, _ []string, w io.Writer) error {
	raw, _, err := fetchCheckpoint(ctx, c, v)
	if err != nil {
		return err
	}
	_, err = w.Write(raw)
	return err
}

func auditShow(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier, args []string, w io.Writer) error {
	idx, err := oneArg(args, "the entry index")
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(idx, 10, 64); err != nil {
		return usagef("INDEX must be an unsigned integer")
	}
	var ans struct {
		Index          uint64          `json:"index"`
		Entry          json.RawMessage `json:"entry"`
		EntryB64       []byte          `json:"entry_b64"`
		TreeSize       uint64          `json:"tree_size"`
		InclusionProof [][]byte        `json:"inclusion_proof"`
		Checkpoint     string          `json:"checkpoint"`
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/audit/entries/"+idx, nil, &ans); err != nil {
		return err
	}
	cp, err := openCheckpoint([]byte(ans.Checkpoint), v)
	if err != nil {
		return err
	}
	if cp.Size != ans.TreeSize {
		return fmt.Errorf("entry %d: proof for tree size %d, checkpoint for %d", ans.Index, ans.TreeSize, cp.Size)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(ans.EntryB64)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, ans.Index, cp.Size, leaf, ans.InclusionProof, cp.Hash); err != nil {
		return fmt.Errorf("entry %d: inclusion proof does not verify against the signed checkpoint: %w", ans.Index, err)
	}
	if f.asJSON {
		_, err = fmt.Fprintf(w, "%s\n", ans.EntryB64)
		return err
	}
	var e map[string]any
	if err := json.Unmarshal(ans.EntryB64, &e); err != nil {
		return err
	}
	fmt.Fprintf(w, "entry %d of %d (inclusion proof verified)\n", ans.Index, cp.Size)
	for _, k := range []string{"time", "type", "actor", "subject", "accountable", "details"} {
		if val, ok := e[k]; ok {
			b, _ := json.Marshal(val)
			fmt.Fprintf(w, "  %-12s %s\n", k+":", b)
		}
	}
	return nil
}

// errFork is returned when the log's checkpoints contradict each other.
var errFork = errors.New("audit: the log is not consistent with the checkpoint seen before (a fork, or history rewritten)")

func auditVerify(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier, _ []string, w io.Writer) error {
	raw, cp, err := fetchCheckpoint(ctx, c, v)
	if err != nil {
		return err
	}
	if f.full {
		if err := verifyFull(ctx, c, cp); err != nil {
			return err
		}
		fmt.Fprintf(w, "all %d entries match the signed root\n", cp.Size)
	}
	prevRaw, err := os.ReadFile(f.state)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(w, "first checkpoint seen: size %d; remembered in %s\n", cp.Size, f.state)
		return credfile.WriteFileAtomic(f.state, raw, 0o600)
	}
	if err != nil {
		return err
	}
	prev, err := openCheckpoint(prevRaw, v)
	if err != nil {
		return fmt.Errorf("state %s: %w", f.state, err)
	}
	if err := checkConsistent(ctx, c, prev, cp); err != nil {
		return fmt.Errorf("%w: %v\n--- remembered checkpoint ---\n%s--- served checkpoint ---\n%s", errFork, err, prevRaw, raw)
	}
	fmt.Fprintf(w, "checkpoint size %d is consistent with the remembered size %d\n", cp.Size, prev.Size)
	return credfile.WriteFileAtomic(f.state, raw, 0o600)
}

func checkConsistent(ctx context.Context, c *client.Client, prev, cur *log.Checkpoint) error {
	if cur.Size < prev.Size {
		return fmt.Errorf("the log shrank from %d to %d entries", prev.Size, cur.Size)
	}
	var ans struct{ Proof [][]byte }
	path := fmt.Sprintf("/v1/audit/proofs/consistency?from=%d&to=%d", prev.Size, cur.Size)
	if err := c.Do(ctx, http.MethodGet, path, nil, &ans); err != nil {
		return err
	}
	return proof.VerifyConsistency(rfc6962.DefaultHasher, prev.Size, cur.Size, ans.Proof, prev.Hash, cur.Hash)
}

// verifyFull downloads every entry of the tree the checkpoint signs,
// recomputes the root from the entries alone (RFC 6962, with
// transparency-dev/merkle's compact ranges) and compares it; on a mismatch
// it names the first entry whose inclusion proof fails.
func verifyFull(ctx context.Context, c *client.Client, cp *log.Checkpoint) error {
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	var firstBad = -1
	for i := range cp.Size {
		var ans struct {
			EntryB64       []byte   `json:"entry_b64"`
			InclusionProof [][]byte `json:"inclusion_proof"`
		}
		path := fmt.Sprintf("/v1/audit/entries/%d?tree_size=%d", i, cp.Size)
		if err := c.Do(ctx, http.MethodGet, path, nil, &ans); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(ans.EntryB64)
		if err := r.Append(leaf, nil); err != nil {
			return err
		}
		if firstBad < 0 && proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, leaf, ans.InclusionProof, cp.Hash) != nil {
			firstBad = int(i)
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return err
	}
	if cp.Size == 0 {
		root = rfc6962.DefaultHasher.EmptyRoot()
	}
	if firstBad >= 0 || !bytes.Equal(root, cp.Hash) {
		return fmt.Errorf("audit: the entries do not hash to the signed root of size %d: first bad entry %d", cp.Size, firstBad)
	}
	return nil
}
