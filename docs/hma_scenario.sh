#!/usr/bin/env bash
# The Hasher-Matcher-Actioner scenario of docs/platforms.md, run by hand (HMA is not on
# PyPI, so CI cannot run it): stock HMA from its public source, configured by its Python
# config file alone, fetches from a local exchange through hashexchange_client.threatexchange,
# builds its indices and matches on /m/lookup; after a withdrawal here and the next fetch,
# it no longer matches.
#
#   docs/hma_scenario.sh /path/to/ThreatExchange/hasher-matcher-actioner
#
# Needs python3.11, PostgreSQL's initdb/pg_ctl on PATH, and this checkout's .venv (make run
# once). Everything it makes goes to $WORK (a new temporary folder unless given) and the
# processes it starts are stopped at the end. Ports: EXCHANGE_PORT (8411), HMA_PORT
# (5411), PG_PORT (54411), IMAGES_PORT (8412).
set -euo pipefail

HMA_SRC=$(cd "${1:?give the hasher-matcher-actioner folder of a ThreatExchange checkout}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/hma-scenario.XXXXXX)}
mkdir -p "$WORK"
EXCHANGE_PORT=${EXCHANGE_PORT:-8411}
HMA_PORT=${HMA_PORT:-5411}
PG_PORT=${PG_PORT:-54411}
IMAGES_PORT=${IMAGES_PORT:-8412}
EXCHANGE=http://127.0.0.1:$EXCHANGE_PORT
HMA=http://127.0.0.1:$HMA_PORT
PIDS=()
say() { printf '\n== %s\n' "$*"; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -d "$WORK/pg" ] && as_pg pg_ctl -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
wait_for() { for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.3; done; echo "no answer from $1"; return 1; }
echo "work folder: $WORK"

say "HMA in its own virtualenv, from source; our client package with its threatexchange extra"
VENV=${HMA_VENV:-$WORK/venv}  # HMA_VENV: reuse one made by an earlier run
if [ ! -x "$VENV/bin/flask" ]; then
    python3.11 -m venv "$VENV"
    "$VENV/bin/pip" install -q psycopg2-binary "$ROOT/client[threatexchange]" \
        flask flask_sqlalchemy flask_migrate requests flask_apscheduler python-dateutil python-json-logger \
        "flask-openapi3[swagger]"
fi
export PYTHONPATH=$HMA_SRC/src
echo "HMA $(cat "$HMA_SRC/version.txt"), threatexchange $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("threatexchange"))')"
"$VENV/bin/python" -c "import OpenMediaMatch.app, hashexchange_client.threatexchange"

say "PostgreSQL for HMA on 127.0.0.1:$PG_PORT"
chmod 755 "$WORK"
mkdir -p "$WORK/pg" "$WORK/pgrun"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/pg" "$WORK/pgrun"
as_pg initdb -D "$WORK/pg" -U postgres -A trust >/dev/null
as_pg pg_ctl -D "$WORK/pg" -o "-p $PG_PORT -k $WORK/pgrun -c listen_addresses=127.0.0.1" -l "$WORK/pgrun/pg.log" -w start >/dev/null
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE USER media_match PASSWORD 'hunter2'" -c "CREATE DATABASE media_match OWNER media_match"

say "HMA's config file: the only thing we change (exchange_types gains our class)"
cat > "$WORK/omm_config.py" <<EOF
from OpenMediaMatch.storage.postgres.impl import DefaultOMMStore
from threatexchange.content_type.photo import PhotoContent
from threatexchange.content_type.video import VideoContent
from threatexchange.exchanges.impl.ncmec_api import NCMECSignalExchangeAPI
from threatexchange.exchanges.impl.static_sample import StaticSampleSignalExchangeAPI
from threatexchange.exchanges.impl.stop_ncii_api import StopNCIISignalExchangeAPI
from threatexchange.signal_type.md5 import VideoMD5Signal
from threatexchange.signal_type.pdq.signal import PdqSignal

from hashexchange_client.threatexchange import HashExchangeSignalExchangeAPI

DATABASE_URI = "postgresql+psycopg2://media_match:hunter2@127.0.0.1:$PG_PORT/media_match"
PRODUCTION = False
ROLE_HASHER = True
ROLE_MATCHER = True
ROLE_CURATOR = True
UI_ENABLED = False
TASK_FETCHER = False  # run by hand below: flask fetch
TASK_INDEXER = False  # run by hand below: flask build_indices
TASK_INDEX_CACHE = False
STORAGE_IFACE_INSTANCE = DefaultOMMStore(
    signal_types=[PdqSignal, VideoMD5Signal],
    content_types=[PhotoContent, VideoContent],
    exchange_types=[
        StaticSampleSignalExchangeAPI,
        NCMECSignalExchangeAPI,
        StopNCIISignalExchangeAPI,
        HashExchangeSignalExchangeAPI,
    ],
)
EOF
cat "$WORK/omm_config.py"
export OMM_CONFIG=$WORK/omm_config.py
flask_() { (cd "$HMA_SRC/src" && "$VENV/bin/flask" --app OpenMediaMatch.app "$@"); }
(cd "$HMA_SRC/src" && MIGRATION_COMMAND=1 "$VENV/bin/flask" --app OpenMediaMatch.app db upgrade \
    --directory OpenMediaMatch/migrations) >"$WORK/hma-migrate.log" 2>&1
(cd "$HMA_SRC/src" && exec "$VENV/bin/flask" --app OpenMediaMatch.app run --port "$HMA_PORT") >"$WORK/hma.log" 2>&1 &
PIDS+=($!)

say "Our exchange on $EXCHANGE (SQLite, DEBUG), with the demo program and member"
export ENV_FILE=/dev/null DEBUG=1 DATABASE_URL="sqlite:///$WORK/exchange.sqlite3" SITE_URL=$EXCHANGE \
    REDIS_URL=redis://127.0.0.1:9/0 MATCH_INDEX_DIR=$WORK/index
(cd "$ROOT" && .venv/bin/python manage.py migrate -v0 && .venv/bin/python manage.py demo_seed --key-file "$WORK/key" >/dev/null)
(cd "$ROOT" && exec .venv/bin/python manage.py runserver --noreload "127.0.0.1:$EXCHANGE_PORT") >"$WORK/exchange.log" 2>&1 &
PIDS+=($!)
wait_for "$EXCHANGE/healthz"
wait_for "$HMA/status/live"

say "A member signs and submits the PDQ hashes of three photos"
mkdir -p "$WORK/photos" "$WORK/uploads"
"$ROOT/.venv/bin/python" - "$WORK/photos" <<'EOF'
import sys
from hashexchange_client import samples
for seed in (1, 2, 3):
    photo = samples.photo_like(512, 512, seed=seed)
    with open(f"{sys.argv[1]}/photo-{seed}.jpg", "wb") as out:
        out.write(samples.jpeg_bytes(photo))
    # What a user uploads to the platform later: smaller, grey, recompressed.
    upload = photo.convert("L").convert("RGB").resize((300, 300))
    with open(f"{sys.argv[1]}/../uploads/upload-{seed}.jpg", "wb") as out:
        out.write(samples.jpeg_bytes(upload, quality=60))
EOF
export HASHEXCHANGE_SERVER=$EXCHANGE HASHEXCHANGE_API_KEY=$(cat "$WORK/key") HASHEXCHANGE_SIGNING_KEY=$WORK/keys/signing_key.pem
HX="$ROOT/.venv/bin/hashexchange"
$HX keygen --out "$WORK/keys" >/dev/null
$HX register-key
$HX submit "$WORK/photos" --program take-it-down --types pdq
PHOTO1=$($HX hash "$WORK/photos/photo-1.jpg" --types pdq | sed -n 's/^pdq:\([0-9a-f]\{64\}\).*/\1/p')
echo "photo-1 pdq: $PHOTO1"

say "HMA: store the key, create the exchange with our base URL, fetch, build indices"
curl -fsS -X POST "$HMA/c/exchanges/api/hashexchange" -H 'Content-Type: application/json' \
    -d "{\"credential_json\": {\"api_key\": \"$HASHEXCHANGE_API_KEY\"}}"; echo
curl -fsS -X POST "$HMA/c/exchanges" -H 'Content-Type: application/json' \
    -d "{\"bank\": \"HASHEXCHANGE\", \"api\": \"hashexchange\", \"api_json\": {\"base_url\": \"$EXCHANGE\"}}"; echo
flask_ fetch 2>&1 | grep -i "hashexchange\|fetch" | tail -5
flask_ build_indices 2>&1 | tail -2

say "A platform's upload of photo-1 (smaller, grey, recompressed; served at a URL for HMA's hasher): /m/lookup"
(cd "$WORK/uploads" && exec "$ROOT/.venv/bin/python" -m http.server "$IMAGES_PORT" --bind 127.0.0.1) >/dev/null 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$IMAGES_PORT/upload-1.jpg"
BEFORE=$(curl -fsS "$HMA/m/lookup?url=http://127.0.0.1:$IMAGES_PORT/upload-1.jpg&content_type=photo")
echo "lookup before the withdrawal: $BEFORE"
curl -fsS "$HMA/m/raw_lookup?signal_type=pdq&signal=$PHOTO1&include_distance=true"; echo

say "The member withdraws photo-1's hash here; HMA fetches again"
$HX withdraw --program take-it-down --signal-type pdq --value "$PHOTO1" --reason "withdrawn by the person"
flask_ fetch 2>&1 | grep -i "hashexchange\|fetch" | tail -5
flask_ build_indices 2>&1 | tail -2
AFTER=$(curl -fsS "$HMA/m/lookup?url=http://127.0.0.1:$IMAGES_PORT/upload-1.jpg&content_type=photo")
echo "lookup after the withdrawal: $AFTER"
curl -fsS "$HMA/m/raw_lookup?signal_type=pdq&signal=$PHOTO1&include_distance=true"; echo
OTHER=$(curl -fsS "$HMA/m/lookup?url=http://127.0.0.1:$IMAGES_PORT/upload-2.jpg&content_type=photo")
echo "upload of photo-2 (not withdrawn) still: $OTHER"

say "Result"
if [[ $BEFORE == *HASHEXCHANGE* && $AFTER != *HASHEXCHANGE* && $OTHER == *HASHEXCHANGE* ]]; then
    echo "PASS: HMA matched the upload of photo-1 before the withdrawal, not after; photo-2 still matches"
else
    echo "FAIL: see $WORK/hma.log and $WORK/exchange.log"
    exit 1
fi
