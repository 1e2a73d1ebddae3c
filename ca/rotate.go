package ca

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Rotation schedule, as fractions of the active authority's lifetime.
const (
	prepareNum, prepareDen   = 1, 2 // prepare the next authority at 1/2
	activateNum, activateDen = 5, 6 // activate it at 5/6
)

// transition accumulates the effects of one rotation step.
type transition struct {
	created []string // keys generated in this step; deleted if the step fails
	pruned  []string // keys to delete once the step is saved
	events  []rotationEvent
}

type rotationEvent struct {
	what string
	a    *authority
}

func (tx *transition) add(what string, a *authority) {
	tx.events = append(tx.events, rotationEvent{what, a})
}

// Rotate performs one rotation step for the X.509 CA and the JWT key at
// the time given by Config.Now:
//
//   - no active authority, or it has expired: activate the prepared one,
//     or create one and activate it at once (bootstrap, long downtime);
//   - the active authority is past 1/2 of its lifetime and nothing is
//     prepared: create the next authority as prepared (it is published in
//     the bundle immediately but signs nothing);
//   - a prepared one that expired waiting (lifetimes shortened at a
//     restart) is retired unused, and another prepared;
//   - it is past 5/6 and one is prepared, in the bundle for 1/3 of the
//     active one's life (one prepared at 1/2 is), or the active one is
//     two rotation ticks (at least a minute) from its expiry: the
//     prepared one becomes active and the active one old. An authority
//     prepared in a step is never activated in the same step (unless the
//     active one expired);
//   - old and prepared authorities past their expiry are removed from the
//     bundle and their keys deleted, one minute after it, to cover
//     verifiers' exp leeway (a JWT validator's on a JWT-SVID, and
//     delegation.Verify's on a hop whose delegator's SVID the X.509 CA
//     signed);
//   - the bundle was last published with another refresh hint than
//     Config.RefreshHint (it changed since the last start): the bundle
//     gets the new hint, and so a new sequence number.
//
// A changed state is saved to the Journal before it takes effect; if the
// save fails nothing changes and keys generated during the step are
// deleted again. Rotate reports whether the state changed.
func (c *CA) Rotate(ctx context.Context) (changed bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rotateLocked(ctx)
}

// Still runs fn while no state transition is under way, and none starts
// until fn returns: the state saved in the Journal and the keys in the
// KeyManager stay as they are, and keyIDs are the keys New needs to load
// that state (those of its active and prepared authorities): a copy made
// of the Journal and those keys within fn is one the CA can start from.
// Minting goes on meanwhile; a rotation waits.
func (c *CA) Still(fn func(keyIDs []string) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for _, a := range c.st.auths {
		if a.state != StateOld {
			ids = append(ids, a.keyID)
		}
	}
	return fn(ids)
}

func (c *CA) rotateLocked(ctx context.Context) (bool, error) {
	now := c.now()
	next := c.st.clone()
	var tx transition
	for _, kind := range []Kind{KindX509, KindJWT} {
		if err := c.advance(ctx, next, kind, now, &tx); err != nil {
			c.deleteKeys(ctx, tx.created)
			return false, err
		}
		prune(next, kind, now, &tx)
	}
	newHint := c.st.hint == nil || *c.st.hint != c.cfg.RefreshHint
	if len(tx.events) == 0 && !newHint {
		return false, nil
	}
	if err := c.install(ctx, next, &tx); err != nil {
		return false, err
	}
	if newHint && len(tx.events) == 0 {
		c.log.Info("ca: bundle published with a new refresh hint", "refresh_hint", c.cfg.RefreshHint, "sequence", c.st.seq)
	}
	return true, nil
}

// install commits next, the state a step tx made (keys it created are
// deleted again if that fails, and those it pruned once it is saved),
// says its events in the log and notifies the subscribers.
func (c *CA) install(ctx context.Context, next *caState, tx *transition) error {
	if err := c.commit(ctx, next); err != nil {
		c.deleteUnsaved(ctx, tx.created)
		return err
	}
	c.deleteKeys(ctx, tx.pruned)
	for _, e := range tx.events {
		c.log.Info("ca: authority "+e.what, "kind", e.a.kind, "id", e.a.id,
			"key_id", e.a.keyID, "not_after", e.a.notAfter)
	}
	c.notify()
	return nil
}

// Expedite has the active authority of kind replaced ahead of its
// schedule: by the prepared one, or one prepared now (published in the
// bundle at once), which becomes active once it has been published for
// wait (at the rotation step after that), or at once when wait is 0 or
// has passed already; its info is returned. Until then it is prepared,
// with its activation time (AuthorityInfo.ActivatesAt), which a
// restart keeps; an activation the schedule brings sooner is not put
// off. Published for less than what every holder of the bundle takes to
// fetch it again, an authority that signs leaves what it signs
// unverifiable to those that have not: wait says how long that is.
func (c *CA) Expedite(ctx context.Context, kind Kind, wait time.Duration) (Expedited, error) {
	if kind != KindX509 && kind != KindJWT {
		return Expedited{}, fmt.Errorf("%w: kind %q: want %q or %q", ErrInvalidParams, kind, KindX509, KindJWT)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	next := c.st.clone()
	var tx transition
	active, prepared := next.find(kind)
	if prepared == nil || !now.Before(prepared.notAfter) {
		if prepared != nil { // expired waiting: retired unused
			next.replace(prepared, prepared.withState(StateOld))
			tx.add("retired unused", prepared)
		}
		a, err := c.newAuthority(ctx, kind, now)
		if err != nil {
			return Expedited{}, err
		}
		tx.created = append(tx.created, a.keyID)
		next.auths = append(next.auths, a)
		tx.add("prepared", a)
		prepared = a
	}
	at := prepared.publishedAt().Add(wait)
	asked := at
	if !prepared.activateAt.IsZero() && prepared.activateAt.Before(asked) {
		asked = prepared.activateAt // asked sooner before: kept
	}
	if takes := c.takeover(active, prepared, asked); active != nil && wait > 0 && now.Before(asked) && !takes.Before(prepared.notAfter) {
		// It would be retired unused (advance): the rotation would do
		// nothing while seeming to. Said instead, and nothing changed.
		c.deleteUnsaved(ctx, tx.created)
		return Expedited{}, fmt.Errorf("%w: the %s successor would expire at %s, before it could take over at %s: its life (%s) is shorter than every holder of the bundle needs to fetch it (%s); give it a longer life (ca.ca_ttl or ca.jwt_key_ttl), or, for a JWT key, activate it immediately",
			ErrInvalidParams, kind, prepared.notAfter.UTC().Format(time.RFC3339), takes.UTC().Format(time.RFC3339), prepared.life(), wait)
	}
	var out *authority
	switch {
	case wait == 0 || !now.Before(at):
		out = takeOver(next, active, prepared, now)
		tx.add("activated ahead of schedule", out)
	case prepared.activateAt.IsZero() || at.Before(prepared.activateAt):
		out = prepared.withState(StatePrepared)
		out.activateAt = at
		next.replace(prepared, out)
		tx.add("to be activated ahead of schedule", out)
	default: // to be activated sooner already
		out = prepared
	}
	if err := c.install(ctx, next, &tx); err != nil {
		return Expedited{}, err
	}
	e := Expedited{AuthorityInfo: out.info(), TakesOverAt: now}
	if out.state == StatePrepared && active != nil {
		e.TakesOverAt = c.takeover(active, out, out.activateAt)
	}
	return e, nil
}

// Expedited is what Expedite did: the authority, and when it takes over.
type Expedited struct {
	AuthorityInfo
	// TakesOverAt is when it takes over (at the rotation step at or
	// after it): as the admin asked (ActivatesAt), or as the schedule
	// has it, whichever comes first; the rotation's time when it is
	// active (or none was: the next step activates it). It is read with
	// the rotation, under the same lock, so no step comes between.
	TakesOverAt time.Time
}

// takeover is when prepared takes over from active: at asked (zero for
// none), or as the schedule has it (at 5/6 of the active one's life,
// once the prepared one has been published for a third of it, or just
// before the active one expires: advance activates it then), whichever
// comes first.
func (c *CA) takeover(active, prepared *authority, asked time.Time) time.Time {
	if active == nil {
		return asked
	}
	at := prepared.publishedAt().Add(active.life() / 3)
	if late := active.notAfter.Add(-c.lateActivationMargin()); late.Before(at) {
		at = late
	}
	if due := active.at(activateNum, activateDen); at.Before(due) {
		at = due
	}
	if !asked.IsZero() && asked.Before(at) {
		at = asked
	}
	return at
}

// lateActivationMargin is how long before the active authority's expiry
// a successor prepared late takes over: two rotation ticks, and at least
// a minute.
func (c *CA) lateActivationMargin() time.Duration {
	return max(time.Minute, 2*c.cfg.RotationInterval)
}

// advance applies at most one state transition for kind.
func (c *CA) advance(ctx context.Context, st *caState, kind Kind, now time.Time, tx *transition) error {
	active, prepared := st.find(kind)
	if prepared != nil && active != nil && now.Before(active.notAfter) && !now.Before(prepared.notAfter) {
		// A successor that expired waiting (a shorter lifetime since a
		// restart) never signs: it is retired, and another prepared.
		st.replace(prepared, prepared.withState(StateOld))
		tx.add("retired unused", prepared)
		prepared = nil
	}
	switch {
	case active == nil || !now.Before(active.notAfter):
		return c.activateNow(ctx, st, kind, active, prepared, now, tx)
	case prepared == nil && !now.Before(active.at(prepareNum, prepareDen)):
		a, err := c.newAuthority(ctx, kind, now)
		if err != nil {
			return err
		}
		tx.created = append(tx.created, a.keyID)
		st.auths = append(st.auths, a)
		tx.add("prepared", a)
	case prepared != nil && !prepared.activateAt.IsZero() && !now.Before(prepared.activateAt):
		// Ahead of the schedule, as an admin asked (Expedite).
		tx.add("activated ahead of schedule", takeOver(st, active, prepared, now))
	case prepared != nil && !now.Before(c.takeover(active, prepared, time.Time{})):
		// At 5/6 of the active one's life, and once the prepared one
		// has been in the bundle for 1/3 of it (prepared at 1/2, it
		// has): one prepared late (the CA was down at 1/2) waits, and
		// the active one signs until just before it expires, so that
		// what the server needs (its own certificate) is never left
		// without a signer between two rotation ticks.
		tx.add("activated", takeOver(st, active, prepared, now))
	}
	return nil
}

// activateNow handles a missing or expired active authority: the prepared
// one (if still valid) is activated, otherwise a new one is created and
// activated immediately.
func (c *CA) activateNow(ctx context.Context, st *caState, kind Kind, active, prepared *authority, now time.Time, tx *transition) error {
	if active != nil {
		c.log.Warn("ca: active authority expired; was rotation running?", "kind", kind, "id", active.id)
	}
	if prepared != nil && !now.Before(prepared.notAfter) {
		st.replace(prepared, prepared.withState(StateOld))
		prepared = nil
	}
	if prepared == nil {
		a, err := c.newAuthority(ctx, kind, now)
		if err != nil {
			return err
		}
		tx.created = append(tx.created, a.keyID)
		st.auths = append(st.auths, a)
		prepared = a
	}
	tx.add("activated", takeOver(st, active, prepared, now))
	return nil
}

// Revoke removes the old authority id (an X.509 CA's hex Subject Key
// ID, or a JWT key's kid) from the bundle now, before it expires, and
// deletes its key: nothing it signed verifies against the bundle from
// then on. A prepared authority, which has signed nothing, is revoked
// too: out of the bundle, its key deleted, it never becomes active (its
// key may have been exposed with the active one's), and the rotation
// schedule, or Expedite, prepares another with a key made then. The
// active authority is refused (ErrAuthorityInUse): replace it first
// (Expedite). So is one no longer in the state seen, which the caller
// decided on (Status): a rotation may have made a prepared one active,
// then replaced, since.
func (c *CA) Revoke(ctx context.Context, id string, seen State) (AuthorityInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := c.st.clone()
	i := slices.IndexFunc(next.auths, func(a *authority) bool { return a.id == id })
	if i < 0 {
		return AuthorityInfo{}, fmt.Errorf("%w: %q", ErrUnknownAuthority, id)
	}
	a := next.auths[i]
	switch {
	case a.state != StateOld && a.state != StatePrepared:
		return AuthorityInfo{}, fmt.Errorf("%w: the %s authority %s is %s: only one replaced or prepared is revoked", ErrAuthorityInUse, a.kind, a.id, a.state)
	case a.state != seen:
		return AuthorityInfo{}, fmt.Errorf("%w: the %s authority %s is %s now, no longer %s: ask again", ErrAuthorityInUse, a.kind, a.id, a.state, seen)
	case a.state == StateOld && a.info().Upstream:
		// The bundle holds the upstream's root, which stays: what the
		// intermediate signed would still verify. (A prepared one
		// signed nothing: discarding it keeps it from ever signing.)
		return AuthorityInfo{}, fmt.Errorf("%w: the X.509 CA %s is an intermediate of the upstream CA, whose root stays in the bundle: revoke it at the upstream CA", ErrInvalidParams, a.id)
	}
	next.auths = slices.Delete(next.auths, i, i+1)
	tx := transition{pruned: []string{a.keyID}}
	tx.add("revoked", a)
	if err := c.install(ctx, next, &tx); err != nil {
		return AuthorityInfo{}, err
	}
	return a.info(), nil
}

// takeOver makes prepared the active authority of st, and active (if
// any) old, replaced at now; it returns the one made active.
func takeOver(st *caState, active, prepared *authority, now time.Time) *authority {
	if active != nil {
		old := active.withState(StateOld)
		old.replacedAt = now
		st.replace(active, old)
	}
	made := prepared.withState(StateActive)
	st.replace(prepared, made)
	return made
}

// prune removes non-active authorities of kind whose pruneAfter has
// passed.
func prune(st *caState, kind Kind, now time.Time, tx *transition) {
	st.auths = slices.DeleteFunc(st.auths, func(a *authority) bool {
		if a.kind != kind || a.state == StateActive || !now.After(a.pruneAfter()) {
			return false
		}
		tx.pruned = append(tx.pruned, a.keyID)
		tx.add("pruned", a)
		return true
	})
}

// commit assigns the bundle sequence number and refresh hint, saves next
// to the Journal and then installs it.
func (c *CA) commit(ctx context.Context, next *caState) error {
	next.seq = c.st.seq
	hint := c.cfg.RefreshHint
	next.hint = &hint
	if !bundleContentEqual(c.buildBundle(next), c.view.Load().bundle) {
		next.seq++
	}
	v, err := c.buildView(next)
	if err != nil {
		return err
	}
	data, err := encodeState(c.td, next)
	if err != nil {
		return err
	}
	if err := c.journal.Save(ctx, data); err != nil {
		return fmt.Errorf("ca: save state: %w", err)
	}
	c.st = next
	c.view.Store(v)
	return nil
}

// Run calls Rotate every Config.RotationInterval until ctx is done, then
// returns nil. Rotation errors are logged and retried at the next tick.
func (c *CA) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.RotationInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := c.Rotate(ctx); err != nil && ctx.Err() == nil {
				c.log.Error("ca: rotation failed", "err", err)
			}
		}
	}
}
