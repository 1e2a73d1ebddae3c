package api

import (
	"os"
	"strings"
	"testing"
)

// TestProblemTypesDocumented keeps docs/api.md §7 true: every problem type
// the server can answer has its row, in the order of problemTable.
func TestProblemTypesDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start, end := strings.Index(doc, "## 7. Problem types"), strings.Index(doc, "## 8.")
	if start < 0 || end < start {
		t.Fatal("docs/api.md has no §7")
	}
	sec := doc[start:end]
	last := -1
	seen := map[string]bool{}
	for _, k := range problemTable {
		if seen[k.name] {
			continue // a type several errors share has one row
		}
		seen[k.name] = true
		i := strings.Index(sec, "| `"+k.name+"` |")
		if i < 0 {
			t.Errorf("problem type %q is not in docs/api.md §7", k.name)
			continue
		}
		if i < last {
			t.Errorf("problem type %q is out of the order of problemTable in docs/api.md §7", k.name)
		}
		last = max(last, i)
	}
}
