#!/bin/sh
# Bring up a single-node SLURM on this machine for the test suite (issue 16).
# Idempotent: does nothing when `sinfo` already answers. Needs root; installs
# slurm-wlm and munge with apt-get when they are missing. Writes pid files under
# $DAGEN_SLURM_DIR (default /tmp/dagen-slurm) so .ci/slurm-down.sh stops only the
# daemons started here. Prints the partition name on its last line.
set -eu

DIR=${DAGEN_SLURM_DIR:-/tmp/dagen-slurm}
PARTITION=${DAGEN_SLURM_PARTITION:-dagen}

if command -v sinfo >/dev/null 2>&1 && sinfo -h -o %t >/dev/null 2>&1; then
    echo "slurm-up: SLURM already answers, nothing to do"
    sinfo -h -o %P | head -n 1 | tr -d '*'
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "slurm-up: must run as root to install and start SLURM" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    echo "slurm-up: installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MIB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MEM=$((MEM_MIB - 2048))
if [ "$REAL_MEM" -lt 1024 ]; then REAL_MEM=1024; fi

mkdir -p "$DIR" "$DIR/spool/ctld" "$DIR/spool/d" "$DIR/log"

# munge: a key of 1024 random bytes, owned by munge, mode 0400; munged runs as munge.
KEY=/etc/munge/munge.key
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s "$KEY" ]; then
    dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
fi
chown munge:munge "$KEY" /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0400 "$KEY"
chmod 0700 /etc/munge
if ! munge -n >/dev/null 2>&1; then
    su -s /bin/sh munge -c "munged --force"
    # munged writes its own pid file; copy it so slurm-down knows we started it.
    for _ in $(seq 1 50); do
        if [ -s /run/munge/munged.pid ]; then break; fi
        sleep 0.1
    done
    cp /run/munge/munged.pid "$DIR/munged.pid"
fi

# Debian's slurm-wlm reads /etc/slurm/slurm.conf.
CONF_DIR=/etc/slurm
mkdir -p "$CONF_DIR"
cat > "$CONF_DIR/slurm.conf" <<CONF
# Written by dagen's .ci/slurm-up.sh: a one-node cluster for the test suite.
ClusterName=dagen
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=$HOST CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
# cgroup.conf is read by some versions even without cgroup plugins.
[ -f "$CONF_DIR/cgroup.conf" ] || echo "CgroupPlugin=autodetect" > "$CONF_DIR/cgroup.conf"

slurmctld
slurmd

for _ in $(seq 1 100); do
    STATE=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
    case "$STATE" in
        idle*) echo "slurm-up: node $HOST idle in partition $PARTITION"; echo "$PARTITION"; exit 0 ;;
    esac
    sleep 0.2
done
echo "slurm-up: node $HOST never became idle (state: ${STATE:-none}); logs in $DIR/log" >&2
exit 1
