package ca_test

import (
	"context"
	"crypto/elliptic"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca"
)

func rotationConfig(clk *fakeClock) func(*ca.Config) {
	return func(cfg *ca.Config) {
		cfg.Now = clk.Now
		cfg.CATTL = time.Hour
		cfg.JWTKeyTTL = time.Hour
		cfg.X509SVIDTTL = 20 * time.Minute
		cfg.JWTSVIDTTL = 5 * time.Minute
		cfg.RefreshHint = 5 * time.Minute
	}
}

type mintedX509 struct {
	svid   *ca.X509SVID
	issuer string
}

type mintedJWT struct {
	svid *ca.JWTSVID
}

// TestRotationKeepsEverySVIDVerifiable steps an injected clock minute by
// minute through five hours (about six rotations of each kind), rotating
// and minting at every step, and checks the rotation invariants at every
// instant.
func TestRotationKeepsEverySVIDVerifiable(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	c, env := newTestCA(t, rotationConfig(clk))
	aud := []string{"spiffe://example.org/db"}
	leafKey := ecKey(t, elliptic.P256())

	firstSeen := map[string]time.Time{} // authority id -> first instant in a served bundle
	observe := func(b *spiffebundle.Bundle, now time.Time) {
		for _, id := range authorityIDs(b) {
			if _, ok := firstSeen[id]; !ok {
				firstSeen[id] = now
			}
		}
	}
	prev := c.Bundle()
	observe(prev, clk.Now())
	var x509s []mintedX509
	var jwts []mintedJWT
	for step := 1; step <= 5*60; step++ {
		clk.Add(time.Minute)
		now := clk.Now()
		changed, err := c.Rotate(ctx)
		if err != nil {
			t.Fatalf("step %d: Rotate: %v", step, err)
		}
		b := c.Bundle()
		checkSequence(t, step, prev, b, changed)
		observe(b, now)
		checkStatus(t, step, c.Status(), now)

		x, err := c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: leafKey.Public()})
		if err != nil {
			t.Fatalf("step %d: MintX509SVID: %v", step, err)
		}
		issuer := hex.EncodeToString(x.Certificates[0].AuthorityKeyId)
		checkPublishedBefore(t, step, firstSeen, issuer, now)
		x509s = append(x509s, mintedX509{x, issuer})

		j, err := c.MintJWTSVID(ctx, ca.JWTParams{ID: testID, Audience: aud})
		if err != nil {
			t.Fatalf("step %d: MintJWTSVID: %v", step, err)
		}
		checkPublishedBefore(t, step, firstSeen, j.KeyID, now)
		jwts = append(jwts, mintedJWT{j})

		for i, m := range x509s {
			if now.After(m.svid.ExpiresAt) {
				continue
			}
			if _, _, err := x509svid.Verify(m.svid.Certificates, b, x509svid.WithTime(now)); err != nil {
				t.Fatalf("step %d: x509-svid %d (issuer %s) unexpired but does not verify: %v", step, i, m.issuer, err)
			}
		}
		for i, m := range jwts {
			if now.After(m.svid.ExpiresAt) {
				continue
			}
			if _, err := verifyJWTAt(m.svid.Token, b, aud, now); err != nil {
				t.Fatalf("step %d: jwt-svid %d (kid %s) unexpired but does not verify: %v", step, i, m.svid.KeyID, err)
			}
		}
		if files := keyFiles(t, env.keyDir); len(files) != len(c.Status()) {
			t.Fatalf("step %d: %d key files for %d authorities", step, len(files), len(c.Status()))
		}
		prev = b
	}
	current := map[string]bool{}
	for _, id := range authorityIDs(c.Bundle()) {
		current[id] = true
	}
	pruned := 0
	for id := range firstSeen {
		if !current[id] {
			pruned++
		}
	}
	if len(firstSeen) < 12 || pruned < 8 {
		t.Errorf("saw %d authorities and %d pruned; expected several rotations of each kind", len(firstSeen), pruned)
	}
}

// checkSequence: the sequence number increases by exactly one when the
// bundle's authorities change and stays put otherwise.
func checkSequence(t *testing.T, step int, prev, b *spiffebundle.Bundle, changed bool) {
	t.Helper()
	ps, s := seqOf(t, prev), seqOf(t, b)
	if sameAuthorities(prev, b) {
		if s != ps {
			t.Fatalf("step %d: sequence %d -> %d without an authority change", step, ps, s)
		}
		return
	}
	if s != ps+1 {
		t.Fatalf("step %d: authorities changed but sequence %d -> %d", step, ps, s)
	}
	if !changed {
		t.Fatalf("step %d: bundle changed but Rotate reported no change", step)
	}
}

// checkPublishedBefore: an authority signs only after it has been in the
// served bundle for at least the refresh hint (bootstrap authorities
// excepted).
func checkPublishedBefore(t *testing.T, step int, firstSeen map[string]time.Time, id string, now time.Time) {
	t.Helper()
	seen, ok := firstSeen[id]
	switch {
	case !ok:
		t.Fatalf("step %d: authority %s signed but was never in the bundle", step, id)
	case seen.Equal(testStart):
		// bootstrap authority
	case now.Sub(seen) < 5*time.Minute:
		t.Fatalf("step %d: authority %s signs %s after first being published", step, id, now.Sub(seen))
	}
}

// checkStatus: exactly one active authority per kind, at most one
// prepared, and nothing in the bundle beyond its prune point.
func checkStatus(t *testing.T, step int, st []ca.AuthorityInfo, now time.Time) {
	t.Helper()
	count := map[ca.Kind]map[ca.State]int{ca.KindX509: {}, ca.KindJWT: {}}
	for _, a := range st {
		count[a.Kind][a.State]++
		// Listed a minute past its expiry at most (verifiers' leeway).
		if limit := a.NotAfter.Add(time.Minute); now.After(limit) {
			t.Fatalf("step %d: %s authority %s expired at %s but is still listed", step, a.Kind, a.ID, a.NotAfter)
		}
	}
	for kind, states := range count {
		if states[ca.StateActive] != 1 || states[ca.StatePrepared] > 1 {
			t.Fatalf("step %d: %s states %v", step, kind, states)
		}
	}
}

func TestRotationSchedule(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	c, _ := newTestCA(t, rotationConfig(clk))
	states := func() map[ca.Kind][]ca.State {
		m := map[ca.Kind][]ca.State{}
		for _, a := range c.Status() {
			m[a.Kind] = append(m[a.Kind], a.State)
		}
		return m
	}
	steps := []struct {
		at   time.Duration
		want []ca.State
	}{
		{29 * time.Minute, []ca.State{ca.StateActive}},
		{31 * time.Minute, []ca.State{ca.StateActive, ca.StatePrepared}},
		{49 * time.Minute, []ca.State{ca.StateActive, ca.StatePrepared}},
		// past 5/6 at +50m, and prepared at +31m: published for 1/3 of
		// the active one's life at +51m (a JWT key), +51m03s (a CA: 1h
		// and its 10 s backdate)
		{50*time.Minute + 30*time.Second, []ca.State{ca.StateActive, ca.StatePrepared}},
		{52 * time.Minute, []ca.State{ca.StateOld, ca.StateActive}},
		{58 * time.Minute, []ca.State{ca.StateOld, ca.StateActive}},
		// first authority expired and pruned; the second is past 1/2
		{62 * time.Minute, []ca.State{ca.StateActive, ca.StatePrepared}},
		{83 * time.Minute, []ca.State{ca.StateOld, ca.StateActive}},
	}
	elapsed := time.Duration(0)
	for _, s := range steps {
		clk.Add(s.at - elapsed)
		elapsed = s.at
		if _, err := c.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		for kind, got := range states() {
			if !equalStates(got, s.want) {
				t.Errorf("at +%s: %s states = %v, want %v", s.at, kind, got, s.want)
			}
		}
	}
}

func equalStates(a, b []ca.State) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// failingJournal fails Save while fail is set; with kept, the failed
// save is kept all the same (a commit the store reported as failed).
type failingJournal struct {
	ca.Journal
	mu         sync.Mutex
	fail, kept bool
}

func (j *failingJournal) setFail(v bool) { j.mu.Lock(); j.fail = v; j.mu.Unlock() }

func (j *failingJournal) Save(ctx context.Context, data []byte) error {
	j.mu.Lock()
	fail := j.fail
	j.mu.Unlock()
	if fail {
		if j.kept {
			_ = j.Journal.Save(ctx, data)
		}
		return errors.New("disk full")
	}
	return j.Journal.Save(ctx, data)
}

// A save reported failed but kept: the keys the journal now names are
// not deleted, so the CA still starts from it.
func TestRotateSaveFailureKeptKeepsItsKeys(t *testing.T) {
	clk := newFakeClock(testStart)
	j := &failingJournal{Journal: ca.NewMemoryJournal(), kept: true}
	c, env := newTestCA(t, func(cfg *ca.Config) {
		rotationConfig(clk)(cfg)
		cfg.Journal = j
	})
	clk.Add(31 * time.Minute)
	j.setFail(true)
	if changed, err := c.Rotate(context.Background()); err == nil || changed {
		t.Fatalf("Rotate = %v, %v; want an error", changed, err)
	}
	if files := keyFiles(t, env.keyDir); len(files) != 4 {
		t.Errorf("key files after a failed save that was kept: %v, want the prepared ones too", files)
	}
	j.setFail(false)
	env.cfg.Journal = j
	if _, err := ca.New(context.Background(), env.cfg); err != nil {
		t.Fatalf("New from the kept state = %v", err)
	}
}

func TestRotateSaveFailureChangesNothing(t *testing.T) {
	clk := newFakeClock(testStart)
	j := &failingJournal{Journal: ca.NewMemoryJournal()}
	c, env := newTestCA(t, func(cfg *ca.Config) {
		rotationConfig(clk)(cfg)
		cfg.Journal = j
	})
	before, filesBefore := c.Bundle(), keyFiles(t, env.keyDir)
	clk.Add(31 * time.Minute)
	j.setFail(true)
	changed, err := c.Rotate(context.Background())
	if err == nil || changed {
		t.Fatalf("Rotate = %v, %v; want an error", changed, err)
	}
	if !c.Bundle().Equal(before) || len(c.Status()) != 2 {
		t.Error("state changed although the journal save failed")
	}
	if files := keyFiles(t, env.keyDir); len(files) != len(filesBefore) {
		t.Errorf("keys generated for the failed step were not deleted: %v", files)
	}
	j.setFail(false)
	if changed, err := c.Rotate(context.Background()); err != nil || !changed {
		t.Fatalf("Rotate after recovery = %v, %v", changed, err)
	}
	if seqOf(t, c.Bundle()) != seqOf(t, before)+1 {
		t.Error("sequence did not advance by one")
	}
}

func TestRotateAfterDowntime(t *testing.T) {
	clk := newFakeClock(testStart)
	env := newEnv(t, rotationConfig(clk))
	c := env.newCA(t)
	old := c.Bundle()
	clk.Add(3 * time.Hour) // everything expired while the server was down
	c = env.newCA(t)
	b := c.Bundle()
	if seqOf(t, b) != seqOf(t, old)+1 {
		t.Errorf("sequence = %d, want %d", seqOf(t, b), seqOf(t, old)+1)
	}
	for _, cert := range b.X509Authorities() {
		if clk.Now().After(cert.NotAfter) {
			t.Error("expired CA still in the bundle")
		}
	}
	if st := c.Status(); len(st) != 2 {
		t.Errorf("status = %+v, want one fresh active authority per kind", st)
	}
	if files := keyFiles(t, env.keyDir); len(files) != 2 {
		t.Errorf("expired keys not deleted: %v", files)
	}
	if _, err := c.MintX509SVID(context.Background(), ca.X509Params{ID: testID, PublicKey: ecKey(t, elliptic.P256()).Public()}); err != nil {
		t.Fatal(err)
	}
}

// A CA down across the 1/2 mark and restarted after 5/6 prepares its
// successor then, and keeps signing with the active one until it expires:
// the successor never signs before relying parties that refresh at the
// refresh hint have it (ca/doc.go: in the bundle for 1/3 of its
// predecessor's life, but for what is left of it after such a restart).
func TestActivationWaitsForPublicationAfterDowntime(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	env := newEnv(t, rotationConfig(clk)) // CA TTL 1h, refresh hint 5m
	c := env.newCA(t)
	relying := c.Bundle()     // a relying party's copy: the last it could fetch
	clk.Add(51 * time.Minute) // down from before 1/2 until after 5/6
	c = env.newCA(t)          // the start prepares the successor
	for _, step := range []time.Duration{10 * time.Second, 5 * time.Minute, 2*time.Minute + 45*time.Second} {
		clk.Add(step)
		if _, err := c.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		svid, err := c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: ecKey(t, elliptic.P256()).Public()})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, relying, x509svid.WithTime(clk.Now())); err != nil {
			t.Fatalf("%s: an SVID does not verify against the bundle a relying party held: %v", clk.Now().Sub(testStart), err)
		}
	}
	// A minute before the active one expires (at 1h), the successor,
	// published since the restart, takes over: the server is never left
	// without a signer for its own certificate.
	clk.Add(10 * time.Second) // 59m05s
	if _, err := c.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Status() {
		if a.State == ca.StateActive && !a.NotBefore.After(testStart.Add(50*time.Minute)) {
			t.Errorf("%s authority %s active at %s, want the successor prepared at the restart", a.Kind, a.ID, clk.Now().Sub(testStart))
		}
	}
}

// A successor that expires while it waits (the lifetimes were shortened
// at a restart) is never made active: another is prepared, and there is
// a valid signer at every tick.
func TestExpiredSuccessorNeverActivates(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	env := newEnv(t, rotationConfig(clk)) // 1h lifetimes
	env.newCA(t)
	clk.Add(48*time.Minute + 55*time.Second)
	env.cfg.CATTL, env.cfg.JWTKeyTTL = 10*time.Minute, 10*time.Minute
	env.cfg.X509SVIDTTL, env.cfg.JWTSVIDTTL, env.cfg.RefreshHint = 5*time.Minute, 2*time.Minute, time.Minute
	c := env.newCA(t) // prepares successors of 10 minutes
	for clk.Now().Before(testStart.Add(62 * time.Minute)) {
		clk.Add(10 * time.Second)
		if _, err := c.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		for _, a := range c.Status() {
			if a.State == ca.StateActive && !clk.Now().Before(a.NotAfter) {
				t.Fatalf("%s: %s authority %s active, expired at %s", clk.Now().Sub(testStart), a.Kind, a.ID, a.NotAfter.Sub(testStart))
			}
		}
		if _, err := c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: ecKey(t, elliptic.P256()).Public()}); err != nil {
			t.Fatalf("%s: MintX509SVID = %v", clk.Now().Sub(testStart), err)
		}
		if _, err := c.MintJWTSVID(ctx, ca.JWTParams{ID: testID, Audience: []string{"a"}}); err != nil {
			t.Fatalf("%s: MintJWTSVID = %v", clk.Now().Sub(testStart), err)
		}
	}
}
