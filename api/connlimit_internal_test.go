package api

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// At the limit the connection idle the longest is closed for a new one:
// idle the longest since its last request, not since it was opened.
func TestConnLimitClosesTheLongestIdle(t *testing.T) {
	m := newMetrics()
	l := newConnLimit(2, slog.New(slog.DiscardHandler), m)
	early, earlyPeer := net.Pipe()
	late, latePeer := net.Pipe()
	t.Cleanup(func() { early.Close(); late.Close() })
	for range 2 {
		if !l.admit() {
			t.Fatal("a connection under the limit was refused")
		}
	}
	l.state(early, http.StateIdle)
	l.state(late, http.StateIdle)
	l.state(early, http.StateActive) // a request on the first...
	l.state(early, http.StateIdle)   // ...answered: late is now idle the longest
	if !l.admit() {
		t.Fatal("a connection at the limit, with two idle, was refused")
	}
	if _, err := latePeer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("the connection idle the longest: read on its peer = %v, want it closed (EOF)", err)
	}
	go func() { _, _ = early.Write([]byte("x")) }()
	if _, err := earlyPeer.Read(make([]byte, 1)); err != nil {
		t.Errorf("the connection idle since its last request was closed: %v", err)
	}
	// None idle now (early busy): the next is refused, and counted.
	l.state(early, http.StateActive)
	if l.admit() {
		t.Error("a connection at the limit, with none idle, was taken")
	}
	if got := testutil.ToFloat64(m.connsShed.WithLabelValues("idle_closed")); got != 1 {
		t.Errorf("idle_closed = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.connsShed.WithLabelValues("refused")); got != 1 {
		t.Errorf("refused = %v, want 1", got)
	}
}
