package authority

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/client"
)

// AuditEntry is one entry of the audit log with its inclusion proof, as the
// audit API answers it.
type AuditEntry = client.AuditEntry

// ConsistencyAnswer is a consistency proof between two tree sizes.
type ConsistencyAnswer = client.ConsistencyAnswer

// requireReader lets admins and auditors read the audit log.
func (a *Authority) requireReader(c *Caller) error {
	if c == nil || c.ID.IsZero() {
		return ErrUnauthenticated
	}
	if r := a.RoleOf(c.ID); r != RoleAdmin && r != RoleAuditor {
		return fmt.Errorf("%w: %s has role %s; reading the audit log needs admin or auditor (this authority's audit.auditors lists its auditors)", ErrForbidden, c.ID, r)
	}
	return nil
}

// MayReadMetrics checks that c may read /metrics: anyone, unless
// http.metrics_readers lists who may (besides admins).
func (a *Authority) MayReadMetrics(ctx context.Context, c *Caller) error {
	readers := a.cfg.HTTP.MetricsReaders
	if len(readers) == 0 {
		return nil
	}
	if c == nil || c.ID.IsZero() {
		return ErrUnauthenticated
	}
	if a.RoleOf(c.ID) != RoleAdmin && !slices.Contains(readers, c.ID.String()) {
		return fmt.Errorf("%w: %s may not read the metrics (http.metrics_readers lists who may)", ErrForbidden, c.ID)
	}
	if a.StoreStopped() != nil {
		// The revocations cannot be read once the data file is no longer
		// used (StoreStopped), which is when the metrics are most needed:
		// a reader the configuration lists reads them.
		return nil
	}
	return a.callerNotRevoked(ctx, c)
}

// AuditCheckpoint is the latest signed checkpoint (a C2SP tlog-checkpoint
// note).
func (a *Authority) AuditCheckpoint(c *Caller) ([]byte, error) {
	if err := a.requireReader(c); err != nil {
		return nil, err
	}
	return a.audit.Checkpoint(), nil
}

// checkpointSize is the tree size a signed checkpoint commits to (its
// second line).
func checkpointSize(cp []byte) (uint64, error) {
	lines := bytes.SplitN(cp, []byte("\n"), 3)
	if len(lines) < 3 {
		return 0, fmt.Errorf("authority: malformed checkpoint")
	}
	return strconv.ParseUint(string(lines[1]), 10, 64)
}

// ReadAuditEntry returns entry index with its inclusion proof for tree size
// treeSize, or, when treeSize is 0, for the latest checkpoint's size (then
// the answer verifies against the checkpoint it carries).
func (a *Authority) ReadAuditEntry(ctx context.Context, c *Caller, index, treeSize uint64) (*AuditEntry, error) {
	if err := a.requireReader(c); err != nil {
		return nil, err
	}
	cp := a.audit.Checkpoint()
	size, err := checkpointSize(cp)
	if err != nil {
		return nil, err
	}
	if treeSize == 0 {
		treeSize = size
	}
	if treeSize > size {
		return nil, fmt.Errorf("%w: tree size %d is beyond the log's %d", audit.ErrTreeSize, treeSize, size)
	}
	if index >= treeSize {
		return nil, fmt.Errorf("%w: index %d, tree size %d", audit.ErrIndexOutOfRange, index, treeSize)
	}
	proof, err := a.audit.InclusionProof(ctx, index, treeSize)
	if err != nil {
		return nil, err
	}
	b, err := a.audit.Entry(ctx, index)
	if err != nil {
		return nil, err
	}
	// Stored bytes that are not JSON cannot be answered as an entry: a
	// data file changed outside the authority, said as such (in the
	// server's log, with the answer's request id), not as a failure to
	// write the answer. (Bytes that are JSON are answered as stored: the
	// auditor's check of the leaf hash names a changed entry.)
	if !json.Valid(b) {
		return nil, fmt.Errorf("authority: audit entry %d is damaged: its stored bytes are not JSON (the data file was changed outside the authority; restore it from a backup)", index)
	}
	return &AuditEntry{Index: index, Entry: b, EntryB64: b, LeafHash: hex.EncodeToString(audit.LeafHash(b)),
		TreeSize: treeSize, InclusionProof: proof, Checkpoint: string(cp)}, nil
}

// AuditConsistency returns the consistency proof between tree sizes from
// and to.
func (a *Authority) AuditConsistency(ctx context.Context, c *Caller, from, to uint64) (*ConsistencyAnswer, error) {
	if err := a.requireReader(c); err != nil {
		return nil, err
	}
	p, err := a.audit.ConsistencyProof(ctx, from, to)
	if err != nil {
		return nil, err
	}
	if p == nil {
		p = [][]byte{}
	}
	return &ConsistencyAnswer{From: from, To: to, Proof: p}, nil
}

// SearchPageBytes bounds a page of SearchAudit: once the entries it holds
// (as answered: entry, entry_b64, proof, checkpoint) reach about this
// many bytes, the page ends and its next cursor continues after the last
// one. Each page holds at least one entry, so a page is at most this plus
// one entry (an entry is at most audit.MaxEntrySize): a client reading
// answers of a few MiB can page through entries of any size.
const SearchPageBytes = 1 << 20

// SearchAudit finds entries matching q, each with its inclusion proof for
// the latest checkpoint; next is the cursor of the next page (nil when the
// search is done). A page ends early at SearchPageBytes.
func (a *Authority) SearchAudit(ctx context.Context, c *Caller, q audit.Query) ([]AuditEntry, *uint64, error) {
	if err := a.requireReader(c); err != nil {
		return nil, nil, err
	}
	idx, next, err := a.audit.Search(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	out := make([]AuditEntry, 0, len(idx))
	size := 0
	for k, i := range idx {
		e, err := a.ReadAuditEntry(ctx, c, i, 0)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, *e)
		if size += answerSize(e); size >= SearchPageBytes && k+1 < len(idx) {
			return out, &idx[k], nil // the next page starts after this entry
		}
	}
	return out, next, nil
}

// answerSize is about how many bytes e takes in a JSON answer: its entry
// as encoding/json writes it (<, > and & as \u003c, 6 bytes each), its
// stored bytes in base64, its proof and checkpoint.
func answerSize(e *AuditEntry) int {
	html := bytes.Count(e.Entry, []byte("<")) + bytes.Count(e.Entry, []byte(">")) + bytes.Count(e.Entry, []byte("&"))
	return len(e.Entry) + 5*html + (len(e.EntryB64)+2)/3*4 + len(e.InclusionProof)*48 + len(e.LeafHash) + len(e.Checkpoint) + 128
}

// AuditTile serves the C2SP tlog-tiles read path ("checkpoint",
// "tile/..."): to auditors and admins, or to anyone when
// audit.public_read_path is set.
func (a *Authority) AuditTile(ctx context.Context, c *Caller, path string) ([]byte, error) {
	if !a.cfg.Audit.PublicReadPath {
		if err := a.requireReader(c); err != nil {
			return nil, err
		}
	}
	if path == "checkpoint" {
		return a.audit.Checkpoint(), nil
	}
	return a.audit.TileData(ctx, path)
}
