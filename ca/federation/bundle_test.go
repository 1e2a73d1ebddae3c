package federation

import (
	"bytes"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

// A bundle is encoded with its keys member always present, "keys": []
// when it has no authorities (SPIFFE Trust Domain and Bundle §4.1.3), so
// that a reader, go-spiffe's among them, can read it back.
func TestMarshalBundleKeepsKeys(t *testing.T) {
	caB := newTestCA(t, tdB)
	tests := []struct {
		name string
		b    *spiffebundle.Bundle
	}{
		{"without authorities", bundleOf(tdB, 3, 0)},
		{"with an authority", bundleOf(tdB, 3, 0, caB)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := MarshalBundle(tt.b)
			if err != nil {
				t.Fatalf("MarshalBundle() = %v", err)
			}
			if bytes.Contains(doc, []byte(`"keys":null`)) {
				t.Fatalf("MarshalBundle() = %s, want keys present", doc)
			}
			got, err := spiffebundle.Parse(tdB, doc)
			if err != nil || !got.Equal(tt.b) {
				t.Fatalf("the encoding %s reads back as %v, %v; want the bundle", doc, got, err)
			}
		})
	}
}
