package authority

import (
	"errors"
	"strings"
	"testing"
)

// A spiffe_id that is refused is repeated only when it looks like an ID
// and is within an ID's bound: a secret sent in its place (a join token)
// is not, nor are megabytes of what a caller sent.
func TestParseIDRepeatsOnlyWhatLooksLikeAnID(t *testing.T) {
	for _, tc := range []struct {
		name, id string
		shown    bool
	}{
		{"a join token", "a3f9c2d17be04e5f8a6b9c0d1e2f3a4b", false},
		{"a token after a space", " spiffe-looking-secret", false},
		{"a long ID", "spiffe://org-a.example/agent/" + strings.Repeat("a", 20000) + "%", false},
		{"an ID with an escape", "spiffe://org-a.example/agent/%41", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseID(tc.id)
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("parseID = %v, want ErrInvalidRequest", err)
			}
			if shown := strings.Contains(err.Error(), strings.TrimSpace(tc.id)); shown != tc.shown {
				t.Errorf("parseID error %.300q repeats the ID: %v, want %v", err, shown, tc.shown)
			}
			if len(err.Error()) > 512 {
				t.Errorf("parseID error is %d bytes", len(err.Error()))
			}
		})
	}
}
