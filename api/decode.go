package api

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	json "github.com/go-json-experiment/json/v1"
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
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, bodyError(err)
	}
	return body, nil
}

// DecodeStrict decodes exactly one JSON object from b into v. Unknown
// fields, trailing data, and non-object documents are refused.
func DecodeStrict(b []byte, v any) error {
	b = bytes.Trim(b, " \t\r\n") // JSON whitespace only (RFC 8259 §2)
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: the body must be a JSON object", errBadJSON)
	}
	// encoding/json's semantics, read by the encoding/json/v2 engine (a
	// sub-delegation's body holds a parent token of kilobytes, which
	// encoding/json's decoder reads about four times slower), but names
	// are matched exactly and a name given twice is refused: a member
	// "TTL_SECONDS" is unknown, and no two readers of one body can take
	// different values from it.
	if err := jsonv2.Unmarshal(b, v, json.DefaultOptionsV1(), jsonv2.RejectUnknownMembers(true),
		jsonv2.MatchCaseInsensitiveNames(false), jsontext.AllowDuplicateNames(false)); err != nil {
		if strings.HasPrefix(err.Error(), "json: unknown field") {
			return fmt.Errorf("%w%s", errUnknownField, strings.TrimPrefix(err.Error(), "json: unknown field"))
		}
		return fmt.Errorf("%w: %s", errBadJSON, strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

func checkContentType(got, want string) error {
	mt, _, err := mime.ParseMediaType(got)
	if err != nil || mt != want {
		return fmt.Errorf("%w: Content-Type must be %s, got %q", errContentType, want, got)
	}
	return nil
}

// writeJSON writes v as the answer's JSON body with status. An answer
// that cannot be encoded is the server's fault: a 500, its cause in the
// server's log (through the middleware's writer) with the request id the
// caller is given.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := jsonv2.Marshal(v, json.DefaultOptionsV1(), jsonv2.WithMarshalers(stdNumbers))
	if err != nil {
		if fw, ok := w.(interface{ noteFault(error) }); ok {
			fw.noteFault(fmt.Errorf("encode the answer: %w", err))
		}
		writeProblem(w, Problem{Type: ProblemBase + "internal", Title: "Internal server error", Status: 500,
			Detail: "the server failed to answer; the error is in its log, with request_id=" + w.Header().Get("X-Request-Id")})
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Sized: an answer larger than net/http's buffer is sent whole, not
	// in chunks.
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
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
