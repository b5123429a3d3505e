#!/usr/bin/env bash
# A real one-node SLURM cluster on localhost, for the cluster tests (tests/test_slurm.py) and for trying
# `hydra/launcher=slurm` by hand (docs/slurm.md). Debian/Ubuntu, as root. Idempotent: run it again and it
# starts only what is down (and restarts the daemons if the generated config changed).
#
#   scripts/slurm-local.sh && source "${SLURMLAB:-${TMPDIR:-/tmp}/slurm-local}/env.sh"
#   sinfo; python -m rnnbench -m hydra/launcher=slurm cell=lstm,gru ...
#   scripts/slurm-local-teardown.sh
#
# Knobs (environment):
#   SLURMLAB         folder for config, state, logs, PID files, munge key (default $TMPDIR/slurm-local,
#                    else /tmp/slurm-local). One folder = one cluster.
#   SLURM_CTLD_PORT  slurmctld port (default 6817)  } give a second cluster other ports to run it beside
#   SLURMD_PORT      slurmd port (default 6818)     } a first one (tests/test_slurm.py does)
#   SLURM_MEM_MB     memory the node offers to jobs (default 4096, at most what the machine has)
#   SLURM_CLEAN=1    forget the jobs of an earlier start of this cluster
# Exit status: 0 up; 3 the packages are missing and cannot be installed (no apt-get, or apt-get failed);
# 4 not root; 1 anything else (the daemons' logs are in $SLURMLAB/log).
#
# Pitfalls, as seen with SLURM 22.05.8 / munge 0.5.15 on Debian 12:
# - No systemd (containers, CI): the daemons are started directly and tracked by PID files in
#   $SLURMLAB/run; the Debian packages' services are neither used nor needed.
# - munge: this cluster runs its own munged (own key, own socket in $SLURMLAB/run, named in slurm.conf's
#   AuthInfo), so it neither needs nor disturbs a system-wide munged, and teardown can stop it. munged
#   wants every folder above its socket world-executable; under a private folder (pytest's tmp) it
#   refuses unless given --force, which is safe here since every client runs as root.
# - No cgroups: proctrack/linuxproc and task/none. Memory limits and CPU pinning are NOT enforced: a job
#   sees every core of the machine, and torch starts one thread per core unless told otherwise. So the
#   launcher preset exports OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK (conf/hydra/launcher/slurm.yaml).
# - No accounting (no slurmdbd): the real `sacct` fails. submitit polls `sacct` for job states, and without
#   an answer a job that was cancelled or killed before writing its result is waited on forever.
#   env.sh puts a stand-in first on PATH that answers from `squeue --states=all`; MinJobAge=86400 keeps
#   finished jobs in slurmctld's memory for a day so that squeue can still see them.
# - Clients (sbatch, squeue, scontrol, and submitit inside a job) need SLURM_CONF, from env.sh; without it
#   they fail with "DNS SRV lookup failed" (there is no /etc/slurm/slurm.conf).
# - USR2: submitit checkpoints and requeues on USR2 only (SIGTERM is ignored). USR2 comes `signal_delay_s`
#   before the time limit (sbatch --signal), from `scancel --signal=USR2`, or on preemption: a job of
#   partition `urgent` that needs the node preempts `debug` jobs (PreemptMode=REQUEUE), and
#   preempt_send_user_signal makes SLURM send the job's --signal (USR2) along with SIGCONT and SIGTERM;
#   SIGKILL follows after GraceTime (30 s) if the job is still there. `--signal=USR2@..` reaches job
#   steps only (submitit runs the job under srun); a batch script's own shell needs `--signal=B:USR2@..`.
#   A requeued job may start again only after AuthInfo's cred_expire (+1 s). `scontrol requeue` alone
#   restarts a job from scratch, without a checkpoint.
# - A failed Hydra job still shows COMPLETED in SLURM (Hydra catches the task's exception): the multirun's
#   exit status and the run folder's summary.json are what tell.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
L=${SLURMLAB:-${TMPDIR:-/tmp}/slurm-local}
CTLD_PORT=${SLURM_CTLD_PORT:-6817}
D_PORT=${SLURMD_PORT:-6818}
T0=$SECONDS
say() { echo "[slurm-local] $*"; }
die() { local code=$1; shift; echo "[slurm-local] $*" >&2; exit "$code"; }
# A process that exists and is not a zombie (PID 1 in a container may take seconds to reap one).
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*zombie' "/proc/$1/status" 2>/dev/null; }
# A PID file whose process is running and is the daemon named by the file (PIDs get reused).
alive() { local p; p=$(cat "$1" 2>/dev/null) && running "$p" && [ "$(cat /proc/$p/comm)" = "$(basename "$1" .pid)" ]; }
stop() {
  local f=$L/run/$1.pid p
  if alive "$f"; then
    p=$(cat "$f"); kill "$p"
    for _ in $(seq 100); do running "$p" || break; sleep 0.1; done
    running "$p" && kill -9 "$p"
  fi
  rm -f "$f"
}

[ "$(id -u)" = 0 ] || die 4 "needs root (the daemons run as root, jobs run as the submitting user)"

# --- packages -----------------------------------------------------------------------------------
if ! type -P slurmctld slurmd sbatch munged mungekey >/dev/null; then   # fails if any one is missing
  type -P apt-get >/dev/null || die 3 "SLURM/munge not installed and no apt-get to install them"
  say "installing slurm-wlm and munge with apt-get (once per machine)"
  apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null 2>&1 || true   # a stale index may still do
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge >"${TMPDIR:-/tmp}/slurm-local-apt.log" 2>&1 \
    || die 3 "apt-get install failed: $(tail -3 "${TMPDIR:-/tmp}/slurm-local-apt.log")"
  say "packages installed: $((SECONDS - T0)) s"
fi
T1=$SECONDS

# --- folder, munge key --------------------------------------------------------------------------
mkdir -p "$L"/{etc,run,log,bin,munge,state/ctld,state/d}
chmod 755 "$L" "$L/run"; chmod 700 "$L/munge"   # munged: key private, socket's folder world-executable
[ "${SLURM_CLEAN:-0}" = 1 ] && rm -rf "$L"/state/ctld/* "$L"/state/d/*
[ -s "$L/munge/munge.key" ] || mungekey --create --keyfile="$L/munge/munge.key"
SOCKET=$L/run/munge.socket
# sun_path holds 107 bytes; a longer socket path fails late and obscurely.
[ ${#SOCKET} -lt 100 ] || die 1 "SLURMLAB path too long for munge's socket ($SOCKET): choose a shorter SLURMLAB"

# --- slurm.conf ---------------------------------------------------------------------------------
# The node as slurmd sees this machine (CPUs, sockets, cores), renamed localhost; memory capped.
HW=$(slurmd -C | head -1)
REAL=$(echo "$HW" | grep -oE 'RealMemory=[0-9]+' | cut -d= -f2)
MEM=${SLURM_MEM_MB:-4096}; [ "$MEM" -le "$REAL" ] || MEM=$REAL
NODE=$(echo "$HW" | sed -E "s/^NodeName=\S+/NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost/; s/RealMemory=[0-9]+/RealMemory=$MEM/")
CONF=$L/etc/slurm.conf
old=$(cat "$CONF" 2>/dev/null || true)
cat >"$CONF" <<EOF
# Written by rnnbench scripts/slurm-local.sh; edits are overwritten.
ClusterName=rnnbench-local
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long (+1 s) before it may start again (default 120)
AuthInfo=socket=$SOCKET,cred_expire=5
MpiDefault=none
# no cgroups here: track job processes by parent PID, no CPU binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# no slurmdbd: no accounting (see the sacct stand-in); completions are logged to a text file
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$L/log/jobcomp.txt
MinJobAge=86400
# schedule often: a one-node queue costs nothing to scan, and tests wait on every start
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
ReturnToService=2
KillWait=5
MailProg=/bin/true
# urgent jobs requeue debug jobs; the job's --signal (submitit: USR2) is sent first, SIGKILL after GraceTime
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SlurmctldPidFile=$L/run/slurmctld.pid
SlurmdPidFile=$L/run/slurmd.pid
StateSaveLocation=$L/state/ctld
SlurmdSpoolDir=$L/state/d
SlurmctldLogFile=$L/log/slurmctld.log
SlurmdLogFile=$L/log/slurmd.log
$NODE State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=urgent Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF

# --- sacct stand-in and env.sh ------------------------------------------------------------------
# submitit asks `sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]`; answer those columns
# from slurmctld's memory (finished jobs stay there MinJobAge seconds).
cat >"$L/bin/sacct" <<'EOF'
#!/usr/bin/env bash
# sacct stand-in (no slurmdbd on this cluster): JobID|State|NodeList of the jobs given with -j, from squeue.
ids=()
while [ $# -gt 0 ]; do
  case "$1" in
    -j|--jobs) ids+=("${2:-}"); shift ;;
    -j*) ids+=("${1#-j}") ;;
    --jobs=*) ids+=("${1#--jobs=}") ;;
  esac
  shift
done
echo "JobID|State|NodeList"
[ ${#ids[@]} -gt 0 ] && squeue -h --states=all -j "$(IFS=,; echo "${ids[*]}")" -o '%i|%T|%N' 2>/dev/null
exit 0
EOF
chmod +x "$L/bin/sacct"
cat >"$L/env.sh" <<EOF
# source me: clients find this cluster, and submitit finds the sacct stand-in
export SLURMLAB=$L
export SLURM_CONF=$CONF
export PATH=$L/bin:\$PATH
EOF
export SLURM_CONF=$CONF

# --- daemons ------------------------------------------------------------------------------------
if [ -n "$old" ] && [ "$old" != "$(cat "$CONF")" ]; then
  say "configuration changed: restarting the daemons"; stop slurmd; stop slurmctld
fi
if ! alive "$L/run/munged.pid"; then
  /usr/sbin/munged --force --socket="$SOCKET" --key-file="$L/munge/munge.key" \
    --pid-file="$L/run/munged.pid" --log-file="$L/log/munged.log" --seed-file="$L/munge/munged.seed"
fi
alive "$L/run/slurmctld.pid" || /usr/sbin/slurmctld -f "$CONF"
started=0   # when this run started slurmd: slurmctld restores the node as idle from its saved state
            # before the new slurmd has registered, so wait for the registration too
alive "$L/run/slurmd.pid" || { started=$(date +%s); /usr/sbin/slurmd -f "$CONF" -N localhost; }
registered() {
  local t; t=$(scontrol show node localhost 2>/dev/null | grep -oE 'SlurmdStartTime=\S+' | cut -d= -f2)
  [ -n "$t" ] && [ "$t" != None ] && [ "$(date -d "$t" +%s)" -ge $((started - 1)) ]
}

s=
for _ in $(seq 120); do
  s=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1 || true)
  case "$s" in
    idle|mixed|allocated) registered && break ;;
    down*|drain*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
  esac
  sleep 0.25
done
case "$s" in
  idle|mixed|allocated) ;;
  *) tail -n 5 "$L"/log/*.log >&2 || true; die 1 "node state '$s' after 30 s; logs in $L/log" ;;
esac
say "up in $((SECONDS - T1)) s (node $s; SLURMLAB=$L; ports $CTLD_PORT/$D_PORT)"
say "now: source $L/env.sh"
