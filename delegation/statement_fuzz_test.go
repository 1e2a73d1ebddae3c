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
	st.NotAfter = 4102444800
	f.Add(st.bytes())
	st.Cnf = &Confirmation{X5tS256: "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}
	f.Add(st.bytes())
	for _, s := range []string{`{}`, `[]`, `{"not_after":1e3}`, `{"not_after":-0}`, `{"not_after":12345678901234567890}`, `{"scopes":[1]}`, `{"delegator":"a","delegator":"b"}`, `{"scopes":null}`, `{"x":{}}`, `{"purpose":"\ud800"}`, `{} x`, `{`} {
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
			Parent: got.Parent, ParentIssuer: got.ParentIssuer, Purpose: got.Purpose, NotAfter: got.NotAfter, Cnf: got.Cnf})
		if string(a) != string(b) {
			t.Fatalf("%q read as %s, its encoding back as %s", payload, b, a)
		}
	})
}

// TestStatementTextOnly: strings of a signed statement are text: an
// unpaired surrogate, invalid UTF-8 or U+FFFD (to which both read) is
// refused, so that no two signed payloads read as one statement.
func TestStatementTextOnly(t *testing.T) {
	for _, p := range []string{`{"principal":"a\udc00"}`, `{"principal":"a\ud800b"}`, "{\"principal\":\"a\xffb\"}", `{"principal":"a\ufffd"}`, `{"scopes":["\udfff"]}`} {
		if _, err := statementOf([]byte(p)); err == nil {
			t.Errorf("statementOf(%q) accepted", p)
		}
	}
	if _, err := statementOf([]byte(`{"principal":"a\u00e9\ud83d\ude00"}`)); err != nil {
		t.Errorf("a valid surrogate pair refused: %v", err)
	}
}
