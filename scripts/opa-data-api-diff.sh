#!/usr/bin/env bash
# Differential check of Mandate's OPA v1 REST Data API (/v1/data) against
# the real `opa run --server` of the version Mandate embeds (go.mod): the
# same Rego modules and data on both, the same requests (bodies, query
# parameters, paths, methods, encodings), and their answers compared:
# status, Content-Type and the JSON body (decision_id, metrics' timers and
# provenance build values aside). It exits non-zero on any difference not
# listed as deliberate below (each with where the docs say so).
#
#   scripts/opa-data-api-diff.sh [--opa PATH] [--mandate PATH]
#
# Without --opa it uses, or installs with `go install`, opa of that
# version where `mandate bench decide` does (the user cache dir,
# mandate/opa@VERSION; a few minutes the first time, and it needs the Go
# module proxy). Needs Go, curl and python3. All on 127.0.0.1. test.sh
# does not run it (building opa takes minutes).
set -euo pipefail
OPA= MANDATE=
while [ $# -gt 0 ]; do
  case $1 in
    --opa) OPA=$2; shift 2 ;;
    --mandate) MANDATE=$2; shift 2 ;;
    *) echo "usage: $0 [--opa PATH] [--mandate PATH]" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
SERVE= OPAPID=
cleanup() {
  [ -n "$SERVE" ] && kill "$SERVE" 2>/dev/null || true
  [ -n "$OPAPID" ] && kill "$OPAPID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "opa data api diff: $*" >&2; for f in serve.log opa.log; do [ -f "$W/$f" ] && tail -20 "$W/$f" >&2; done; exit 1; }

if [ -z "$MANDATE" ]; then
  MANDATE=$W/mandate
  (cd "$ROOT" && GOFLAGS=-buildvcs=false go build -o "$MANDATE" ./cmd/mandate) || fail "could not build mandate"
fi
if [ -z "$OPA" ]; then
  # As cmd/mandate's findOPA: the go.mod version, in the user cache dir.
  VERSION=$(cd "$ROOT" && go list -m -f '{{.Version}}' github.com/open-policy-agent/opa)
  case $(uname) in
    Darwin) CACHE=$HOME/Library/Caches ;;
    *) CACHE=${XDG_CACHE_HOME:-$HOME/.cache} ;;
  esac
  DIR=$CACHE/mandate/opa@$VERSION
  OPA=$DIR/opa
  HAVE=$("$OPA" version 2>/dev/null || true) # not piped to grep -q: under pipefail, opa's SIGPIPE would fail the test
  if ! grep -qx "Version: ${VERSION#v}" <<<"$HAVE"; then
    echo "installing opa $VERSION into $DIR with go install (a few minutes the first time)..." >&2
    mkdir -p "$DIR"
    GOBIN=$DIR go install "github.com/open-policy-agent/opa@$VERSION" || fail "could not install opa $VERSION (pass --opa PATH)"
  fi
fi
cd "$W"

# The policy directory: Mandate's own policies (a directory replaces
# them, and must hold its decision points) and a package of this check's,
# with data. Both servers load the same directory; answers are compared
# under data.opadiff (Mandate adds its own documents under data.mandate).
"$MANDATE" policy export --dir pol >/dev/null
mkdir -p pol/opadiff/docs pol/opadiff_err
cat >pol/opadiff/opadiff.rego <<'EOF'
package opadiff

obj := {"a": 1, "b": [1, 2, {"c": "d"}], "e": null}

set_val := {1, 2, 3}

num := 1.5

big := 12345678901234567890

str := "hello"

undefined_rule if false

partial_obj[k] := v if {
	some k, v in {"x": 1, "y": 2}
}

partial_set contains x if {
	some x in [1, 2, 3]
}

div_zero := 1 / 0

to_num := to_number("x")

echo := input

echo_field := input.x

has_input if input

now := time.now_ns()

http_send := http.send({"method": "GET", "url": "http://127.0.0.1:1/"})

fn(x) := x + 1

fn_val := fn(1)

nested.deep.value := 7

strkeys := {"key with space": 1, "a/b": 2}

arr := [10, 20, 30]

empty_set := set()

runtime_keys := object.keys(opa.runtime())
EOF
cat >pol/opadiff_err/err.rego <<'EOF'
package opadiff_err

conflict = 1 if true

conflict = 2 if true

obj_conflict[k] := v if {
	some k, v in {"x": 1}
}

obj_conflict[k] := v if {
	some k, v in {"x": 2}
}

two_builtin_errors := [x, y] if {
	x := 1 / 0
	y := to_number("y")
}
EOF
echo '{"list": [1, 2, 3], "map": {"k": "v", "a/b": "slash", "sp ace": "s"}, "n": null}' >pol/opadiff/docs/data.json

. "$ROOT/scripts/interop.sh"
start_serve --data-dir data --policy-dir pol || fail "mandate did not start"
OPAPORT=$(free_port)
"$OPA" run --server --addr "127.0.0.1:$OPAPORT" --log-level error pol >opa.log 2>&1 &
OPAPID=$!
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$OPAPORT/health" >/dev/null 2>&1 && break
  kill -0 "$OPAPID" 2>/dev/null || fail "opa exited"
  sleep 0.1
done
curl -fs "http://127.0.0.1:$OPAPORT/health" >/dev/null || fail "opa did not become healthy"

python3 - "$URL" "http://127.0.0.1:$OPAPORT" <<'PY'
import gzip, http.client, json, ssl, sys, urllib.parse

mandate_url, opa_url = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile="data/admin/bundle.pem")
ctx.load_cert_chain("data/admin/svid.pem", "data/admin/svid.key")
anon = ssl.create_default_context(cafile="data/admin/bundle.pem")  # no client certificate

def send(base, method, path, headers, body, no_cert=False):
    # A server that refuses a large body may close the connection while
    # it is still being sent (Mandate answers 413, then closes): the
    # answer is lost to a race, so such a request is sent again.
    for attempt in range(5):
        try:
            return send_once(base, method, path, headers, body, anon if no_cert else ctx)
        except (ConnectionError, http.client.RemoteDisconnected):
            if attempt == 4:
                raise

def send_once(base, method, path, headers, body, tls):
    u = urllib.parse.urlsplit(base)
    if u.scheme == "https":
        c = http.client.HTTPSConnection(u.hostname, u.port, context=tls, timeout=30)
    else:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.putrequest(method, path, skip_accept_encoding=True)  # the path as written, not cleaned
    for k, v in headers.items():
        c.putheader(k, v)
    if body is not None and "Transfer-Encoding" not in headers:
        c.putheader("Content-Length", str(len(body)))
    c.endheaders(body)
    r = c.getresponse()
    raw = r.read()
    c.close()
    if r.getheader("Content-Encoding", "") == "gzip":
        raw = gzip.decompress(raw)
    return r.status, r.getheader("Content-Type", ""), raw

def norm(status, ctype, raw, opts, opa):
    """What must be the same: the status, the Content-Type and the JSON
    body, less what legitimately differs."""
    if opa:  # OPA names the files as loaded, under pol/
        raw = raw.replace(b"pol/opadiff", b"opadiff")
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    if isinstance(body, dict):
        body.pop("decision_id", None)  # OPA has one only with decision logs on
        if "metrics" in body:  # deliberate, docs/policy.md: Mandate has no server or parse timers
            body["metrics"] = "<metrics>"
        if isinstance(body.get("provenance"), dict):
            p = body["provenance"]
            # Build values differ; Mandate adds the policy revision
            # (revision, bundles: OPA has one or the other with bundles).
            body["provenance"] = {k: (p[k] if k == "version" else "<build>") for k in p if k not in ("revision", "bundles")}
        for e in body.get("errors", []) if isinstance(body.get("errors"), list) else []:
            e.pop("stack_trace", None)  # deliberate, docs/policy.md: no stack_trace
        if opts.get("vary_result") and "result" in body:
            body["result"] = type(body["result"]).__name__
    return {"status": status, "content_type": ctype, "body": body}

def gz(b):
    return gzip.compress(b)

J = {"Content-Type": "application/json"}
Y = {"Content-Type": "application/x-yaml"}
big_input = json.dumps({"input": {"k": "x" * 100000}}).encode()
E = "/v1/data/opadiff/echo"

# (name, method, path, headers, body, options)
cases = [
    # Rule values of every kind.
    *[(f"POST rule {r}", "POST", f"/v1/data/opadiff/{r}", J, b'{"input": {"x": 1}}', {})
      for r in ["obj", "set_val", "num", "big", "str", "undefined_rule", "partial_obj", "partial_set", "div_zero",
                "to_num", "echo", "echo_field", "has_input", "http_send", "fn_val", "nested", "nested/deep/value",
                "strkeys", "arr", "arr/1", "empty_set", "nonexistent", "nonexistent/x"]],
    ("GET opa.runtime()", "GET", "/v1/data/opadiff/runtime_keys", {}, None, {}),
    ("POST rule now", "POST", "/v1/data/opadiff/now", J, b'{"input": {}}', {"vary_result": True}),
    # Data documents, and paths into them.
    *[(f"GET data {p}", "GET", f"/v1/data/opadiff/docs{p}", {}, None, {})
      for p in ["", "/list", "/list/1", "/list/1.0", "/list/+1", "/list/7", "/list/-1", "/list/x", "/map/a%2Fb",
                "/map/sp%20ace", "/map/k", "/n", "/map/k/deeper"]],
    ("GET package opadiff", "GET", "/v1/data/opadiff", {}, None, {"vary_result": True}),
    ("GET partial object key", "GET", "/v1/data/opadiff/partial_obj/x", {}, None, {}),
    ("GET partial set member", "GET", "/v1/data/opadiff/partial_set/2", {}, None, {}),
    ("GET partial set non-member", "GET", "/v1/data/opadiff/partial_set/9", {}, None, {}),
    ("GET a function", "GET", "/v1/data/opadiff/fn", {}, None, {}),
    ("POST a chunked body", "POST", E, {**J, "Transfer-Encoding": "chunked"}, b'd\r\n{"input": {}}\r\n0\r\n\r\n', {}),
    ("GET no such package", "GET", "/v1/data/nosuchpackage", {}, None, {}),
    ("GET escaped path", "GET", "/v1/data/opadiff/o%62j", {}, None, {}),
    ("GET escaped slash", "GET", "/v1/data/opadiff/obj%2Fa", {}, None, {}),
    ("GET escaped slash in a package", "GET", "/v1/data/opadiff%2Fobj", {}, None, {}),
    ("GET dot segment", "GET", "/v1/data/opadiff/./obj", {}, None, {}),
    # Evaluation errors: OPA's 500 internal_error.
    ("POST conflict", "POST", "/v1/data/opadiff_err/conflict", J, b'{"input": {}}', {}),
    ("POST object conflict", "POST", "/v1/data/opadiff_err/obj_conflict", J, b'{"input": {}}', {}),
    ("GET root", "GET", "/v1/data", {}, None, {}),
    ("POST root", "POST", "/v1/data", J, b'{"input": {}}', {}),
    ("GET error package", "GET", "/v1/data/opadiff_err", {}, None, {}),
    *[(f"POST strict {r}", "POST", f"/v1/data/opadiff/{r}?strict-builtin-errors", J, b'{"input": {}}', {})
      for r in ["div_zero", "to_num", "http_send", "obj"]],
    ("POST strict two errors", "POST", "/v1/data/opadiff_err/two_builtin_errors?strict-builtin-errors=true", J, b"{}", {}),
    ("POST two errors, not strict", "POST", "/v1/data/opadiff_err/two_builtin_errors", J, b"{}", {}),
    ("GET compiler refuses the path", "GET", "/v1/data/opadiff/obj/zz", {}, None, {}),
    ("GET index into a string", "GET", "/v1/data/opadiff/str/0", {}, None, {}),
    # Bodies.
    ("POST no body", "POST", E, {}, None, {}),
    ("POST empty body", "POST", E, J, b"", {}),
    ("POST blank body", "POST", E, J, b" \n", {}),
    ("POST {}", "POST", E, J, b"{}", {}),
    ("POST input null", "POST", E, J, b'{"input": null}', {}),
    ("POST input number", "POST", E, J, b'{"input": 1}', {}),
    ("POST extra members", "POST", E, J, b'{"input": {"a": 1}, "extra": 2}', {}),
    ("POST Input (case)", "POST", E, J, b'{"Input": {"a": 1}}', {}),
    ("POST input twice", "POST", E, J, b'{"input": {"a": 1}, "input": {"b": 2}}', {}),
    ("POST trailing data", "POST", E, J, b'{"input": {"a": 1}} trailing', {}),
    ("POST null body", "POST", E, J, b"null", {}),
    ("POST not JSON", "POST", E, J, b"not json", {}),
    ("POST truncated JSON", "POST", E, J, b'{"input": {', {}),
    ("POST array body", "POST", E, J, b"[1]", {}),
    ("POST string body", "POST", E, J, b'"s"', {}),
    ("POST boolean body", "POST", E, J, b"true", {}),
    ("POST number body", "POST", E, J, b"1.5", {}),
    ("POST input key twice", "POST", E, J, b'{"input": {"a": 1, "a": 2}}', {}),
    ("POST numbers", "POST", E, J, b'{"input": [1.0, 1e2, -0, 12345678901234567890123, 0.1, 1E-7]}', {}),
    ("POST unicode", "POST", E, J, '{"input": ["\\u00e9", "é", "<&>", "\\u2028"]}'.encode(), {}),
    ("POST lone surrogate", "POST", E, J, b'{"input": "\\ud800"}', {}),
    ("POST number too big", "POST", E, J, b'{"input": {"n": 1e70000}}', {}),
    ("POST big number", "POST", E, J, b'{"input": {"n": 1e400}}', {}),
    ("POST invalid UTF-8", "POST", E, J, b'{"input": "\xff"}', {}),
    ("POST deep input", "POST", E, J, b'{"input": ' + b"[" * 100 + b"]" * 100 + b"}", {}),
    ("POST large input", "POST", "/v1/data/opadiff/has_input", J, big_input, {}),
    ("POST ?input= is not read", "POST", E + "?input=5", J, b'{"input": 1}', {}),
    ("GET body is not read", "GET", E, J, b'{"input": 1}', {}),
    # Content types and encodings.
    ("POST charset", "POST", E, {"Content-Type": "application/json; charset=utf-8"}, b'{"input": 1}', {}),
    ("POST text/plain", "POST", E, {"Content-Type": "text/plain"}, b'{"input": 1}', {}),
    ("POST form type", "POST", E, {"Content-Type": "application/x-www-form-urlencoded"}, b'{"input": 1}', {}),
    ("POST YAML", "POST", E, Y, b"input:\n  a: 1\n  d: 2001-12-14\n  t: true\n", {}),
    ("POST application/yaml", "POST", E, {"Content-Type": "application/yaml"}, b"input: [1, 2]\n", {}),
    ("POST YAML is JSON", "POST", E, Y, b'{"input": {"a": 1}}', {}),
    ("POST YAML charset", "POST", E, {"Content-Type": "application/yaml; charset=utf-8"}, b"input: {a: 1}\n", {}),
    ("POST YAML upper case", "POST", E, {"Content-Type": "application/X-YAML"}, b"input: {a: 1}\n", {}),
    ("POST YAML two documents", "POST", E, Y, b"--- {input: 1}\n--- {input: 2}\n", {}),
    ("POST YAML malformed", "POST", E, Y, b"input: [\n", {}),
    ("POST YAML list", "POST", E, Y, b"- 1\n", {}),
    ("POST YAML as JSON", "POST", E, J, b"input: 1\n", {}),
    ("POST gzip", "POST", E, {**J, "Content-Encoding": "gzip"}, gz(b'{"input": {"z": 1}}'), {}),
    ("POST gzip YAML", "POST", E, {**Y, "Content-Encoding": "gzip"}, gz(b"input: {z: 1}\n"), {}),
    ("POST gzip, not gzipped", "POST", E, {**J, "Content-Encoding": "gzip"}, b'{"input": 1}', {}),
    ("POST identity", "POST", E, {**J, "Content-Encoding": "identity"}, b'{"input": 1}', {}),
    ("POST br", "POST", E, {**J, "Content-Encoding": "br"}, b'{"input": 1}', {}),
    ("POST GZIP", "POST", E, {**J, "Content-Encoding": "GZIP"}, gz(b'{"input": 1}'), {}),
    ("POST x-gzip", "POST", E, {**J, "Content-Encoding": "x-gzip"}, gz(b'{"input": 1}'), {}),
    ("POST gzip, identity", "POST", E, {**J, "Content-Encoding": "gzip, identity"}, gz(b'{"input": 1}'), {}),
    ("POST deflate, gzip", "POST", E, {**J, "Content-Encoding": "deflate, gzip"}, gz(b'{"input": 1}'), {}),
    ("POST gzip bomb", "POST", E, {**J, "Content-Encoding": "gzip"}, gz(b'{"input": "' + b"a" * (1 << 20) + b'"}'), {}),
    ("POST Accept-Encoding gzip", "POST", "/v1/data/opadiff/echo", {**J, "Accept-Encoding": "gzip"},
     json.dumps({"input": ["x" * 100] * 50}).encode(), {}),
    # GET with ?input=.
    ("GET input", "GET", E + "?input=" + urllib.parse.quote('{"a": 1}'), {}, None, {}),
    ("GET no input", "GET", E, {}, None, {}),
    ("GET input twice", "GET", E + "?input=1&input=2", {}, None, {}),
    ("GET input null", "GET", E + "?input=null", {}, None, {}),
    ("GET input trailing", "GET", E + "?input=" + urllib.parse.quote('{"a": 1} x'), {}, None, {}),
    ("GET input number too big", "GET", E + "?input=1e70000", {}, None, {}),
    ("GET input empty", "GET", E + "?input=", {}, None, {}),
    ("GET input malformed", "GET", E + "?input=%7B", {}, None, {}),
    ("GET input two values", "GET", E + "?input=1%202", {}, None, {}),
    ("GET input invalid UTF-8", "GET", E + "?input=%22%FF%22", {}, None, {}),
    # Query parameters.
    *[(f"POST ?{q}", "POST", "/v1/data/opadiff/obj?" + q, J, b'{"input": {}}', {})
      for q in ["pretty", "pretty=true", "pretty=false", "pretty=bogus", "provenance", "provenance=false", "metrics",
                "metrics=TRUE", "metrics=1", "metrics&metrics=false", "instrument", "strict-builtin-errors=bogus",
                "unknown=1", "explain=notes", "explain=fails", "explain=full", "explain=debug", "explain=bogus"]],
    ("GET ?pretty error", "GET", "/v1/data/opadiff_err/conflict?pretty", {}, None, {}),
    # Paths and methods.
    ("GET trailing slash", "GET", "/v1/data/opadiff/obj/", {}, None, {}),
    ("GET root trailing slash", "GET", "/v1/data/", {}, None, {}),
    ("GET empty segment", "GET", "/v1/data/opadiff//obj", {}, None, {}),
    ("GET path not UTF-8", "GET", "/v1/data/opadiff/%FF", {}, None, {}),
    ("GET path UTF-8", "GET", "/v1/data/opadiff/docs/map/%C3%A9", {}, None, {}),
    ("GET path NUL", "GET", "/v1/data/opadiff/docs/map/%00", {}, None, {}),
    ("GET path quote", "GET", "/v1/data/opadiff/docs/map/%22", {}, None, {}),
    ("GET path long segment", "GET", "/v1/data/opadiff/docs/map/" + "a" * 600, {}, None, {}),
    ("GET path many segments", "GET", "/v1/data/opadiff/docs" + "/a" * 40, {}, None, {}),
    ("GET input plus", "GET", E + '?input="a+b"', {}, None, {}),
    ("GET input large", "GET", E + "?input=" + urllib.parse.quote(json.dumps(["x" * 100] * 500)), {}, None, {}),
    *[(f"{m} method", m, E, J, b"{}", {}) for m in ["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "FOO"]],
    ("HEAD method", "HEAD", E, {}, None, {}),
    # Callers: OPA here authorizes no one (its default); Mandate's are mTLS.
    ("POST without a client certificate", "POST", E, J, b'{"input": 1}', {"no_cert": True}),
    ("GET without a client certificate", "GET", "/v1/data/opadiff/%FF", {}, None, {"no_cert": True}),
]

# Differences that are deliberate, each as the docs say. Any other
# difference fails the check.
deliberate = {  # name: (Mandate's status, why)
    # docs/policy.md, "Differences from OPA": ?explain is not served.
    **{f"POST ?explain={v}": (200, "?explain is not served (docs/policy.md)") for v in ["notes", "fails", "full", "debug"]},
    # docs/policy.md: a body over http.max_body_bytes is 413.
    "POST large input": (413, "bodies are bounded by http.max_body_bytes (docs/policy.md)"),
    # docs/policy.md, "Differences from OPA": invalid UTF-8 and depth are refused.
    "POST invalid UTF-8": (400, "input that is not UTF-8 is refused (docs/policy.md)"),
    "GET input invalid UTF-8": (400, "input that is not UTF-8 is refused (docs/policy.md)"),
    "POST deep input": (400, "input nested deeper than 64 levels is refused (docs/policy.md)"),
    # docs/policy.md: a path not in clean form (OPA redirects).
    "GET trailing slash": (200, "a trailing / is the path without it, no 301 (docs/policy.md)"),
    "GET root trailing slash": (500, "a trailing / is the path without it, no 301 (docs/policy.md)"),
    "GET empty segment": (404, "a path not in clean form is 404, no 307 (docs/policy.md)"),
    "GET dot segment": (404, "a path not in clean form is 404, no 307 (docs/policy.md)"),
    # docs/policy.md: a path that is not UTF-8 is 400, where OPA answers 500.
    "GET path not UTF-8": (400, "a path that is not UTF-8 is 400, not OPA's 500 (docs/policy.md)"),
    # docs/policy.md: OPA cannot parse such a segment as a Rego term and
    # answers 500; Mandate reads it as the key it spells (bad input is no 500).
    "GET path NUL": (200, "a segment OPA cannot parse is the key it spells, not OPA's 500 (docs/policy.md)"),
    "GET path quote": (200, "a segment OPA cannot parse is the key it spells, not OPA's 500 (docs/policy.md)"),
    # docs/policy.md: paths are bounded (512 bytes, 32 segments).
    "GET path long segment": (400, "a path over 512 bytes is 400 (docs/policy.md)"),
    "GET path many segments": (400, "a path over 32 segments is 400 (docs/policy.md)"),
    # docs/api.md §1, docs/policy.md: request line and headers over 16 KiB
    # are Go's plain-text 431 (a large input goes in a POST body).
    "GET input large": (431, "request line and headers over 16 KiB: 431 (docs/api.md, docs/policy.md)"),
    # docs/policy.md: the Data API serves no document writes; 405 in OPA's shape.
    "PUT method": (405, "no document writes: 405 (docs/policy.md)"),
    "PATCH method": (405, "no document writes: 405 (docs/policy.md)"),
    "DELETE method": (405, "no document writes: 405 (docs/policy.md)"),
    "OPTIONS method": (405, "405 in OPA's error shape, where OPA's has no body (docs/policy.md)"),
    "TRACE method": (405, "405 in OPA's error shape, where OPA's has no body (docs/policy.md)"),
    "FOO method": (405, "405 in OPA's error shape, where OPA's has no body (docs/policy.md)"),
    "HEAD method": (405, "405 with Allow, where OPA's has none (docs/policy.md)"),
    # docs/policy.md: opa.runtime() is {} (no environment variables).
    "GET opa.runtime()": (200, "opa.runtime() is empty (docs/policy.md)"),
    # docs/policy.md: no client certificate is OPA's 401 unauthorized,
    # before the path or the body is looked at.
    "POST without a client certificate": (401, "callers authenticate with mTLS (docs/policy.md)"),
    "GET without a client certificate": (401, "callers authenticate with mTLS (docs/policy.md)"),
    # docs/policy.md: a Content-Encoding other than gzip is refused, gzip in any case.
    "POST br": (400, "another Content-Encoding is 400, where OPA ignores it (docs/policy.md)"),
    "POST GZIP": (200, "gzip in any case is gzip (RFC 9110), where OPA takes lower case only (docs/policy.md)"),
    "POST YAML upper case": (200, "a media type names yaml in any case (RFC 9110), where OPA looks for lower case (docs/policy.md)"),
    "POST deflate, gzip": (400, "a coding other than gzip is 400, where OPA gunzips and ignores it (docs/policy.md)"),
    # docs/policy.md: decompressed, a body is held to http.max_body_bytes.
    "POST gzip bomb": (413, "decompressed, a body is held to http.max_body_bytes: 413 (docs/policy.md)"),
}

failed = 0
for name, method, path, headers, body, opts in cases:
    m = norm(*send(mandate_url, method, path, headers, body, opts.get("no_cert", False)), opts, False)
    o = norm(*send(opa_url, method, path, headers, body), opts, True)
    problem = None
    if name in deliberate:
        want, why = deliberate[name]
        mb = m["body"]
        if m == o:
            print(f"same now (was deliberate: {why}): {name}")
            continue
        if m["status"] != want:
            problem = f"deliberately different, as status {want}, but Mandate answered {m['status']}"
        elif want >= 400 and want != 431 and method != "HEAD" and not (
                m["content_type"] == "application/json" and isinstance(mb, dict)
                and isinstance(mb.get("code"), str) and isinstance(mb.get("message"), str)):
            problem = "deliberately different, but not an error in OPA's shape"
        else:
            print(f"deliberate: {name}: {why}")
            continue
    elif m == o:
        continue
    diff = {k: {"mandate": m[k], "opa": o[k]} for k in m if m[k] != o[k]}
    text = json.dumps(diff, sort_keys=True)
    if len(text) > 600:
        text = text[:600] + "..."
    failed += 1
    print(f"DIFFERENT: {name}: {method} {path[:120]}" + (f" ({problem})" if problem else "") + f"\n  {text}")
print(f"{len(cases)} requests, {failed} unexpected differences")
sys.exit(1 if failed else 0)
PY
