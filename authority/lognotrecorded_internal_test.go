package authority

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"mandate.dev/mandate/logtest"
	"mandate.dev/mandate/store"
)

// An entry that could not be recorded is an error in the log, except on a
// data file that cannot be written (a full disk): the audit log says that
// once for a run of failed commits, and every refused request saying it
// again would flood the log.
func TestNotRecordedLogged(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("audit: append: store/bolt: update: %w: write mandate.db: no space left on device", store.ErrUnwritable), "level=DEBUG"},
		{errors.New("audit: append: signer failed"), "level=ERROR"},
	} {
		var logs logtest.Buffer
		a := &Authority{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		a.logNotRecorded(t.Context(), "audit a refused join", tc.err, "event", "x")
		if got := logs.String(); !strings.Contains(got, tc.want) || !strings.Contains(got, `msg="audit a refused join" event=x err=`) {
			t.Errorf("%v: logged %q, want %s with the message, its attributes and the error", tc.err, got, tc.want)
		}
	}
}
