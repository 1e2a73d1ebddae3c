package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// A search bounded --until the zero time would select no entry: it is
// refused before any call, not sent as a search without that bound (the
// client leaves a zero time out), which would list every entry.
func TestAuditSearchRefusesAZeroUntil(t *testing.T) {
	for _, tc := range []struct{ until, want string }{
		{"0001-01-01T00:00:00Z", "selects no entry"},
		{"0001-01-01T01:00:00+01:00", "selects no entry"},
		{"yesterday", "must be an RFC 3339 time"},
	} {
		f := &auditFlags{}
		f.q.until = tc.until
		// No client: a refused search asks nothing.
		err := auditSearch(context.Background(), f, nil, nil, nil, io.Discard)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("audit search --until %s = %v; want a usage error saying %q", tc.until, err, tc.want)
		}
	}
}
