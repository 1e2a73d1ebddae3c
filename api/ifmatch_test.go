package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A registration's answers carry its ETag, and a PUT or DELETE with
// If-Match changes only the version it names: two admins who each read
// and write back a registration do not lose a change silently.
func TestAgentIfMatch(t *testing.T) {
	e := start(t, "org-a.example")
	sendFields := adminSender(t, e)
	send := func(method, path, ifMatch string, body any) (int, string, map[string]any) {
		t.Helper()
		var fields []string
		if ifMatch != "" {
			fields = []string{ifMatch}
		}
		return sendFields(method, path, fields, body)
	}
	status, created, ag := send(http.MethodPost, "/v1/admin/agents", "", registrationOfX("a"))
	if status != http.StatusCreated || !strings.HasPrefix(created, `"`) || len(created) != 66 {
		t.Fatalf("create: %d, ETag %q", status, created)
	}
	path := "/v1/admin/agents/" + ag["id"].(string)
	if status, tag, _ := send(http.MethodGet, path, "", nil); status != http.StatusOK || tag != created {
		t.Fatalf("get: %d, ETag %q; want the ETag the creation answered, %q", status, tag, created)
	}
	// Admin 1 changes the version both read; admin 2's change of it is
	// refused, and nothing of it is stored or logged.
	status, changed, _ := send(http.MethodPut, path, created, registrationOfX("b"))
	if status != http.StatusOK || changed == "" || changed == created {
		t.Fatalf("update of the current version: %d, ETag %q (was %q)", status, changed, created)
	}
	for _, tc := range []struct {
		name, ifMatch string
		want          int
		wantType      string
	}{
		{"the version read before a change", created, http.StatusPreconditionFailed, "precondition-failed"},
		{"a weak tag of the current version", "W/" + changed, http.StatusPreconditionFailed, "precondition-failed"},
		{"not an entity tag", "abc", http.StatusBadRequest, "invalid-request"},
		{"an overlong list", strings.Repeat(created+", ", 20), http.StatusBadRequest, "invalid-request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, method := range []string{http.MethodPut, http.MethodDelete} {
				var body any
				if method == http.MethodPut {
					body = registrationOfX("c")
				}
				status, _, p := send(method, path, tc.ifMatch, body)
				if status != tc.want || !strings.HasSuffix(p["type"].(string), "/"+tc.wantType) {
					t.Errorf("%s with If-Match %.80s: %d %v, want %d %s", method, tc.ifMatch, status, p, tc.want, tc.wantType)
				}
			}
		})
	}
	if status, tag, got := send(http.MethodGet, path, "", nil); status != http.StatusOK || tag != changed || got["scopes"].([]any)[0] != "b" {
		t.Fatalf("after the refused changes: %d %q %v; want admin 1's change, %q", status, tag, got, changed)
	}
	if got := e.auditOf("agent.updated", ""); len(got) != 1 {
		t.Errorf("%d agent.updated entries, want only the one change made", len(got))
	}
	// Several tags, one of them current; then any version ("*").
	if status, _, _ := send(http.MethodPut, path, created+", "+changed, registrationOfX("d")); status != http.StatusOK {
		t.Errorf("update naming the current version among others: %d", status)
	}
	if status, _, _ := send(http.MethodPut, path, "*", registrationOfX("e")); status != http.StatusOK {
		t.Errorf("update with If-Match: *: %d", status)
	}
	_, current, _ := send(http.MethodGet, path, "", nil)
	if status, _, _ := send(http.MethodDelete, path, current, nil); status != http.StatusNoContent {
		t.Fatalf("delete of the current version: %d", status)
	}
	if status, _, p := send(http.MethodPut, path, "*", registrationOfX("f")); status != http.StatusNotFound {
		t.Errorf("update of a deleted registration with If-Match: %d %v, want 404", status, p)
	}
}

// If-Match is read as RFC 9110 reads a list (§5.6.1): empty elements,
// in one field or as a field of their own, are ignored; every element
// is an entity tag, wherever it is in the list; a tag may hold a comma.
// An If-Match that names no tag at all (an empty field) names no
// version: the change is refused, not made unconditionally.
func TestAgentIfMatchList(t *testing.T) {
	e := start(t, "org-a.example")
	send := adminSender(t, e)
	status, _, ag := send(http.MethodPost, "/v1/admin/agents", nil, registrationOfX("a"))
	if status != http.StatusCreated {
		t.Fatalf("create: %d %v", status, ag)
	}
	path := "/v1/admin/agents/" + ag["id"].(string)
	for i, tc := range []struct {
		name    string
		ifMatch func(cur string) []string
		want    int
	}{
		{"an empty element first", func(cur string) []string { return []string{", " + cur} }, http.StatusOK},
		{"empty elements around", func(cur string) []string { return []string{" , ," + cur + " ,"} }, http.StatusOK},
		{"an empty field, then the current tag", func(cur string) []string { return []string{"", cur} }, http.StatusOK},
		{"a tag holding a comma, then the current tag", func(cur string) []string { return []string{`"a,b", ` + cur} }, http.StatusOK},
		{"the current tag, then no tag", func(cur string) []string { return []string{cur + ", abc"} }, http.StatusBadRequest},
		{"the current tag, then a tag with a quote inside", func(cur string) []string { return []string{cur + `, "a"b"`} }, http.StatusBadRequest},
		{"the current tag, then an unclosed one", func(cur string) []string { return []string{cur + `, W/"`} }, http.StatusBadRequest},
		{"* among tags", func(cur string) []string { return []string{"*, " + cur} }, http.StatusBadRequest},
		{"an empty field", func(string) []string { return []string{""} }, http.StatusPreconditionFailed},
		{"empty elements only", func(string) []string { return []string{" , "} }, http.StatusPreconditionFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, cur, _ := send(http.MethodGet, path, nil, nil)
			if status != http.StatusOK {
				t.Fatalf("get: %d", status)
			}
			for _, method := range []string{http.MethodPut, http.MethodDelete} {
				if method == http.MethodDelete && tc.want == http.StatusOK {
					continue // kept for the next case
				}
				var body any
				if method == http.MethodPut {
					body = registrationOfX(fmt.Sprint("s", i))
				}
				if status, _, p := send(method, path, tc.ifMatch(cur), body); status != tc.want {
					t.Errorf("%s with If-Match %q: %d %v, want %d", method, tc.ifMatch(cur), status, p, tc.want)
				}
			}
		})
	}
	if status, _, _ := send(http.MethodGet, path, nil, nil); status != http.StatusOK {
		t.Fatalf("the registration is gone: %d", status)
	}
}

// adminSender sends a request to e as its admin: body as JSON (nil:
// none), and each of ifMatch as an If-Match field of its own. It returns
// the answer's status, its ETag and its JSON object.
func adminSender(t *testing.T, e *env) func(method, path string, ifMatch []string, body any) (int, string, map[string]any) {
	hc := e.adminRaw()
	return func(method, path string, ifMatch []string, body any) (int, string, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctxT(t), method, e.url+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		for _, v := range ifMatch {
			req.Header.Add("If-Match", v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, resp.Header.Get("ETag"), out
	}
}

// registrationOfX is a registration of spiffe://org-a.example/agent/x
// granted scope.
func registrationOfX(scope string) map[string]any {
	return map[string]any{"spiffe_id": "spiffe://org-a.example/agent/x", "scopes": []string{scope},
		"accountability": map[string]any{"operator": "ops", "model_provider": "acme", "model": "m1", "responsible_party": "ops@org-a.example"}}
}
