// Package witness is a transparency log witness (C2SP tlog-witness): it
// cosigns the checkpoints of the logs it is configured with, each only
// once it has verified that the log grew append-only from the last
// checkpoint it cosigned for that log.
//
// It guarantees that:
//   - a checkpoint is cosigned only when it carries a valid signature of
//     the key configured for its origin (signatures of other keys are
//     ignored), its root hash is 32 bytes, and it is consistent (an RFC
//     6962 consistency proof from the last size cosigned) with the last
//     checkpoint cosigned for that origin: the same size with another
//     root hash is refused, as is a proof that does not verify;
//   - the check and the new latest checkpoint are one store transaction,
//     durable before the cosignature is returned: two submissions can
//     never both be cosigned against the same old state, and a crash
//     never rolls the state back behind a cosignature given;
//   - cosignatures are Ed25519 cosignature/v1 (C2SP tlog-cosignature),
//     timestamped, over the checkpoint's whole note body;
//   - a request body is parsed within its bounds (at most 63 proof
//     lines, each one base64 hash; an old size of at most the
//     checkpoint's, in canonical decimal), and every refusal is one of
//     the errors below, never a panic.
package witness
