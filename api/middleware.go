package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/delegation"
)

type callerKey struct{}

type requestIDKey struct{}

// RequestID is the id of the request ctx belongs to ("" outside one): the
// X-Request-Id it came with (a proxy's, an AuthZEN client's), when that is
// 1 to 256 bytes of printable ASCII, else one made for it. Every answer
// carries it in X-Request-Id (AuthZEN asks the PDP to echo it), and the
// log lines of the request (LogHandler) say it.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// maxRequestID bounds a caller's X-Request-Id taken as the request's id.
const maxRequestID = 256

// requestID is the id of r: its X-Request-Id when that is 1 to
// maxRequestID bytes of printable ASCII, else 16 random hex digits.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= maxRequestID && !strings.ContainsFunc(id, func(c rune) bool { return c < 0x20 || c > 0x7e }) {
		return id
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// LogHandler adds to every record logged with a request's context the
// request_id of that request, so that a 500's log line can be found by
// the X-Request-Id its caller got.
func LogHandler(h slog.Handler) slog.Handler { return requestIDHandler{h} }

type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r = r.Clone()
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(as)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}

// callerOf returns the authenticated client of r, or nil for a public
// request.
func callerOf(r *http.Request) *authority.Caller {
	c, _ := r.Context().Value(callerKey{}).(*authority.Caller)
	return c
}

// statusWriter records the status code for metrics, and why an answer
// could not be written (writeJSON), for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	fault  error
}

// noteFault records why the handler's answer could not be written.
func (w *statusWriter) noteFault(err error) { w.fault = err }

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// router is what the middleware asks of the handler it wraps (a
// ServeMux) to name the route of a request it refuses itself.
type router interface {
	Handler(r *http.Request) (h http.Handler, pattern string)
}

// middleware wraps every request: panic recovery, body limit, timeout,
// client identity, metrics.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		id := requestID(r)
		sw.Header().Set("X-Request-Id", id)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		routed := r // the request the mux sees; it records the matched pattern there
		defer func() {
			p := recover()
			begun := sw.status != 0 // the answer's status, and maybe part of it, written
			if p != nil {
				// With where it happened: the panic's value alone seldom
				// says (a nil map, an index out of range).
				s.log.ErrorContext(r.Context(), "panic in handler", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !begun {
					detail := "the server failed to answer; the error is in its log, with request_id=" + id
					if isDataPath(r.URL.Path) {
						writeOPAError(sw, http.StatusInternalServerError, opaInternal, detail)
					} else {
						writeProblem(sw, Problem{Type: ProblemBase + "internal", Title: "Internal server error", Status: 500, Detail: detail})
					}
				}
			}
			if sw.fault != nil {
				s.log.ErrorContext(r.Context(), "answer not written", "method", r.Method, "path", r.URL.Path, "err", sw.fault)
			}
			route := routed.Pattern
			if route == "/" { // the unknown paths' 404
				route = ""
			}
			s.metrics.observe(route, sw.status, time.Since(start))
			if p != nil && begun {
				// The answer begun cannot be finished, nor turned into a
				// 500: the connection is cut (net/http's abort), so that
				// the client sees it fail rather than take what was sent
				// as the whole answer.
				panic(http.ErrAbortHandler)
			}
		}()
		// A path not in clean form names no endpoint: a 404 here, not
		// the mux's redirect to a cleaned path (text/html, and for any
		// method).
		if !isCleanPath(r.URL.EscapedPath()) {
			if isDataPath(r.URL.Path) {
				writeOPAError(sw, http.StatusNotFound, opaNotFound, "the path is not in clean form (no empty, . or .. segments)")
			} else {
				notFound(sw, r)
			}
			return
		}
		// Given the server's own writer, not sw: only it can be told that
		// the limit was hit, and then closes the connection after the
		// answer instead of reading the rest of the body to keep it.
		hasBody := r.Body != nil && r.Body != http.NoBody
		r.Body = http.MaxBytesReader(w, r.Body, s.bodyLimit(r))
		c, err := s.authenticate(r)
		if err != nil {
			// Refused before the mux sees it: counted under the route
			// it asked for all the same.
			if mux, ok := next.(router); ok {
				_, routed.Pattern = mux.Handler(r)
			}
			switch {
			case isDataPath(r.URL.Path): // the Data API answers in OPA's shape, even here
				s.writeDataError(sw, r, err)
			case r.Method == http.MethodPost && r.URL.Path == "/v1/token":
				// The token endpoint answers an RFC 6749 error, even
				// here, and counts the request as it counts every other.
				s.metrics.delegations.WithLabelValues("refused").Inc()
				oauthError(sw, clientAuthFailureStatus(sw, r), "invalid_client", plainText(err.Error()))
			default:
				writeError(sw, r, s.log, err)
			}
			return
		}
		ctx := r.Context()
		if c != nil {
			ctx = context.WithValue(ctx, callerKey{}, c)
		}
		// Who may call is checked before the body is asked for (a 100
		// Continue) or waited for, and before the audit log's next
		// commit may wait for the request: a caller without the role
		// gets its 401 or 403 at once, one over its http.rate_limit its
		// 429. A path or method that names no endpoint (a pattern
		// without a method: its 404 or 405) reads no body either.
		endpoint := true
		if mux, ok := next.(router); ok {
			_, pattern := mux.Handler(r)
			if check := s.roleCheck(pattern); check != nil {
				if err := check(c, r); err != nil {
					routed.Pattern = pattern
					s.writeRefusal(sw, r, err)
					return
				}
			}
			if rateLimited(pattern) && !s.takeLimit(sw, r, c, pattern) {
				routed.Pattern = pattern
				return
			}
			endpoint = strings.Contains(pattern, " ")
		}
		// The body is read before the work's time starts: a client slow
		// to send it is bounded by http.read_timeout, and does not make
		// its own request fail as the server's fault (503 timeout).
		if hasBody {
			if endpoint {
				r.Body = readBody(r.Body, min(r.ContentLength, s.bodyLimit(r), maxBodyPresize))
			}
			// The answer's time (http.write_timeout, which net/http counts
			// from the request's headers) counts from here too: the work
			// that starts now must not lose its answer to the body's
			// slowness. (Not every writer has a deadline: a test's.)
			if s.writeTime > 0 {
				_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.writeTime))
			}
		}
		// A request that may change something is about to record it:
		// the audit log's next commit may wait for it (group commit).
		// Only once its body has been read, its work starting: a client
		// sending its body slowly does not hold every commit. And only
		// for a caller with an X509-SVID.
		if c != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
			var end func()
			ctx, end = s.a.ExpectAudit(ctx)
			defer end()
		}
		ctx, cancel := context.WithTimeout(ctx, s.workTime)
		defer cancel()
		routed = r.WithContext(ctx)
		next.ServeHTTP(sw, routed)
	})
}

// maxBodyPresize bounds the memory a body's read starts with, whatever
// Content-Length it declares (up to the body limit, 16 MiB at most): more
// is only taken as the bytes arrive.
const maxBodyPresize = 64 << 10

// readBody reads body (bounded by its MaxBytesReader) to its end, into
// a buffer of size bytes (its Content-Length, within the limit and
// maxBodyPresize) to start with, and returns a body that hands a handler what was
// read, then the error that ended the read, if any (a body over the
// limit is refused where it was before, as the handler reads it).
func readBody(body io.ReadCloser, size int64) io.ReadCloser {
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(size) + bytes.MinRead) // the read that finds the end needs MinRead free
	}
	_, err := buf.ReadFrom(body)
	return &readBodyCloser{Reader: bytes.NewReader(buf.Bytes()), buf: buf.Bytes(), err: err, body: body}
}

type readBodyCloser struct {
	*bytes.Reader
	buf  []byte // what was read
	err  error
	body io.ReadCloser
}

// rest is what a handler has not read of the body, and the error that
// ended the body's read (as io.ReadAll of it would return them), without
// a copy: the body has been read once already.
func (b *readBodyCloser) rest() ([]byte, error) {
	rest := b.buf[len(b.buf)-b.Reader.Len():]
	b.Reader.Reset(nil)
	return rest, b.err
}

func (b *readBodyCloser) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF && b.err != nil {
		err = b.err
	}
	return n, err
}

func (b *readBodyCloser) Close() error { return b.body.Close() }

// isCleanPath reports whether p is a path the mux would serve as it is,
// without redirecting to its cleaned form: absolute, without empty, .
// or .. segments (a trailing slash kept).
func isCleanPath(p string) bool {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// delegationBodyBytes is the least a request for a delegation hop
// (POST /v1/delegations, POST /v1/token) may carry, whatever
// http.max_body_bytes says: its parent token and the delegator's
// signature, which the hop's token holds together (at most
// delegation.MaxTokenSize), and the delegatee's certificate chain. A
// lower limit would refuse the deeper hops of a chain the authority
// issues.
const delegationBodyBytes = 2 * delegation.MaxTokenSize

// bodyLimit is the body limit of r: http.max_body_bytes, and for the
// delegation endpoints at least delegationBodyBytes.
func (s *Server) bodyLimit(r *http.Request) int64 {
	if r.Method == http.MethodPost && (r.URL.Path == "/v1/delegations" || r.URL.Path == "/v1/token") {
		return max(s.maxBody, delegationBodyBytes)
	}
	return s.maxBody
}

// authenticate returns the caller whose X509-SVID was verified during the
// handshake, refusing one that has expired since.
func (s *Server) authenticate(r *http.Request) (*authority.Caller, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, nil
	}
	leaf := r.TLS.PeerCertificates[0]
	if now := s.a.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%w: the client certificate is not valid now", authority.ErrUnauthenticated)
	}
	if err := s.reverify(r); err != nil {
		return nil, err
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", authority.ErrUnauthenticated, err)
	}
	return &authority.Caller{ID: id, Cert: leaf}, nil
}

// reverify verifies the connection's client chain again if the bundles
// changed since it was last verified (see connAuth).
func (s *Server) reverify(r *http.Request) error {
	gen := s.a.BundleGeneration()
	ca, _ := r.Context().Value(connAuthKey{}).(*connAuth)
	if ca != nil && ca.gen.Load() == gen {
		return nil
	}
	if ca != nil && ca.refused.Load() == gen {
		return fmt.Errorf("%w: the client certificate no longer verifies (the bundles changed since this connection's handshake)", authority.ErrUnauthenticated)
	}
	if err := s.verifyChain(r.TLS.PeerCertificates); err != nil {
		s.metrics.tlsRefused.Inc()
		if ca != nil {
			ca.refused.Store(gen)
		}
		return fmt.Errorf("%w: the client certificate no longer verifies: %v", authority.ErrUnauthenticated, err)
	}
	if ca != nil {
		ca.gen.Store(gen)
	}
	return nil
}

func itoa(i int) string { return strconv.Itoa(i) }
