package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/store"
)

// The refusals of AddCheckpoint, each with the HTTP status C2SP
// tlog-witness gives it.
var (
	// ErrMalformed: the body is not an add-checkpoint request, or its
	// old size is past the checkpoint's (400).
	ErrMalformed = errors.New("witness: malformed add-checkpoint request")
	// ErrUnknownLog: the checkpoint's origin is no log this witness
	// cosigns (404).
	ErrUnknownLog = errors.New("witness: unknown log")
	// ErrNotSigned: no signature of the origin's key verifies (403).
	ErrNotSigned = errors.New("witness: the checkpoint has no valid signature of its log's key")
	// ErrInconsistent: the consistency proof does not verify (422).
	ErrInconsistent = errors.New("witness: the consistency proof does not verify")
	// ErrRootMismatch: the checkpoint has the size of the last one
	// cosigned, with another root hash: the log forked (409).
	ErrRootMismatch = errors.New("witness: same size as the checkpoint cosigned last, another root hash")
	// ErrProofNotEmpty: a consistency proof between equal sizes, with
	// the root hash cosigned, which has none; it matches ErrInconsistent
	// (422), but is no evidence of a fork: anyone holding the checkpoint
	// cosigned last can send it.
	ErrProofNotEmpty = fmt.Errorf("%w: a proof between equal sizes is empty", ErrInconsistent)
)

// SizeConflict is the refusal of a request whose old size is not the
// size of the checkpoint last cosigned for its log (409, answered with
// Size, text/x.tlog.size): the client asks again from Size.
type SizeConflict struct{ Size uint64 }

func (e *SizeConflict) Error() string {
	return fmt.Sprintf("witness: old size is not %d, the size of the checkpoint cosigned last", e.Size)
}

// MaxProofLines is the most consistency proof lines a request may have.
const MaxProofLines = 63

// bucket holds, per origin, the checkpoint cosigned last: size (8 bytes,
// big-endian) and root hash (32).
const bucket = "witness"

// Witness cosigns the checkpoints of its logs.
type Witness struct {
	st     store.Store
	signer note.Signer
	vkey   string
	logs   map[string]note.Verifier // by origin
}

// New is a witness keeping its state in st, signing with the Ed25519 note
// signer key skey (its name is the witness's), for the logs whose note
// verifier keys are logs: each key's name is its log's origin, as Mandate
// names its log's key.
func New(st store.Store, skey string, logs []string) (*Witness, error) {
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, errors.New("witness: not an Ed25519 note signer key") // never the key itself
	}
	w := &Witness{st: st, signer: s, logs: map[string]note.Verifier{}}
	if w.vkey, err = cosignerVKey(skey); err != nil {
		return nil, err
	}
	for _, k := range logs {
		v, err := note.NewVerifier(k)
		if err != nil {
			return nil, fmt.Errorf("witness: log verifier key %q: %w", k, err)
		}
		if _, dup := w.logs[v.Name()]; dup {
			return nil, fmt.Errorf("witness: two verifier keys for the log %q", v.Name())
		}
		w.logs[v.Name()] = v
	}
	return w, nil
}

// VerifierKey is the witness's cosignature/v1 verifier key (vkey, type
// 0x04), which log clients verify its cosignatures with.
func (w *Witness) VerifierKey() string { return w.vkey }

// Name is the witness's key name.
func (w *Witness) Name() string { return w.signer.Name() }

// cosignerVKey is the cosignature/v1 verifier key of the Ed25519 note
// signer key skey.
func cosignerVKey(skey string) (string, error) {
	vkey, err := audit.VerifierKey(skey)
	if err != nil {
		return "", errors.New("witness: not an Ed25519 note signer key")
	}
	return fnote.VKeyToCosignatureV1(vkey)
}

// AddCheckpoint is C2SP tlog-witness add-checkpoint: body is the request
// (an old size line, consistency proof lines, an empty line, the signed
// checkpoint); the answer is the witness's cosignature line(s), each
// ending in a newline. Refusals: ErrMalformed, ErrUnknownLog,
// ErrNotSigned, *SizeConflict, ErrInconsistent (ErrProofNotEmpty among
// them), ErrRootMismatch; any other error is the store's.
func (w *Witness) AddCheckpoint(ctx context.Context, body []byte) ([]byte, error) {
	old, hashes, msg, err := parseRequest(body)
	if err != nil {
		return nil, err
	}
	origin, _, _ := bytes.Cut(msg, []byte("\n"))
	v, ok := w.logs[string(origin)]
	if !ok {
		return nil, fmt.Errorf("%w: %.100q", ErrUnknownLog, origin)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified) || errors.As(err, &invalid):
		return nil, fmt.Errorf("%w (%.100q)", ErrNotSigned, origin)
	case err != nil: // no signed note: no signature lines after an empty line, a control character
		return nil, fmt.Errorf("%w: the checkpoint is not a signed note (%v)", ErrMalformed, err)
	}
	size, root, err := parseCheckpoint(n.Text)
	if err != nil {
		return nil, err
	}
	if old > size {
		return nil, fmt.Errorf("%w: old size %d is past the checkpoint's size %d", ErrMalformed, old, size)
	}
	if old == 0 && len(hashes) > 0 {
		return nil, fmt.Errorf("%w: a consistency proof from size 0", ErrMalformed)
	}
	// Checked and stored in one write, even when nothing changes (a log
	// asking again for the checkpoint cosigned last, its answer lost):
	// the store may show a state before it is durable (while another
	// request's commit syncs, or after that sync failed), and the
	// write's own commit makes what it read durable before the answer.
	err = w.st.Update(ctx, func(tx store.Tx) error {
		if put, err := w.check(tx, string(origin), old, size, hashes, root); err != nil || !put {
			return err
		}
		return tx.Put(bucket, []byte(origin), append(binary.BigEndian.AppendUint64(nil, size), root...))
	})
	if err != nil {
		return nil, err
	}
	signed, err := note.Sign(&note.Note{Text: n.Text}, w.signer)
	if err != nil {
		return nil, fmt.Errorf("witness: cosign: %w", err)
	}
	return signed[len(n.Text)+1:], nil // after the blank line: its signature line
}

// check is whether the witness, in the state tx reads, cosigns the
// checkpoint of origin at size with root, asked from size old with the
// consistency proof hashes; put is whether that moves its state.
func (w *Witness) check(tx store.Tx, origin string, old, size uint64, hashes [][]byte, root []byte) (put bool, err error) {
	var lastSize uint64
	var lastRoot []byte // nil: it never cosigned a checkpoint of this log
	switch b, err := tx.Get(bucket, []byte(origin)); {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return false, err
	case len(b) != 8+32:
		return false, fmt.Errorf("witness: stored state of %.100q is damaged", origin)
	default:
		lastSize, lastRoot = binary.BigEndian.Uint64(b), b[8:]
	}
	if old != lastSize {
		return false, &SizeConflict{Size: lastSize}
	}
	switch {
	case old == size:
		// At size 0 too, once one was cosigned: an empty tree has one
		// root.
		if lastRoot != nil && !bytes.Equal(lastRoot, root) {
			return false, fmt.Errorf("%w (size %d)", ErrRootMismatch, size)
		}
		if len(hashes) > 0 { // the proof between equal sizes is empty
			return false, fmt.Errorf("%w (a proof of %d hashes)", ErrProofNotEmpty, len(hashes))
		}
	case old > 0:
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old, size, hashes, lastRoot, root); err != nil {
			return false, fmt.Errorf("%w from size %d to %d", ErrInconsistent, old, size)
		}
	}
	return old != size || lastRoot == nil, nil
}

// Request is the add-checkpoint body that asks for checkpoint (a signed
// note) to be cosigned from size old, with proof, the RFC 6962
// consistency proof from old to the checkpoint's size (none from 0):
// what parseRequest reads.
func Request(old uint64, proof [][]byte, checkpoint []byte) []byte {
	b := fmt.Appendf(nil, "old %d\n", old)
	for _, h := range proof {
		b = base64.StdEncoding.AppendEncode(b, h)
		b = append(b, '\n')
	}
	return append(append(b, '\n'), checkpoint...)
}

// parseRequest splits an add-checkpoint body: the old size, the proof's
// hashes and the signed checkpoint (a note).
func parseRequest(body []byte) (old uint64, hashes [][]byte, msg []byte, err error) {
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	num, isOld := bytes.CutPrefix(line, []byte("old "))
	if !ok || !isOld {
		return 0, nil, nil, fmt.Errorf("%w: the first line is not \"old <size>\"", ErrMalformed)
	}
	if old, err = parseSize(num); err != nil {
		return 0, nil, nil, fmt.Errorf("%w: old size: %v", ErrMalformed, err)
	}
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return 0, nil, nil, fmt.Errorf("%w: no empty line before the checkpoint", ErrMalformed)
		}
		if len(line) == 0 {
			break
		}
		if len(hashes) == MaxProofLines {
			return 0, nil, nil, fmt.Errorf("%w: more than %d consistency proof lines", ErrMalformed, MaxProofLines)
		}
		h, ok := decodeHash(string(line))
		if !ok {
			return 0, nil, nil, fmt.Errorf("%w: a consistency proof line is not a base64 SHA-256 hash", ErrMalformed)
		}
		hashes = append(hashes, h)
	}
	return old, hashes, rest, nil
}

// parseCheckpoint reads a checkpoint's size and root hash (its first line,
// the origin, was read already).
func parseCheckpoint(text string) (size uint64, root []byte, err error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return 0, nil, fmt.Errorf("%w: the checkpoint has fewer than three lines", ErrMalformed)
	}
	if size, err = parseSize([]byte(lines[1])); err != nil {
		return 0, nil, fmt.Errorf("%w: checkpoint size: %v", ErrMalformed, err)
	}
	var ok bool
	if root, ok = decodeHash(lines[2]); !ok {
		return 0, nil, fmt.Errorf("%w: the checkpoint's root hash is not a base64 SHA-256 hash", ErrMalformed)
	}
	// Extension lines, if any, are not empty (c2sp.org/tlog-checkpoint):
	// a text with an empty line is no checkpoint.
	if strings.Contains("\n"+lines[3], "\n\n") {
		return 0, nil, fmt.Errorf("%w: the checkpoint has an empty extension line", ErrMalformed)
	}
	return size, root, nil
}

// decodeHash reads a SHA-256 hash in canonical standard base64, as
// Request writes it: a text that decodes to 32 bytes but is written
// otherwise (bits set past the hash's end, or a CR that Go's decoder
// skips) is none.
func decodeHash(s string) ([]byte, bool) {
	h, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(h) != 32 || base64.StdEncoding.EncodeToString(h) != s {
		return nil, false
	}
	return h, true
}

// parseSize reads a tree size in canonical decimal: no sign, no leading
// zero (but for 0 itself).
func parseSize(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > 1 && b[0] == '0' || b[0] == '+' {
		return 0, errors.New("not a size in decimal without leading zeroes")
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, errors.New("not a size in decimal without leading zeroes")
	}
	return n, nil
}
