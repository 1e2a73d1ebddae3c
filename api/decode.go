package api

import (
	"bytes"
	"encoding"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	json "github.com/go-json-experiment/json/v1"

	"mandate.dev/mandate/echo"
)

var (
	errBadJSON      = errors.New("api: malformed JSON")
	errUnknownField = errors.New("api: unknown field")
	errBodyTooLarge = errors.New("api: request body too large")
	errContentType  = errors.New("api: unsupported content type")
	errBadPath      = errors.New("api: invalid path parameter")
	errBadQuery     = errors.New("api: invalid query parameter")
	errBodyTimeout  = errors.New("api: request body not received in time")
	errBodyBroken   = errors.New("api: request body incomplete")
)

// bodyError is why reading a request body failed, with no text of the
// connection's (its addresses stay out of answers).
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		return fmt.Errorf("%w: the limit is %d bytes", errBodyTooLarge, mbe.Limit)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: it did not arrive within the server's read timeout", errBodyTimeout)
	default:
		return fmt.Errorf("%w: it ended before its declared length, or the connection failed", errBodyBroken)
	}
}

// decodeJSON reads one JSON object from the body (bounded by the
// server's limit) into v, refusing unknown fields and trailing data.
func decodeJSON(r *http.Request, v any) error {
	body, err := readJSONBody(r)
	if err != nil {
		return err
	}
	return DecodeStrict(body, v)
}

// readJSONBody checks the content type and reads the body, within the
// server's body limit.
func readJSONBody(r *http.Request) ([]byte, error) {
	if err := checkContentType(r.Header.Get("Content-Type"), "application/json"); err != nil {
		return nil, err
	}
	var body []byte
	var err error
	if rb, ok := r.Body.(*readBodyCloser); ok {
		body, err = rb.rest()
	} else {
		body, err = io.ReadAll(r.Body)
	}
	if err != nil {
		return nil, bodyError(err)
	}
	return body, nil
}

// DecodeStrict decodes exactly one JSON object from b into v. Unknown
// fields, trailing data, and non-object documents are refused.
func DecodeStrict(b []byte, v any) error {
	if t := bytes.Trim(b, " \t\r\n"); len(t) == 0 || t[0] != '{' { // JSON whitespace only (RFC 8259 §2)
		return fmt.Errorf("%w: the body must be a JSON object", errBadJSON)
	}
	// encoding/json's semantics, read by the encoding/json/v2 engine (a
	// sub-delegation's body holds a parent token of kilobytes, which
	// encoding/json's decoder reads about four times slower), but names
	// are matched exactly and a name given twice is refused: a member
	// "TTL_SECONDS" is unknown, and no two readers of one body can take
	// different values from it. A body that is not valid UTF-8 is
	// refused, not read with U+FFFD in place of its bad bytes (RFC 8259
	// §8.1). Its errors are the engine's own, which say where in the
	// body they are (jsonError).
	if err := jsonv2.Unmarshal(b, v, json.DefaultOptionsV1(), json.ReportErrorsWithLegacySemantics(false),
		jsonv2.RejectUnknownMembers(true), jsonv2.MatchCaseInsensitiveNames(false), jsontext.AllowDuplicateNames(false),
		jsontext.AllowInvalidUTF8(false)); err != nil {
		return jsonError(err)
	}
	return nil
}

// jsonError is why a body could not be read, in JSON's terms rather than
// the Go types it is read into: the member (as a JSON Pointer, RFC 6901),
// what JSON it holds and what is expected there, or where a body that is
// not well formed goes wrong (the byte offset from its start). An
// unknown member is errUnknownField, with its name.
func jsonError(err error) error {
	var syn *jsontext.SyntacticError
	var sem *jsonv2.SemanticError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("%w: %s", errBadJSON, syntaxDetail(syn))
	case errors.As(err, &sem) && errors.Is(sem.Err, jsonv2.ErrUnknownName):
		return fmt.Errorf("%w %s", errUnknownField, echo.Quote(sem.JSONPointer.LastToken(), maxEcho))
	case errors.As(err, &sem):
		return fmt.Errorf("%w: %s", errBadJSON, semanticDetail(sem))
	}
	return fmt.Errorf("%w: it cannot be read", errBadJSON)
}

// memberOf names the value at ptr: `member "/scopes/0"`, or the body.
func memberOf(ptr jsontext.Pointer) string {
	if ptr == "" {
		return "the body"
	}
	return "member " + echo.Quote(string(ptr), maxEcho)
}

// maxEcho bounds what a refusal's detail repeats of the request (a
// member's name or pointer, a number, a Content-Type, a method, a
// path): enough to tell which it is, where the request's limits alone
// would let a detail repeat the whole of a body or of the headers.
const maxEcho = 256

// syntaxDetail says where a body stops being well-formed JSON.
func syntaxDetail(e *jsontext.SyntacticError) string {
	in := ""
	if e.JSONPointer != "" {
		in = " (in " + memberOf(e.JSONPointer) + ")"
	}
	switch {
	case errors.Is(e.Err, jsontext.ErrDuplicateName):
		return fmt.Sprintf("%s is given twice in one object, again at byte offset %d", memberOf(e.JSONPointer), e.ByteOffset)
	case errors.Is(e.Err, io.ErrUnexpectedEOF) || errors.Is(e.Err, io.EOF):
		return fmt.Sprintf("the body ends at byte offset %d%s, before its JSON does", e.ByteOffset, in)
	case e.Err == nil:
		return fmt.Sprintf("syntax error at byte offset %d%s", e.ByteOffset, in)
	}
	return fmt.Sprintf("syntax error at byte offset %d%s: %s", e.ByteOffset, in, strings.TrimPrefix(e.Err.Error(), "jsontext: "))
}

// semanticDetail says which member holds a value of the wrong kind, and
// what is expected there.
func semanticDetail(e *jsonv2.SemanticError) string {
	where, t := memberOf(e.JSONPointer), e.GoType
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	got := "a JSON value"
	switch e.JSONKind {
	case 'n':
		got = "JSON null"
	case 't', 'f':
		got = "a JSON boolean"
	case '"':
		got = "a JSON string"
	case '0':
		got = "a JSON number"
		if len(e.JSONValue) > 0 {
			got = "the number " + echo.Cut(string(e.JSONValue), maxEcho)
		}
	case '[':
		got = "a JSON array"
	case '{':
		got = "a JSON object"
	}
	if t == nil {
		return where + ": " + got + " is not accepted here"
	}
	// A value of the right kind that is not one the member can hold.
	switch {
	case t == reflect.TypeFor[time.Time]() && e.JSONKind == '"':
		return where + ": a JSON string that is not an RFC 3339 date and time"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 && e.JSONKind == '"':
		return where + ": a JSON string that is not base64"
	case e.JSONKind == '0' && errors.Is(e.Err, strconv.ErrRange):
		if lo, hi, ok := intRange(t); ok {
			return fmt.Sprintf("%s: %s is out of range (%d to %d)", where, got, lo, hi)
		}
		return where + ": " + got + " is out of range"
	case e.JSONKind == '0' && isInt(t):
		want := "an integer"
		if lo, hi, ok := intRange(t); ok && lo == 0 {
			want = fmt.Sprintf("an integer from 0 to %d", hi)
		}
		return where + ": " + got + " where " + want + " is expected (digits, without a fraction or an exponent)"
	}
	if want := expectedJSON(t); want != "" {
		return where + ": " + got + " where " + want + " is expected"
	}
	return where + ": " + got + " is not accepted here"
}

// expectedJSON is the JSON a value of Go type t is read from, in JSON's
// words; "" if t reads itself (its own UnmarshalJSON).
func expectedJSON(t reflect.Type) string {
	if t == reflect.TypeFor[time.Time]() {
		return "a string holding an RFC 3339 date and time"
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) ||
		reflect.PointerTo(t).Implements(reflect.TypeFor[jsonv2.UnmarshalerFrom]()) ||
		reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
		return ""
	}
	switch {
	case t.Kind() == reflect.Bool:
		return "true or false"
	case isInt(t):
		return "an integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return "a base64 string"
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		return "an array"
	case t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		return "an object"
	}
	return ""
}

// isInt reports whether t is an integer type.
func isInt(t reflect.Type) bool {
	_, _, ok := intRange(t)
	return ok
}

// intRange is the range of integer type t.
func intRange(t reflect.Type) (lo int64, hi uint64, ok bool) {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		return -1 << (bits - 1), 1<<(bits-1) - 1, true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return 0, 1<<t.Bits() - 1, true
	}
	return 0, 0, false
}

// checkContentType refuses a body whose Content-Type is not want, or
// names a charset other than UTF-8: JSON is UTF-8 (RFC 8259 §8.1), and
// a body said to be in another charset would be read otherwise than
// its sender meant.
func checkContentType(got, want string) error {
	mt, params, err := mime.ParseMediaType(got)
	if err != nil || mt != want {
		return fmt.Errorf("%w: Content-Type must be %s, got %s", errContentType, want, echo.Quote(got, maxEcho))
	}
	// "utf8" is a common spelling of it, as WHATWG's Encoding Standard
	// takes it.
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return fmt.Errorf("%w: a %s body is UTF-8, and the Content-Type says charset %s", errContentType, want, echo.Quote(cs, maxEcho))
	}
	return nil
}

// writeJSON writes v as the answer's JSON body with status. An answer
// that cannot be encoded is the server's fault: a 500, its cause in the
// server's log (through the middleware's writer) with the request id the
// caller is given.
func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := answerBuffers.Get().(*bytes.Buffer)
	defer putAnswerBuffer(buf)
	buf.Reset()
	err := jsonv2.MarshalWrite(buf, v, json.DefaultOptionsV1(), jsonv2.WithMarshalers(stdNumbers))
	if err != nil {
		if fw, ok := w.(interface{ noteFault(error) }); ok {
			fw.noteFault(fmt.Errorf("encode the answer: %w", err))
		}
		writeProblem(w, Problem{Type: ProblemBase + "internal", Title: "Internal server error", Status: 500,
			Detail: "the server failed to answer; the error is in its log, with request_id=" + w.Header().Get("X-Request-Id")})
		return
	}
	buf.WriteByte('\n')
	b := buf.Bytes()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Sized: an answer larger than net/http's buffer is sent whole, not
	// in chunks.
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// answerBuffers hold answers as they are written: an answer is written
// whole (its length first), and then its buffer is no longer needed.
var answerBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledAnswer bounds the buffers kept: a rare large answer (an audit
// page) does not pin its memory.
const maxPooledAnswer = 64 << 10

func putAnswerBuffer(b *bytes.Buffer) {
	if b.Cap() <= maxPooledAnswer {
		answerBuffers.Put(b)
	}
}

// stdNumbers writes an encoding/json Number (how a policy's answer holds
// its numbers: an AuthZEN decision's context) as the number it is, as
// encoding/json does, not as a string; an invalid one is an error.
var stdNumbers = jsonv2.MarshalFunc(func(n stdjson.Number) ([]byte, error) {
	if v := jsontext.Value(n); !v.IsValid() || v.Kind() != '0' {
		return nil, fmt.Errorf("invalid number literal %q", string(n))
	}
	return []byte(n), nil
})
