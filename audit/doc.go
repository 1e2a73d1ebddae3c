// Package audit is Mandate's audit log: an append-only Merkle log of
// everything the authority does, with signed checkpoints and proofs, in the
// sense of Certificate Transparency (RFC 6962 / RFC 9162) and the Go
// checksum database. Anyone holding an earlier checkpoint can detect an
// edit, a deletion or a fork.
//
// The package knows nothing of HTTP. It keeps the log in a [store.Store];
// callers append [Entry] values with [Log.Append] and read entries,
// checkpoints and proofs with the Log's read methods, find entries with
// [Log.Search], and serve the C2SP tlog-tiles read path with
// [Log.TileData].
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
//     starts the next round as soon as that returns. While work that said
//     it is about to append ([Log.Expect]) has not yet, a round waits for
//     it, up to Config.GroupWait, so that concurrent requests share a
//     commit and its fsyncs; a lone writer waits for its own fsync only.
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
//     counting as 1). Keys are case-sensitive: "decision" and a key
//     that folds to it ("Decision", "deciſion") are different members,
//     and readers match keys exactly ([Entry.ReadDetails]), as any JSON
//     reader that is not case-insensitive does, so that one entry says
//     one thing to every reader.
//
// Strings must be valid UTF-8 and are escaped as in RFC 8785 (JCS): '"'
// and '\' with a backslash; U+0008, U+0009, U+000A, U+000C, U+000D as \b,
// \t, \n, \f, \r; other control characters below U+0020 as \u00xx with
// lower-case hex; every other character as is (no HTML escaping). An
// encoded entry is at most 65,535 bytes ([MaxEntrySize]), so that its
// length fits the 16-bit prefix of a tlog-tiles entry bundle.
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
// # Tiles
//
// [Log.TileData] serves the C2SP tlog-tiles read path
// (https://c2sp.org/tlog-tiles) of the tree of the latest checkpoint:
// hash tiles "tile/<L>/<N>[.p/<W>]" (height 8: up to 256 hashes of the
// tree level 8·L, concatenated) and entry bundles
// "tile/entries/<N>[.p/<W>]" (the entries N·256 on, each with a 2-byte
// big-endian length). The checkpoint is [Log.Checkpoint]. Tiles are built
// on request from the stored nodes and entries, so generic tlog tools and
// witnesses (golang.org/x/mod/sumdb/tlog's TileHashReader, for one) can
// verify the log without Mandate's API. A full tile never changes; a
// partial tile of any width within the tree is served.
//
// # Search
//
// [Log.Search] finds entries by SPIFFE ID (as actor, as subject, or as an
// accountable party), event type, time range, decision id and delegation
// id, all given criteria together, in log order, a page at a time with a
// cursor. Its indexes are written in the commit's transaction with the
// entries: an entry is in them exactly when it is in the log, and a failed
// batch leaves nothing. They cover the entries committed by this version
// of the package on (the log is new in it; a log written before has no
// index of its earlier entries, which Search then does not find).
//
// A search scans the index of its most selective exact criterion
// (decision id or delegation id, then SPIFFE ID, then type) and checks a
// time range on the entries. With several exact criteria it walks their
// indexes together, each skipping to the next entry all may share, so
// that entries only one has are not read. A time range alone uses the time index
// when the range holds at most 100×Limit entries, and otherwise reads the
// log in order, skipping the groups of 256 entries whose time span is
// outside the range. Each call reads at most 10×Limit entries (Limit at
// most [MaxSearchLimit]), and scans at most about 200×Limit index keys, so
// a page may be short or empty and still have a cursor.
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
// and the search indexes, whose values are empty and whose keys end with
// the entry's 8-byte big-endian index, so that one value's keys are in log
// order:
//
//	audit_idx_spiffe_id      <value> 0x00 <index>  actor; subject if a SPIFFE ID;
//	                                               each accountable spiffe_id
//	audit_idx_type           <value> 0x00 <index>
//	audit_idx_decision_id    <value> 0x00 <index>  (if not empty)
//	audit_idx_delegation_id  <value> 0x00 <index>  (if not empty)
//	audit_idx_time           8-byte BE Unix nanoseconds <index>
//	                         (clamped to 1970..2262)
//	audit_idx_time_tiles     8-byte BE group (index / 256) → 8-byte BE min
//	                         || 8-byte BE max Unix nanoseconds of its entries
//
// In <value>, the bytes 0x00 and 0x01 are written as 0x01 0x01 and 0x01
// 0x02, so a value's keys are exactly those with prefix <value> 0x00. A
// value longer than [MaxQueryLen] is not indexed: no query can name it.
//
// Each commit writes a batch's entries, their index keys (and any of
// Config.Index), the changes they record (AppendWith), its new nodes,
// the tree state and the checkpoint in one Update. A change that cannot
// be made fails its own append: the batch is committed again without
// it. The Update callback first checks that the stored checkpoint is
// still the one the batch extends, so a second writer on a shared store
// makes a commit fail instead of forking the log; it writes only values
// computed before or read in the same transaction, so a store may retry
// it.
//
// # Limits
//
//   - Open checks that the stored log is consistent with itself, not that it
//     is the newest: a restored older copy of the whole store opens. Only a
//     checkpoint remembered elsewhere (an auditor's, a witness's) exposes it.
//   - After a commit the store reported as failed, the sequencer trusts what
//     the store reads back (the batch is either there or not). The bbolt
//     store reads nothing back after a commit whose sync failed
//     (store.ErrNotDurable): the log then appends nothing more, and
//     publishes no checkpoint over that batch, until it is opened again.
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
