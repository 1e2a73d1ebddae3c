package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzPrintEntry prints arbitrary entries, as a log (another
// organisation's, or one an attacker serves) may hold them, as audit
// show, tail and search do: never a panic, and what is printed can
// neither pass for another entry nor act on a terminal. Read for people,
// it is one line "#<index> ..." and one indented line per field, every
// character printable; as JSON, the entry's bytes on one line, or an
// error.
func FuzzPrintEntry(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"time":"2025-01-01T00:00:00.000000000Z","type":"policy.decision","actor":"system","subject":"s","decision_id":"d1","policy_revision":"ab12","details":{"allow":false}}`,
		`{"v":1,"time":"2025-01-01T00:00:00.000000000Z","type":"x","actor":"system\n#5 x","subject":"s\u001b[8m","details":{"note":"pay \u202egnp.exe\u200b \ud83d\ude00"}}`,
		`{"v":1,"type":"x","accountable":{"operator":"o","n":1e400},"delegation_id":"d 1","details":[1,"\u0085",null]}`,
		"{\"type\":\"\xff\xfe\",\"details\":\"\xc2\x9b31m\"}",
		`{"details":"\udb40\udc01"}`,
		`{"time":1,"type":null}`,
		`null`, `[]`, `{}`, ``, `{"a":`, "{}\n{}", `{"details":{"k":"v"}} `,
	} {
		f.Add(uint64(4), []byte(s))
	}
	f.Fuzz(func(t *testing.T, index uint64, entry []byte) {
		p := &provenEntry{index: index, entry: entry}
		var out bytes.Buffer
		if err := printEntry(&out, p, true); err == nil {
			if s := out.String(); s != string(entry)+"\n" || strings.Count(s, "\n") != 1 || !utf8.ValidString(s) {
				t.Fatalf("as JSON, entry %q printed %q", entry, s)
			}
		}
		out.Reset()
		if err := printEntry(&out, p, false); err != nil {
			return
		}
		s := out.String()
		if !utf8.ValidString(s) {
			t.Fatalf("entry %q printed as invalid UTF-8: %q", entry, s)
		}
		lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		if !strings.HasSuffix(s, "\n") || !strings.HasPrefix(lines[0], "#"+strconv.FormatUint(index, 10)+" ") {
			t.Fatalf("entry %q printed %q, want a line #%d first", entry, s, index)
		}
		for i, l := range lines {
			if i > 0 && !strings.HasPrefix(l, "    ") {
				t.Fatalf("entry %q printed a line %q of its own", entry, l)
			}
			if j := strings.IndexFunc(l, func(r rune) bool { return !strconv.IsPrint(r) }); j >= 0 {
				t.Fatalf("entry %q printed an unprintable character in %q", entry, l)
			}
		}
		if len(lines) > 6 {
			t.Fatalf("entry %q printed %d lines", entry, len(lines))
		}
	})
}
