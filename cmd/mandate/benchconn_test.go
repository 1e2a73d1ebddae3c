package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBenchConnBoundsAnswers: the load generator reads a bounded answer
// of the server it measures. A header that never ends fails the request
// once it is longer than 64 KiB (the generator does not read, and hold,
// all that is sent), and a body longer than 4 MiB fails it too, rather
// than pass its first 4 MiB for the answer and leave the rest to be read
// as the next one.
func TestBenchConnBoundsAnswers(t *testing.T) {
	const endless = 64 << 20
	var written atomic.Int64
	done := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/header", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer func() { conn.Close(); done <- struct{}{} }()
		brw.WriteString("HTTP/1.1 200 OK\r\nX-Endless: ")
		chunk := []byte(strings.Repeat("a", 64<<10))
		for written.Load() < endless {
			if _, err := brw.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
		brw.Flush()
	})
	mux.HandleFunc("/body", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(5<<20))
		w.Write([]byte(strings.Repeat(" ", 5<<20)))
	})
	c := fakeServer(t, mux)

	bc, err := newBenchConn(c.Server(), "/header", []byte("{}"), c.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	if st, _, err := bc.do(context.Background()); err == nil || !strings.Contains(err.Error(), "header is longer than") {
		t.Errorf("an endless header: status %d, %v; want refused as too long", st, err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the server still writes its header")
	}
	if n := written.Load(); n >= endless/2 {
		t.Errorf("the load generator read %d MiB of header before it stopped", n>>20)
	}

	bc, err = newBenchConn(c.Server(), "/body", []byte("{}"), c.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	if st, _, err := bc.do(context.Background()); err == nil || !strings.Contains(err.Error(), "body is longer than") {
		t.Errorf("a body of 5 MiB: status %d, %v; want refused as too long", st, err)
	}
}

// TestBenchLoadOpensConnectionsBeforeTheClock: the load generator's
// connections (TCP and the TLS handshake) are all made before the
// measured window starts, so that neither the rate, the latencies nor
// a server CPU reading started at onStart include their setup, and no
// connection is made again during the run.
func TestBenchLoadOpensConnectionsBeforeTheClock(t *testing.T) {
	for _, conc := range []int{1, 4, 16} {
		t.Run(fmt.Sprint(conc), func(t *testing.T) {
			var accepted, requests atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				w.Write([]byte("{}"))
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					accepted.Add(1)
				}
			}
			srv.StartTLS()
			defer srv.Close()
			cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
			starts := 0
			var atStart, requestsAtStart int64
			r, err := load(t.Context(), "test", conc, 200*time.Millisecond, func(int) (*benchConn, error) {
				return newBenchConn(srv.URL, "/", []byte("{}"), cfg)
			}, func([]byte) error { return nil }, func() {
				starts++
				atStart, requestsAtStart = accepted.Load(), requests.Load()
			})
			if err != nil {
				t.Fatal(err)
			}
			if starts != 1 || atStart != int64(conc) || requestsAtStart != 0 {
				t.Errorf("when the clock started (%d times): %d connections accepted, %d requests served; want %d connections, no request",
					starts, atStart, requestsAtStart, conc)
			}
			if n := accepted.Load(); n != int64(conc) || r.errors != 0 || r.ops == 0 {
				t.Errorf("after the run: %d connections, %d requests, %d errors (%v); want %d connections, requests, no error",
					n, r.ops, r.errors, r.firstErr, conc)
			}
		})
	}
}

// TestBenchLoadCountsAFailureAnsweredAfterTheEnd: the request in flight
// when the run ends is finished; if it fails, it is counted as an error,
// not dropped because its answer came late.
func TestBenchLoadCountsAFailureAnsweredAfterTheEnd(t *testing.T) {
	// The run ends (as at an interrupt) while the second request is in
	// flight, before it is answered: an event, not a deadline the first
	// request might miss on a slow machine. The run's own deadline is
	// never reached.
	ctx, end := context.WithCancel(t.Context())
	defer end()
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Write([]byte("{}"))
			return
		}
		end() // the second request is answered after the run's end
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	srv.StartTLS()
	defer srv.Close()
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	r, err := load(ctx, "test", 1, time.Hour, func(int) (*benchConn, error) {
		return newBenchConn(srv.URL, "/", []byte("{}"), cfg)
	}, func([]byte) error { return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.ops != 1 || r.errors != 1 || r.firstErr == nil || !strings.Contains(r.firstErr.Error(), "500") {
		t.Errorf("%d requests, %d errors (first: %v); want 1 request and the late 500 counted as an error", r.ops, r.errors, r.firstErr)
	}
}

// TestPercentile: the benches' p50 and p99 are the nearest rank of
// the sorted latencies, ⌈q·n/100⌉: a p99 of 100 latencies is the 99th
// of them, not the largest; of 1,000, the 990th.
func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		n, q, rank int // rank counts from 1
	}{
		{1, 50, 1}, {1, 99, 1},
		{2, 50, 1}, {2, 99, 2},
		{3, 50, 2},
		{100, 50, 50}, {100, 99, 99},
		{101, 50, 51}, {101, 99, 100},
		{199, 99, 198}, {200, 99, 198},
		{1000, 50, 500}, {1000, 99, 990},
	} {
		lat := make([]time.Duration, tc.n)
		for i := range lat {
			lat[i] = time.Duration(i + 1) // the i+1-th smallest
		}
		if got := percentile(lat, tc.q); got != time.Duration(tc.rank) {
			t.Errorf("p%d of %d latencies = rank %d, want rank %d", tc.q, tc.n, got, tc.rank)
		}
	}
}

// TestBenchLoadSendsPreparedRequestsOnce: requests prepared one by one
// (bench delegate's, each with a delegator signature of its own that a
// server remembers once verified) are each sent once. A worker that has
// sent all of its own ends the run, before its duration, rather than
// send them again and have the server answer from what it remembers.
func TestBenchLoadSendsPreparedRequestsOnce(t *testing.T) {
	for _, tc := range []struct{ conc, perWorker int }{{1, 1}, {1, 40}, {4, 40}, {16, 8}} {
		t.Run(fmt.Sprintf("%dx%d", tc.conc, tc.perWorker), func(t *testing.T) {
			var mu sync.Mutex
			got := map[string]int{}
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				got[string(b)]++
				mu.Unlock()
				w.Write([]byte("{}"))
			}))
			srv.StartTLS()
			defer srv.Close()
			cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
			r, err := load(t.Context(), "test", tc.conc, time.Minute, func(w int) (*benchConn, error) {
				var bodies [][]byte
				for k := range tc.perWorker {
					bodies = append(bodies, fmt.Appendf(nil, `{"w":%d,"k":%d}`, w, k))
				}
				return newBenchConnBodies(srv.URL, "/", bodies, cfg)
			}, func([]byte) error { return nil }, nil)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for body, n := range got {
				if n > 1 {
					t.Errorf("%s sent %d times", body, n)
				}
			}
			if !r.ranOut || r.errors != 0 || r.ops != len(got) || r.ops < tc.perWorker || r.ops > tc.conc*tc.perWorker {
				t.Errorf("ran out %v, %d requests answered, %d distinct received, %d errors (%v); want ran out, between %d and %d, all distinct, no error",
					r.ranOut, r.ops, len(got), r.errors, r.firstErr, tc.perWorker, tc.conc*tc.perWorker)
			}
		})
	}
}
