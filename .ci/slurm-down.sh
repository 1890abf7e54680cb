#!/bin/sh
# Stop the SLURM daemons that .ci/slurm-up.sh started (by their pid files); leaves
# any SLURM it did not start alone.
set -u
DIR=${DAGEN_SLURM_DIR:-/tmp/dagen-slurm}
for NAME in slurmd slurmctld munged; do
    PIDFILE="$DIR/$NAME.pid"
    [ -s "$PIDFILE" ] || continue
    PID=$(cat "$PIDFILE")
    if kill "$PID" 2>/dev/null; then
        for _ in $(seq 1 50); do
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$PIDFILE"
done
exit 0
