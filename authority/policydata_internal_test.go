package authority

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// data.mandate follows every registry change, entry by entry: a
// registration made, renamed and deleted, a node made and banned, while
// the entries nothing changed stay as they were.
func TestPolicyDataFollowsEachChange(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	docs := func(key string) map[string]any {
		t.Helper()
		ans, err := a.QueryData(ctx, admin, DataQuery{Path: "mandate/" + key})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(ans.Value)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("data.mandate.%s = %s", key, b)
		}
		return m
	}
	keys := func(m map[string]any) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	td := a.td.IDString()
	node := putNode(t, a, "n1")
	a.nodeChanged(node)
	keep, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: td + "/agent/keep", NodeIDs: []string{node}})
	if err != nil {
		t.Fatal(err)
	}
	x, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: td + "/agent/x", NodeIDs: []string{node}, Scopes: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(docs("agents")); !slices.Equal(got, []string{keep.SPIFFEID, x.SPIFFEID}) {
		t.Fatalf("agents after two registrations: %v", got)
	}
	// Renamed: the old entry goes, the new one comes.
	if _, err := a.UpdateAgent(ctx, admin, x.ID, &registry.Agent{SPIFFEID: td + "/agent/y", NodeIDs: []string{node}, Scopes: []string{"b"}}); err != nil {
		t.Fatal(err)
	}
	agents := docs("agents")
	if got := keys(agents); !slices.Equal(got, []string{keep.SPIFFEID, td + "/agent/y"}) {
		t.Fatalf("agents after a rename: %v", got)
	}
	if scopes := agents[td+"/agent/y"].(map[string]any)["scopes"]; !slices.Equal(toStrings(scopes), []string{"b"}) {
		t.Errorf("renamed registration's scopes: %v", scopes)
	}
	if _, err := a.BanNode(ctx, admin, node, "stolen"); err != nil {
		t.Fatal(err)
	}
	if banned := docs("nodes")[node].(map[string]any)["banned"]; banned != true {
		t.Errorf("node after its ban: banned = %v", banned)
	}
	if err := a.DeleteAgent(ctx, admin, x.ID); err != nil {
		t.Fatal(err)
	}
	if got := keys(docs("agents")); !slices.Equal(got, []string{keep.SPIFFEID}) {
		t.Errorf("agents after a deletion: %v", got)
	}
}

// With no federation, data.mandate.federated_trust_domains is an empty
// list, not null: a policy's count() of it or `some td in` it works.
func TestPolicyDataNoFederationIsAnEmptyList(t *testing.T) {
	a := startAuthority(t)
	ans, err := a.QueryData(t.Context(), adminOf(t, a), DataQuery{Path: "mandate/federated_trust_domains"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(ans.Value); string(b) != "[]" {
		t.Errorf("data.mandate.federated_trust_domains with no federation = %s, want []", b)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, s := range v.([]any) {
		out = append(out, s.(string))
	}
	return out
}

// BenchmarkDecisionAfterAChange is a registry change followed by a policy
// decision, with 5,000 agents and 5,000 nodes registered: the decision
// brings data.mandate up to date first (by the changed entry only).
// `go test -run '^$' -bench DecisionAfterAChange ./authority/`
func BenchmarkDecisionAfterAChange(b *testing.B) {
	a := startAuthority(b)
	ctx, admin := b.Context(), adminOf(b, a)
	td := a.td.IDString()
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		for i := range 5000 {
			node := fmt.Sprintf("%s/node/join/n%d", td, i)
			if err := registry.PutNode(tx, &registry.Node{SPIFFEID: node, AttestedAt: time.Now()}); err != nil {
				return err
			}
			if err := registry.CreateAgent(tx, &registry.Agent{ID: registry.NewID(), SPIFFEID: fmt.Sprintf("%s/agent/a%d", td, i), NodeIDs: []string{node}}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	a.registryChanged()
	for i := 0; b.Loop(); i++ {
		a.agentChanged(fmt.Sprintf("%s/agent/a%d", td, i%5000))
		if _, err := a.QueryData(ctx, admin, DataQuery{Path: "mandate/issuance/decision", Input: []byte(`{}`)}); err != nil {
			b.Fatal(err)
		}
	}
}

// A decision's input is recorded with policy.decision_log_mask applied
// also when it holds numbers a float64 cannot (1e400 is valid JSON, and
// the log keeps numbers as written); one the masks cannot be applied to
// is recorded by its digest only, never whole.
func TestDecisionLogMaskHoldsForAnyInput(t *testing.T) {
	a, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.Policy.DecisionLogMask = []string{"/input/password"} })
	ctx, admin := t.Context(), adminOf(t, a)
	for _, in := range []string{`{"password":"hunter2","n":1e400}`, `{"password":"hunter2","n":123456789012345678901234567890}`, `{"password":"hunter2","password":"hunter2"}`} {
		if _, err := a.QueryData(ctx, admin, DataQuery{Path: "mandate/issuance/decision", Input: json.RawMessage(in)}); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "policy.decision", Limit: 100})
	if err != nil || len(got) < 3 {
		t.Fatalf("policy.decision entries: %d, %v", len(got), err)
	}
	for _, h := range got {
		if strings.Contains(string(h.Entry), "hunter2") {
			t.Errorf("a masked field was logged: %s", h.Entry)
		}
	}
	if last := string(got[len(got)-2].Entry); !strings.Contains(last, "123456789012345678901234567890") {
		t.Errorf("a large number was not kept as written: %s", last)
	}
	// What cannot be decoded to be masked is logged by its digest.
	details := map[string]any{}
	a.maskedInto(details, "input", []byte(`{"password":"hunter2"`), nil)
	if _, whole := details["input"]; whole || details["input_unmaskable"] != true || details["input_sha256"] == nil {
		t.Errorf("an input the masks cannot be applied to: %v, want its digest only", details)
	}
}
