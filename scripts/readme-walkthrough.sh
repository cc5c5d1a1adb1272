#!/usr/bin/env bash
# The README's "The CLI beside it" steps, run as written, each a separate process, in a throw-away
# HOME: devnet, creator (publish, post, serve), seeder (fetch, serve), viewer (feed, card,
# play by card), buyer (fetch, buy, grants), then the money commands. Exits non-zero at the
# first step that fails. Usage: bash scripts/readme-walkthrough.sh  (after `make test` or `make demo`)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d -t veil-walkthrough-XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export HOME=$work/home VEIL_PASSPHRASE="walkthrough passphrase"
mkdir -p "$HOME"
source "$repo/.venv/bin/activate"
cd "$work"
wait_for() { for _ in $(seq 120); do grep -q "$2" "$1" && return 0; sleep 0.5; done; cat "$1"; return 1; }
step() { echo; echo "== $*"; }

export VEIL_CHAIN_RPC=http://127.0.0.1:8545 VEIL_CHAIN_DEPLOYMENT=~/veil-devnet/devnet.json
python -c "from pathlib import Path; from veilstream.node.sample import make_sample_video as m; m(Path('video.mp4'), seconds=10)"
veil devnet --dir ~/veil-devnet > devnet.log 2>&1 & pids+=($!)
wait_for devnet.log "nodes use it with"

step creator
export VEIL_HOME=~/creator
veil init > /dev/null
veil wallet faucet 1
veil publish video.mp4 --price 1000gwei --seeder-share 20% --json > published.json
cid=$(python -c "import json; print(json.load(open('published.json'))['content_id'])")
magnet=$(python -c "import json; print(json.load(open('published.json'))['magnet'])")
veil post "$cid" --title "My video"
veil serve "$cid" --keys --serve-plain --listen 127.0.0.1:6881 > creator.log 2>&1 & pids+=($!)
wait_for creator.log "magnet "

step seeder
export VEIL_HOME=~/seeder
veil init > /dev/null && veil wallet faucet 1
veil fetch "$magnet" --peer 127.0.0.1:6881
veil serve "$cid" --listen 127.0.0.1:6882 > seeder.log 2>&1 & pids+=($!)
wait_for seeder.log "magnet "

step viewer
export VEIL_HOME=~/viewer
veil init > /dev/null && veil wallet faucet 1
veil wallet deposit 0.1
veil feed
card=$(veil feed --json --offline | python -c "import json, sys; print(json.load(sys.stdin)['cards'][0]['id'])")
veil card "$card"
veil play "$card" --peer 127.0.0.1:6881 --peer 127.0.0.1:6882 --out movie.mp4
cmp movie.mp4 video.mp4 && echo "movie.mp4 is byte for byte the published video.mp4"

step buyer
export VEIL_HOME=~/buyer
veil init > /dev/null && veil wallet faucet 1
veil fetch "$magnet" --peer 127.0.0.1:6881
veil buy "$cid" --first 0 --count 2
veil grants

step money
export VEIL_HOME=~/viewer
veil wallet balance
veil wallet history
kill -INT "${pids[2]}"; wait "${pids[2]}" || true; tail -3 seeder.log
kill -INT "${pids[1]}"; wait "${pids[1]}" || true; tail -3 creator.log
export VEIL_HOME=~/creator
veil earnings
veil wallet cash
veil wallet claim
export VEIL_HOME=~/viewer
veil wallet withdraw request 0.05 && veil chain advance 24h && veil wallet withdraw execute
echo; echo "the walkthrough passed"
