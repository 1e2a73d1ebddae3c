package audit

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// validate checks the rules of Entry that do not depend on the encoding.
func validate(e Entry) error {
	if e.Time.IsZero() {
		return invalid("time is required")
	}
	if y := e.Time.UTC().Year(); y < 1 || y > 9999 {
		return invalid("time %v: year outside 1..9999", e.Time)
	}
	if err := validateType(e.Type); err != nil {
		return err
	}
	if err := validateActor(e.Actor); err != nil {
		return err
	}
	for _, p := range e.Accountable {
		if p.SPIFFEID.IsZero() {
			return invalid("accountable party without SPIFFE ID")
		}
		if !validUTF8(p.Operator, p.ModelProvider, p.Model, p.ResponsibleParty) {
			return invalid("accountable party %s: invalid UTF-8", p.SPIFFEID)
		}
	}
	if !validUTF8(e.Subject, e.DecisionID, e.PolicyRevision, e.DelegationID) {
		return invalid("invalid UTF-8")
	}
	return nil
}

// validateType accepts dot-separated words of [a-z0-9_], each starting
// with a letter.
func validateType(t string) error {
	if t == "" || len(t) > MaxTypeLen {
		return invalid("type %q: want 1 to %d bytes", t, MaxTypeLen)
	}
	for word := range strings.SplitSeq(t, ".") {
		if word == "" || word[0] < 'a' || word[0] > 'z' {
			return invalid("type %q: each dot-separated word must start with a-z", t)
		}
		for _, c := range []byte(word) {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
				return invalid("type %q: only a-z, 0-9, _ and . are allowed", t)
			}
		}
	}
	return nil
}

// validateActor accepts ActorSystem or a SPIFFE ID in its normal form.
func validateActor(a string) error {
	if a == ActorSystem {
		return nil
	}
	id, err := spiffeid.FromString(a)
	if err != nil {
		return invalid("actor %q: want %q or a SPIFFE ID: %v", a, ActorSystem, err)
	}
	if id.String() != a {
		return invalid("actor %q: not in normal form", a)
	}
	return nil
}

func validUTF8(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// canonicalDetails returns the canonical form of a JSON object (see the
// package documentation). Anything but one valid JSON object (RFC 8259) in
// valid UTF-8, optionally surrounded by whitespace, is refused.
//
// It reads the input as encoding/json does (with UseNumber): escapes are
// decoded, an escaped lone surrogate becomes U+FFFD, of duplicate keys the
// last wins; unlike encoding/json, nesting deeper than maxDepth is
// refused. It does not build a tree of
// values: only each object's members are held, to sort them.
func canonicalDetails(raw []byte) ([]byte, error) {
	if !utf8.Valid(raw) {
		return nil, invalid("details: invalid UTF-8")
	}
	c := canonicalizer{in: raw}
	c.space()
	if c.pos >= len(c.in) || c.in[c.pos] != '{' {
		return nil, invalid("details: want a JSON object")
	}
	out, err := c.value(make([]byte, 0, len(raw)))
	if err != nil {
		return nil, invalid("details: %v", err)
	}
	if c.space(); c.pos != len(c.in) {
		return nil, invalid("details: data after the object at offset %d", c.pos)
	}
	return out, nil
}

// maxDepth is the deepest nesting of arrays and objects in details (the
// details object itself is depth 1).
const maxDepth = 100

// canonicalizer is a JSON reader writing the canonical form as it goes.
type canonicalizer struct {
	in    []byte
	pos   int
	depth int
}

// member is one object member: its decoded key, and its value's canonical
// bytes at vals[start:end] of the object being read.
type member struct {
	key        string
	start, end int
}

func (c *canonicalizer) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", c.pos, fmt.Sprintf(format, args...))
}

// space skips JSON whitespace.
func (c *canonicalizer) space() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

// value reads one value at c.pos (after whitespace) and appends its
// canonical form to out.
func (c *canonicalizer) value(out []byte) ([]byte, error) {
	c.space()
	if c.pos >= len(c.in) {
		return nil, c.errorf("unexpected end")
	}
	switch ch := c.in[c.pos]; {
	case ch == '{':
		return c.object(out)
	case ch == '[':
		return c.array(out)
	case ch == '"':
		s, err := c.str()
		if err != nil {
			return nil, err
		}
		return appendString(out, s), nil
	case ch == '-' || ('0' <= ch && ch <= '9'):
		return c.number(out)
	}
	for _, lit := range []string{"true", "false", "null"} {
		if bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
			c.pos += len(lit)
			return append(out, lit...), nil
		}
	}
	return nil, c.errorf("invalid character %q", c.in[c.pos])
}

// enter and leave track the nesting depth.
func (c *canonicalizer) enter() error {
	if c.depth++; c.depth > maxDepth {
		return c.errorf("nested more than %d deep", maxDepth)
	}
	c.pos++ // the opening bracket
	c.space()
	return nil
}

// object reads an object, then appends its members sorted by key, the
// last of duplicates kept.
func (c *canonicalizer) object(out []byte) ([]byte, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	var members []member
	var vals []byte
	for c.pos < len(c.in) && c.in[c.pos] != '}' {
		if len(members) > 0 {
			if err := c.expect(','); err != nil {
				return nil, err
			}
			c.space()
		}
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return nil, c.errorf("want an object key")
		}
		key, err := c.str()
		if err != nil {
			return nil, err
		}
		c.space()
		if err := c.expect(':'); err != nil {
			return nil, err
		}
		start := len(vals)
		if vals, err = c.value(vals); err != nil {
			return nil, err
		}
		members = append(members, member{key, start, len(vals)})
		c.space()
	}
	if err := c.expect('}'); err != nil {
		return nil, err
	}
	c.depth--
	// Stable, so that of equal keys the last one read is the last.
	slices.SortStableFunc(members, func(a, b member) int { return strings.Compare(a.key, b.key) })
	out = append(out, '{')
	first := true
	for i, m := range members {
		if i+1 < len(members) && members[i+1].key == m.key {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = appendString(out, m.key)
		out = append(out, ':')
		out = append(out, vals[m.start:m.end]...)
	}
	return append(out, '}'), nil
}

func (c *canonicalizer) array(out []byte) ([]byte, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	out = append(out, '[')
	for n := 0; c.pos < len(c.in) && c.in[c.pos] != ']'; n++ {
		if n > 0 {
			if err := c.expect(','); err != nil {
				return nil, err
			}
			out = append(out, ',')
		}
		var err error
		if out, err = c.value(out); err != nil {
			return nil, err
		}
		c.space()
	}
	if err := c.expect(']'); err != nil {
		return nil, err
	}
	c.depth--
	return append(out, ']'), nil
}

// expect consumes the byte ch.
func (c *canonicalizer) expect(ch byte) error {
	if c.pos >= len(c.in) || c.in[c.pos] != ch {
		return c.errorf("want %q", ch)
	}
	c.pos++
	return nil
}

// number copies a number, checking RFC 8259's grammar:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func (c *canonicalizer) number(out []byte) ([]byte, error) {
	start := c.pos
	if c.in[c.pos] == '-' {
		c.pos++
	}
	switch {
	case c.pos < len(c.in) && c.in[c.pos] == '0':
		c.pos++
	case c.digits() == 0:
		return nil, c.errorf("invalid number")
	}
	if c.pos < len(c.in) && c.in[c.pos] == '.' {
		c.pos++
		if c.digits() == 0 {
			return nil, c.errorf("invalid number")
		}
	}
	if c.pos < len(c.in) && (c.in[c.pos] == 'e' || c.in[c.pos] == 'E') {
		c.pos++
		if c.pos < len(c.in) && (c.in[c.pos] == '+' || c.in[c.pos] == '-') {
			c.pos++
		}
		if c.digits() == 0 {
			return nil, c.errorf("invalid number")
		}
	}
	return append(out, c.in[start:c.pos]...), nil
}

// digits skips decimal digits and returns how many.
func (c *canonicalizer) digits() int {
	start := c.pos
	for c.pos < len(c.in) && '0' <= c.in[c.pos] && c.in[c.pos] <= '9' {
		c.pos++
	}
	return c.pos - start
}

// str reads a string (c.pos at its opening quote) and returns it decoded.
func (c *canonicalizer) str() (string, error) {
	c.pos++
	start := c.pos
	for c.pos < len(c.in) { // fast path: no escapes
		switch ch := c.in[c.pos]; {
		case ch == '"':
			c.pos++
			return string(c.in[start : c.pos-1]), nil
		case ch == '\\':
			return c.escapedStr(start)
		case ch < 0x20:
			return "", c.errorf("control character in string")
		}
		c.pos++
	}
	return "", c.errorf("unterminated string")
}

// escapedStr continues str at the first backslash.
func (c *canonicalizer) escapedStr(start int) (string, error) {
	b := append([]byte(nil), c.in[start:c.pos]...)
	for c.pos < len(c.in) {
		ch := c.in[c.pos]
		switch {
		case ch == '"':
			c.pos++
			return string(b), nil
		case ch < 0x20:
			return "", c.errorf("control character in string")
		case ch != '\\':
			b = append(b, ch)
			c.pos++
			continue
		}
		var err error
		if b, err = c.escape(b); err != nil {
			return "", err
		}
	}
	return "", c.errorf("unterminated string")
}

// escape decodes the escape sequence at c.pos and appends it to b.
func (c *canonicalizer) escape(b []byte) ([]byte, error) {
	if c.pos+1 >= len(c.in) {
		return nil, c.errorf("unterminated string")
	}
	c.pos += 2
	switch e := c.in[c.pos-1]; e {
	case '"', '\\', '/':
		return append(b, e), nil
	case 'b':
		return append(b, '\b'), nil
	case 'f':
		return append(b, '\f'), nil
	case 'n':
		return append(b, '\n'), nil
	case 'r':
		return append(b, '\r'), nil
	case 't':
		return append(b, '\t'), nil
	case 'u':
		r, ok := c.hex4()
		if !ok {
			return nil, c.errorf("invalid \\u escape")
		}
		if utf16.IsSurrogate(r) {
			// A pair only if a \u low surrogate follows; else U+FFFD and
			// what follows is read on its own (as encoding/json does).
			save := c.pos
			if c.pos+1 < len(c.in) && c.in[c.pos] == '\\' && c.in[c.pos+1] == 'u' {
				c.pos += 2
				r2, ok := c.hex4()
				if dec := utf16.DecodeRune(r, r2); ok && dec != unicode.ReplacementChar {
					return utf8.AppendRune(b, dec), nil
				}
			}
			c.pos, r = save, unicode.ReplacementChar
		}
		return utf8.AppendRune(b, r), nil
	}
	return nil, c.errorf("invalid escape")
}

// hex4 reads four hex digits.
func (c *canonicalizer) hex4() (rune, bool) {
	if c.pos+4 > len(c.in) {
		return 0, false
	}
	var r rune
	for _, h := range c.in[c.pos : c.pos+4] {
		switch {
		case '0' <= h && h <= '9':
			h -= '0'
		case 'a' <= h && h <= 'f':
			h -= 'a' - 10
		case 'A' <= h && h <= 'F':
			h -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	c.pos += 4
	return r, true
}

// appendString writes s (valid UTF-8) as a JSON string the way RFC 8785
// (JCS) does: '"' and '\' escaped with a backslash; U+0008, U+0009,
// U+000A, U+000C and U+000D as \b \t \n \f \r; other characters below
// U+0020 as \u00xx with lower-case hex digits; everything else as is.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c >= 0x20:
			b = append(b, c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
	}
	return append(b, '"')
}
