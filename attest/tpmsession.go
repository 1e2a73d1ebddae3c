package attest

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"mandate.dev/mandate/store"
)

// BucketTPMSessions holds open and answered TPM challenges, keyed by
// session id. A session id starts with the first 16 hex digits of its EK
// hash, so the sessions of one EK are one key range.
const BucketTPMSessions = "tpm_sessions"

// TPMSession is the stored state of one challenge. It keeps the secret's
// SHA-256, never the secret.
type TPMSession struct {
	ID         string `json:"id"`
	EKHash     string `json:"ek_sha256"`
	EKTrust    string `json:"ek_trust"`
	AKPublic   []byte `json:"ak_public"` // TPM2B_PUBLIC
	SecretHash []byte `json:"secret_sha256"`
	Nonce      []byte `json:"nonce"`
	PCRs       []int  `json:"pcrs"` // SHA-256 bank, ascending
	Caller     string `json:"caller,omitempty"`
	// From is the network source that asked an anonymous challenge, as
	// SourcePrefix names it ("" when unknown).
	From      string    `json:"from,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
}

func (s *TPMSession) ak() (*TPMPublic, error) {
	ak, err := CheckAK(s.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("attest: stored AK of session %s: %w", s.ID, err)
	}
	return ak.TPMPublic, nil
}

// maxSessionIDLen bounds a session id read from the network.
const maxSessionIDLen = 64

// anonymousSources is how many sources' worth of anonymous challenges
// one EK may have open: max per source, max*anonymousSources in all.
const anonymousSources = 8

// PutTPMSession stores a new session. One EK may have max open
// (unanswered, unexpired) renewal challenges (asked over mTLS by the node
// itself); beyond that they are refused with ErrTooManyChallenges. First
// attestations are asked by anyone (an EK is public), so that nobody can
// lock a device out by asking challenges in its name they evict instead
// of being refused, fairly between network sources (From): a source past
// max open challenges of the EK evicts its own oldest; with
// max*anonymousSources open in all, the source holding the most (of
// those, the one whose oldest is oldest) loses its oldest. A device's
// challenge is then evicted only by as many sources as there are open
// slots, each holding as many as it does.
func PutTPMSession(tx store.Tx, s *TPMSession, max int) error {
	if max > 0 {
		var open, closed []*TPMSession
		prefix := []byte(s.ID[:16])
		err := tx.Scan(BucketTPMSessions, prefix, nil, func(_, v []byte) error {
			o := new(TPMSession)
			switch {
			case json.Unmarshal(v, o) != nil || o.EKHash != s.EKHash:
			case !o.UsedAt.IsZero() || !s.CreatedAt.Before(o.ExpiresAt):
				closed = append(closed, o)
			case (o.Caller == "") == (s.Caller == ""):
				open = append(open, o)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("attest: count open TPM sessions: %w", err)
		}
		// Answered and expired sessions are kept a while, to tell a
		// replay or a late answer what it is; at most maxClosed of an
		// EK, or a caller answering its own challenges at once (anyone
		// may, for an EK is public) would grow the EK's state, and the
		// cost of this scan, without end.
		if len(closed) >= maxClosed(max) {
			slices.SortFunc(closed, func(a, b *TPMSession) int { return a.CreatedAt.Compare(b.CreatedAt) })
			for _, o := range closed[:len(closed)-maxClosed(max)+1] {
				if err := tx.Delete(BucketTPMSessions, []byte(o.ID)); err != nil {
					return err
				}
			}
		}
		if len(open) >= max && s.Caller != "" {
			return fmt.Errorf("%w (%d open; answer or let them expire)", ErrTooManyChallenges, len(open))
		}
		slices.SortFunc(open, func(a, b *TPMSession) int { return a.CreatedAt.Compare(b.CreatedAt) })
		evict := func(victim *TPMSession) error {
			open = slices.DeleteFunc(open, func(o *TPMSession) bool { return o == victim })
			return tx.Delete(BucketTPMSessions, []byte(victim.ID))
		}
		if s.Caller == "" {
			for {
				own := slices.DeleteFunc(slices.Clone(open), func(o *TPMSession) bool { return o.From != s.From })
				if len(own) < max {
					break
				}
				if err := evict(own[0]); err != nil {
					return err
				}
			}
			max *= anonymousSources
		}
		for len(open) >= max {
			if err := evict(crowdedOldest(open, s.From)); err != nil {
				return err
			}
		}
	}
	return putSession(tx, s)
}

// maxClosed is how many answered or expired sessions of one EK are kept:
// as many as may be open.
func maxClosed(max int) int { return max * (anonymousSources + 1) }

// crowdedOldest is the oldest session of the source holding the most of
// open (sorted oldest first), the new session's source (from) counted
// with it: of sources holding as many, the one whose oldest is oldest.
// A source asking again at the cap thus holds more than one that holds a
// single challenge, and loses its own oldest.
func crowdedOldest(open []*TPMSession, from string) *TPMSession {
	count := map[string]int{from: 1}
	for _, o := range open {
		count[o.From]++
	}
	var victim *TPMSession
	for _, o := range open { // oldest first: the first of a source is its oldest
		if victim == nil || count[o.From] > count[victim.From] {
			victim = o
		}
	}
	return victim
}

// SourcePrefix names the network source of an anonymous request for
// PutTPMSession's fairness: the IPv4 /24 or IPv6 /48 of its address (one
// device's requests come from one place; an attacker needs as many
// networks as slots to crowd it out). An address that does not parse is
// its own source.
func SourcePrefix(addr netip.Addr) string {
	addr = addr.Unmap()
	bits := 48
	if addr.Is4() {
		bits = 24
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return addr.String()
	}
	return p.String()
}

func putSession(tx store.Tx, s *TPMSession) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("attest: encode TPM session: %w", err)
	}
	return tx.Put(BucketTPMSessions, []byte(s.ID), b)
}

// GetTPMSession returns an open session without changing it. It fails
// with ErrChallengeUnknown, ErrChallengeUsed or ErrChallengeExpired (the
// last two with the session).
func GetTPMSession(tx store.Tx, id string, now time.Time) (*TPMSession, error) {
	if id == "" || len(id) > maxSessionIDLen {
		return nil, ErrChallengeUnknown
	}
	if _, err := hex.DecodeString(id); err != nil {
		return nil, ErrChallengeUnknown
	}
	b, err := tx.Get(BucketTPMSessions, []byte(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrChallengeUnknown
	}
	if err != nil {
		return nil, fmt.Errorf("attest: read TPM session: %w", err)
	}
	s := new(TPMSession)
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("attest: decode TPM session: %w", err)
	}
	if !s.UsedAt.IsZero() {
		return s, fmt.Errorf("%w (at %s)", ErrChallengeUsed, s.UsedAt.Format(time.RFC3339))
	}
	if !now.Before(s.ExpiresAt) {
		return s, fmt.Errorf("%w (at %s)", ErrChallengeExpired, s.ExpiresAt.Format(time.RFC3339))
	}
	return s, nil
}

// ConsumeTPMSession marks a session answered and returns it, failing as
// GetTPMSession does. An answer, right or wrong, uses the challenge up:
// the caller commits this with the answer's outcome (the node admitted,
// or nothing else), and two answers to one challenge cannot both be
// accepted.
func ConsumeTPMSession(tx store.Tx, id string, now time.Time) (*TPMSession, error) {
	s, err := GetTPMSession(tx, id, now)
	if err != nil {
		return s, err
	}
	s.UsedAt = now
	return s, putSession(tx, s)
}

// PruneTPMSessions deletes sessions that expired before cutoff. Answered
// sessions are kept until then too, so that a replay is told "used".
func PruneTPMSessions(tx store.Tx, cutoff time.Time) (int, error) {
	return pruneExpired(tx, BucketTPMSessions, cutoff, func(v []byte) (time.Time, error) {
		var s TPMSession
		err := json.Unmarshal(v, &s)
		return s.ExpiresAt, err
	})
}

// pruneExpired deletes the records of bucket that expired before cutoff,
// and those that do not decode.
func pruneExpired(tx store.Tx, bucket string, cutoff time.Time, expiry func([]byte) (time.Time, error)) (int, error) {
	var stale [][]byte
	err := tx.Scan(bucket, nil, nil, func(k, v []byte) error {
		if exp, err := expiry(v); err != nil || exp.Before(cutoff) {
			stale = append(stale, k)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range stale {
		if err := tx.Delete(bucket, k); err != nil {
			return 0, err
		}
	}
	return len(stale), nil
}
