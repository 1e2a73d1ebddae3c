package authority

import (
	"log/slog"
	"regexp"
	"testing"

	"mandate.dev/mandate/logtest"
)

// A start on an existing store says, before the check of every page (a
// large store's takes seconds, more after a reboot), that it checks the
// store and how large it is, and then that it is done and how long it
// took: an operator waiting for the server to serve sees what it does.
// A new store, made empty, is not checked at length and not mentioned.
func TestStartLogsTheStoreCheck(t *testing.T) {
	cfg := Config{TrustDomain: "org-a.example", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	cfg.SetDefaults()
	start := func() string {
		var logs logtest.Buffer
		a, err := New(t.Context(), cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		return logs.String()
	}
	checking := regexp.MustCompile(`msg="checking the store: every page is read once" path=\S+mandate\.db bytes=[1-9]\d*\n`)
	checked := regexp.MustCompile(`msg="store checked" bytes=[1-9]\d* took=\S+\n`)
	if first := start(); checking.MatchString(first) || checked.MatchString(first) {
		t.Errorf("the first start, on a new store, logged its check:\n%s", first)
	}
	logs := start()
	at, done := checking.FindStringIndex(logs), checked.FindStringIndex(logs)
	if at == nil || done == nil || at[0] > done[0] {
		t.Errorf("a start on a stored store logged:\n%s\nwant %q, then %q", logs, checking, checked)
	}
}
