#!/usr/bin/env bash
# A real single-node SLURM on this machine, for tests/test_slurm.py: munge, slurmctld and slurmd
# (Debian 12: SLURM 22.05), partitions `cpu` and `gpu`, the node advertising one GPU GRES backed by
# /dev/null so that GPU requests schedule on a machine without a GPU.
#
#   bash scripts/slurm_test_cluster.sh start    # install (apt, root) if needed, configure, start, wait
#   bash scripts/slurm_test_cluster.sh stop     # stop the daemons (the configuration stays)
#   bash scripts/slurm_test_cluster.sh status
#
# No slurmdbd: the job completion log (jobcomp/filetxt, $JOBCOMP below) is the scheduler's record of
# where each job ran, and Snakemake polls with squeue (profiles/slurm: slurm-status-command).
# This configures the machine it runs on (/etc/slurm, /etc/munge): meant for test machines and CI.
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
JOBCOMP=$LOG_DIR/jobcomp.log
SPOOL=/var/spool/slurm
HOST=$(hostname -s)

log() { echo "slurm_test_cluster: $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || { log "not root: cannot apt-get install slurmctld slurmd munge"; exit 3; }
    log "installing slurmctld slurmd slurm-client munge (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    local cpus mem_mb
    cpus=$(nproc --all)  # not plain nproc: it follows OMP_NUM_THREADS, which the tests set to 1
    # Leave 10 % of the memory to the system; RealMemory above the real one drains the node.
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$SPOOL/ctld" "$SPOOL/d"
    cat > "$CONF_DIR/slurm.conf" <<EOF
# Written by mlepi scripts/slurm_test_cluster.sh: a one-node test cluster.
ClusterName=mlepi-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# No cgroups in containers: track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
# Keep finished jobs visible to squeue (Snakemake's status checks) and to scontrol (the test's check of each job's
# GPU request) for as long as the test's workflow may run (its timeout: 3000 s); 600 s expired a loaded run's
# first trainings before the check.
MinJobAge=3600
ReturnToService=2
# srun starts MPI ranks through PMIx, as on most sites (the dft rule's launcher is srun in a job).
MpiDefault=pmix
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SchedulerParameters=batch_sched_delay=1
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
    echo "NodeName=$HOST Name=gpu File=/dev/null" > "$CONF_DIR/gres.conf"
}

start_munge() {
    if pgrep -x munged >/dev/null; then return; fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged
    else
        /usr/sbin/munged --force
    fi
}

wait_for_node() {
    local deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
        if timeout 5 sinfo -h -N -o "%t" 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            log "up: $(sinfo -h -o '%P %a %D %t' | tr '\n' ';')"
            return 0
        fi
        sleep 1
    done
    log "the node did not come up; see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
    timeout 5 sinfo -N -l >&2 || true
    tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    return 1
}

start() {
    install_packages
    write_config
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    wait_for_node
    # A node left DOWN or DRAINED by an earlier run is put back in service.
    scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
}

stop() {
    pkill -x slurmd || true
    pkill -x slurmctld || true
    pkill -x munged || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo -o "%P %a %D %t %G" ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
