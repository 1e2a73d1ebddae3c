package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

// An answer the server cannot encode is its own fault: a 500 naming the
// request id, and the cause in the server's log under that id.
func TestUnencodableAnswerIsLogged(t *testing.T) {
	var out bytes.Buffer
	s := &Server{log: slog.New(LogHandler(slog.NewTextHandler(&out, nil))), metrics: newMetrics(), maxBody: 1 << 10}
	h := s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"x": make(chan int)})
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	id := rec.Header().Get("X-Request-Id")
	if rec.Code != http.StatusInternalServerError || id == "" || !strings.Contains(rec.Body.String(), "request_id="+id) {
		t.Fatalf("answer %d %s (request id %q): want a 500 naming its request id", rec.Code, rec.Body, id)
	}
	if log := out.String(); !strings.Contains(log, "answer not written") || !strings.Contains(log, "request_id="+id) || !strings.Contains(log, "chan") {
		t.Fatalf("logged:\n%s\nwant the cause, under the request id", log)
	}
}

// A handler's panic is answered 500 internal, naming the request id, and
// logged under that id with where it happened.
func TestPanicIsAnsweredAndLoggedWithItsStack(t *testing.T) {
	var out bytes.Buffer
	s := &Server{log: slog.New(LogHandler(slog.NewTextHandler(&out, nil))), metrics: newMetrics(), maxBody: 1 << 10, workTime: requestTimeout}
	h := s.middleware(http.HandlerFunc(panickingHandler))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	id := rec.Header().Get("X-Request-Id")
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "/internal") || !strings.Contains(rec.Body.String(), "request_id="+id) {
		t.Fatalf("answer %d %s: want 500 internal naming request id %q", rec.Code, rec.Body, id)
	}
	if log := out.String(); !strings.Contains(log, "panic in handler") || !strings.Contains(log, "request_id="+id) || !strings.Contains(log, "panickingHandler") {
		t.Fatalf("logged:\n%s\nwant the panic under the request id, with the function it happened in", log)
	}
}

func panickingHandler(http.ResponseWriter, *http.Request) {
	panic("a handler's bug")
}

// A handler that panics once its answer has begun (its status and part
// of its body sent) has the connection cut: its client sees the answer
// fail, not a shorter one that it would take as whole (and a cache might
// keep). The panic is logged all the same.
func TestPanicAfterTheAnswerBeganCutsIt(t *testing.T) {
	var out bytes.Buffer
	s := &Server{log: slog.New(LogHandler(slog.NewTextHandler(&out, nil))), metrics: newMetrics(), maxBody: 1 << 10, workTime: requestTimeout}
	h := s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 64<<10)) // more than net/http buffers: sent
		panicMidAnswer()
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/tile/0/000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("read an answer of %d bytes, whole, from a handler that panicked in the middle of it", len(b))
	}
	if log := out.String(); !strings.Contains(log, "panic in handler") || !strings.Contains(log, "panicMidAnswer") {
		t.Fatalf("logged:\n%s\nwant the panic, with the function it happened in", log)
	}
}

func panicMidAnswer() { panic("a handler's bug, mid-answer") }
