package api

import (
	"errors"
	"testing"

	"mandate.dev/mandate/authority"
)

// The problem types the authority's TPM refusal counts name
// (refusal_reasons) are those the API answers for the same errors.
func TestTPMRefusalTypesMatchProblems(t *testing.T) {
	for _, row := range problemTable {
		got := authority.TPMRefusalType(row.err)
		if got == "other" {
			continue
		}
		// The first row that matches the error is the API's answer.
		for _, first := range problemTable {
			if errors.Is(row.err, first.err) {
				if got != first.name {
					t.Errorf("%v: refusal type %q, problem type %q", row.err, got, first.name)
				}
				break
			}
		}
	}
	for _, row := range problemTable {
		if len(row.name) > 4 && row.name[:4] == "tpm-" && row.name != "tpm-too-many-challenges" && authority.TPMRefusalType(row.err) != row.name {
			t.Errorf("%s is not named by the authority's refusal counts", row.name)
		}
	}
}
