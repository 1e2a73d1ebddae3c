package delegation

import (
	"encoding/json"
	"slices"
	"testing"
)

// FuzzStatementOf feeds arbitrary signed payloads to the statement
// reader: no panic, and what it reads is what the payload says (it
// re-reads its own encoding to the same statement).
func FuzzStatementOf(f *testing.F) {
	st := Statement{Delegator: "spiffe://a/agent/x", Delegatee: "spiffe://b/agent/y", Principal: "p", Scopes: []string{"s", "t"}, Parent: "d1", ParentIssuer: "spiffe://a"}
	f.Add(st.bytes())
	for _, s := range []string{`{}`, `[]`, `{"scopes":[1]}`, `{"delegator":"a","delegator":"b"}`, `{"scopes":null}`, `{"x":{}}`, `{"purpose":"\ud800"}`, `{} x`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := statementOf(payload)
		if err != nil {
			return
		}
		if len(got.Scopes) == 0 {
			return // no statement of a hop has no scope (and this encoding writes none as null)
		}
		again, err := statementOf(got.bytes())
		if err != nil {
			t.Fatalf("its own encoding of %q does not read back: %v", payload, err)
		}
		a, _ := json.Marshal(again)
		b, _ := json.Marshal(Statement{Delegator: got.Delegator, Delegatee: got.Delegatee, Principal: got.Principal, Scopes: slices.Sorted(slices.Values(got.Scopes)),
			Parent: got.Parent, ParentIssuer: got.ParentIssuer, Purpose: got.Purpose})
		if string(a) != string(b) {
			t.Fatalf("%q read as %s, its encoding back as %s", payload, b, a)
		}
	})
}
