package api

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	opaversion "github.com/open-policy-agent/opa/v1/version"
	"go.yaml.in/yaml/v3"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/store"
)

// The Data API answers as OPA v1 does, including its error shape
// {"code", "message", "errors"?} and codes, so that a client written for
// OPA works unchanged. These are OPA's codes.
const (
	opaInvalidParameter = "invalid_parameter"
	opaInvalidOperation = "invalid_operation"
	opaInternal         = "internal_error"
	opaNotFound         = "resource_not_found"
	opaUnauthorized     = "unauthorized"
	opaEvalMessage      = "error(s) occurred while evaluating query"
	opaInputMissing     = "'input' key missing from the request"
)

// opaError is OPA's error body.
type opaError struct {
	Code    string           `json:"code"`
	Message string           `json:"message"`
	Errors  []map[string]any `json:"errors,omitempty"`
}

func writeOPAError(w http.ResponseWriter, status int, code, msg string, errs ...map[string]any) {
	b, _ := json.Marshal(opaError{Code: code, Message: msg, Errors: errs})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// dataAnswer is OPA's DataResponseV1.
type dataAnswer struct {
	DecisionID string          `json:"decision_id,omitempty"`
	Result     *any            `json:"result,omitempty"`
	Warning    *opaWarning     `json:"warning,omitempty"`
	Metrics    map[string]any  `json:"metrics,omitempty"`
	Provenance *dataProvenance `json:"provenance,omitempty"`
}

type opaWarning struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// dataProvenance is OPA's ProvenanceV1: the build of the embedded OPA
// (as OPA tells its own: its version package's, build_* empty where the
// build did not set them), and the policy revision.
type dataProvenance struct {
	Version   string                       `json:"version"`
	Vcs       string                       `json:"build_commit"`
	Timestamp string                       `json:"build_timestamp"`
	Hostname  string                       `json:"build_hostname"`
	Revision  string                       `json:"revision"`
	Bundles   map[string]map[string]string `json:"bundles"`
}

// dataPost is POST /v1/data/{path...} (and /v1/data): {"input": ...}.
// Its caller, as dataGet's and the AuthZEN endpoints', was checked
// before (roleCheck).
func (s *Server) dataPost(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		err = bodyError(err)
		status := http.StatusBadRequest
		switch {
		case errors.Is(err, errBodyTooLarge):
			status = http.StatusRequestEntityTooLarge
		case errors.Is(err, errBodyTimeout):
			status = http.StatusRequestTimeout
		}
		writeOPAError(w, status, opaInvalidParameter, strings.TrimPrefix(err.Error(), "api: "))
		return
	}
	// As OPA: a gzip-compressed body (Content-Encoding: gzip), and a YAML
	// one (a Content-Type naming yaml).
	if zipped, err := gzipEncoded(r.Header.Values("Content-Encoding")); err != nil {
		writeOPAError(w, http.StatusBadRequest, opaInvalidParameter, err.Error())
		return
	} else if zipped {
		if body, err = gunzip(body, s.maxBody); err != nil {
			if errors.Is(err, errTooLarge) {
				writeOPAError(w, http.StatusRequestEntityTooLarge, opaInvalidParameter, fmt.Sprintf("request body too large once decompressed: the limit is %d bytes", s.maxBody))
				return
			}
			writeOPAError(w, http.StatusBadRequest, opaInvalidParameter, "could not decompress the body: "+err.Error())
			return
		}
	}
	if strings.Contains(strings.ToLower(r.Header.Get("Content-Type")), "yaml") {
		if body, err = yamlToJSON(body, s.maxBody); err != nil {
			if errors.Is(err, errTooLarge) { // YAML aliases expand
				writeOPAError(w, http.StatusRequestEntityTooLarge, opaInvalidParameter, fmt.Sprintf("request body too large read as JSON: the limit is %d bytes", s.maxBody))
				return
			}
			writeOPAError(w, http.StatusBadRequest, opaInvalidParameter, "body contains malformed input document: "+err.Error())
			return
		}
	}
	input, err := inputOfBody(body)
	if err != nil {
		writeOPAError(w, http.StatusBadRequest, opaInvalidParameter, err.Error())
		return
	}
	s.answerData(w, r, input)
}

// dataGet is GET /v1/data/{path...}?input=<JSON>.
func (s *Server) dataGet(w http.ResponseWriter, r *http.Request) {
	var input json.RawMessage
	if vals := r.URL.Query()["input"]; len(vals) > 0 {
		in := []byte(vals[len(vals)-1])
		if !json.Valid(in) {
			writeOPAError(w, http.StatusBadRequest, opaInvalidParameter, "parameter contains malformed input document: "+opaJSONError(in).Error())
			return
		}
		if err := checkJSONValue(in); err != nil {
			writeOPAError(w, http.StatusBadRequest, opaInvalidParameter, "parameter contains malformed input document: "+err.Error())
			return
		}
		if err := checkInputNumbers(in); err != nil {
			writeOPAError(w, http.StatusBadRequest, opaInvalidParameter, err.Error())
			return
		}
		input = in
	}
	s.answerData(w, r, input)
}

// opaJSONError is why b, not one valid JSON value, is refused, in the
// words of OPA's reader of the input parameter (its util.UnmarshalJSON):
// a decoder's error ("EOF" for nothing, "unexpected EOF" for a value cut
// short), or what follows the first value. b is a query parameter's,
// bounded by the request's header limit.
func opaJSONError(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	tok, err := dec.Token()
	if tok != nil {
		return fmt.Errorf("error: invalid character '%s' after top-level value", tok)
	}
	if err != nil && err != io.EOF {
		return err
	}
	return errors.New("not one JSON value")
}

// gzipEncoded reads a request's Content-Encoding: true for gzip (or
// x-gzip, its old name, which RFC 9110 asks recipients to take as gzip;
// in any case, as codings are), false for none; identity, which changes
// nothing, may be listed anywhere. Any other coding, or gzip twice, is
// refused: the body could not be read as sent. (OPA gunzips a body whose
// header merely contains "gzip", and reads any other as it is.)
func gzipEncoded(headers []string) (bool, error) {
	zipped := false
	for _, h := range headers {
		for c := range strings.SplitSeq(h, ",") {
			switch c = strings.TrimSpace(c); {
			case c == "" || strings.EqualFold(c, "identity"):
			case (strings.EqualFold(c, "gzip") || strings.EqualFold(c, "x-gzip")) && !zipped:
				zipped = true
			default:
				return false, fmt.Errorf("unsupported Content-Encoding %s: gzip only, once", strconv.Quote(strings.Join(headers, ", ")))
			}
		}
	}
	return zipped, nil
}

// errTooLarge is a body larger than the limit once decompressed.
var errTooLarge = errors.New("too large")

// gunzip decompresses a gzip body of at most limit bytes.
func gunzip(body []byte, limit int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(out)) > limit {
		return nil, errTooLarge
	}
	return out, nil
}

// yamlToJSON reads a YAML body as OPA does (one document, read as JSON
// would be: mappings with string keys). An empty body stays empty. What
// it expands to (aliases included) is held to limit bytes before any
// value is built: errTooLarge.
func yamlToJSON(body []byte, limit int64) ([]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(body, &doc); err != nil {
		return nil, err
	}
	if _, err := yamlSize(&doc, map[*yaml.Node]int64{}, limit, 0); err != nil {
		return nil, err
	}
	plainTimestamps(&doc, map[*yaml.Node]bool{})
	var v any
	if err := doc.Decode(&v); err != nil {
		return nil, err
	}
	v, err := jsonCompatible(v, 0)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if int64(out.Len()) > limit+1 { // +1: Encode's newline
		return nil, errTooLarge
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

// yamlSize is about the size, in bytes of JSON, of what n expands to
// (each alias counted as what it names; each scalar as its text and a
// few bytes of syntax), refused past limit (errTooLarge) or nested too
// deep: bounded before anything is expanded.
func yamlSize(n *yaml.Node, memo map[*yaml.Node]int64, limit int64, depth int) (int64, error) {
	if depth > 2*maxInputDepth+4 { // a document, then mappings and aliases
		return 0, fmt.Errorf("nested deeper than %d", maxInputDepth)
	}
	if size, ok := memo[n]; ok {
		return size, nil
	}
	var size int64 = 2
	switch n.Kind {
	case yaml.AliasNode:
		s, err := yamlSize(n.Alias, memo, limit, depth+1)
		if err != nil {
			return 0, err
		}
		size = s
	case yaml.ScalarNode:
		size += int64(len(n.Value))
	default:
		for _, c := range n.Content {
			s, err := yamlSize(c, memo, limit, depth+1)
			if err != nil {
				return 0, err
			}
			if size += s; size > limit {
				return 0, errTooLarge
			}
		}
	}
	if size > limit {
		return 0, errTooLarge
	}
	memo[n] = size
	return size, nil
}

// plainTimestamps reads a scalar that YAML resolves as a timestamp
// without being tagged one (2001-12-14) as the string it is written as,
// as OPA does: decoded, it would become 2001-12-14T00:00:00Z. n's depth
// is bounded by yamlSize.
func plainTimestamps(n *yaml.Node, seen map[*yaml.Node]bool) {
	if n == nil || seen[n] {
		return
	}
	seen[n] = true
	if n.Kind == yaml.ScalarNode && n.Tag == "!!timestamp" && n.Style == 0 {
		n.Tag = "!!str"
	}
	plainTimestamps(n.Alias, seen)
	for _, c := range n.Content {
		plainTimestamps(c, seen)
	}
}

// jsonCompatible turns what YAML decodes into what JSON can hold: maps
// with string keys (scalar keys written as strings, as OPA reads YAML),
// nesting bounded.
func jsonCompatible(v any, depth int) (any, error) {
	if depth > maxInputDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxInputDepth)
	}
	switch x := v.(type) {
	case map[string]any:
		return compatibleMap(x, func(k string) (string, error) { return k, nil }, depth)
	case map[any]any:
		return compatibleMap(x, func(k any) (string, error) {
			switch k.(type) {
			case string, int, int64, uint64, float64, bool:
				return fmt.Sprint(k), nil
			}
			return "", errors.New("a mapping key that is not a scalar")
		}, depth)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := jsonCompatible(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	return v, nil
}

func compatibleMap[K comparable](x map[K]any, key func(K) (string, error), depth int) (map[string]any, error) {
	out := make(map[string]any, len(x))
	for k, e := range x {
		ks, err := key(k)
		if err != nil {
			return nil, err
		}
		if _, dup := out[ks]; dup {
			return nil, fmt.Errorf("two mapping keys read as %q", ks)
		}
		if out[ks], err = jsonCompatible(e, depth+1); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// maxInputDepth bounds the nesting of an input document.
const maxInputDepth = 64

// inputOfBody reads OPA's request body: empty, or an object whose "input"
// key (if present and not null) is the input. Other keys are ignored, as
// OPA does, and so is what follows the body's first JSON value: OPA
// decodes that one value and reads no further.
func inputOfBody(body []byte) (json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var first json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&first); err != nil {
		return nil, fmt.Errorf("body contains malformed input document: %v", err)
	}
	body = first
	// The input may be maxInputDepth deep inside the body's object.
	if err := checkJSONValueDepth(body, maxInputDepth+1); err != nil {
		return nil, fmt.Errorf("body contains malformed input document: %v", err)
	}
	var req struct {
		Input json.RawMessage `json:"input"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			// Not an object: said in OPA's words, which name the Go
			// type OPA decodes the body into.
			err = fmt.Errorf("json: cannot unmarshal %s into Go value of type types.alias", te.Value)
		}
		return nil, fmt.Errorf("body contains malformed input document: %v", err)
	}
	if len(req.Input) == 0 || string(req.Input) == "null" {
		return nil, nil
	}
	if err := checkInputNumbers(req.Input); err != nil {
		return nil, err
	}
	return req.Input, nil
}

// checkInputNumbers refuses, as OPA does and with its message, an input
// (well-formed JSON) holding a number the policy engine cannot take: one
// whose exponent is out of the engine's range (ast.NumberChecked, which
// policy.ParseInput applies). Only a number written with an exponent can
// be.
func checkInputNumbers(b []byte) error {
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case escaped:
			escaped = false
		case inString:
			escaped, inString = c == '\\', c != '"'
		case c == '"':
			inString = true
		case c == '-' || '0' <= c && c <= '9':
			j := i + 1
			for j < len(b) && strings.IndexByte("+-.0123456789eE", b[j]) >= 0 {
				j++
			}
			if bytes.ContainsAny(b[i:j], "eE") {
				if _, err := ast.NumberChecked(string(b[i:j])); err != nil {
					return err
				}
			}
			i = j - 1
		}
	}
	return nil
}

// checkJSONValue refuses what is not one well-formed JSON value of valid
// UTF-8 nested at most maxInputDepth deep.
func checkJSONValue(b []byte) error { return checkJSONValueDepth(b, maxInputDepth) }

// checkJSONValueDepth is checkJSONValue with another depth limit.
func checkJSONValueDepth(b []byte, maxDepth int) error {
	if !utf8.Valid(b) {
		return errors.New("invalid UTF-8")
	}
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		if err == nil {
			err = errors.New("not one JSON value")
		}
		return err
	}
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			if depth++; depth > maxDepth {
				return fmt.Errorf("nested deeper than %d levels", maxInputDepth)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// isDataPath reports whether path is the Data API's.
func isDataPath(path string) bool { return path == "/v1/data" || strings.HasPrefix(path, "/v1/data/") }

// dataPath is the document path asked, as sent (still percent-encoded):
// what follows the route's two segments, however they were spelt ("/v1/dat%61"
// is routed here as "/v1/data" is).
func dataPath(r *http.Request) string {
	parts := strings.SplitN(r.URL.EscapedPath(), "/", 4) // "", "v1", "data", the rest
	if len(parts) < 4 {
		return ""
	}
	return parts[3]
}

func (s *Server) answerData(w http.ResponseWriter, r *http.Request, input json.RawMessage) {
	// The path as sent (still percent-encoded): "%2F" is a slash inside a
	// key, not a separator, as in OPA.
	q := authority.DataQuery{Path: dataPath(r), Input: input,
		Metrics: boolParam(r, "metrics") || boolParam(r, "instrument"), Instrument: boolParam(r, "instrument"),
		StrictBuiltinErrors: boolParam(r, "strict-builtin-errors")}
	ans, err := s.a.QueryData(r.Context(), callerOf(r), q)
	if err != nil {
		s.writeDataError(w, r, err)
		return
	}
	out := dataAnswer{DecisionID: ans.DecisionID, Metrics: ans.Metrics}
	if ans.Defined {
		v := ans.Value
		out.Result = &v
	}
	if input == nil && r.Method == http.MethodPost { // as OPA: GET without input is no misuse
		out.Warning = &opaWarning{Code: "api_usage_warning", Message: opaInputMissing}
	}
	if boolParam(r, "provenance") {
		out.Provenance = &dataProvenance{Version: opaversion.Version, Vcs: opaversion.Vcs, Timestamp: opaversion.Timestamp,
			Hostname: opaversion.Hostname, Revision: ans.Revision,
			Bundles: map[string]map[string]string{"mandate": {"revision": ans.Revision}}}
	}
	s.metrics.decisions.WithLabelValues("data", strconv.FormatBool(ans.Defined)).Inc()
	b, err := json.Marshal(out)
	if err != nil {
		writeOPAError(w, http.StatusInternalServerError, opaInternal, "encoding the answer: "+err.Error())
		return
	}
	if boolParam(r, "pretty") {
		var buf bytes.Buffer
		if json.Indent(&buf, b, "", "  ") == nil {
			b = buf.Bytes()
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}

// writeDataError answers a Data API failure in OPA's shape.
func (s *Server) writeDataError(w http.ResponseWriter, r *http.Request, err error) {
	var te *topdown.Error
	var compileErrs ast.Errors
	switch {
	case errors.Is(err, authority.ErrUnauthenticated):
		msg := "a client certificate (X509-SVID) is required"
		if err != authority.ErrUnauthenticated {
			msg = plainText(err.Error())
		}
		writeOPAError(w, http.StatusUnauthorized, opaUnauthorized, msg)
	case errors.Is(err, authority.ErrForbidden), errors.Is(err, authority.ErrIDRevoked):
		writeOPAError(w, http.StatusForbidden, opaUnauthorized, plainText(err.Error()))
	case errors.Is(err, policy.ErrBadPath), errors.Is(err, authority.ErrInvalidRequest):
		writeOPAError(w, http.StatusBadRequest, opaInvalidParameter, plainText(err.Error()))
	case errors.Is(err, policy.ErrTimeout):
		// An evaluation error, OPA's 500 internal_error, its error's code
		// naming the timeout: the server ran out of time (under load, say),
		// which asking again may not.
		s.metrics.decisions.WithLabelValues("data", "error").Inc()
		s.logEvalError(r, policy.CodeTimeout, "")
		writeOPAError(w, http.StatusInternalServerError, opaInternal, opaEvalMessage,
			map[string]any{"code": policy.CodeTimeout, "message": err.Error()})
	case errors.Is(err, policy.ErrCanceled):
		// The caller gave up (hung up) before the policy decided: not
		// the policy's fault, nor a timeout. Answered in case it listens.
		s.metrics.decisions.WithLabelValues("data", "error").Inc()
		s.log.InfoContext(r.Context(), "policy evaluation canceled by its caller", "path", r.URL.Path)
		writeOPAError(w, http.StatusInternalServerError, opaInternal, opaEvalMessage,
			map[string]any{"code": policy.CodeCanceled, "message": err.Error()})
	case errors.As(err, &te):
		loc := ""
		if te.Location != nil {
			loc = te.Location.String()
		}
		s.metrics.decisions.WithLabelValues("data", "error").Inc()
		s.logEvalError(r, te.Code, loc)
		writeOPAError(w, http.StatusInternalServerError, opaInternal, opaEvalMessage,
			map[string]any{"code": te.Code, "message": te.Message, "location": te.Location})
	case errors.As(err, &compileErrs):
		// The path compiled against the policy is refused (an index
		// into an array no array has, a key a rule's value cannot
		// hold): OPA's 500 internal_error with the compiler's message.
		code, loc := policy.ErrorCode(compileErrs)
		s.metrics.decisions.WithLabelValues("data", "error").Inc()
		s.logEvalError(r, code, loc)
		writeOPAError(w, http.StatusInternalServerError, opaInternal, queryErrors(compileErrs).Error())
	case errors.Is(err, policy.ErrEval):
		s.metrics.decisions.WithLabelValues("data", "error").Inc()
		s.logEvalError(r, "eval_error", "")
		writeOPAError(w, http.StatusInternalServerError, opaInternal, opaEvalMessage, map[string]any{"code": "eval_error", "message": err.Error()})
	case errors.Is(err, store.ErrUnwritable):
		// The decision could not be recorded (a full disk): the audit
		// log says why, once for a run of failed commits, not once per
		// request. OPA's 500 all the same, naming no file of the server.
		s.log.DebugContext(r.Context(), "decision not recorded", "path", r.URL.Path, "err", err)
		msg := "the decision could not be recorded: the authority's data file could not be written (a full disk?); try again later"
		if errors.Is(err, store.ErrNotDurable) {
			msg = "the decision could not be recorded: a write to the authority's data file could not be confirmed on its disk, and it does nothing more with the file until it is restarted"
		}
		writeOPAError(w, http.StatusInternalServerError, opaInternal, msg)
	default:
		s.log.ErrorContext(r.Context(), "decision failed", "path", r.URL.Path, "err", err)
		writeOPAError(w, http.StatusInternalServerError, opaInternal, "the server failed to answer; the error is in its log")
	}
}

// queryErrors are the compiler's errors of the query as OPA words them:
// OPA parses the query it compiles ("data.x.y"), so an error without a
// location is at the query's 1:1 ("1:1: rego_type_error: ..."). The
// errors are copies: errs is left as it is.
func queryErrors(errs ast.Errors) ast.Errors {
	out := make(ast.Errors, len(errs))
	for i, e := range errs {
		c := *e
		if c.Location == nil {
			c.Location = &ast.Location{Row: 1, Col: 1}
		}
		out[i] = &c
	}
	return out
}

// logEvalError says in the server log that a policy failed to evaluate
// for the Data API (the operator's policy, not the caller, is at fault):
// its code and location, never its message, which may quote the input.
func (s *Server) logEvalError(r *http.Request, code, loc string) {
	attrs := []any{"path", r.URL.Path, "code", code}
	if loc != "" {
		attrs = append(attrs, "location", loc)
	}
	s.log.WarnContext(r.Context(), "policy evaluation failed", attrs...)
}

// boolParam reads an OPA boolean query parameter as OPA does: given once
// with no value, or given "true" (in any case) at least once. An empty
// value beside others ("?pretty&pretty=false") is not true.
func boolParam(r *http.Request, name string) bool {
	vals := r.URL.Query()[name]
	if len(vals) == 1 && vals[0] == "" {
		return true
	}
	return slices.ContainsFunc(vals, func(v string) bool { return strings.EqualFold(v, "true") })
}

// maxEvaluations bounds an AuthZEN batch.
const maxEvaluations = 64

// accessEvaluation is POST /access/v1/evaluation (OpenID AuthZEN
// Authorization API 1.0).
func (s *Server) accessEvaluation(w http.ResponseWriter, r *http.Request) {
	var body struct {
		authority.AccessRequest
		Input json.RawMessage `json:"input"`
	}
	if err := decodeJSONLoose(r, &body); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	req := body.AccessRequest
	req.Context = nonNull(req.Context)
	if body.Input != nil && req.Subject == nil {
		writeError(w, r, s.log, fmt.Errorf("%w: the body is the AuthZEN request itself ({\"subject\", \"action\", \"resource\"}), not wrapped in \"input\" as for /v1/data", authority.ErrInvalidRequest))
		return
	}
	s.answerAccess(w, r, req)
}

// answerAccess answers one AuthZEN evaluation with its decision.
func (s *Server) answerAccess(w http.ResponseWriter, r *http.Request, req authority.AccessRequest) {
	if err := checkAccessRequest(&req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.a.EvaluateAccess(r.Context(), callerOf(r), []authority.AccessRequest{req}, authority.ExecuteAll)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.metrics.decisions.WithLabelValues("authzen", accessOutcome(out[0])).Inc()
	writeJSON(w, http.StatusOK, out[0])
}

// accessEvaluations is POST /access/v1/evaluations: defaults at the top
// level, completed by each item of "evaluations", evaluated in order as
// options.evaluations_semantic says.
func (s *Server) accessEvaluations(w http.ResponseWriter, r *http.Request) {
	var req struct {
		authority.AccessRequest
		Evaluations []authority.AccessRequest `json:"evaluations"`
		Options     json.RawMessage           `json:"options"`
	}
	if err := decodeJSONLoose(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	semantic, err := evaluationsSemantic(req.Options)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if len(req.Evaluations) > maxEvaluations {
		writeError(w, r, s.log, fmt.Errorf("%w: at most %d evaluations per request", authority.ErrInvalidRequest, maxEvaluations))
		return
	}
	if len(req.Evaluations) == 0 { // as AuthZEN: the top level is a single evaluation, answered as one
		req.Context = nonNull(req.Context)
		s.answerAccess(w, r, req.AccessRequest)
		return
	}
	// Every evaluation is checked before any is evaluated (and recorded):
	// a malformed one refuses the whole request.
	reqs := make([]authority.AccessRequest, len(req.Evaluations))
	for i, it := range req.Evaluations {
		reqs[i] = authority.AccessRequest{Subject: or(it.Subject, req.Subject), Action: or(it.Action, req.Action),
			Resource: or(it.Resource, req.Resource), Context: or(nonNull(it.Context), nonNull(req.Context))}
		if err := checkAccessRequest(&reqs[i]); err != nil {
			// Every error of checkAccessRequest is an invalid request.
			writeError(w, r, s.log, fmt.Errorf("%w: evaluation %d: %s", authority.ErrInvalidRequest, i, problemDetail(err, authority.ErrInvalidRequest)))
			return
		}
	}
	// Each evaluation is a decision recorded: the rate limit took the
	// request's first, and takes the others now.
	s.limit.charge(s.a, callerOf(r), r.RemoteAddr, len(reqs)-1)
	out, err := s.a.EvaluateAccess(r.Context(), callerOf(r), reqs, semantic)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	for _, d := range out {
		s.metrics.decisions.WithLabelValues("authzen", accessOutcome(d)).Inc()
	}
	writeJSON(w, http.StatusOK, map[string]any{"evaluations": out})
}

// accessOutcome is an AuthZEN answer's outcome on /metrics: its
// decision, or "error" when the policy could not decide.
func accessOutcome(d authority.AccessDecision) string {
	if d.Undecided {
		return "error"
	}
	return strconv.FormatBool(d.Decision)
}

// evaluationsSemantic reads options.evaluations_semantic (execute_all if
// absent); an unknown one is refused.
func evaluationsSemantic(options json.RawMessage) (authority.EvaluationsSemantic, error) {
	if len(options) == 0 || string(options) == "null" {
		return authority.ExecuteAll, nil
	}
	var opts map[string]jsontext.Value
	if options[0] != '{' || jsonv2.Unmarshal(options, &opts) != nil {
		return "", fmt.Errorf("%w: options must be an object", authority.ErrInvalidRequest)
	}
	raw, ok := opts["evaluations_semantic"]
	if !ok || raw.Kind() == 'n' {
		return authority.ExecuteAll, nil
	}
	var sem string
	if raw.Kind() != '"' || jsonv2.Unmarshal(raw, &sem) != nil {
		return "", fmt.Errorf("%w: options.evaluations_semantic must be a string", authority.ErrInvalidRequest)
	}
	switch v := authority.EvaluationsSemantic(sem); v {
	case authority.ExecuteAll, authority.DenyOnFirstDeny, authority.PermitOnFirstPermit:
		return v, nil
	}
	return "", fmt.Errorf("%w: options.evaluations_semantic %q: one of execute_all, deny_on_first_deny, permit_on_first_permit", authority.ErrInvalidRequest, sem)
}

// nonNull is a context as the policy's input holds it: a null one is
// absent (and an evaluation's absent context takes the default).
func nonNull(raw json.RawMessage) json.RawMessage {
	if string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	return raw
}

func or(a, b json.RawMessage) json.RawMessage {
	if len(a) > 0 {
		return a
	}
	return b
}

// checkAccessRequest checks an AuthZEN evaluation as the API defines it:
// subject and resource objects with "type" and "id", an action object with
// "name" (each a non-empty string), "properties" (where present and not
// null) objects, context (where present and not null) an object, and
// no number the policy engine cannot take (checkInputNumbers).
// Other members are the caller's to add.
func checkAccessRequest(r *authority.AccessRequest) error {
	for _, e := range []struct {
		name     string
		raw      *json.RawMessage
		required []string
	}{
		{"subject", &r.Subject, []string{"type", "id"}},
		{"action", &r.Action, []string{"name"}},
		{"resource", &r.Resource, []string{"type", "id"}},
	} {
		entity, err := checkEntity(e.name, *e.raw, e.required)
		if err != nil {
			return err
		}
		*e.raw = entity
	}
	if c := bytes.TrimSpace(r.Context); len(c) > 0 && c[0] != '{' && string(c) != "null" {
		return fmt.Errorf("%w: context must be an object", authority.ErrInvalidRequest)
	}
	// A number the policy engine cannot take is refused here, with the
	// other checks, rather than when its evaluation's turn comes (after
	// those before it in a batch are decided and recorded).
	for _, e := range []struct {
		name string
		raw  json.RawMessage
	}{{"subject", r.Subject}, {"action", r.Action}, {"resource", r.Resource}, {"context", r.Context}} {
		if err := checkInputNumbers(e.raw); err != nil {
			return fmt.Errorf("%w: %s: %v", authority.ErrInvalidRequest, e.name, err)
		}
	}
	return nil
}

// checkEntity checks one of the subject, the action and the resource,
// and returns it as the policy's input holds it: a null "properties" is
// absent.
func checkEntity(name string, raw json.RawMessage, required []string) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	var m map[string]jsontext.Value
	if len(raw) == 0 || raw[0] != '{' || jsonv2.Unmarshal(raw, &m) != nil {
		return nil, fmt.Errorf("%w: %s must be an object", authority.ErrInvalidRequest, name)
	}
	for _, k := range required {
		v, ok := m[k]
		var str string
		if !ok || v.Kind() != '"' || jsonv2.Unmarshal(v, &str) != nil || str == "" {
			return nil, fmt.Errorf("%w: %s.%s must be a non-empty string", authority.ErrInvalidRequest, name, k)
		}
	}
	p, ok := m["properties"]
	switch {
	case !ok || p.Kind() == '{':
		return raw, nil
	case p.Kind() != 'n':
		return nil, fmt.Errorf("%w: %s.properties must be an object", authority.ErrInvalidRequest, name)
	}
	// Absent, not null: a rule testing for no properties
	// (not input.subject.properties) must hold for both.
	delete(m, "properties")
	out, err := jsonv2.Marshal(m, jsonv2.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", authority.ErrInvalidRequest, name, err)
	}
	return out, nil
}

// decodeJSONLoose decodes a JSON object body that may carry fields this
// server does not know (AuthZEN allows extensions), with the same limits
// as decodeJSON. Member names match exactly ("Subject" is not "subject")
// and a name given twice is refused.
func decodeJSONLoose(r *http.Request, v any) error {
	body, err := readJSONBody(r)
	if err != nil {
		return err
	}
	if b := bytes.TrimSpace(body); len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: the body must be a JSON object", errBadJSON)
	}
	// Well formed, said with where it is not; then not too deep.
	if err := jsonv2.Unmarshal(body, new(jsontext.Value)); err != nil {
		return jsonError(err)
	}
	if err := checkJSONValue(body); err != nil {
		return fmt.Errorf("%w: %v", errBadJSON, err)
	}
	if err := jsonv2.Unmarshal(body, v); err != nil {
		return jsonError(err)
	}
	return nil
}

// policyReload is POST /v1/admin/policy/reload.
func (s *Server) policyReload(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	rev, err := s.a.ReloadPolicy(r.Context(), callerOf(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"revision": rev})
}

// policyStatus is GET /v1/admin/policy: the active revision and modules.
func (s *Server) policyStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.a.PolicyStatus(r.Context(), callerOf(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// policyTest is POST /v1/admin/policy/test: run the active revision's
// Rego tests.
func (s *Server) policyTest(w http.ResponseWriter, r *http.Request) {
	var req struct{} // {}, as the reload takes: a body is read as every JSON body is
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	res, err := s.a.PolicyTests(r.Context(), callerOf(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	type result struct {
		Package    string `json:"package"`
		Name       string `json:"name"`
		Pass       bool   `json:"pass"`
		Error      string `json:"error,omitempty"`
		DurationNS int64  `json:"duration_ns"`
	}
	out := []result{}
	for _, t := range res {
		out = append(out, result{Package: t.Package, Name: t.Name, Pass: !t.Fail && t.Error == "", Error: t.Error, DurationNS: t.Duration.Nanoseconds()})
	}
	writeJSON(w, http.StatusOK, map[string]any{"revision": s.a.PolicyRevision(), "tests": out})
}
