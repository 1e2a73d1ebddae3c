package audit

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/logtest"
)

// A store that cannot be written (a full disk) fails every commit until
// there is room again. The log says so once, then at most once per
// failureLogEvery while it goes on, and once when commits succeed again:
// not once per refused append.
func TestCommitFailuresLoggedOnce(t *testing.T) {
	for _, tc := range []struct {
		every      time.Duration
		wantErrors int // of the 20 failed commits
		wantAgain  int // of a failure after the recovery
	}{
		{time.Hour, 1, 1},
		{0, 20, 1},
	} {
		t.Run(tc.every.String(), func(t *testing.T) {
			defer func(d time.Duration) { failureLogEvery = d }(failureLogEvery)
			failureLogEvery = tc.every
			s, _ := tempStore(t)
			fs := &faultStore{Store: s}
			var logs logtest.Buffer
			cfg := testConfig(fs)
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			l := start(t, cfg)

			fs.setPlan(func() fault { return failBefore })
			for i := range 20 {
				if _, err := l.Append(t.Context(), testEntry(i, 10)); !errors.Is(err, errInjected) {
					t.Fatalf("Append %d on a failing store = %v, want the store's error", i, err)
				}
			}
			if got := strings.Count(logs.String(), "level=ERROR"); got != tc.wantErrors {
				t.Errorf("20 failed commits logged %d errors, want %d:\n%s", got, tc.wantErrors, logs.String())
			}
			fs.setPlan(nil)
			if _, err := l.Append(t.Context(), testEntry(20, 10)); err != nil {
				t.Fatalf("Append once the store is writable = %v, want nil", err)
			}
			if got := strings.Count(logs.String(), `msg="audit: commits succeed again" failed_commits=20`); got != 1 {
				t.Errorf("recovery logged %d times, want once:\n%s", got, logs.String())
			}
			// A new run of failures is said again.
			fs.once(failBefore)
			if _, err := l.Append(t.Context(), testEntry(21, 10)); !errors.Is(err, errInjected) {
				t.Fatalf("Append on a failing store = %v, want the store's error", err)
			}
			if got := strings.Count(logs.String(), "level=ERROR"); got != tc.wantErrors+tc.wantAgain {
				t.Errorf("after a new failure, %d errors logged, want %d:\n%s", got, tc.wantErrors+tc.wantAgain, logs.String())
			}
		})
	}
}
