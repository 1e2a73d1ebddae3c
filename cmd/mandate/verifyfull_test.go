package main

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// audit verify --full reads the log in its entry bundles, a request for
// 256 entries, not a request (and an inclusion proof) per entry: on a
// log of hundreds of thousands of entries, one per entry takes minutes.
func TestVerifyFullReadsEntryBundles(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", "mandate-data"}, &out, &errOut)
	}()
	url := waitServing(t, &out, done)
	defer func() { cancel(); <-done }()
	admin := adminClient(t, url, "mandate-data")
	for range 300 { // one full bundle and a partial one
		if _, err := admin.CreateJoinToken(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	o, err := cli(t, url, dir, "audit", "verify", "--full")
	if err != nil || !strings.Contains(o, "match the signed root") {
		t.Fatalf("audit verify --full = %q, %v", o, err)
	}
	size, err := strconv.Atoi(regexp.MustCompile(`all (\d+) entries`).FindStringSubmatch(o)[1])
	if err != nil || size <= 256 || size >= 512 {
		t.Fatalf("log size %d (%v), want 257 to 511", size, err)
	}
	metrics, err := admin.GetRaw(ctx, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	count := func(route string) int {
		m := regexp.MustCompile(`request_duration_seconds_count\{route="` + regexp.QuoteMeta(route) + `"\} (\d+)`).FindSubmatch(metrics)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	if n := count("GET /v1/audit/entries/{index}"); n != 0 {
		t.Errorf("audit verify --full asked for %d entries one at a time, want none (the log of %d is in 2 entry bundles)", n, size)
	}
	if n := count("GET /tile/"); n != 2 {
		t.Errorf("audit verify --full asked for %d tiles, want 2 entry bundles", n)
	}
}
