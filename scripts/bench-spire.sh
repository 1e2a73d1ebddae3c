#!/usr/bin/env bash
# Benchmark: SVID issuance by a SPIRE server (v1.13.3, built from the Go
# module proxy) through its server API, beside Mandate's through its own,
# on the same machine, their runs alternating so that both see the same
# load from elsewhere. README.md (Performance) gives the results.
#
#   scripts/bench-spire.sh [--duration 10s] [--concurrency 16] [--rounds 3] [path to a mandate binary]
#
# SPIRE: spire-server with the sql DataStore on sqlite3 (a file on disk)
# and the disk KeyManager (its keys in a file), the setup closest to
# Mandate's, whose state and CA keys are on disk; the memory KeyManager
# would lose its keys on restart. A Go load generator (written below)
# calls svid/v1 MintX509SVID (each request with a fresh P-256 key's CSR,
# all made before the measured window) and MintJWTSVID on the admin Unix
# socket: no TLS, and the caller is trusted as local.
# Mandate: "mandate serve" with its defaults but --rate-limit 0 (the
# load is one node's, which http.rate_limit would hold back; SPIRE's
# admin socket has no limit) and "mandate bench issue":
# TLS 1.3 mTLS with a node's X509-SVID, and every SVID in the audit log,
# durably, before it is handed out.
# Both load generators give each in-flight request its own connection,
# opened before the window; both print the same columns, the server's
# CPU time per SVID from /proc/PID/stat over the window. The script adds
# the bytes each server had written to storage per SVID
# (/proc/PID/io write_bytes, over the whole bench command) and checks
# SPIRE's datastore rows before and after its runs.
# Not run by test.sh: it takes rounds × 4 × (duration + a few s). It needs
# Go and the module proxy, gcc (SPIRE's SQLite) and python3. All on
# 127.0.0.1, in a temporary directory.
set -euo pipefail
DUR=10s CONC=16 ROUNDS=3 MANDATE=
while [ $# -gt 0 ]; do
  case $1 in
  --duration) DUR=$2; shift 2 ;;
  --concurrency) CONC=$2; shift 2 ;;
  --rounds) ROUNDS=$2; shift 2 ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) echo "bench-spire: unknown flag $1" >&2; exit 2 ;;
  *) MANDATE=$1; shift ;;
  esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench-spire: --rounds $ROUNDS: want a count" >&2; exit 2; }
[[ $CONC =~ ^[1-9][0-9]*$ ]] || { echo "bench-spire: --concurrency $CONC: want a count" >&2; exit 2; }
[[ $DUR =~ ^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$ ]] || { echo "bench-spire: --duration $DUR: want a Go duration such as 10s" >&2; exit 2; }
TD=spire.example
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/interop.sh"
[ -z "$MANDATE" ] || MANDATE=$(realpath "$MANDATE")
W=$(mktemp -d)
SERVE= SPIRE=
cleanup() {
  for p in "$SPIRE" "$SERVE"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() {
  echo "bench-spire: $*" >&2
  for f in serve.log spire.log bench.err; do [ -f "$W/$f" ] && { echo "--- $f" >&2; tail -15 "$W/$f" >&2; }; done
  exit 1
}
say() { echo "bench-spire: $*"; }
if [ -z "$MANDATE" ]; then
  MANDATE=$W/mandate
  (cd "$ROOT" && go build -o "$MANDATE" ./cmd/mandate) || fail "building mandate failed"
fi
[ -x "$MANDATE" ] || fail "$MANDATE: no mandate binary"

# SPIRE's server, and the load generator, in a module of their own.
mkdir "$W/spire"
cat >"$W/spire/bench.go" <<'EOF'
// bench mints SVIDs through SPIRE's server API on its admin Unix socket
// (svid/v1 MintX509SVID, MintJWTSVID), as "mandate bench issue" issues
// them through Mandate's API, and prints the same columns:
//
//	bench -socket PATH -td TD -kind x509|jwt [-concurrency 16] [-duration 10s] [-server-pid PID]
//
// Each worker has its own gRPC connection, made (and Ready) before the
// measured window opens; the server's CPU time (/proc/PID/stat, user +
// system) is read as the window opens and as it closes. Each X509 request
// carries a fresh P-256 key's CSR, all made before the window (so that
// the load generator, which shares the machine, spends its CPU sending
// requests): if they run out, the run ends then, its rate over that
// shorter window, and says so.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const checkEvery = 64 // as mandate bench issue: one answer in 64 is fully checked

func main() {
	socket := flag.String("socket", "", "SPIRE server's admin API socket")
	td := flag.String("td", "", "SPIRE's trust domain")
	kind := flag.String("kind", "x509", "x509 or jwt")
	conc := flag.Int("concurrency", 16, "requests in flight, each on its own connection")
	dur := flag.Duration("duration", 10*time.Second, "how long to measure")
	pid := flag.Int("server-pid", 0, "the SPIRE server's process id: print its CPU time per SVID")
	rate := flag.Int("csrs-per-second", 8000, "X509: fresh CSRs made per second of --duration, before the window")
	flag.Parse()
	if *socket == "" || *td == "" || (*kind != "x509" && *kind != "jwt") || *conc < 1 || *dur <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *pid > 0 && procCPU(*pid) < 0 {
		fatal(fmt.Errorf("--server-pid %d: no /proc/%d/stat", *pid, *pid))
	}
	debug.SetGCPercent(400) // as mandate's bench and server
	id := &types.SPIFFEID{TrustDomain: *td, Path: "/bench/workload"}
	uri := &url.URL{Scheme: "spiffe", Host: *td, Path: id.Path}

	// X509: the CSRs, taken in turn by every worker; and each worker's
	// connection.
	var csrs [][]byte
	var next atomic.Int64
	if *kind == "x509" {
		csrs = make([][]byte, int(dur.Seconds()*float64(*rate))+*conc)
	}
	conns := make([]*grpc.ClientConn, *conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var setupErr error
	procs := runtime.GOMAXPROCS(0)
	for g := range procs {
		wg.Go(func() {
			for i := g; i < len(csrs); i += procs {
				csr, err := newCSR(uri)
				if err != nil {
					mu.Lock()
					setupErr = err
					mu.Unlock()
					return
				}
				csrs[i] = csr
			}
		})
	}
	wg.Wait()
	for w := range *conc {
		c, err := grpc.NewClient("unix://"+*socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c.Connect()
		for s := c.GetState(); s != connectivity.Ready; s = c.GetState() {
			if !c.WaitForStateChange(ctx, s) {
				fatal(fmt.Errorf("connecting to %s: %v", *socket, s))
			}
		}
		cancel()
		conns[w] = c
	}
	if setupErr != nil {
		fatal(setupErr)
	}

	cpu0 := procCPU(*pid)
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	ctx, endRun := context.WithCancel(ctx)
	defer endRun()
	var lat []time.Duration
	var errs int
	var firstErr error
	ranOut := false
	start := time.Now()
	for w := range *conc {
		wg.Go(func() {
			cl := svidv1.NewSVIDClient(conns[w])
			var own []time.Duration
			var n, bad int
			var first error
			spent := false
			for ; ctx.Err() == nil; n++ {
				var err error
				t := time.Now()
				if *kind == "x509" {
					i := next.Add(1) - 1
					if i >= int64(len(csrs)) {
						spent = true
						endRun()
						break
					}
					var r *svidv1.MintX509SVIDResponse
					r, err = cl.MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csrs[i]})
					took := time.Since(t)
					if err == nil && n%checkEvery == 0 {
						err = checkX509(r, uri.String())
					}
					if err == nil {
						own = append(own, took)
						continue
					}
				} else {
					var r *svidv1.MintJWTSVIDResponse
					r, err = cl.MintJWTSVID(ctx, &svidv1.MintJWTSVIDRequest{Id: id, Audience: []string{"bench"}})
					took := time.Since(t)
					if err == nil && n%checkEvery == 0 && (r.GetSvid().GetToken() == "" || r.GetSvid().GetId().GetPath() != id.Path) {
						err = errors.New("bad jwt answer")
					}
					if err == nil {
						own = append(own, took)
						continue
					}
				}
				// A request cut by the end of the run is no error.
				if !cutByEnd(ctx, err) {
					bad++
					if first == nil {
						first = err
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, own...)
			errs += bad
			ranOut = ranOut || spent
			if first != nil && firstErr == nil {
				firstErr = first
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := "-"
	if *pid > 0 && len(lat) > 0 {
		cpu = ((procCPU(*pid) - cpu0) / time.Duration(len(lat))).Round(time.Microsecond).String()
	}
	if len(lat) == 0 {
		fatal(fmt.Errorf("bench %s: no request succeeded: %v", *kind, firstErr))
	}
	slices.Sort(lat)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "kind\tconcurrency\tduration\tops\tops/s\tp50\tp99\terrors\tserver CPU per op")
	fmt.Fprintf(tw, "%s-svid\t%d\t%s\t%d\t%.0f\t%s\t%s\t%d\t%s\n", *kind, *conc, *dur, len(lat), float64(len(lat))/elapsed.Seconds(),
		percentile(lat, 50).Round(time.Microsecond), percentile(lat, 99).Round(time.Microsecond), errs, cpu)
	tw.Flush()
	if ranOut {
		fmt.Printf("all %d CSRs were sent: the run ended after %s (raise -csrs-per-second)\n", len(csrs), elapsed.Round(time.Millisecond))
	}
	if firstErr != nil {
		fmt.Printf("first %s error: %v\n", *kind, firstErr)
	}
}

// cutByEnd reports whether err is that of a request cut by the end of the
// run (gRPC's deadline can fire before the context reports it ended).
func cutByEnd(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	c := status.Code(err)
	return c == codes.DeadlineExceeded || c == codes.Canceled
}

func newCSR(uri *url.URL) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{uri}}, key)
}

func checkX509(r *svidv1.MintX509SVIDResponse, want string) error {
	chain := r.GetSvid().GetCertChain()
	if len(chain) == 0 {
		return errors.New("bad x509 answer: no chain")
	}
	c, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("bad x509 answer: %w", err)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != want {
		return fmt.Errorf("x509 answer for %v, want %s", c.URIs, want)
	}
	return nil
}

// percentile is the nearest-rank q-th percentile of sorted latencies, as
// mandate bench computes it.
func percentile(sorted []time.Duration, q int) time.Duration {
	return sorted[(len(sorted)*q+99)/100-1]
}

// procCPU is pid's user+system CPU time (/proc/PID/stat), -1 if unknown,
// 0 for no pid.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return -1
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ is 100 on Linux
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "spire bench:", err)
	os.Exit(1)
}
EOF
say "building spire-server $SPIRE_VERSION and its load generator"
(build_spire "$W/spire" spire-bench "$SPIRE_VERSION" &&
  cd "$W/spire" && GOWORK=off GOFLAGS=-buildvcs=false go build -o bench .) >"$W/build.log" 2>&1 ||
  { cat "$W/build.log" >&2; fail "building SPIRE or its load generator failed"; }
SS=$W/spire/spire-server SBENCH=$W/spire/bench
cd "$W"

SOCK=$W/spire-api.sock
start_spire() {
  local port
  for _ in 1 2 3; do
    port=$(free_port)
    cat >spire.conf <<EOF
server {
  bind_address = "127.0.0.1"
  bind_port = "$port"
  socket_path = "$SOCK"
  trust_domain = "$TD"
  data_dir = "$W/spire-data"
  log_level = "INFO"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "$W/spire-data/datastore.sqlite3"
    }
  }
  KeyManager "disk" {
    plugin_data { keys_path = "$W/spire-data/keys.json" }
  }
  NodeAttestor "join_token" { plugin_data {} }
}
EOF
    run_spire "$SS" "$SOCK" && return 0
  done
  return 1
}
start_spire || fail "the SPIRE server did not start"
start_serve --data-dir data --rate-limit 0 || fail "mandate serve did not start"
export MANDATE_SERVER=$URL
say "spire-server $SPIRE_VERSION (pid $SPIRE) on $SOCK; Mandate (pid $SERVE) at $URL"

# The rows of every table of SPIRE's datastore.
rows() {
  python3 - "$W/spire-data/datastore.sqlite3" <<'EOF'
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
for (t,) in db.execute("select name from sqlite_master where type = 'table' order by name"):
    print(t, db.execute('select count(*) from "%s"' % t).fetchone()[0])
EOF
}
written() { awk '$1 == "write_bytes:" {print $2}' "/proc/$1/io"; }
# run WHO KIND ROUND: one bench; its row goes to results.
run() {
  local who=$1 kind=$2 pid w0 w1 row ops
  if [ "$who" = spire ]; then pid=$SPIRE; else pid=$SERVE; fi
  kill -0 "$pid" 2>/dev/null || fail "the $who server is gone"
  w0=$(written "$pid")
  if [ "$who" = spire ]; then
    "$SBENCH" -socket "$SOCK" -td "$TD" -kind "$kind" -concurrency "$CONC" -duration "$DUR" -server-pid "$pid" >bench.out 2>bench.err ||
      fail "SPIRE $kind bench failed"
  else
    "$MANDATE" bench issue --data-dir data --kind "$kind" --concurrency "$CONC" --duration "$DUR" --server-pid "$pid" >bench.out 2>bench.err ||
      fail "mandate $kind bench failed"
  fi
  w1=$(written "$pid")
  row=$(awk -v k="$kind-svid" -v c="$CONC" '$1 == k && $2 == c' bench.out)
  [ -n "$row" ] || fail "no $kind row in: $(cat bench.out)"
  # Anything else the bench says (an error, a run cut short), but not
  # mandate's raw ECDSA lines.
  grep -v -e '^kind ' -e "^$kind-svid " -e '^raw crypto' -e 'issuance ÷ raw sign' bench.out | sed "s/^/  $who: /" || true
  ops=$(awk '{print $4}' <<<"$row")
  echo "$3 $who $row $(((w1 - w0) / ops))" >>results
}

rows >rows.before
for r in $(seq "$ROUNDS"); do
  for kind in x509 jwt; do
    # Odd rounds run SPIRE first, even ones Mandate.
    if [ $((r % 2)) = 1 ]; then order="spire mandate"; else order="mandate spire"; fi
    for who in $order; do
      say "round $r/$ROUNDS: $who $kind"
      run "$who" "$kind" "$r"
    done
  done
done
rows >rows.after

echo
echo "SVID issuance, concurrency $CONC, $DUR per run, $ROUNDS rounds, $(nproc) cores ($(uptime | sed 's/.*load average/load average/'))"
python3 - results <<'EOF'
import re, sys
units = {"ns": 1e-3, "µs": 1, "us": 1, "ms": 1e3, "s": 1e6}
def us(d):  # a Go duration, in µs
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ns|µs|us|ms|s)", d))
def span(v, fmt, unit=""):
    lo, hi = fmt(min(v)), fmt(max(v))
    return (lo if lo == hi else lo + "–" + hi) + unit
def ms(v): return "%.1f" % (v / 1e3)
def mic(v): return "%.0f" % v
runs = {}
for line in open(sys.argv[1]):
    # round who kind conc dur ops ops/s p50 p99 errors cpu written
    f = line.split()
    runs.setdefault((f[2], f[1]), []).append(f)
name = {"spire": "SPIRE v1.13.3, admin socket", "mandate": "Mandate, mTLS + audit"}
rows = [("kind", "server", "ops/s (each round)", "p50", "p99", "errors", "server CPU per SVID", "disk bytes written per SVID")]
for kind in ("x509-svid", "jwt-svid"):
    for who in ("mandate", "spire"):
        r = runs.get((kind, who), [])
        if not r:
            continue
        cpu = [us(f[10]) for f in r if f[10] != "-"]
        rows.append((kind, name[who], " · ".join("{:,}".format(int(f[6])) for f in r),
                     span([us(f[7]) for f in r], ms, " ms"), span([us(f[8]) for f in r], ms, " ms"),
                     str(sum(int(f[9]) for f in r)), span(cpu, mic, " µs") if cpu else "-",
                     span([int(f[11]) for f in r], lambda b: "{:,}".format(b))))
w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())
EOF
echo
if cmp -s rows.before rows.after; then
  spire_db="Its datastore holds the same rows before and after its runs:
           no record of any SVID minted."
else
  spire_db="Its datastore's rows changed over its runs:
           $(diff rows.before rows.after | grep '^[<>]' | tr '\n' ' ')"
fi
cat <<EOF
What differs between the two paths:
  SPIRE:   svid/v1 MintX509SVID / MintJWTSVID on the admin Unix socket: gRPC
           without TLS, the caller trusted as local (no SVID to check) by
           SPIRE's API policy (Rego, evaluated per call), any workload ID of
           its trust domain minted as asked. Nothing durable per SVID: the
           mint handlers do not touch the datastore (audit_log_enabled, off
           here, would only add a line per call to SPIRE's log output).
           $spire_db
  Mandate: the HTTPS API, TLS 1.3 with the node's X509-SVID (mTLS); the
           agent's registration on that node checked and an issuance policy
           decision (OPA) made per SVID; an audit entry per SVID, recording
           that decision, durable (fsync, group-committed) and covered by a
           signed checkpoint before the SVID is handed out.
The disk bytes include each bench command's setup (Mandate: a node join
and an agent registration). Runs on a shared machine vary; compare rounds.
EOF
