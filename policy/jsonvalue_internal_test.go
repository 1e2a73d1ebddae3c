package policy

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

// jsonValue gives back what a round trip through JSON gives back, for
// what is made of JSON values (copied, not encoded) and for what is
// not: a string that is not valid UTF-8 (JSON changes it), numbers of
// other types, structs, typed nils.
func TestJSONValueIsTheRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value any
	}{
		{"nil", nil},
		{"bools", map[string]any{"t": true, "f": false}},
		{"strings", []any{"", "spiffe://org-a.example/agent/a", "<&> \u2028 é 🙂"}},
		{"a string not valid UTF-8", map[string]any{"a": "ok", "b": "\xff\xfe bad"}},
		{"a key not valid UTF-8", map[string]any{"\xffkey": "v"}},
		{"a []string not valid UTF-8", []string{"ok", "\xc3"}},
		{"float64s", []any{0.0, math.Copysign(0, -1), 1.5, 1e300, -2.5e-300, float64(1 << 60)}},
		{"ints", map[string]any{"i": 7, "big": int64(1<<62 + 1), "u": uint8(200)}},
		{"a json.Number", json.Number("12.50")},
		{"nil and empty []string", map[string]any{"nil": []string(nil), "empty": []string{}}},
		{"nil and empty maps and slices", []any{map[string]any(nil), map[string]any{}, []any(nil), []any{}}},
		{"an agent's document", map[string]any{"spiffe_id": "spiffe://org-a.example/agent/a", "scopes": []string{"calendar:read"},
			"selectors": []string{}, "node_ids": []string{"spiffe://org-a.example/node/n1"}, "require_hardware_attestation": false,
			"accountability": map[string]any{"operator": "org-a", "model_provider": "p", "model": "m", "responsible_party": "alice"}}},
		{"a struct and a time inside a map", map[string]any{"at": time.Unix(1, 0).UTC(), "s": struct{ A int }{1}, "ok": "x"}},
		{"a map of another type", map[string]string{"a": "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr := roundTrip(tc.value)
			got, err := jsonValue(tc.value)
			if (err != nil) != (wantErr != nil) || !reflect.DeepEqual(got, want) {
				t.Errorf("jsonValue = %#v, %v; the round trip gives %#v, %v", got, err, want, wantErr)
			}
		})
	}
	for _, bad := range []any{math.NaN(), math.Inf(1), map[string]any{"f": func() {}}} {
		if _, err := jsonValue(bad); err == nil {
			t.Errorf("jsonValue(%#v) = nil error; JSON has no such value", bad)
		}
	}
}

// What is made of JSON values is copied, not encoded: an agent's
// document costs its maps and slices, not an encoding and a decoding, and the copy shares no map or slice with
// what it was made from.
func TestJSONValueCopiesWithoutEncoding(t *testing.T) {
	scopes := []string{"calendar:read"}
	acc := map[string]any{"operator": "org-a", "model_provider": "p", "model": "m", "responsible_party": "alice"}
	doc := map[string]any{"spiffe_id": "spiffe://org-a.example/agent/a", "scopes": scopes, "selectors": []string{},
		"node_ids": []string{"spiffe://org-a.example/node/n1"}, "require_hardware_attestation": false, "accountability": acc}
	// Each map copied takes a few allocations, each slice two (its
	// array, and its header as a value of the map); the round trip, 58.
	if n := testing.AllocsPerRun(100, func() { _, _ = jsonValue(doc) }); n > 20 {
		t.Errorf("jsonValue of an agent's document made %.0f allocations, want at most 20: two maps and three slices copied", n)
	}
	v, err := jsonValue(doc)
	if err != nil {
		t.Fatal(err)
	}
	acc["operator"], scopes[0] = "changed", "changed"
	got := v.(map[string]any)
	if got["accountability"].(map[string]any)["operator"] != "org-a" || got["scopes"].([]any)[0] != "calendar:read" {
		t.Errorf("the value shares a map or a slice with what it was made from: %v", got)
	}
}

// Past the depth at which encoding/json looks for cycles, jsonValue is
// the round trip itself: a document nested deeper than a decoding
// accepts is refused, as the round trip refuses it, and one that holds
// itself is an error, not a recursion without end.
func TestJSONValueOfDeepOrCyclicDocuments(t *testing.T) {
	deep := map[string]any{}
	for range 10001 {
		deep = map[string]any{"a": deep}
	}
	if _, err := roundTrip(deep); err == nil {
		t.Fatal("the round trip accepts a document nested 10001 deep")
	}
	if _, err := jsonValue(deep); err == nil {
		t.Error("jsonValue accepts a document nested 10001 deep; the round trip refuses it")
	}
	cyclic := map[string]any{}
	cyclic["self"] = []any{cyclic}
	if _, err := jsonValue(cyclic); err == nil {
		t.Error("jsonValue accepts a document that holds itself")
	}
}
