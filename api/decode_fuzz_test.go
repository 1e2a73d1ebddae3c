package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fuzzBody is a request body with known fields of the usual kinds.
type fuzzBody struct {
	Name   string            `json:"name"`
	Count  int               `json:"count"`
	Ratio  float64           `json:"ratio"`
	Flag   bool              `json:"flag"`
	Tags   []string          `json:"tags"`
	Labels map[string]string `json:"labels"`
	Nested *fuzzNested       `json:"nested"`
}

type fuzzNested struct {
	ID    string `json:"id"`
	Depth int    `json:"depth"`
}

var (
	fuzzBodyFields   = []string{"name", "count", "ratio", "flag", "tags", "labels", "nested"}
	fuzzNestedFields = []string{"id", "depth"}
)

// decodeStrictSeeds are the seed inputs with the outcome DecodeStrict must
// give for each: nil (accepted), errBadJSON or errUnknownField.
var decodeStrictSeeds = []struct {
	in   string
	want error
}{
	{`{}`, nil},
	{` {"name":"a"} `, nil},
	{"\n\t{\"name\":\"a\",\"count\":3}\r\n", nil},
	{`{"name":"a","count":1,"ratio":0.5,"flag":true,"tags":["x","y"],"labels":{"k":"v"},"nested":{"id":"n","depth":2}}`, nil},
	{`{"tags":null,"labels":null,"nested":null}`, nil},
	{`{"name":"dup","name":"last"}`, errBadJSON},
	{`{"labels":{"k":"a","k":"b"}}`, errBadJSON},
	{`{"NAME":"a"}`, errUnknownField},
	{`{"nested":{"ID":"n"}}`, errUnknownField},
	{`{"na\u006de":"a"}`, nil},
	{`{"unknown":1}`, errUnknownField},
	{`{"name":"a","extra":true}`, errUnknownField},
	{`{"nested":{"id":"n","bogus":1}}`, errUnknownField},
	{`{"name":"a"} trailing`, errBadJSON},
	{`{"name":"a"}{"name":"b"}`, errBadJSON},
	{`{"name":"a"}]`, errBadJSON},
	{`{"name":"a"}}`, errBadJSON},
	{`{"name":"a"},`, errBadJSON},
	{`{"name":"a"} 1`, errBadJSON},
	{`[]`, errBadJSON},
	{`[{"name":"a"}]`, errBadJSON},
	{`"string"`, errBadJSON},
	{`null`, errBadJSON},
	{`42`, errBadJSON},
	{``, errBadJSON},
	{`   `, errBadJSON},
	{`{`, errBadJSON},
	{`{"name":`, errBadJSON},
	{`{"name":1}`, errBadJSON},
	{`{"count":"1"}`, errBadJSON},
	{`{"count":1.5}`, errBadJSON},
	{`{"tags":"x"}`, errBadJSON},
	{`{'name':'a'}`, errBadJSON},
	{"\xef\xbb\xbf{}", errBadJSON},
	{`{"nested":` + strings.Repeat(`{"id":`, 20000) + `"x"` + strings.Repeat(`}`, 20001), errBadJSON},
	{`{"tags":` + strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000) + `}`, errBadJSON},
}

func TestDecodeStrictSeeds(t *testing.T) {
	for _, tt := range decodeStrictSeeds {
		var v fuzzBody
		err := DecodeStrict([]byte(tt.in), &v)
		if tt.want == nil && err != nil {
			t.Errorf("DecodeStrict(%.60q) = %v, want nil", tt.in, err)
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("DecodeStrict(%.60q) = %v, want %v", tt.in, err, tt.want)
		}
	}
}

// FuzzDecodeStrict checks that DecodeStrict never panics, refuses only with
// errBadJSON or errUnknownField, and accepts only a single JSON object
// whose members are all known fields, decoded as encoding/json would.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range decodeStrictSeeds {
		f.Add([]byte(s.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		var v fuzzBody
		err := DecodeStrict(in, &v)
		if !bytes.Equal(in, orig) {
			t.Fatal("DecodeStrict modified its input")
		}
		if err != nil {
			if !errors.Is(err, errBadJSON) && !errors.Is(err, errUnknownField) {
				t.Fatalf("DecodeStrict error %v is neither errBadJSON nor errUnknownField", err)
			}
			return
		}

		trimmed := bytes.TrimSpace(in)
		if len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("DecodeStrict accepted %q, which does not start with '{'", in)
		}
		if !json.Valid(trimmed) {
			t.Fatalf("DecodeStrict accepted %q, which is not one JSON value", in)
		}

		// Every member, at the top and in "nested", is a known field.
		var members map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &members); err != nil {
			t.Fatalf("accepted input is not an object: %v", err)
		}
		for k, raw := range members {
			if !knownField(fuzzBodyFields, k) {
				t.Fatalf("DecodeStrict accepted unknown field %q", k)
			}
			if !knownField([]string{"nested"}, k) || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				continue
			}
			var inner map[string]json.RawMessage
			if err := json.Unmarshal(raw, &inner); err != nil {
				t.Fatalf("accepted nested value %s is not an object: %v", raw, err)
			}
			for ik := range inner {
				if !knownField(fuzzNestedFields, ik) {
					t.Fatalf("DecodeStrict accepted unknown nested field %q", ik)
				}
			}
		}

		// The result is what lenient decoding gives, and it survives a
		// round trip through Marshal and DecodeStrict.
		var lenient fuzzBody
		if err := json.Unmarshal(trimmed, &lenient); err != nil {
			t.Fatalf("json.Unmarshal refused accepted input: %v", err)
		}
		if !reflect.DeepEqual(v, lenient) {
			t.Fatalf("DecodeStrict gave %+v, json.Unmarshal %+v", v, lenient)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var again fuzzBody
		if err := DecodeStrict(b, &again); err != nil {
			t.Fatalf("DecodeStrict refused re-encoded %s: %v", b, err)
		}
		if !reflect.DeepEqual(v, again) {
			t.Fatalf("round trip changed %+v into %+v", v, again)
		}
	})
}

// knownField reports whether key is exactly one of fields.
func knownField(fields []string, key string) bool {
	return slices.Contains(fields, key)
}

// An unknown field is named once, after what it is.
func TestDecodeStrictNamesTheUnknownField(t *testing.T) {
	var v fuzzBody
	if err := DecodeStrict([]byte(`{"name":"a","bogus":1}`), &v); err == nil || err.Error() != `api: unknown field "bogus"` {
		t.Fatalf("DecodeStrict with an unknown field = %v, want api: unknown field \"bogus\"", err)
	}
}
