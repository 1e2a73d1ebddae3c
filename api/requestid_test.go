package api_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// Every answer carries an X-Request-Id: the caller's (a proxy's, an
// AuthZEN client's) when it is at most 256 bytes of printable ASCII, else
// one made for it; and the log lines logged with
// the request's context say it, so that a 500 can be found in the log.
func TestRequestID(t *testing.T) {
	e := start(t, "org-a.example")
	hc := e.rawClient(nil, nil)
	get := func(id string) string {
		req, _ := http.NewRequest("GET", e.url+"/healthz", nil)
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Request-Id")
	}
	made := regexp.MustCompile(`^[0-9a-f]{16}$`)
	if got := get("edge-7f3a.42_x"); got != "edge-7f3a.42_x" {
		t.Errorf("X-Request-Id %q, want the caller's edge-7f3a.42_x", got)
	}
	if got := get("req 7 (retry)"); got != "req 7 (retry)" {
		t.Errorf("X-Request-Id %q, want the caller's printable one", got)
	}
	for _, bad := range []string{"", strings.Repeat("a", 257), "a\u202eb"} {
		if got := get(bad); !made.MatchString(got) {
			t.Errorf("sent %q: X-Request-Id %q, want one made for the request", bad, got)
		}
	}
	if a, b := get(""), get(""); a == b {
		t.Errorf("two requests got the same id %q", a)
	}

}
