package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The log line said once the authority serves names its listeners, its
// trust domain and its data directory (absolute, whatever the flag
// gave): an operator reading only the server log knows where the
// authority keeps its state and where it answers.
func TestServingLogLineSaysWhereAndWhat(t *testing.T) {
	for _, tc := range []struct {
		name string
		web  bool
	}{
		{"API listener only", false},
		{"with the https_web bundle listener", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			args := []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", "data", "--trust-domain", "org-a.example"}
			if tc.web {
				certFile, keyFile, _ := webCert(t, dir)
				conf := filepath.Join(dir, "mandate.yaml")
				yaml := fmt.Sprintf("federation:\n  web_listen: 127.0.0.1:0\n  web_cert_file: %s\n  web_key_file: %s\n", certFile, keyFile)
				if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", conf)
			}
			ctx, cancel := context.WithCancel(context.Background())
			out, logs := &syncBuffer{}, &syncBuffer{}
			done := make(chan error, 1)
			go func() { done <- run(ctx, args, out, logs) }()
			defer func() {
				cancel()
				if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("serve stopped with %v; log:\n%s", err, logs)
				}
			}()
			line := servingLine(t, logs, done)
			want := map[string]string{
				"listen":       `127\.0\.0\.1:[1-9][0-9]*`,
				"trust_domain": `org-a\.example`,
				"data_dir":     regexp.QuoteMeta(filepath.Join(dir, "data")),
				"version":      `\S+`,
			}
			if tc.web {
				want["web_listen"] = `127\.0\.0\.1:[1-9][0-9]*`
			} else if strings.Contains(line, "web_listen=") {
				t.Errorf("the serving line names a web_listen none was configured for: %s", line)
			}
			for key, value := range want {
				if !regexp.MustCompile(`(^| )` + key + `=` + value + `( |$)`).MatchString(line) {
					t.Errorf("the serving line has no %s=%s: %s", key, value, line)
				}
			}
		})
	}
}

// servingLine waits for the server log's "serving" line and returns it.
func servingLine(t *testing.T, logs *syncBuffer, done chan error) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, " msg=serving ") {
				return l
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v; log:\n%s", err, logs)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("serve did not start; log:\n%s", logs)
	return ""
}
