#!/usr/bin/env bash
# Interoperability check: a TPM driven by another TPM 2.0 stack (tpm2-tools,
# on the swtpm software TPM) attests to a Mandate authority through the
# plain HTTPS API, using only what docs/attestation.md says. test.sh runs
# it; it needs tpm2-tools, swtpm, jq, xxd, openssl and curl.
#
#   scripts/tpm2-tools-attest.sh [path to a mandate binary]
set -euo pipefail
MANDATE=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
SWTPM= SERVE=
cleanup() {
  [ -n "$SERVE" ] && kill "$SERVE" 2>/dev/null || true
  [ -n "$SWTPM" ] && kill "$SWTPM" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "tpm2-tools interop: $*" >&2; for f in serve.log swtpm.log; do [ -f "$W/$f" ] && tail -20 "$W/$f" >&2; done; exit 1; }
if [ -z "$MANDATE" ]; then
  MANDATE=$W/mandate
  (cd "$ROOT" && go build -o "$MANDATE" ./cmd/mandate)
fi
cd "$W"

# The device: a swtpm TPM, driven by tpm2-tools (on two free ports: a
# port taken by something else makes swtpm exit, and another is tried).
mkdir tpmstate
for attempt in 1 2 3 4 5; do
  PORT=$((20000 + RANDOM % 20000))
  swtpm socket --tpm2 --tpmstate dir=tpmstate --server type=tcp,port=$PORT,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((PORT + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear >swtpm.log 2>&1 &
  SWTPM=$!
  export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT"
  up=
  for _ in $(seq 50); do
    tpm2_getrandom 4 >/dev/null 2>&1 && { up=1; break; }
    kill -0 "$SWTPM" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$up" ] && break
  kill "$SWTPM" 2>/dev/null || true
  wait "$SWTPM" 2>/dev/null || true
  SWTPM=
  [ "$attempt" = 5 ] && fail "swtpm did not start"
done
tpm2_createek -c ek.ctx -G rsa -u ek.pub           # ek.pub: TPM2B_PUBLIC
tpm2_flushcontext -t                                # no resource manager: keep the TPM's slots free
tpm2_createak -C ek.ctx -c ak.ctx -G ecc -g sha256 -s ecdsa -u ak.pub -n ak.name >/dev/null
tpm2_flushcontext -t
EKHASH=$(tail -c +3 ek.pub | sha256sum | cut -d' ' -f1)   # SHA-256 of the TPMT_PUBLIC
PCRS=0,1,2,3,4,5,6,7,16
pcr_hex() { dd if="$1" bs=32 skip="$2" count=1 2>/dev/null | xxd -p -c 64; }
tpm2_pcrread sha256:$PCRS -o golden.bin >/dev/null

# The operator: trust this EK, admit its current PCRs as profile edge-v1.
{
  echo "trust_domain: interop.example"
  echo "attestation:"
  echo "  tpm:"
  echo "    ek_allowlist: [$EKHASH]"
  echo "    allowed_profiles: [edge-v1]"
  echo "    pcr_profiles:"
  echo "      edge-v1:"
  echo "        sha256:"
  i=0; for p in ${PCRS//,/ }; do echo "          \"$p\": $(pcr_hex golden.bin $i)"; i=$((i + 1)); done
} >mandate.yaml
. "$ROOT/scripts/interop.sh"
start_serve --config mandate.yaml --data-dir data || fail "the authority did not start"
post() { curl -sS --cacert data/admin/bundle.pem -H 'Content-Type: application/json' --data @"$2" "$URL$1"; }

attest() {
  jq -n --arg ek "$(base64 -w0 ek.pub)" --arg ak "$(base64 -w0 ak.pub)" '{ek_public: $ek, ak_public: $ak}' >ch.req
  post /v1/nodes/attest/tpm/challenge ch.req >ch.json
  jq -e .session_id ch.json >/dev/null || fail "challenge refused: $(cat ch.json)"
  # tpm2-tools' credential file: 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
  { printf '\xba\xdc\xc0\xde\x00\x00\x00\x01'; jq -r .credential_blob ch.json | base64 -d; jq -r .encrypted_secret ch.json | base64 -d; } >cred.bin
  tpm2_startauthsession --policy-session -S session.ctx
  tpm2_policysecret -S session.ctx -c e >/dev/null        # the EK's policy: PolicySecret(endorsement)
  tpm2_activatecredential -c ak.ctx -C ek.ctx -i cred.bin -o secret.bin -P "session:session.ctx" >/dev/null
  tpm2_flushcontext session.ctx
  tpm2_flushcontext -t
  local sel
  sel=$(jq -r '.pcr_selection.sha256 | map(tostring) | join(",")' ch.json)
  tpm2_quote -c ak.ctx -l "sha256:$sel" -q "$(jq -r .nonce ch.json | base64 -d | xxd -p -c 64)" \
    -m quote.msg -s quote.sig -g sha256 >/dev/null      # quote.msg: TPMS_ATTEST; quote.sig: TPMT_SIGNATURE
  tpm2_flushcontext -t
  tpm2_pcrread "sha256:$sel" -o now.bin >/dev/null
  local pcrs="" i=0
  for p in ${sel//,/ }; do pcrs="$pcrs\"$p\":\"$(pcr_hex now.bin $i)\","; i=$((i + 1)); done
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout node.key -subj /CN=node -out node.csr 2>/dev/null
  jq -n --arg sid "$(jq -r .session_id ch.json)" --arg secret "$(base64 -w0 secret.bin)" --arg quote "$(base64 -w0 quote.msg)" \
    --arg sig "$(base64 -w0 quote.sig)" --argjson pcrs "{${pcrs%,}}" --arg csr "$(cat node.csr)" \
    '{session_id: $sid, secret: $secret, quote: $quote, signature: $sig, pcrs: {sha256: $pcrs}, csr: $csr}' >verify.req
  post /v1/nodes/attest/tpm/verify verify.req >verify.json
}

attest
want="spiffe://interop.example/node/tpm/$EKHASH"
[ "$(jq -r .spiffe_id verify.json)" = "$want" ] || fail "verify answered $(cat verify.json), want $want"
jq -r .x509_svid verify.json | openssl x509 -noout -ext subjectAltName | grep -q "URI:$want" || fail "the SVID does not name $want"
echo "tpm2-tools interop: $want admitted"

# A changed boot state: the same device is now refused.
tpm2_pcrextend 7:sha256=$(printf '%064d' 1)
attest
[ "$(jq -r .type verify.json)" = "https://mandate.dev/problems/tpm-pcr-policy-mismatch" ] || fail "after a PCR change: $(cat verify.json)"
echo "tpm2-tools interop: refused after PCR 7 changed (tpm-pcr-policy-mismatch)"
