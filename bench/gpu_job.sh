# The whole GPU grid as one job on the lent machine, which runs a command for at most
# 10 minutes: `start` launches bench/gpu_bench.py detached, `poll` waits for it again in a
# later command; both wait up to POLL_S seconds, then copy what is done so far to $OUT.
#
#   bash bench/gpu_job.sh start [gpu_bench.py arguments]      then   bash bench/gpu_job.sh poll
set -u
GRID=/tmp/gpu-grid
if [ "$1" = start ]; then
    source bench/gpu_env.sh
    rm -rf "$GRID" && mkdir -p "$GRID"
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv > "$GRID/gpu.csv"
    setsid nohup python3 bench/gpu_bench.py --out "$GRID" "${@:2}" > "$GRID/driver.log" 2>&1 < /dev/null &
    sleep 5
fi
deadline=$((SECONDS + ${POLL_S:-540}))
while pgrep -f "gpu_bench.py --out $GRID" > /dev/null && [ $SECONDS -lt $deadline ]; do sleep 10; done
pgrep -f "gpu_bench.py --out $GRID" > /dev/null && echo "STILL RUNNING" || echo "FINISHED"
# few files come back from the machine: the per-run logs travel as one archive
dest="${OUT:-/tmp/gpu-grid-out}"
mkdir -p "$dest"
cp "$GRID"/*.json "$GRID"/*.md "$GRID"/*.csv "$GRID"/driver.log "$GRID"/profile-*.txt "$dest"/ 2> /dev/null
tar -czf "$dest/logs.tar.gz" -C "$GRID" $(cd "$GRID" && ls log-*.txt 2> /dev/null)
# and each studio run's per-step metrics (never the runs themselves: adapters are gigabytes)
runs=/tmp/gpu-bench/runs
[ -d "$runs" ] && tar -czf "$dest/metrics.tar.gz" -C "$runs" $(cd "$runs" && ls */metrics.jsonl 2> /dev/null)
grep -v "^Loading\|it/s\]" "$GRID/driver.log" | tail -40
