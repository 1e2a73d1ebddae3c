package authority

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// CreateJoinToken makes a single-use join token valid for ttl (0: the
// default). It returns the secret, which is never stored.
func (a *Authority) CreateJoinToken(ctx context.Context, c *Caller, ttl time.Duration) (string, *attest.JoinToken, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return "", nil, err
	}
	secret, rec, err := attest.NewJoinToken(a.now(), ttl, c.ID.String())
	if err != nil {
		return "", nil, err
	}
	nodeID, _ := rec.NodeID(a.td)
	// Stored in the commit that logs it: both or neither.
	if _, err := a.recordWith(ctx, event{typ: "join_token.created", actor: actorOf(c), subject: rec.ID, details: map[string]any{
		"token_id": rec.ID, "node_id": nodeID.String(), "expires_at": rec.ExpiresAt.UTC(),
	}}, func(tx store.Tx) error { return attest.PutJoinToken(tx, secret, rec) }); err != nil {
		return "", nil, err
	}
	a.log.InfoContext(ctx, "join token created", "token_id", rec.ID, "by", c.ID.String(), "expires_at", rec.ExpiresAt)
	return secret, rec, nil
}

// WithdrawJoinToken withdraws an unused join token, named by its id
// (admin): no node joins with it afterwards. The token is marked and the
// withdrawal logged (join_token.withdrawn) in one commit. A token a node
// used is not withdrawn (ban the node); an unknown one is ErrNotFound.
func (a *Authority) WithdrawJoinToken(ctx context.Context, c *Caller, id string) (*attest.JoinToken, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	if !attest.ValidJoinTokenID(id) {
		// Not repeated: what was given in place of an id may be the
		// token itself (create answers both), a secret the answer and the
		// admin's terminal must not show.
		return nil, fmt.Errorf("%w: no join token has this id: an id is 16 lowercase hex digits (the \"id\" join-token create printed, not the token)", ErrNotFound)
	}
	var rec *attest.JoinToken
	nodeID, _ := (&attest.JoinToken{ID: id}).NodeID(a.td)
	_, err := a.recordWith(ctx, event{typ: "join_token.withdrawn", actor: actorOf(c), subject: id, details: map[string]any{
		"token_id": id, "node_id": nodeID.String(),
	}}, func(tx store.Tx) (err error) {
		rec, err = attest.WithdrawJoinToken(tx, id, c.ID.String(), a.now())
		return err
	})
	if errors.Is(err, attest.ErrTokenUnknown) {
		return nil, fmt.Errorf("%w: join token %s (never made, or pruned after it expired)", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	a.log.InfoContext(ctx, "join token withdrawn", "token_id", id, "by", c.ID.String())
	return rec, nil
}

// JoinNode trades a join token and a CSR for a node X509-SVID. The token
// is consumed and the node recorded in the commit that logs
// node.attested, before the SVID is handed out; on any failure the token
// stays usable. A join whose answer was lost (the connection cut, the
// server stopped after the commit) may be asked again with the same
// token and the same key until the token expires: it gets a new SVID for
// the same node (svid.issued, join_retry), unless the node was banned.
func (a *Authority) JoinNode(ctx context.Context, secret string, csrPEM []byte) (*ca.X509SVID, error) {
	now := a.now()
	var svid *ca.X509SVID
	tokenID := ""
	// The token is read, the CSR checked and the SVID made first; then the
	// token is used up and the node stored in the commit that logs
	// node.attested (the entry names the SVID): the three durable
	// together, or none. A token used meanwhile by another join fails
	// that commit's change, and this SVID is never handed out.
	var rec *attest.JoinToken
	err := a.store.View(ctx, func(tx store.Tx) (err error) {
		rec, err = attest.PeekJoinToken(tx, secret, a.td, now)
		return err
	})
	if rec != nil {
		tokenID = rec.ID
	}
	retry := errors.Is(err, attest.ErrTokenUsed)
	if err == nil || retry {
		nodeID, _ := rec.NodeID(a.td) // checked by PeekJoinToken
		var pub crypto.PublicKey
		var digest string
		if pub, err = ca.ParseCSR(csrPEM, nodeID); err == nil {
			digest, err = attest.KeyDigest(pub)
		}
		if err == nil && retry {
			// Asked again: only with the key the token was used with.
			err = a.store.View(ctx, func(tx store.Tx) error {
				_, err := a.rejoinable(tx, secret, now, digest, nodeID)
				return err
			})
		}
		if err == nil {
			svid, err = a.ca.MintX509SVID(ctx, ca.X509Params{ID: nodeID, PublicKey: pub})
		}
		if err == nil && retry {
			ev := nodeSVIDIssued(nodeID, svid, map[string]any{"join_retry": true, "token_id": tokenID})
			_, err = a.recordWith(ctx, ev, func(tx store.Tx) error {
				// The token as it is at the commit, not at the request's
				// start: one that expired meanwhile is not used.
				node, err := a.rejoinable(tx, secret, a.now(), digest, nodeID)
				if err != nil {
					return err
				}
				return putNodeSVID(tx, node, node.SVIDSerial, svid, now)
			})
			// As a renewal: the serials and expiry changed, which the
			// policy documents do not hold.
			a.hosting.invalidate()
		} else if err == nil {
			_, err = a.recordWith(ctx, event{typ: "node.attested", actor: svid.ID.String(), subject: svid.ID.String(), details: map[string]any{
				"method": attest.MethodJoinToken, "level": registry.LevelToken, "token_id": tokenID,
				"serial": svid.SerialNumber.Text(16), "expires_at": svid.ExpiresAt.UTC(),
			}}, func(tx store.Tx) error {
				// A node ID revoked (named by its token before it
				// joined) never joins.
				if err := notRevoked(tx, nodeID.String()); err != nil {
					return err
				}
				if _, err := attest.ConsumeJoinToken(tx, secret, a.td, a.now(), digest); err != nil {
					return err
				}
				// A token's node is new: one of its id already joined
				// (another token drew the same id) is never replaced,
				// nor its ban lifted, by the holder of this one (and
				// this token is left unused: the change is not made).
				switch _, err := registry.GetNode(tx, nodeID.String()); {
				case err == nil:
					return fmt.Errorf("%w: node %s joined already, with another token of this id: ask for a new token", attest.ErrTokenUsed, nodeID)
				case !errors.Is(err, registry.ErrNotFound):
					return err
				}
				rec := &registry.Node{
					SPIFFEID: nodeID.String(), AttestationMethod: attest.MethodJoinToken, Level: registry.LevelToken,
					Selectors:  []string{"attestation:" + attest.MethodJoinToken, "level:" + registry.LevelToken},
					AttestedAt: now, SVIDSerial: svid.SerialNumber.Text(16), SVIDExpiresAt: svid.ExpiresAt,
				}
				rec.IssuedSVIDAt(now)
				return registry.PutNode(tx, rec)
			})
			a.nodeChanged(nodeID.String())
		}
	}
	if err != nil {
		// A token that is not one (anyone may send guesses) is logged at
		// debug level only: a flood of them must not bury the log.
		level := slog.LevelInfo
		if tokenID == "" {
			level = slog.LevelDebug
		}
		a.log.Log(ctx, level, "join refused", "token_id", tokenID, "err", err)
		// A refusal is recorded when the token exists (used, expired, or
		// presented with a bad CSR), once per token. Guesses at unknown
		// tokens and repeats are only logged: anyone can send them, and the
		// audit log must not be a disk anyone can fill.
		if tokenID != "" && a.firstRefusal(tokenID) {
			if _, rerr := a.record(ctx, event{typ: "node.attestation_refused", subject: tokenID, details: map[string]any{
				"method": attest.MethodJoinToken, "token_id": tokenID, "reason": err.Error(),
			}}); rerr != nil {
				a.logNotRecorded(ctx, "audit a refused join", rerr)
			}
		}
		return nil, err
	}
	if retry {
		a.log.InfoContext(ctx, "node joined again (its first answer was lost)", "spiffe_id", svid.ID.String(), "serial", svid.SerialNumber.Text(16))
	} else {
		a.log.InfoContext(ctx, "node joined", "spiffe_id", svid.ID.String(), "serial", svid.SerialNumber.Text(16))
	}
	return svid, nil
}

// rejoinable checks that a join may be asked again (attest.RetryJoinToken)
// and that the node it made is still a join-token node, not banned, and
// returns its record.
func (a *Authority) rejoinable(tx store.Tx, secret string, now time.Time, digest string, nodeID spiffeid.ID) (*registry.Node, error) {
	if _, err := attest.RetryJoinToken(tx, secret, a.td, now, digest); err != nil {
		return nil, err
	}
	node, err := unbannedNode(tx, nodeID)
	switch {
	case err != nil:
		return nil, err
	case node.AttestationMethod != attest.MethodJoinToken:
		return nil, fmt.Errorf("%w: %s was not made by this join", attest.ErrTokenUsed, nodeID)
	}
	return node, nil
}

func (a *Authority) pruneJoinTokens(ctx context.Context) {
	cutoff := a.now().Add(-24 * time.Hour)
	err := a.store.Update(ctx, func(tx store.Tx) error {
		_, err := attest.PruneJoinTokens(tx, cutoff)
		return err
	})
	if err != nil && ctx.Err() == nil { // not merely stopping
		a.log.Error("prune join tokens", "err", err)
	}
}

// maxRefusedTokens bounds the memory of refusals recorded.
const maxRefusedTokens = 10000

// firstRefusal reports whether no refusal of key (a join token's id, or
// an event type, node and serial) has been recorded since the authority
// started, and remembers it.
func (a *Authority) firstRefusal(key string) bool {
	a.refusedMu.Lock()
	defer a.refusedMu.Unlock()
	if a.refused[key] {
		return false
	}
	if a.refused == nil || len(a.refused) >= maxRefusedTokens {
		a.refused = map[string]bool{}
	}
	a.refused[key] = true
	return true
}
