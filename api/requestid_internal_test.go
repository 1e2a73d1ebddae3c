package api

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// A line logged with a request's context says its request_id; one logged
// outside a request says none.
func TestLogHandlerSaysTheRequestID(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(LogHandler(slog.NewTextHandler(&out, nil))).With("component", "api")
	log.InfoContext(context.WithValue(context.Background(), requestIDKey{}, "edge-42"), "inside")
	log.InfoContext(context.Background(), "outside")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "request_id=edge-42") || !strings.Contains(lines[0], "component=api") || strings.Contains(lines[1], "request_id") {
		t.Errorf("logged:\n%s\nwant request_id=edge-42 on the first line only", out.String())
	}
}
