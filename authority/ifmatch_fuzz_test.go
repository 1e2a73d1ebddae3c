package authority

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"mandate.dev/mandate/registry"
)

// ifMatchReference reads header as RFC 9110 has If-Match (§13.1.1,
// §8.8.3, and §5.6.1 for lists), written apart from entityTags to be
// compared with it: the header's elements, split at the commas outside
// quoted strings, each with its optional white space (SP, HTAB) around it
// cut and dropped when empty, each "*" or an entity tag (W/ and a quoted
// string of etagc: %x21, %x23-7E, %x80-FF); "*" only alone. ok is false
// when header is not such a list.
func ifMatchReference(header string) (elems []string, ok bool) {
	var pieces []string
	quoted, start := false, 0
	for i := 0; i < len(header); i++ {
		switch header[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				pieces = append(pieces, header[start:i])
				start = i + 1
			}
		}
	}
	pieces = append(pieces, header[start:])
	for _, p := range pieces {
		if p = strings.Trim(p, " \t"); p != "" {
			elems = append(elems, p)
		}
	}
	isTag := func(e string) bool {
		e = strings.TrimPrefix(e, "W/")
		if len(e) < 2 || e[0] != '"' || e[len(e)-1] != '"' {
			return false
		}
		for _, c := range []byte(e[1 : len(e)-1]) {
			if c != 0x21 && (c < 0x23 || c > 0x7e) && c < 0x80 {
				return false
			}
		}
		return true
	}
	for _, e := range elems {
		if e == "*" && len(elems) > 1 || e != "*" && !isTag(e) {
			return nil, false
		}
	}
	return elems, true
}

// FuzzIfMatch feeds If-Match headers (from the network: an admin's
// client, or whatever is between it and the server) to the check of a
// registration's version. It must never panic, and must agree with
// ifMatchReference: a header that is no list of entity tags or "*" is
// an invalid request; "*" matches any version; otherwise the
// registration is changed only when one of the tags is its ETag, strong
// (a weak tag never matches: If-Match compares strongly), and the
// precondition fails when none is, an empty list included.
func FuzzIfMatch(f *testing.F) {
	cur := &registry.Agent{ID: "0123456789abcdef", SPIFFEID: "spiffe://example.org/agent/a", Scopes: []string{"calendar:read"}}
	tag := ETag(cur)
	for _, s := range []string{
		tag, "*", "", " ", ",", " , ,\t", tag + ", " + tag, `"x", ` + tag, `"x",` + tag + `,`, ", ," + tag + " ,",
		"W/" + tag, `W/"x", ` + tag, "w/" + tag, `"a,b", ` + tag, `"a, b"`, `"x" ` + tag, `"x"` + tag, tag + "x",
		`*, "x"`, `"x", *`, "*, *", "*,", ", *", "**", `"*"`, `"`, `""`, `"` + "\x7f" + `"`, `"` + "\x80\xff" + `"`,
		`"a b"`, "\"a\tb\"", `W/`, `W/"`, `W/""`, `W/W/"x"`, "\t" + tag + "\t", "\r" + tag, tag + "\n",
		strings.Repeat(`"x", `, 200) + tag, strings.TrimSuffix(tag, `"`),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		err := IfMatch(header).check(cur)
		elems, ok := ifMatchReference(header)
		switch {
		case len(header) > maxIfMatch:
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("If-Match of %d bytes: %v, want %v", len(header), err, ErrInvalidRequest)
			}
			return
		case !ok:
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("If-Match %q, no list of entity tags: %v, want %v", header, err, ErrInvalidRequest)
			}
		case slices.Equal(elems, []string{"*"}) || slices.Contains(elems, tag):
			if err != nil {
				t.Fatalf("If-Match %q names the registration's version %s: %v, want nil", header, tag, err)
			}
		default:
			if !errors.Is(err, ErrPreconditionFailed) {
				t.Fatalf("If-Match %q does not name the version %s: %v, want %v", header, tag, err, ErrPreconditionFailed)
			}
		}
		// What entityTags reads is the reference's list.
		tags, terr := entityTags(header)
		if (terr == nil) != ok || ok && !slices.Equal(tags, elems) {
			t.Fatalf("entityTags(%q) = %q, %v; the reference reads %q (a list: %v)", header, tags, terr, elems, ok)
		}
	})
}
