package authority

import (
	"errors"
	"strings"
	"testing"

	"mandate.dev/mandate/audit"
)

// An entry the log refuses as too large with the decision's input is
// recorded with the input left out, and says so; one too large even so
// is refused as it is (the caller says why).
func TestRecordOmittingInput(t *testing.T) {
	a, _ := runAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	big := strings.Repeat(`"`, audit.MaxEntrySize/2)
	decision := map[string]any{"allow": true, "input": map[string]any{"scopes": []string{big}}}
	rc, err := a.recordOmittingInput(ctx, event{typ: "test.issued", subject: "x", details: map[string]any{"decision": decision}}, decision, nil)
	if err != nil {
		t.Fatalf("an entry too large with its decision's input: %v, want it recorded without", err)
	}
	got, err := a.ReadAuditEntry(ctx, admin, rc.Index, 0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := audit.Decode(got.EntryB64)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(e.Details); !strings.Contains(s, `"input_omitted":"`+omittedInput+`"`) || strings.Contains(s, `"input":`) {
		t.Errorf("the entry's details: %.200s, want the input omitted, and said so", s)
	}
	small := map[string]any{"allow": true, "input": map[string]any{}}
	_, err = a.recordOmittingInput(ctx, event{typ: "test.issued", subject: "x", details: map[string]any{"decision": small, "other": big}}, small, nil)
	if !errors.Is(err, audit.ErrInvalidEntry) {
		t.Errorf("an entry too large without its decision's input: %v, want audit.ErrInvalidEntry", err)
	}
}
