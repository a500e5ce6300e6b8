#!/usr/bin/env bash
# A single-node SLURM on this machine, for trying profiles/slurm without a cluster.
#
#   scripts/slurm_local.sh          install (Debian/Ubuntu packages), configure, start, check
#   scripts/slurm_local.sh status   print sinfo and exit 0 if the node answers
#   scripts/slurm_local.sh stop     stop the daemons this script started
#
# Needs root (apt-get, daemons). No systemd is needed: munged, slurmctld and slurmd are run
# directly. A second call finds them running and returns in seconds.
#
# What it sets up: one node "localhost" with this machine's CPUs and memory (and its NVIDIA
# GPUs as GRES when nvidia-smi lists any), one partition "debug" (Default=YES), no cgroups
# (proctrack/linuxproc, task/none) and no accounting database. Without slurmdbd `sacct`
# has no data, so Snakemake's SLURM plugin must poll with squeue:
#   snakemake --profile profiles/slurm --slurm-status-command squeue ...
# MinJobAge is raised so that squeue keeps finished jobs long enough for that polling.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
SPOOL=/var/spool/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
NODE=localhost
PARTITION=debug

log() { echo "slurm_local: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "run as root (it installs packages and starts daemons)"
        exit 1
    fi
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sinfo >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge from the distribution's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

gpu_count() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | grep -c '^[0-9]' || true
    else
        echo 0
    fi
}

write_config() {
    local cpus mem gpus gres_line="" gres_types=""
    cpus=$(nproc --all)
    # Leave some memory to the OS: slurmd drains a node that reports less than configured.
    mem=$(free -m | awk '/^Mem:/ {print int($2 * 0.95)}')
    gpus=$(gpu_count)
    mkdir -p "$CONF_DIR" "$SPOOL/ctld" "$SPOOL/d" "$LOG_DIR" "$RUN_DIR"
    if [ "$gpus" -gt 0 ]; then
        gres_line="Gres=gpu:$gpus"
        gres_types="GresTypes=gpu"
        # SLURM then sets CUDA_VISIBLE_DEVICES for --gpus jobs, which gpu_slot passes through.
        {
            for i in $(seq 0 $((gpus - 1))); do echo "Name=gpu File=/dev/nvidia$i"; done
        } >"$CONF_DIR/gres.conf.new"
        mv "$CONF_DIR/gres.conf.new" "$CONF_DIR/gres.conf"
    fi
    cat >"$CONF.new" <<EOF
# Written by scripts/slurm_local.sh: a single-node cluster for local tests.
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to squeue this long (the plugin polls with squeue here).
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$gres_types
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres_line State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # Rewrite only on change, so that a running cluster is not disturbed for nothing.
    if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then
        rm "$CONF.new"
        CONF_CHANGED=0
    else
        mv "$CONF.new" "$CONF"
        log "wrote $CONF (node $NODE: $cpus CPUs, ${mem} MB, $gpus GPUs)"
        CONF_CHANGED=1
    fi
}

pid_alive() {  # pid_alive <pidfile>
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_munge() {
    if pid_alive /run/munge/munged.pid; then
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged
    log "started munged"
}

start_daemons() {
    if ! pid_alive "$RUN_DIR/slurmctld.pid"; then
        /usr/sbin/slurmctld
        log "started slurmctld"
    fi
    if ! pid_alive "$RUN_DIR/slurmd.pid"; then
        /usr/sbin/slurmd -N "$NODE"
        log "started slurmd"
    fi
}

wait_ready() {
    local state i
    for i in $(seq 1 60); do
        state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        case "$state" in
        idle* | mixed* | allocated*) break ;;
        esac
        sleep 1
    done
    case "$state" in
    idle* | mixed* | allocated*) ;;
    *)
        log "node $NODE is not up (state '${state:-no answer}'); see $LOG_DIR/*.log"
        exit 1
        ;;
    esac
    # An end-to-end check: a job step runs and returns.
    if ! timeout 60 srun -p "$PARTITION" -N1 -n1 -t 1 hostname >/dev/null; then
        log "srun failed; see $LOG_DIR/*.log"
        exit 1
    fi
    log "ready: partition $PARTITION, node $NODE ($state). No accounting database here:"
    log "  snakemake --profile profiles/slurm --slurm-status-command squeue ..."
}

stop_daemon() {  # stop_daemon <name> <pidfile>
    local pid i
    pid_alive "$2" || return 0
    pid=$(cat "$2")
    kill "$pid"
    for i in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || { log "stopped $1"; return 0; }
        sleep 0.5
    done
    log "$1 (pid $pid) did not stop within 10 s"
}

stop_slurm() {
    stop_daemon slurmd "$RUN_DIR/slurmd.pid"
    stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
}

case "${1:-start}" in
start)
    need_root
    install_packages
    write_config
    if [ "$CONF_CHANGED" = 1 ]; then
        # Node definitions are read at start only: restart what runs with the old file.
        stop_slurm
    fi
    start_munge
    start_daemons
    wait_ready
    ;;
status)
    sinfo
    ;;
stop)
    need_root
    stop_slurm
    stop_daemon munged /run/munge/munged.pid
    ;;
*)
    echo "usage: $0 [start|status|stop]" >&2
    exit 2
    ;;
esac
