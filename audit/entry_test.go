package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTime  = time.Date(2026, 3, 4, 5, 6, 7, 8009, time.UTC)
	testAgent = spiffeid.RequireFromString("spiffe://org-a.example/agent/planner")
)

// fullEntry sets every field.
func fullEntry() Entry {
	return Entry{
		Time:    testTime.In(time.FixedZone("CET", 3600)),
		Type:    "delegation.granted",
		Actor:   "spiffe://org-a.example/agent/planner",
		Subject: "spiffe://org-b.example/agent/booker",
		Accountable: []Party{{
			SPIFFEID:         testAgent,
			Operator:         "travel-team",
			ModelProvider:    "Example AI",
			Model:            "model-7",
			ResponsibleParty: "alice@org-a.example",
		}, {SPIFFEID: spiffeid.RequireFromString("spiffe://org-b.example/agent/booker")}},
		DecisionID:     "d-1",
		PolicyRevision: "r-2",
		DelegationID:   "del-3",
		Details:        json.RawMessage(` { "z": [1, 2.50, {"b": true, "a": null}], "a": "x<y>&\u2028\n\u0001é" } `),
	}
}

const fullEntryJSON = `{"v":1,"time":"2026-03-04T05:06:07.000008009Z","type":"delegation.granted",` +
	`"actor":"spiffe://org-a.example/agent/planner","subject":"spiffe://org-b.example/agent/booker",` +
	`"accountable":[{"spiffe_id":"spiffe://org-a.example/agent/planner","operator":"travel-team",` +
	`"model_provider":"Example AI","model":"model-7","responsible_party":"alice@org-a.example"},` +
	`{"spiffe_id":"spiffe://org-b.example/agent/booker"}],` +
	`"decision_id":"d-1","policy_revision":"r-2","delegation_id":"del-3",` +
	`"details":{"a":"x<y>&` + "\u2028" + `\n\u0001é","z":[1,2.50,{"a":null,"b":true}]}}`

func minimalEntry() Entry {
	return Entry{Time: testTime, Type: "ca.rotated", Actor: ActorSystem}
}

const minimalEntryJSON = `{"v":1,"time":"2026-03-04T05:06:07.000008009Z","type":"ca.rotated","actor":"system"}`

func TestEncodeGolden(t *testing.T) {
	tests := []struct {
		name string
		e    Entry
		want string
	}{
		{"full", fullEntry(), fullEntryJSON},
		{"minimal", minimalEntry(), minimalEntryJSON},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Encode(tc.e)
			if err != nil {
				t.Fatalf("Encode() = %v, want nil", err)
			}
			if string(got) != tc.want {
				t.Errorf("Encode() =\n%s\nwant\n%s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Errorf("Encode() = %s, not valid JSON", got)
			}
			back, err := Decode(got)
			if err != nil {
				t.Fatalf("Decode(Encode()) = %v, want nil", err)
			}
			again, err := Encode(back)
			if err != nil || !bytes.Equal(again, got) {
				t.Errorf("Encode(Decode(b)) = %s, %v, want %s, nil", again, err, got)
			}
			if !back.Time.Equal(tc.e.Time) || back.Time.Location() != time.UTC {
				t.Errorf("Decode().Time = %v, want %v in UTC", back.Time, tc.e.Time)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Entry)
	}{
		{"zero time", func(e *Entry) { e.Time = time.Time{} }},
		{"year 10000", func(e *Entry) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"no type", func(e *Entry) { e.Type = "" }},
		{"upper-case type", func(e *Entry) { e.Type = "Node.banned" }},
		{"type with empty word", func(e *Entry) { e.Type = "node..banned" }},
		{"type word starting with digit", func(e *Entry) { e.Type = "node.1banned" }},
		{"type too long", func(e *Entry) { e.Type = strings.Repeat("a", MaxTypeLen+1) }},
		{"no actor", func(e *Entry) { e.Actor = "" }},
		{"actor not a SPIFFE ID", func(e *Entry) { e.Actor = "alice" }},
		{"actor upper-case trust domain", func(e *Entry) { e.Actor = "spiffe://ORG.example/x" }},
		{"party without SPIFFE ID", func(e *Entry) { e.Accountable = []Party{{Operator: "x"}} }},
		{"invalid UTF-8 subject", func(e *Entry) { e.Subject = "\xff" }},
		{"invalid UTF-8 party field", func(e *Entry) { e.Accountable = []Party{{SPIFFEID: testAgent, Model: "\xfe"}} }},
		{"details array", func(e *Entry) { e.Details = json.RawMessage(`[1]`) }},
		{"details null", func(e *Entry) { e.Details = json.RawMessage(`null`) }},
		{"details malformed", func(e *Entry) { e.Details = json.RawMessage(`{"a":`) }},
		{"details trailing data", func(e *Entry) { e.Details = json.RawMessage(`{} {}`) }},
		{"details invalid UTF-8", func(e *Entry) { e.Details = json.RawMessage("{\"a\":\"\xff\"}") }},
		{"too large", func(e *Entry) { e.Subject = strings.Repeat("s", MaxEntrySize) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := fullEntry()
			tc.modify(&e)
			if b, err := Encode(e); !errors.Is(err, ErrInvalidEntry) {
				t.Errorf("Encode() = %q, %v, want %v", b, err, ErrInvalidEntry)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	replace := func(old, new string) string { return strings.Replace(minimalEntryJSON, old, new, 1) }
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ``},
		{"not an object", `[]`},
		{"version 2", replace(`"v":1`, `"v":2`)},
		{"version missing", replace(`"v":1,`, ``)},
		{"unknown field", replace(`}`, `,"extra":1}`)},
		{"upper-case field name", replace(`"type"`, `"Type"`)},
		{"whitespace", replace(`,"type"`, `, "type"`)},
		{"trailing newline", minimalEntryJSON + "\n"},
		{"trailing data", minimalEntryJSON + `{}`},
		{"fields reordered", `{"v":1,"type":"ca.rotated","time":"2026-03-04T05:06:07.000008009Z","actor":"system"}`},
		{"duplicate field", replace(`}`, `,"actor":"system"}`)},
		{"escaped character", replace(`"system"`, `"\u0073ystem"`)},
		{"time without nanoseconds", replace(`07.000008009Z`, `07Z`)},
		{"time with offset", replace(`05:06:07.000008009Z`, `06:06:07.000008009+01:00`)},
		{"empty subject present", replace(`}`, `,"subject":""}`)},
		{"empty accountable present", replace(`}`, `,"accountable":[]}`)},
		{"null details", replace(`}`, `,"details":null}`)},
		{"details not canonical", replace(`}`, `,"details":{"b":1,"a":2}}`)},
		{"details HTML-escaped", replace(`}`, `,"details":{"a":"\u003c"}}`)},
		{"invalid party SPIFFE ID", replace(`}`, `,"accountable":[{"spiffe_id":"nope"}]}`)},
		{"invalid UTF-8", replace(`"system"`, "\"sys\xfftem\"")},
		{"too large", replace(`}`, `,"subject":"`+strings.Repeat("s", MaxEntrySize)+`"}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if e, err := Decode([]byte(tc.in)); !errors.Is(err, ErrInvalidEntry) {
				t.Errorf("Decode(%.80q) = %+v, %v, want %v", tc.in, e, err, ErrInvalidEntry)
			}
		})
	}
}

func TestDetailsCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{}`, `{}`},
		{`{"b":{"d":1,"c":[]},"a":"\u00e9\/"}`, `{"a":"é/","b":{"c":[],"d":1}}`},
		{`{"a":1,"a":2}`, `{"a":2}`},
		{`{"n":12345678901234567890123,"f":-1.5e+10}`, `{"f":-1.5e+10,"n":12345678901234567890123}`},
		{`{"ctl":"\u001f\t\b\f\r\"\\"}`, `{"ctl":"\u001f\t\b\f\r\"\\"}`},
		{`{"é":1,"z":2,"Z":3}`, `{"Z":3,"z":2,"é":1}`},
	}
	for _, tc := range tests {
		e := minimalEntry()
		e.Details = json.RawMessage(tc.in)
		b, err := Encode(e)
		if err != nil {
			t.Errorf("Encode(details %s) = %v, want nil", tc.in, err)
			continue
		}
		got, err := Decode(b)
		if err != nil || string(got.Details) != tc.want {
			t.Errorf("Decode(Encode(details %s)).Details = %s, %v, want %s, nil", tc.in, got.Details, err, tc.want)
		}
	}
}

// FuzzDecode checks that Decode never panics, refuses only with
// ErrInvalidEntry, and that Encode(Decode(b)) == b for every b it accepts.
func FuzzDecode(f *testing.F) {
	big := minimalEntry()
	big.Details = json.RawMessage(`{"pad":"` + strings.Repeat("x", 1000) + `"}`)
	bigJSON, _ := Encode(big)
	for _, s := range []string{
		fullEntryJSON,
		minimalEntryJSON,
		string(bigJSON),
		strings.Replace(minimalEntryJSON, `"v":1`, `"v":2`, 1),
		strings.Replace(minimalEntryJSON, `}`, `,"details":{"a":[1,{"b":"\u0000"}],"c":1e3}}`, 1),
		strings.Replace(minimalEntryJSON, `}`, `,"details":{"b":1,"a":2}}`, 1),
		strings.Replace(minimalEntryJSON, `"system"`, `"\u0073ystem"`, 1),
		`{"v":1}`,
		`{}`,
		`null`,
		`{"v":1,"time":"0001-01-01T00:00:00.000000000Z","type":"a","actor":"system"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("Decode(%q) = %v, want an error matching %v", b, err, ErrInvalidEntry)
			}
			return
		}
		got, err := Encode(e)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)) = %v, want nil", b, err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("Encode(Decode(%q)) = %q, want the input", b, got)
		}
	})
}
