#!/usr/bin/env bash
# Install (from Debian's packages), configure and start a one-node Slurm cluster on this machine
# (munged, slurmctld, slurmd) for tests/e2e/test_slurm.py. Idempotent: daemons that answer are
# left as they are; otherwise the configuration is written for this machine and they start.
#
# A test cluster, not a production one: the daemons run as root, without cgroups or accounting,
# on the loopback address, and the node offers this machine's CPUs and memory only (no GPUs,
# so the test submits its workers without --gres).
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
  || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge \
    >/dev/null
fi

conf=/etc/slurm/slurm.conf
node=$(hostname -s)

# munge authenticates slurmctld, slurmd and the client commands to each other.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 20); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.5; done
fi

ready() { scontrol ping 2>/dev/null | grep -q "is UP"; }
node_up() { sinfo -h -N -o "%T" 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; }

# Daemons not both up: (re)write the configuration for this machine as it is now (its host name
# and CPUs may differ from a disk image's), unless an administrator's file is there.
if ! { ready && node_up; } && { [ ! -f "$conf" ] || grep -q "written by .ci/slurm.sh" "$conf"; }; then
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  # This node's CPUs, sockets, cores and memory as slurmd sees them.
  hardware=$(slurmd -C | head -n 1 | sed -e "s/^NodeName=[^ ]* //" -e "s/ UpTime=.*//")
  cat >"$conf" <<EOF
# A one-node test cluster, written by .ci/slurm.sh.
ClusterName=hpo-ci
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# Between scancel's SIGTERM and its SIGKILL: time for a worker to finish its epoch.
KillWait=60
SchedulerParameters=sched_interval=2
MinJobAge=600
NodeName=${node} NodeAddr=127.0.0.1 ${hardware} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
fi

if ! ready; then
  rm -f /run/slurmctld.pid
  slurmctld
  for _ in $(seq 1 30); do ready && break; sleep 0.5; done
fi
if ! node_up; then
  if [ ! -f /run/slurmd.pid ] || ! kill -0 "$(cat /run/slurmd.pid)" 2>/dev/null; then
    rm -f /run/slurmd.pid
    slurmd
  fi
  for _ in $(seq 1 40); do node_up && break; sleep 0.5; done
  node_up || scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
  for _ in $(seq 1 20); do node_up && break; sleep 0.5; done
fi
if ! ready || ! node_up; then
  echo "Slurm did not start; the end of its logs:" >&2
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
fi
echo "Slurm ready: $(sinfo -h -o '%P %D nodes %C CPUs (allocated/idle/other/total)')"
