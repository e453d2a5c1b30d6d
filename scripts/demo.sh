#!/bin/bash
# demo.sh: start an all-in-one Kanga on this host, run the httpd test image
# with a published port and fetch its page. Run as root after
# `make deps build images` (or just `make demo`).
#
# Environment overrides:
#   KANGA            kanga binary             (bin/kanga)
#   KANGA_DATA_DIR   data dir for `kanga up`  (/var/lib/kanga, kanga's default)
#   KANGA_DEMO_LOG   log of `kanga up`        (/var/log/kanga-demo.log)
#   KANGA_DEMO_PORT  host port on 127.0.0.1   (8080)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KANGA="${KANGA:-bin/kanga}"
DATA_DIR="${KANGA_DATA_DIR:-/var/lib/kanga}"
LOG="${KANGA_DEMO_LOG:-/var/log/kanga-demo.log}"
PORT="${KANGA_DEMO_PORT:-8080}"
IMAGE_TAR=testdata/images/httpd.tar
IMAGE=kanga.test/httpd:latest
NAME=web
PIDFILE="$DATA_DIR/kanga.pid" # written by kanga up itself
TIMEOUT=30

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
die() {
	printf 'demo: error: %s\n' "$*" >&2
	exit 1
}

# wait_for SECONDS CMD...: run CMD every 0.2s until it succeeds or time is up.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			return 1
		fi
		if [[ -n "${pid:-}" ]] && ! kill -0 "$pid" 2>/dev/null; then
			return 2
		fi
		sleep 0.2
	done
}

[[ "$(id -u)" -eq 0 ]] || die "must run as root (containers, cgroups and CNI need it)"
[[ -x "$KANGA" ]] || die "$KANGA not found; run: make build"
[[ -f "$IMAGE_TAR" ]] || die "$IMAGE_TAR not found; run: make images"

pid=""
if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
	pid="$(cat "$PIDFILE")"
	say "kanga already running (pid $pid); reusing it"
	started=0
else
	mkdir -p "$DATA_DIR" "$(dirname "$LOG")"
	say "starting: $KANGA up --data-dir $DATA_DIR (log: $LOG)"
	# setsid: the server must outlive this script and not get its terminal's
	# signals; it keeps running after the demo so you can play with it.
	setsid "$KANGA" up --data-dir "$DATA_DIR" >>"$LOG" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$PIDFILE"
	started=1
fi

# If anything below fails, stop the server we started so a rerun starts clean,
# and show why.
on_exit() {
	local rc=$?
	if ((rc != 0)); then
		echo "demo: failed; last lines of $LOG:" >&2
		tail -n 30 "$LOG" >&2 2>/dev/null || true
		if ((started)); then
			kill "$pid" 2>/dev/null || true
			rm -f "$PIDFILE"
		fi
	fi
}
trap on_exit EXIT

say "waiting for the API"
if ! wait_for "$TIMEOUT" "$KANGA" version; then
	die "kanga did not answer '$KANGA version' within ${TIMEOUT}s (or exited)"
fi
"$KANGA" version

say "importing $IMAGE_TAR"
"$KANGA" image import "$IMAGE_TAR"

# A previous demo run may have left the instance behind.
"$KANGA" rm -f "$NAME" >/dev/null 2>&1 || true

say "running $IMAGE as '$NAME' on 127.0.0.1:$PORT"
"$KANGA" run -d --name "$NAME" -p "127.0.0.1:$PORT:80" "$IMAGE"

url="http://127.0.0.1:$PORT/"
say "waiting for $url"
if ! wait_for "$TIMEOUT" curl -fsS -m 2 "$url"; then
	"$KANGA" ps || true
	die "no answer from $url within ${TIMEOUT}s"
fi
say "answer from $url:"
curl -fsS -m 2 "$url"

cat <<MSG

Kanga is running (pid $pid, data in $DATA_DIR, log in $LOG). Try:
  $KANGA ps
  $KANGA logs $NAME
  $KANGA exec -it $NAME sh
Stop it with:
  $KANGA down --purge --data-dir $DATA_DIR   (removes every instance, then stops kanga)
  $KANGA down --data-dir $DATA_DIR           (stops kanga; instances keep running and
                                             are adopted by the next kanga up)
MSG
