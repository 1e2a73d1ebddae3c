# Sourced by the interop scripts: start_serve runs "$MANDATE serve" with
# the given flags on 127.0.0.1 in the current directory (output in
# serve.out and serve.log) and sets SERVE (its pid) and URL once it
# serves; it fails if serve exits first, or after 20 s.
start_serve() {
  "$MANDATE" serve "$@" --listen 127.0.0.1:0 >serve.out 2>serve.log &
  SERVE=$!
  URL=
  for _ in $(seq 200); do
    URL=$(grep -o 'is serving on https://[^ ]*' serve.out 2>/dev/null | cut -d' ' -f4 || true)
    [ -n "$URL" ] && return 0
    kill -0 "$SERVE" 2>/dev/null || return 1 # it exited
    sleep 0.1
  done
  return 1
}
