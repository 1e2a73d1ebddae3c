//go:build ignore

// The check scripts/x509-zlint.sh builds (in a module of its own, with
// github.com/zmap/zlint/v3 from the Go module proxy): it lints every
// certificate in the PEM files it is given with zlint, and fails if any
// lint of the sources that apply to a SPIFFE trust domain's certificates
// (RFC 5280, RFC 3279/5480/8813 on keys and signatures, RFC 5891 on
// internationalised names, and the community lints) reports an error or
// a warning, but for the lints named with -allow. The CA/Browser Forum's
// and the root programs' lints (CABF_BR, Mozilla, Apple, Chrome, ETSI, …)
// are for the Web PKI, whose certificates SVIDs are not: their findings
// are printed with -v, and fail nothing.
//
// Each argument is LABEL=FILE; a certificate found in several files is
// linted once, under its first label.
//
//	go run x509-zlint-check.go [-v] [-allow LINT]... LABEL=FILE...
package main

import (
	"crypto/sha256"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// applied are the lint sources whose rules govern these certificates.
var applied = []lint.LintSource{lint.RFC5280, lint.RFC3279, lint.RFC5480, lint.RFC8813, lint.RFC5891, lint.Community}

type allowList []string

func (a *allowList) String() string     { return strings.Join(*a, ",") }
func (a *allowList) Set(s string) error { *a = append(*a, s); return nil }

func main() {
	log.SetFlags(0)
	log.SetPrefix("x509 zlint check: ")
	var allow allowList
	verbose := flag.Bool("v", false, "also print the findings of the Web PKI lints, which fail nothing")
	flag.Var(&allow, "allow", "a lint whose findings do not apply (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		log.Fatal("usage: x509-zlint-check [-v] [-allow LINT]... LABEL=FILE...")
	}
	reg := lint.GlobalRegistry()
	for _, name := range allow {
		if reg.ByName(name) == nil {
			log.Fatalf("-allow %s: zlint has no such lint", name)
		}
	}

	seen := map[[sha256.Size]byte]bool{}
	certs, failed := 0, 0
	used := map[string]bool{}
	for _, arg := range flag.Args() {
		label, file, ok := strings.Cut(arg, "=")
		if !ok {
			log.Fatalf("%s: want LABEL=FILE", arg)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			log.Fatal(err)
		}
		n := 0
		for {
			var b *pem.Block
			b, data = pem.Decode(data)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				continue
			}
			n++
			sum := sha256.Sum256(b.Bytes)
			if seen[sum] {
				continue
			}
			seen[sum] = true
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				log.Fatalf("%s: certificate %d: %v", label, n, err)
			}
			certs++
			name := fmt.Sprintf("%s[%d] (%s)", label, n-1, describe(c))
			failed += lintOne(reg, name, c, allow, used, *verbose)
		}
		if n == 0 {
			log.Fatalf("%s: no certificate in %s", label, file)
		}
	}
	for _, name := range allow {
		if !used[name] {
			fmt.Printf("note: -allow %s matched no finding\n", name)
		}
	}
	if failed > 0 {
		log.Fatalf("%d finding(s) of applicable lints in %d certificate(s)", failed, certs)
	}
	fmt.Printf("%d certificate(s): no error or warning of the RFC and community lints (but those allowed)\n", certs)
}

// lintOne lints c and prints its findings; it returns how many fail the
// check.
func lintOne(reg lint.Registry, name string, c *x509.Certificate, allow []string, used map[string]bool, verbose bool) int {
	rs := zlint.LintCertificateEx(c, reg)
	names := make([]string, 0, len(rs.Results))
	for n := range rs.Results {
		names = append(names, n)
	}
	sort.Strings(names)
	failed := 0
	for _, n := range names {
		r := rs.Results[n]
		if r.Status < lint.Notice {
			continue
		}
		src := reg.ByName(n).Source
		status := strings.ToUpper(r.Status.String())
		line := fmt.Sprintf("%s %s [%s]", status, n, src)
		if r.Details != "" {
			line += ": " + r.Details
		}
		switch {
		case !slices.Contains(applied, src):
			if verbose {
				fmt.Printf("%s: not applied: %s\n", name, line)
			}
		case r.Status == lint.Notice:
			fmt.Printf("%s: notice: %s\n", name, line)
		case slices.Contains(allow, n):
			used[n] = true
			fmt.Printf("%s: allowed: %s\n", name, line)
		default:
			fmt.Printf("%s: FAIL: %s\n", name, line)
			failed++
		}
	}
	return failed
}

// describe names a certificate: its URI SAN, else its subject.
func describe(c *x509.Certificate) string {
	s := slices.Clone(c.URIs)
	if c.IsCA {
		s = append(s, "CA")
	}
	if len(s) == 0 {
		return c.Subject.String()
	}
	return strings.Join(s, ", ")
}
