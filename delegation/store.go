package delegation

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	json "github.com/go-json-experiment/json/v1"

	"mandate.dev/mandate/store"
)

// Buckets of the delegations an authority issued.
const (
	BucketDelegations = "delegations"
	BucketChildren    = "delegations_by_parent" // "<parent or local ancestor iss> <its id>/<descendant id>" → ""
	BucketRevokedIDs  = "revoked_spiffe_ids"    // SPIFFE ID → Revocation
	// BucketParties indexes delegations by party, live ones last:
	// "<party> 0x00 <expiry, Unix seconds, 8 bytes big-endian><id>" → "".
	BucketParties = "delegations_by_party"
	bucketMeta    = "delegations_meta" // keyPartyIndex → "1" once every record is in BucketParties
)

var keyPartyIndex = []byte("party_index")

// Status values of a delegation.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
	StatusExpired = "expired"
)

// ErrNotFound is returned for a delegation this authority did not issue.
var ErrNotFound = errors.New("delegation: not found")

// Record is what an authority keeps of a delegation it issued.
type Record struct {
	ID           string    `json:"id"`
	Issuer       string    `json:"iss"`
	ParentID     string    `json:"parent_id,omitempty"`
	ParentIssuer string    `json:"parent_iss,omitempty"`
	Delegator    string    `json:"delegator"`
	Delegatee    string    `json:"delegatee"`
	Principal    string    `json:"principal"`
	Scopes       []string  `json:"scopes"`
	Depth        int       `json:"depth"`
	Purpose      string    `json:"purpose,omitempty"`
	IssuedAt     time.Time `json:"issued_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	DecisionID   string    `json:"decision_id"`
	LogIndex     uint64    `json:"log_index"`
	LeafHash     string    `json:"leaf_hash"`
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
	RevokedBy    string    `json:"revoked_by,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	// Ancestors are the verified hops above this one, root first, as the
	// parent token showed them when this hop was issued.
	Ancestors []Ancestor `json:"ancestors,omitempty"`
	// DelegatorHost is the node that hosted the delegator.
	DelegatorHost string `json:"delegator_host,omitempty"`
	// DelegateeHosts are the nodes the delegatee may hold the hop on:
	// the host of the X509-SVID it is bound to, or else the nodes its
	// registration names (none known: empty).
	DelegateeHosts []string `json:"delegatee_hosts,omitempty"`
}

// Ancestor is a hop above a delegation, as its verified token said.
type Ancestor struct {
	ID        string   `json:"id"`
	Issuer    string   `json:"iss"`
	Delegator string   `json:"delegator"`
	Delegatee string   `json:"delegatee"`
	Principal string   `json:"principal"`
	Scopes    []string `json:"scopes"`
	Depth     int      `json:"depth"`
}

// AncestorsOf summarizes a verified chain.
func AncestorsOf(chain []*Claims) []Ancestor {
	out := make([]Ancestor, len(chain))
	for i, c := range chain {
		out[i] = Ancestor{ID: c.ID, Issuer: c.Issuer, Delegator: c.Hop.Delegator, Delegatee: c.Hop.Delegatee, Principal: c.Subject,
			Scopes: c.Scopes(), Depth: c.Hop.Depth}
	}
	return out
}

// HopView is one hop of a verified chain as it is shown (answered,
// printed): the hop without the parent token it carries.
type HopView struct {
	Ancestor
	Purpose   string    `json:"purpose,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	Bound     bool      `json:"bound"` // to its holder's certificate (cnf)
}

// ViewsOf shows a verified chain.
func ViewsOf(chain []*Claims) []HopView {
	out := make([]HopView, len(chain))
	for i, an := range AncestorsOf(chain) {
		c := chain[i]
		out[i] = HopView{Ancestor: an, Purpose: c.Hop.Purpose, ExpiresAt: time.Unix(c.Expiry, 0).UTC(), Bound: c.Cnf != nil}
	}
	return out
}

// Status is the record's status at now.
func (r *Record) Status(now time.Time) string {
	switch {
	case !r.RevokedAt.IsZero():
		return StatusRevoked
	case !now.Before(r.ExpiresAt):
		return StatusExpired
	}
	return StatusActive
}

// NewID returns a new delegation id: 32 hex digits of a [store.NewID],
// so ids sort by the millisecond they were made in.
func NewID() string {
	id := store.NewID()
	return hex.EncodeToString(id[:])
}

// Put stores a record and its place below its parent and below every
// other hop above it issued by the same authority: revoking a hop here
// reaches the hops issued here below it even when a hop between was
// issued by another authority.
func Put(tx store.Tx, r *Record) error {
	if err := putRecord(tx, r); err != nil {
		return err
	}
	if err := putParties(tx, r); err != nil {
		return err
	}
	if r.ParentID != "" {
		if err := tx.Put(BucketChildren, childKey(r.ParentIssuer, r.ParentID, r.ID), []byte{}); err != nil {
			return err
		}
	}
	for _, an := range r.Ancestors {
		if an.Issuer != r.Issuer || an.Issuer == r.ParentIssuer && an.ID == r.ParentID {
			// Another authority's hop is revoked there; the parent is
			// indexed above. Ids are unique per issuer only: another
			// authority's parent may have the id of one of ours above it.
			continue
		}
		if err := tx.Put(BucketChildren, childKey(an.Issuer, an.ID, r.ID), []byte{}); err != nil {
			return err
		}
	}
	return nil
}

// putRecord writes r itself (not its place in the indexes).
func putRecord(tx store.Tx, r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("delegation: encode record: %w", err)
	}
	return tx.Put(BucketDelegations, []byte(r.ID), b)
}

// markRevoked returns what a revocation does to each record it reaches:
// it marks it revoked and writes it again. Its keys in the indexes (its
// parent, its parties, its expiry) are unchanged, so they are not.
func markRevoked(tx store.Tx, by, reason string, now time.Time) func(*Record) error {
	return func(r *Record) error {
		r.RevokedAt, r.RevokedBy, r.Reason = now, by, reason
		return putRecord(tx, r)
	}
}

// putParties indexes r under each of its parties.
func putParties(tx store.Tx, r *Record) error {
	for _, p := range r.parties() {
		if strings.IndexByte(p, 0) >= 0 {
			continue // no SPIFFE ID holds one; RevokeID finds it by a scan
		}
		if err := tx.Put(BucketParties, partyKey(p, r.ExpiresAt, r.ID), []byte{}); err != nil {
			return err
		}
	}
	return nil
}

// parties are the SPIFFE IDs revoking which revokes r, each once: its
// delegator, its delegatee, the delegator's host and the delegator and
// delegatee of every hop above.
func (r *Record) parties() []string {
	ps := make([]string, 0, 3+len(r.DelegateeHosts)+2*len(r.Ancestors))
	add := func(p string) {
		if p != "" && !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	add(r.Delegator)
	add(r.Delegatee)
	add(r.DelegatorHost)
	for _, h := range r.DelegateeHosts {
		add(h)
	}
	for _, an := range r.Ancestors {
		add(an.Delegator)
		add(an.Delegatee)
	}
	return ps
}

// partyKey is the key of delegation id, expiring at exp, in party's part
// of BucketParties; partyKey(party, t, "") is where its hops live at t
// begin.
func partyKey(party string, exp time.Time, id string) []byte {
	k := make([]byte, 0, len(party)+1+8+len(id))
	k = append(append(k, party...), 0)
	k = binary.BigEndian.AppendUint64(k, uint64(max(exp.Unix(), 0)))
	return append(k, id...)
}

// IndexParties indexes, once, the records a store kept before it had
// BucketParties; RevokeID scans every record until then. It returns how
// many records it indexed, and how many it could not read (as the scan,
// it passes over them: no revocation reaches them either way).
func IndexParties(tx store.Tx) (indexed, unreadable int, err error) {
	if done, err := PartiesIndexed(tx); done || err != nil {
		return 0, 0, err
	}
	err = tx.Scan(BucketDelegations, nil, nil, func(k, v []byte) error {
		var r Record
		if json.Unmarshal(v, &r) != nil {
			unreadable++
			return nil
		}
		indexed++
		return putParties(tx, &r)
	})
	if err != nil {
		return 0, 0, err
	}
	return indexed, unreadable, tx.Put(bucketMeta, keyPartyIndex, []byte("1"))
}

// PartiesIndexed reports whether every record is in BucketParties (if not,
// RevokeID scans every record until IndexParties has run).
func PartiesIndexed(tx store.Tx) (bool, error) {
	_, err := tx.Get(bucketMeta, keyPartyIndex)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// childKey indexes a child under its parent's issuer and id: ids are
// unique per issuer only.
func childKey(parentIss, parentID, child string) []byte {
	return []byte(parentIss + " " + parentID + "/" + child)
}

// maxRevoke bounds what one revocation marks revoked, and maxRevokeRead
// the records it reads, those it passes over included (variables for
// tests).
var maxRevoke, maxRevokeRead = 100000, 400000

// Get returns the record of a delegation this authority issued.
func Get(tx store.Tx, id string) (*Record, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	b, err := tx.Get(BucketDelegations, []byte(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	r := new(Record)
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("delegation: decode record %s: %w", id, err)
	}
	return r, nil
}

// Revoke marks the delegation id and every delegation below it that this
// authority issued revoked, and returns the ids it revoked. Delegations
// issued below them by other authorities learn it from this authority's
// status.
//
// The cascade passes over hops already revoked (everything below one was
// revoked with it, or is born revoked), and over hops expired at now
// (everything below one has expired too). It marks at most maxRevoke
// hops and reads at most maxRevokeRead records; more reports that it
// stopped at either bound. The hops left are revoked
// all the same: a hop's status and every extension of a chain check the
// hops above it, and a hop found below a revoked one is marked then.
func Revoke(tx store.Tx, id, by, reason string, now time.Time) (ids []string, more bool, err error) {
	return revokeWalk(tx, []string{id}, now, markRevoked(tx, by, reason, now))
}

// RevokePreview returns what Revoke would revoke at now, changing
// nothing.
func RevokePreview(tx store.Tx, id string, now time.Time) (ids []string, more bool, err error) {
	return revokeWalk(tx, []string{id}, now, nil)
}

// revokeWalk visits the delegations roots (each must exist) and every
// delegation below them issued here, calls revoke (if any) on those to
// revoke (see Revoke), and returns their ids.
func revokeWalk(tx store.Tx, roots []string, now time.Time, revoke func(*Record) error) (revoked []string, more bool, err error) {
	queue := slices.Clone(roots)
	seen, isRoot := map[string]bool{}, map[string]bool{}
	for _, id := range roots {
		seen[id], isRoot[id] = true, true
	}
	for read := 0; len(queue) > 0; read++ {
		if read == maxRevokeRead {
			return revoked, true, nil
		}
		cur := queue[0]
		queue = queue[1:]
		r, err := Get(tx, cur)
		if errors.Is(err, ErrNotFound) && !isRoot[cur] {
			continue // a child index left by a record another version wrote
		}
		if err != nil {
			return nil, false, err
		}
		if !r.RevokedAt.IsZero() || !now.Before(r.ExpiresAt) {
			continue // and so is everything below it
		}
		if len(revoked) == maxRevoke {
			return revoked, true, nil
		}
		if revoke != nil {
			if err := revoke(r); err != nil {
				return nil, false, err
			}
		}
		revoked = append(revoked, cur)
		prefix := childKey(r.Issuer, cur, "")
		err = tx.Scan(BucketChildren, prefix, nil, func(k, _ []byte) error {
			if child := string(k[len(prefix):]); !seen[child] {
				seen[child] = true
				queue = append(queue, child)
			}
			return nil
		})
		if err != nil {
			return nil, false, err
		}
	}
	return revoked, false, nil
}

// Revocation is the revocation of a SPIFFE ID (an agent or a node): no
// delegation made by or to it holds any longer.
type Revocation struct {
	SPIFFEID  string    `json:"spiffe_id"`
	RevokedAt time.Time `json:"revoked_at"`
	RevokedBy string    `json:"revoked_by"`
	Reason    string    `json:"reason"`
}

// RevokeID records the revocation of a SPIFFE ID and revokes every
// delegation this authority issued by or to it, by an agent while it was
// hosted on it (a node), or below a hop it delegated or was delegated
// (wherever that hop was issued), and so everything below them, as
// Revoke does. It returns the delegation ids it revoked.
func RevokeID(tx store.Tx, spiffeID, by, reason string, now time.Time) (ids []string, more bool, err error) {
	b, err := json.Marshal(Revocation{SPIFFEID: spiffeID, RevokedAt: now, RevokedBy: by, Reason: reason})
	if err != nil {
		return nil, false, err
	}
	if _, err := tx.Get(BucketRevokedIDs, []byte(spiffeID)); errors.Is(err, store.ErrNotFound) {
		if err := tx.Put(BucketRevokedIDs, []byte(spiffeID), b); err != nil {
			return nil, false, err
		}
	} else if err != nil {
		return nil, false, err
	}
	return revokeIDWalk(tx, spiffeID, now, markRevoked(tx, by, reason, now))
}

// ListRevokedIDsAfter returns the SPIFFE ID revocations after after (""
// from the first), ordered by SPIFFE ID, at most limit of them (0: all),
// and whether more follow.
func ListRevokedIDsAfter(tx store.Tx, after string, limit int) ([]Revocation, bool, error) {
	return store.PageAfter(tx, BucketRevokedIDs, after, limit, func(k, v []byte) (Revocation, error) {
		var r Revocation
		if err := json.Unmarshal(v, &r); err != nil {
			return r, fmt.Errorf("delegation: revocation of %q: %w", k, err)
		}
		return r, nil
	})
}

// RevokeIDPreview returns what RevokeID would revoke at now, changing
// nothing.
func RevokeIDPreview(tx store.Tx, spiffeID string, now time.Time) (ids []string, more bool, err error) {
	return revokeIDWalk(tx, spiffeID, now, nil)
}

// revokeIDWalk walks, as revokeWalk does, from every delegation issued
// here that spiffeID is a party of: its delegator, delegatee or the
// delegator's host, or the delegator or delegatee of a hop above it.
// Those expired before the second of now are not read: BucketParties
// yields a party's hops from there on, and at most maxRevokeRead of them
// (the hops left are revoked all the same: the ID is).
func revokeIDWalk(tx store.Tx, spiffeID string, now time.Time, revoke func(*Record) error) ([]string, bool, error) {
	indexed, err := PartiesIndexed(tx)
	if err != nil {
		return nil, false, err
	}
	var direct []string
	cut := false // more live hops than a revocation reads
	if indexed && strings.IndexByte(spiffeID, 0) < 0 {
		prefix := append([]byte(spiffeID), 0)
		err = tx.Scan(BucketParties, prefix, partyKey(spiffeID, now, ""), func(k, _ []byte) error {
			if len(k) <= len(prefix)+8 {
				return fmt.Errorf("delegation: party index key %q is too short", k)
			}
			if len(direct) == maxRevokeRead {
				cut = true
				return store.ErrStopScan
			}
			direct = append(direct, string(k[len(prefix)+8:]))
			return nil
		})
	} else {
		err = tx.Scan(BucketDelegations, nil, nil, func(_, v []byte) error {
			var r Record
			if json.Unmarshal(v, &r) == nil && r.hasParty(spiffeID) {
				direct = append(direct, r.ID)
			}
			return nil
		})
	}
	if err != nil {
		return nil, false, err
	}
	ids, more, err := revokeWalk(tx, direct, now, revoke)
	return ids, more || cut, err
}

// hasParty reports whether id is one of r's parties.
func (r *Record) hasParty(id string) bool { return slices.Contains(r.parties(), id) }

// IDRevoked reports whether a SPIFFE ID was revoked here.
func IDRevoked(tx store.Tx, spiffeID string) (bool, error) {
	_, err := tx.Get(BucketRevokedIDs, []byte(spiffeID))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
