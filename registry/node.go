package registry

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"mandate.dev/mandate/store"
)

// Attestation levels of a node.
const (
	LevelToken    = "token"
	LevelHardware = "hardware"
)

// ErrBanned is returned when a banned node asks for anything.
var ErrBanned = errors.New("registry: node is banned")

// ErrNodeDrifted is returned when a node's last attestation found its
// measured state (PCRs) no longer matching an allowed profile.
var ErrNodeDrifted = errors.New("registry: node failed re-attestation")

// ErrBanStands is returned when the record of a banned node would be
// removed without lifting its ban: without the record, a TPM node could
// attest again.
var ErrBanStands = errors.New("registry: node is banned: evicting it lifts the ban")

// ErrNotHosted is returned when an agent may not run on a node.
var ErrNotHosted = errors.New("registry: agent is not allowed on this node")

// Node is an attested host.
type Node struct {
	SPIFFEID          string    `json:"spiffe_id"`
	AttestationMethod string    `json:"attestation_method"`
	Level             string    `json:"level"`
	Selectors         []string  `json:"selectors"`
	AttestedAt        time.Time `json:"attested_at"`
	SVIDSerial        string    `json:"svid_serial,omitempty"`
	// PrevSVIDSerial is the serial of the SVID the node renewed (or
	// joined again) from: a node whose renewal answer was lost still
	// holds it. A join-token node renews only with one of the two.
	PrevSVIDSerial string    `json:"prev_svid_serial,omitempty"`
	SVIDExpiresAt  time.Time `json:"svid_expires_at,omitzero"`
	// SVIDIssuedAt is when the latest SVID was issued: for a short while
	// after, requests made with the one it replaced are still under way.
	SVIDIssuedAt time.Time `json:"svid_issued_at,omitzero"`
	// NewestSVIDAt is the latest time any SVID of the node was issued at,
	// never moved back (a clock stepped back lowers SVIDIssuedAt, not
	// this): an SVID issued after it is one the record has lost.
	NewestSVIDAt time.Time `json:"newest_svid_at,omitzero"`
	// TPM holds what the node's last successful TPM attestation proved.
	TPM *TPMFacts `json:"tpm,omitempty"`
	// Drifted is set when a re-attestation of this node failed its PCR
	// policy; a later attestation that matches clears it. DriftedAt and
	// DriftReason are those of the latest quote that showed the drift.
	Drifted     bool      `json:"drifted,omitempty"`
	DriftedAt   time.Time `json:"drifted_at,omitzero"`
	DriftReason string    `json:"drift_reason,omitempty"`
	Banned      bool      `json:"banned"`
	BannedAt    time.Time `json:"banned_at,omitzero"`
	BanReason   string    `json:"ban_reason,omitempty"`
}

// TPMFacts are the facts of a TPM attestation.
type TPMFacts struct {
	EKSHA256    string            `json:"ek_sha256"`
	EKTrust     string            `json:"ek_trust"` // certificate or allowlist
	Profile     string            `json:"profile"`
	QuoteSHA256 string            `json:"quote_sha256"`
	QuotedAt    time.Time         `json:"quoted_at"`
	PCRs        map[string]string `json:"pcrs_sha256"` // index → hex
}

// MarkDrifted records that node spiffeID failed re-attestation.
func MarkDrifted(tx store.Tx, spiffeID, reason string, now time.Time) (*Node, error) {
	n, err := GetNode(tx, spiffeID)
	if err != nil {
		return nil, err
	}
	n.Drifted, n.DriftedAt, n.DriftReason = true, now, reason
	return n, putJSON(tx, BucketNodes, n.SPIFFEID, n)
}

// PutNode stores n, keeping a ban that is already recorded.
func PutNode(tx store.Tx, n *Node) error {
	if old, err := GetNode(tx, n.SPIFFEID); err == nil && old.Banned {
		n.Banned, n.BannedAt, n.BanReason = true, old.BannedAt, old.BanReason
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	n.Selectors = normalise(n.Selectors)
	return putJSON(tx, BucketNodes, n.SPIFFEID, n)
}

// GetNode returns the node with the given SPIFFE ID.
func GetNode(tx store.Tx, spiffeID string) (*Node, error) {
	var n Node
	if err := getJSON(tx, BucketNodes, spiffeID, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// ListNodes returns every node, ordered by SPIFFE ID.
func ListNodes(tx store.Tx) ([]*Node, error) {
	out, _, err := ListNodesAfter(tx, "", 0)
	return out, err
}

// ListNodesAfter is ListAgentsAfter for nodes.
func ListNodesAfter(tx store.Tx, after string, limit int) ([]*Node, bool, error) {
	return store.PageAfter(tx, BucketNodes, after, limit, func(_, v []byte) (*Node, error) {
		n := new(Node)
		return n, decodeJSON(v, n)
	})
}

// BanNode marks a node banned, and says whether it did: banning a banned
// node keeps the first ban (banned is false).
func BanNode(tx store.Tx, spiffeID, reason string, now time.Time) (n *Node, banned bool, err error) {
	n, err = GetNode(tx, spiffeID)
	if err != nil {
		return nil, false, err
	}
	if n.Banned {
		return n, false, nil
	}
	n.Banned, n.BannedAt, n.BanReason = true, now, reason
	if err := putJSON(tx, BucketNodes, n.SPIFFEID, n); err != nil {
		return nil, false, err
	}
	return n, true, nil
}

// EvictNode removes node spiffeID's record and returns it: the node is
// attested no more. A TPM node may attest again; a join-token node never
// can (its token is spent). A banned node's record, whose ban keeps it
// from attesting again, is removed only with liftBan (ErrBanStands).
func EvictNode(tx store.Tx, spiffeID string, liftBan bool) (*Node, error) {
	n, err := GetNode(tx, spiffeID)
	if err != nil {
		return nil, err
	}
	if n.Banned && !liftBan {
		return nil, fmt.Errorf("%w: %s (banned %s: %q)", ErrBanStands, spiffeID, n.BannedAt.UTC().Format(time.RFC3339), n.BanReason)
	}
	return n, tx.Delete(BucketNodes, []byte(spiffeID))
}

// CheckHosting reports whether agent a may receive credentials on node n:
// the node is not banned and has not drifted, it is hardware-attested if
// the registration requires it, and it is listed in the registration's
// node_ids, or the registration has selectors and the node carries all of
// them.
func CheckHosting(a *Agent, n *Node) error {
	if err := CheckActive(n); err != nil {
		return err
	}
	if a.RequireHardwareAttestation && n.Level != LevelHardware {
		return fmt.Errorf("%w: %s requires a hardware-attested node, %s is attested by %s", ErrNotHosted, a.SPIFFEID, n.SPIFFEID, n.Level)
	}
	if slices.Contains(a.NodeIDs, n.SPIFFEID) {
		return nil
	}
	if len(a.Selectors) > 0 && hasAll(n.Selectors, a.Selectors) {
		return nil
	}
	return fmt.Errorf("%w: %s may not host %s", ErrNotHosted, n.SPIFFEID, a.SPIFFEID)
}

// CheckActive refuses a node that hosts nothing, whatever the
// registration: banned (ErrBanned) or drifted (ErrNodeDrifted).
func CheckActive(n *Node) error {
	if n.Banned {
		return fmt.Errorf("%w: %s", ErrBanned, n.SPIFFEID)
	}
	if n.Drifted {
		return fmt.Errorf("%w: %s (%s)", ErrNodeDrifted, n.SPIFFEID, n.DriftReason)
	}
	return nil
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// IssuedSVIDAt records in n that an SVID of it was issued at t.
func (n *Node) IssuedSVIDAt(t time.Time) {
	newest := n.NewestSVID()
	n.SVIDIssuedAt = t
	n.NewestSVIDAt = newest
	if t.After(newest) {
		n.NewestSVIDAt = t
	}
}

// NewestSVID is the latest time any SVID of n was issued at, as its
// record knows: NewestSVIDAt, or, in a record written before that was
// kept, SVIDIssuedAt (the latest then).
func (n *Node) NewestSVID() time.Time {
	if n.NewestSVIDAt.IsZero() {
		return n.SVIDIssuedAt
	}
	return n.NewestSVIDAt
}
