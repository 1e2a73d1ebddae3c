package api

import (
	"testing"

	"mandate.dev/mandate/policy"
)

// FuzzDataInput feeds arbitrary bodies to the Data API's input decoder:
// it never panics, and what it accepts the policy engine can take.
func FuzzDataInput(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `{"input": null}`, `{"input": {"a": [1, 2.5, "x", true, null]}}`, `{"input": 1e400}`,
		`{"input": "\ud800"}`, "{\"input\": \"\xff\"}", `{"input": [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]}`, `{"input": {}, "other": 1}`,
		`{"input": {"a": 1}} trailing`, `[`, `{"input": {"k": "v", "k": "w"}}`, `"just a string"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := inputOfBody(body)
		if err != nil || in == nil {
			return
		}
		if _, err := policy.ParseInput(in); err != nil {
			t.Fatalf("accepted input %q that the engine cannot parse: %v", in, err)
		}
	})
}
