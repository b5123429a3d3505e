#!/usr/bin/env bash
# Stop the cluster started by scripts/slurm-local.sh in $SLURMLAB: cancel its jobs, then stop slurmd,
# slurmctld and its munged by their PID files (nothing else on the machine is touched).
#   scripts/slurm-local-teardown.sh           keep $SLURMLAB (logs, job records) for a look
#   scripts/slurm-local-teardown.sh --purge   and delete it
set -uo pipefail
export PATH=$PATH:/usr/sbin:/sbin
L=${SLURMLAB:-${TMPDIR:-/tmp}/slurm-local}
export SLURM_CONF=$L/etc/slurm.conf
# A process that exists and is not a zombie (PID 1 in a container may take seconds to reap one).
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*zombie' "/proc/$1/status" 2>/dev/null; }
# A PID file whose process is running and is the daemon named by the file (PIDs get reused).
alive() { local p; p=$(cat "$1" 2>/dev/null) && running "$p" && [ "$(cat /proc/$p/comm)" = "$(basename "$1" .pid)" ]; }

# Cancel first, so slurmd kills the jobs' processes (slurmstepd would outlive slurmd otherwise).
if alive "$L/run/slurmctld.pid" && alive "$L/run/slurmd.pid"; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u)
  if [ -n "$jobs" ]; then
    scancel $jobs
    for _ in $(seq 60); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
for d in slurmd slurmctld munged; do
  f=$L/run/$d.pid
  if alive "$f"; then
    p=$(cat "$f"); kill "$p"
    for _ in $(seq 100); do running "$p" || break; sleep 0.1; done
    running "$p" && kill -9 "$p"
    echo "[slurm-local] $d ($p) stopped"
  fi
  rm -f "$f"
done
if [ "${1:-}" = --purge ]; then rm -rf "$L"; echo "[slurm-local] removed $L"; fi
exit 0
