package authority

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/credfile"
)

// A replaced X.509 CA is revoked once every holder of an X509-SVID it
// signed has renewed it: before, only with force. Revoked, it leaves the
// bundle, and the admin credential it signed is made anew at once.
func TestRevokeAReplacedX509CA(t *testing.T) {
	clock := &testClock{now: time.Now()}
	a, _ := runAuthorityWith(t, Options{Now: clock.Now})
	ctx, admin := t.Context(), adminOf(t, a)
	oldCA := a.ca.Status()[0]
	rotated, err := a.RotateCA(ctx, admin, CARotation{Kind: ca.KindX509, Reason: "yearly"})
	if err != nil {
		t.Fatal(err)
	}
	// The default hour of an X509-SVID's life.
	if wait := rotated.ActivatesAt.Sub(clock.Now()); wait < 59*time.Minute || wait > time.Hour {
		t.Fatalf("activates in %v; want an hour", wait)
	}
	if _, err := a.RevokeCA(ctx, admin, oldCA.ID, "compromised", true); !errors.Is(err, ca.ErrAuthorityInUse) {
		t.Errorf("RevokeCA(the active CA, force) = %v; want ErrAuthorityInUse", err)
	}
	clock.Advance(time.Hour)
	if _, err := a.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.ca.Status()[0]; got.ID != oldCA.ID || got.State != ca.StateOld {
		t.Fatalf("the first CA is %+v; want it replaced", got)
	}
	clock.Advance(59 * time.Minute)
	if _, err := a.RevokeCA(ctx, admin, oldCA.ID, "compromised", false); !errors.Is(err, ca.ErrAuthorityInUse) {
		t.Errorf("RevokeCA before every holder renewed = %v; want ErrAuthorityInUse", err)
	}
	if _, err := a.RevokeCA(ctx, admin, oldCA.ID, "", false); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("RevokeCA without a reason = %v; want ErrInvalidRequest", err)
	}
	if _, err := a.RevokeCA(ctx, admin, "00", "compromised", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("RevokeCA of an unknown id = %v; want ErrNotFound", err)
	}
	clock.Advance(time.Minute)
	if _, err := a.RevokeCA(ctx, admin, oldCA.ID, "compromised", false); err != nil {
		t.Fatalf("RevokeCA once every holder renewed = %v", err)
	}
	if slices.ContainsFunc(a.Bundle().X509Authorities(), func(c *x509.Certificate) bool { return hex.EncodeToString(c.SubjectKeyId) == oldCA.ID }) {
		t.Error("the CA revoked is still in the bundle")
	}
	chain, _, _, err := credfile.Load(AdminPaths(a.cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(chain, a.Bundle().X509Bundle(), x509svid.WithTime(clock.Now())); err != nil {
		t.Errorf("the admin credential does not verify with the bundle once its CA was revoked: %v", err)
	}
}

// The admin credential's bundle.pem holds the successor an admin's
// rotation publishes once the rotation is answered: the admin CLI
// trusts the server with that file, and the server's certificate may
// be signed by the successor as soon as it takes over (after the wait
// of a propagation, which may be shorter than the minute between the
// maintenance loop's looks at the file).
func TestRotationWritesTheAdminBundle(t *testing.T) {
	clock := &testClock{now: time.Now()}
	a, _ := runAuthorityWith(t, Options{Now: clock.Now})
	p := AdminPaths(a.cfg.DataDir)
	// The maintenance loop's first look, at the start, has written the
	// credential: its next is a minute away.
	for {
		if _, err := os.Stat(p.Cert); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	rotated, err := a.RotateCA(t.Context(), adminOf(t, a), CARotation{Kind: ca.KindX509, Reason: "yearly"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := credfile.ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(certs, func(c *x509.Certificate) bool { return hex.EncodeToString(c.SubjectKeyId) == rotated.Authority.ID }) {
		t.Errorf("the admin bundle.pem does not hold the CA %s the rotation published", rotated.Authority.ID)
	}
}

// A revocation refused says what the admin can do about it, in the
// command they used: rotate the active authority first, or revoke with
// --force.
func TestRevokeCARefusalSaysWhatToDo(t *testing.T) {
	clock := &testClock{now: time.Now()}
	a, _ := runAuthorityWith(t, Options{Now: clock.Now})
	ctx, admin := t.Context(), adminOf(t, a)
	activeX509, activeJWT := a.ca.Status()[0], a.ca.Status()[1]
	if activeX509.Kind != ca.KindX509 || activeJWT.Kind != ca.KindJWT {
		t.Fatalf("authorities %+v, %+v; want the X.509 CA, then the JWT key", activeX509, activeJWT)
	}
	if _, err := a.RotateCA(ctx, admin, CARotation{Kind: ca.KindJWT, Reason: "yearly", Immediately: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RotateCA(ctx, admin, CARotation{Kind: ca.KindX509, Reason: "yearly"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if _, err := a.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	current := func(kind ca.Kind) string {
		for _, info := range a.ca.Status() {
			if info.Kind == kind && info.State == ca.StateActive {
				return info.ID
			}
		}
		t.Fatalf("no active %s authority", kind)
		return ""
	}
	for _, tc := range []struct {
		name, id string
		force    bool
		want     string
	}{
		{"the active X.509 CA", current(ca.KindX509), false, "mandate admin ca rotate --kind x509"},
		{"the active X.509 CA, force", current(ca.KindX509), true, "mandate admin ca rotate --kind x509"},
		{"the active JWT key", current(ca.KindJWT), false, "mandate admin ca rotate --kind jwt"},
		{"a replaced JWT key", activeJWT.ID, false, "mandate admin ca revoke --force"},
		{"a replaced X.509 CA, soon after", activeX509.ID, false, "mandate admin ca revoke --force"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.RevokeCA(ctx, admin, tc.id, "compromised", tc.force)
			if !errors.Is(err, ca.ErrAuthorityInUse) {
				t.Fatalf("RevokeCA = %v; want ErrAuthorityInUse", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("RevokeCA = %q; want it to say %q", err, tc.want)
			}
		})
	}
}
