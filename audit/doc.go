// Package audit is Mandate's audit log: an append-only Merkle log of
// everything the authority does, with signed checkpoints and proofs, in the
// sense of Certificate Transparency (RFC 6962 / RFC 9162) and the Go
// checksum database. Anyone holding an earlier checkpoint can detect an
// edit, a deletion or a fork.
//
// The package knows nothing of HTTP. It keeps the log in a [store.Store];
// callers append [Entry] values with [Log.Append] and read entries,
// checkpoints and proofs with the Log's read methods.
//
// # Guarantees
//
//   - Durable before acknowledged: when Append returns a Receipt, the entry,
//     its tree nodes, the tree state and a checkpoint signed for a size
//     covering it are in the store (one Update, fsynced), and the receipt's
//     inclusion proof verifies against that checkpoint.
//   - Nothing acknowledged moves: an entry keeps its index and bytes; every
//     checkpoint the log signs is consistent with every earlier one (the
//     tree only grows, from one durable state to the next).
//   - A restart resumes exactly at the last durable commit. Open refuses a
//     store whose tree state, nodes, last entry and checkpoint disagree
//     ([ErrCorrupt]); after a failed commit the sequencer re-reads the
//     stored state and refuses to continue if it went backwards.
//   - Group commit: one goroutine ([Log.Run]) takes whatever Appends are
//     queued (up to Config.MaxBatch), commits them in one transaction and
//     starts the next round as soon as that returns; there is no batching
//     delay, so a lone writer waits for one fsync.
//   - Failure: when a commit fails, every Append of its batch fails with the
//     error and nothing of the batch is acknowledged; the next batch starts
//     from the stored state, so no index is reused or skipped. (If the store
//     reports a failure for a commit that did persist, the batch's entries
//     are in the log without having been acknowledged.)
//
// # Checkpoint durability
//
// The checkpoint for the new tree size is signed before the commit (the
// signature is deterministic and the tree is computed in memory) and
// written in the same Update as the entries. So a checkpoint covering every
// acknowledged entry is durable whenever the entries are, with one fsync
// per batch; a batch that fails leaves its signed checkpoint unused and
// unpublished.
//
// # Entry encoding (version 1)
//
// An entry is one JSON object, written by [Encode] with no whitespace and
// the fields in this order, optional ones left out when empty:
//
//	{"v":1,"time":"2026-01-02T15:04:05.123456789Z","type":"svid.issued",
//	 "actor":"spiffe://org-a.example/node/join/abc","subject":"...",
//	 "accountable":[{"spiffe_id":"spiffe://org-a.example/agent/a",
//	   "operator":"...","model_provider":"...","model":"...",
//	   "responsible_party":"..."}],
//	 "decision_id":"...","policy_revision":"...","delegation_id":"...",
//	 "details":{...}}
//
// (shown on several lines here; one line in the encoding). The fields:
//
//   - v: the encoding version, 1.
//   - time: UTC, RFC 3339 with exactly nine fractional digits and "Z".
//   - type: dot-separated lower-case words of [a-z0-9_] (at most 64 bytes).
//   - actor: a SPIFFE ID in normal form, or "system".
//   - subject, decision_id, policy_revision, delegation_id: optional strings.
//   - accountable: optional list, in the caller's order; in each party
//     spiffe_id is required and the other fields are optional, in the
//     order shown.
//   - details: optional JSON object in canonical form: no insignificant
//     whitespace, object members sorted by the UTF-8 bytes of their keys,
//     duplicate keys resolved to the last, numbers exactly as written,
//     strings escaped as below; nested at most 100 deep (the object itself
//     counting as 1).
//
// Strings must be valid UTF-8 and are escaped as in RFC 8785 (JCS): '"'
// and '\' with a backslash; U+0008, U+0009, U+000A, U+000C, U+000D as \b,
// \t, \n, \f, \r; other control characters below U+0020 as \u00xx with
// lower-case hex; every other character as is (no HTML escaping). An
// encoded entry is at most 64 KiB ([MaxEntrySize]).
//
// [Decode] accepts exactly these bytes: it refuses unknown fields, other
// versions and any other spelling of the same content, so that for every b
// it accepts, Encode(Decode(b)) == b.
//
// # Merkle tree and checkpoints
//
// The tree is RFC 9162's with SHA-256: leaf hash SHA-256(0x00 || entry),
// interior node SHA-256(0x01 || left || right); the empty tree's root is
// SHA-256(""). Proofs are RFC 9162 inclusion and consistency proofs, lists
// of 32-byte hashes; they verify with github.com/transparency-dev/merkle's
// proof package.
//
// A checkpoint is a C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint)
// in a C2SP signed note (https://c2sp.org/signed-note), signed with
// Ed25519:
//
//	<origin>\n<tree size, decimal>\n<root hash, base64>\n
//	\n
//	— <key name> <base64 of 4-byte key hash || 64-byte Ed25519 signature>\n
//
// with no extension lines. The origin is configured (conventionally
// "<trust domain>/audit", see [DefaultOrigin]); the key name is
// conventionally the origin. The verifier key is in note format
// ("<name>+<key hash>+<base64 key>") and is what verifiers need;
// [LoadOrCreateSigner] keeps the signer key in a file of mode 0600.
//
// # Storage
//
// The log uses these buckets of the store; nobody else may write them:
//
//	audit_entries  8-byte big-endian index           → the encoded entry
//	audit_tree     1-byte level || 8-byte BE index   → 32-byte node hash
//	               (every full node, leaves at level 0)
//	audit_state    "tree"       → JSON {"size":N,"root":b64,"range":[b64,...]}
//	                              (the compact range of [0, N))
//	               "checkpoint" → the latest signed checkpoint (for size N)
//
// Each commit writes a batch's entries, its new nodes, any index entries
// (Config.Index), the tree state and the checkpoint in one Update. The
// Update callback first checks that the stored checkpoint is still the one
// the batch extends, so a second writer on a shared store makes a commit
// fail instead of forking the log; it writes only precomputed values, so a
// store may retry it.
//
// # Limits
//
//   - Open checks that the stored log is consistent with itself, not that it
//     is the newest: a restored older copy of the whole store opens. Only a
//     checkpoint remembered elsewhere (an auditor's, a witness's) exposes it.
//   - After a commit the store reported as failed, the sequencer trusts what
//     the store reads back (the batch is either there or not).
//   - One signer key for the log's life: Open refuses a stored checkpoint
//     that Config.Verifier does not verify. Key rotation is not supported yet.
//
// # Concurrency
//
// A Log is safe for concurrent use. Append may be called from any number
// of goroutines; Run must run in one goroutine for appends to proceed.
// Read methods read the latest published state and the store, and see only
// durable data.
package audit
