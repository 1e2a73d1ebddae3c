package api_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/client"
)

// A registration changed by one admin after another read it is not
// replaced, nor deleted, by the other's write of the version read: the
// Go client sends the ETag it read in If-Match.
func TestClientAgentIfMatch(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	reg := &client.Agent{SPIFFEID: "spiffe://org-a.example/agent/a", NodeIDs: []string{"spiffe://org-a.example/node/join/00"}}
	created, err := e.admin.CreateAgent(ctx, reg)
	if err != nil || created.ETag == "" {
		t.Fatalf("CreateAgent = %+v, %v; want a registration with its ETag", created, err)
	}
	read, err := e.admin.GetAgent(ctx, created.ID)
	if err != nil || read.ETag != created.ETag {
		t.Fatalf("GetAgent = ETag %q, %v; want %q", read.ETag, err, created.ETag)
	}
	read.Scopes = []string{"read"}
	changed, err := e.admin.UpdateAgentIfMatch(ctx, read.ID, read.ETag, read)
	if err != nil || changed.ETag == "" || changed.ETag == read.ETag || !slices.Equal(changed.Scopes, []string{"read"}) {
		t.Fatalf("UpdateAgentIfMatch of the version read = %+v, %v; want it changed, with a new ETag", changed, err)
	}
	// Another admin's change of the version read before is refused.
	read.Scopes = []string{"write"}
	if _, err := e.admin.UpdateAgentIfMatch(ctx, read.ID, read.ETag, read); problemName(err) != "precondition-failed" {
		t.Fatalf("UpdateAgentIfMatch of a version changed since = %v; want precondition-failed", err)
	}
	if err := e.admin.DeleteAgentIfMatch(ctx, read.ID, read.ETag); problemName(err) != "precondition-failed" {
		t.Fatalf("DeleteAgentIfMatch of a version changed since = %v; want precondition-failed", err)
	}
	if got, err := e.admin.GetAgent(ctx, read.ID); err != nil || !slices.Equal(got.Scopes, []string{"read"}) || got.ETag != changed.ETag {
		t.Fatalf("after the refused writes GetAgent = %+v, %v; want the first change kept", got, err)
	}
	if _, err := e.admin.UpdateAgentIfMatch(ctx, read.ID, "", read); err == nil {
		t.Fatal("UpdateAgentIfMatch without an entity tag succeeded")
	}
	if err := e.admin.DeleteAgentIfMatch(ctx, read.ID, changed.ETag); err != nil {
		t.Fatalf("DeleteAgentIfMatch of the current version = %v", err)
	}
	if _, err := e.admin.GetAgent(ctx, read.ID); problemName(err) != "not-found" {
		t.Fatalf("GetAgent after the delete = %v; want not-found", err)
	}
}

// The CA's admin calls: its status, a rotation, a revocation refused
// while the key may still be in use, as the API answers them.
func TestClientCACalls(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	st, err := e.admin.CAStatus(ctx)
	if err != nil || st.TrustDomain != "org-a.example" {
		t.Fatalf("CAStatus = %+v, %v", st, err)
	}
	active := map[ca.Kind]string{}
	for _, a := range st.Authorities {
		if a.State == ca.StateActive {
			active[a.Kind] = a.ID
		}
	}
	if active[ca.KindX509] == "" || active[ca.KindJWT] == "" {
		t.Fatalf("CAStatus lists %+v; want an active X.509 CA and JWT key", st.Authorities)
	}
	rot, err := e.admin.RotateCA(ctx, client.CARotation{Kind: ca.KindJWT, Reason: "test", Immediately: true})
	if err != nil || rot.Authority.Kind != ca.KindJWT || rot.Authority.State != ca.StateActive || rot.Authority.ID == active[ca.KindJWT] || rot.ActivatesAt.IsZero() {
		t.Fatalf("RotateCA(jwt, immediately) = %+v, %v; want a new active JWT key", rot, err)
	}
	if _, err := e.admin.RotateCA(ctx, client.CARotation{Kind: ca.KindX509, Reason: "test", Immediately: true}); problemName(err) != "invalid-request" {
		t.Fatalf("RotateCA(x509, immediately) = %v; want invalid-request", err)
	}
	// The key replaced signed tokens that may still be presented.
	if _, err := e.admin.RevokeCA(ctx, active[ca.KindJWT], "test", false); problemName(err) != "authority-in-use" {
		t.Fatalf("RevokeCA of an unexpired JWT key = %v; want authority-in-use", err)
	}
	rev, err := e.admin.RevokeCA(ctx, active[ca.KindJWT], "test", true)
	if err != nil || rev.Revoked.ID != active[ca.KindJWT] || rev.Revoked.Kind != ca.KindJWT {
		t.Fatalf("RevokeCA(force) of the replaced JWT key = %+v, %v", rev, err)
	}
	if _, err := e.admin.RevokeCA(ctx, "00", "test", false); problemName(err) != "not-found" {
		t.Fatalf("RevokeCA of no authority = %v; want not-found", err)
	}
}

// A backup asked through the client is written on the authority's host,
// every file it lists there.
func TestClientCreateBackup(t *testing.T) {
	e := start(t, "org-a.example")
	b, err := e.admin.CreateBackup(ctxT(t))
	if err != nil || b.AuditTreeSize == 0 || b.CreatedAt.IsZero() || filepath.Dir(b.Dir) != filepath.Join(e.dataDir, "backups") {
		t.Fatalf("CreateBackup = %+v, %v", b, err)
	}
	var paths []string
	for _, f := range b.Files {
		fi, err := os.Stat(filepath.Join(b.Dir, f.Path))
		if err != nil || fi.Size() != f.Bytes || len(f.SHA256) != 64 {
			t.Errorf("backup file %+v: %v, %v", f, fi, err)
		}
		paths = append(paths, f.Path)
	}
	if !slices.Contains(paths, "mandate.db") || !slices.Contains(paths, "audit/log.vkey") {
		t.Errorf("the backup holds %v; want mandate.db and audit/log.vkey among them", paths)
	}
	if _, err := e.client(nil, nil).CreateBackup(ctxT(t)); problemName(err) != "unauthenticated" && problemName(err) != "forbidden" {
		t.Errorf("CreateBackup without a credential = %v; want it refused", err)
	}
}

// The policy's admin calls: its status, a reload, its Rego tests.
func TestClientPolicyCalls(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	st, err := e.admin.PolicyStatus(ctx)
	if err != nil || st.Revision == "" || !slices.Contains(st.Modules, "issuance.rego") || st.Dir != "" {
		t.Fatalf("PolicyStatus = %+v, %v; want the embedded policies", st, err)
	}
	rev, err := e.admin.ReloadPolicy(ctx)
	if err != nil || rev.Revision != st.Revision {
		t.Fatalf("ReloadPolicy = %+v, %v; want the same revision %s", rev, err, st.Revision)
	}
	tests, err := e.admin.TestPolicy(ctx)
	if err != nil || tests.Revision != st.Revision || len(tests.Tests) == 0 {
		t.Fatalf("TestPolicy = %+v, %v; want the embedded policies' tests", tests, err)
	}
	for _, tc := range tests.Tests {
		if !tc.Pass || tc.Name == "" || tc.Package == "" {
			t.Errorf("TestPolicy test %+v; want it named and passing", tc)
		}
	}
}

// The bundle, public, as served and parsed: its X.509 roots are the
// trust bundle the admin credential holds.
func TestClientBundle(t *testing.T) {
	e := start(t, "org-a.example")
	public := e.client(nil, nil)
	b, err := public.Bundle(ctxT(t))
	if err != nil || b.TrustDomain() != e.td || len(b.JWTAuthorities()) == 0 {
		t.Fatalf("Bundle = %v, %v", b, err)
	}
	if got := b.X509Authorities(); !slices.EqualFunc(got, e.bundle, (*x509.Certificate).Equal) {
		t.Errorf("Bundle has X.509 roots %d, the admin's bundle.pem %d, not the same", len(got), len(e.bundle))
	}
	doc, err := public.BundleDocument(ctxT(t))
	if err != nil || len(doc) == 0 || doc[0] != '{' {
		t.Fatalf("BundleDocument = %s, %v", doc, err)
	}
}
