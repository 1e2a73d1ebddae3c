// Package echo bounds what the authority repeats, in its errors, logs,
// answers and audit entries, of what others sent it: a caller's
// request, a peer's answer, a device's report. What it repeats is at
// most the bound's bytes of it, never a UTF-8 sequence cut in two, and
// marked "…" when it was cut, so that a sender cannot make the
// authority write more of its text than the bound, whatever it sends.
package echo
