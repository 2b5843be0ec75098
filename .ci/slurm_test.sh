#!/usr/bin/env bash
# Real single-node SLURM test (issue 6). As root, on Debian:
#   1. installs slurm-wlm and munge (apt) unless present;
#   2. starts munged, slurmctld and slurmd on localhost: one node with this machine's CPUs and
#      memory, a fake `gpu` GRES backed by /dev/null, no accounting database;
#   3. runs the .test workflow twice in scratch copies of .test: locally (--profile profiles/local)
#      and through SLURM (profiles/slurm, with a CI override: no account, partition `debug`,
#      resources capped to this node, fast status checks);
#   4. checks the jobs went through sbatch (GPU rules with a gpu GRES), that a second SLURM run
#      has nothing to do, and that the SLURM outputs match the local ones (.ci/compare_results.py);
#   5. always (trap) cancels the jobs and stops the daemons by their PID files.
# Every wait is bounded. Env: SLURM_TEST_TIMEOUT (s per workflow run, default 1200),
# SLURM_TEST_KEEP=1 keeps the scratch folder, SLURM_TEST_CLUSTER_ONLY=1 stops after the srun
# checks, HARMREF_VENV (default .venv).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HARMREF_VENV:-$ROOT/.venv}
RUN_TIMEOUT=${SLURM_TEST_TIMEOUT:-1200}
export PATH="$VENV/bin:$PATH"
# the rules import harmref from this checkout, whatever the venv has installed (jobs inherit this)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
log() { echo "[slurm-test +$(($(date +%s) - T0))s] $*"; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (apt-get, munge, slurmd)"
[ -x "$VENV/bin/snakemake" ] || die "no snakemake in $VENV"
"$VENV/bin/python" -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
  || die "snakemake-executor-plugin-slurm is not installed in $VENV (pip install -e '.[cluster]')"

W=$(mktemp -d /tmp/harmref-slurm.XXXXXX)
chmod 755 "$W"
S=$W/cluster
mkdir -p "$S/state" "$S/spool" "$S/munge" "$S/etc-backup"
NODE=$(hostname -s)
export SLURM_CONF=$S/slurm.conf
CREATED_ETC=()

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -s "$S/slurmctld.pid" ]; then
    timeout 20 scancel --partition=debug >/dev/null 2>&1
    sleep 1
  fi
  for name in slurmd slurmctld munged; do
    local pidfile=$S/$name.pid
    [ -s "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$name ($pid) ignored SIGTERM; SIGKILL"; kill -9 "$pid"; fi
    log "stopped $name (pid $pid)"
  done
  for f in "${CREATED_ETC[@]}"; do
    rm -f "/etc/slurm/$f"
    [ -e "$S/etc-backup/$f" ] && mv "$S/etc-backup/$f" "/etc/slurm/$f"
  done
  if [ "$rc" != 0 ]; then
    for f in "$S/slurmctld.log" "$S/slurmd.log" "$W/slurm.log"; do
      [ -s "$f" ] && { echo "----- tail $f"; tail -n 40 "$f"; }
    done
    find "$W/slurm/logs" "$W/slurm/.snakemake/slurm_logs" -name '*.log' -newer "$S/slurm.conf" 2>/dev/null \
      | head -n 3 | while read -r f; do echo "----- tail $f"; tail -n 30 "$f"; done
  fi
  if [ "${SLURM_TEST_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then log "scratch kept: $W"; else rm -rf "$W"; fi
  log "exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. packages -------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends slurm-wlm munge \
    >"$W/apt.log" 2>&1 || { tail -n 20 "$W/apt.log"; die "apt-get install failed"; }
fi
log "$(slurmctld -V), $(munged -V 2>&1 | head -n 1)"

# ---- 2. daemons --------------------------------------------------------------------------------
# munge with a private key and socket, so a munged already running here is left alone
dd if=/dev/urandom of="$S/munge/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$S/munge"
chmod 755 "$S/munge"   # munged wants the socket folder world-executable
chmod 400 "$S/munge/munge.key"
SOCK=$S/munge/munge.socket
timeout 30 su -s /bin/sh munge -c "/usr/sbin/munged --socket=$SOCK --key-file=$S/munge/munge.key \
  --pid-file=$S/munge/munged.pid --log-file=$S/munge/munged.log --seed-file=$S/munge/munged.seed" \
  || die "munged did not start"
for _ in $(seq 50); do [ -s "$S/munge/munged.pid" ] && break; sleep 0.1; done
ln -sf "$S/munge/munged.pid" "$S/munged.pid"
munge -S "$SOCK" -n | unmunge -S "$SOCK" | grep -q 'STATUS: *Success' || die "munge round trip failed"

NODE_LINE=$(slurmd -C | head -n 1)             # NodeName=<host> CPUs=.. ... RealMemory=..
NCPU=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
# fake GPUs: links to /dev/null (slurmd wants character devices; the jobs use the CPU torch), as
# many as CPUs, so that GPU jobs run side by side as on a GPU node
NGPU=$NCPU
for i in $(seq 0 $((NGPU - 1))); do ln -s /dev/null "$S/fakegpu$i"; done
cat >"$S/slurm.conf" <<EOF
# written by .ci/slurm_test.sh
ClusterName=harmrefci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# the plugin's squeue status check, and the checks below, need finished jobs to stay visible
MinJobAge=3600
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
GresTypes=gpu
$NODE_LINE NodeAddr=127.0.0.1 Gres=gpu:$NGPU State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/fakegpu[0-%d]\n' "$NODE" "$S" $((NGPU - 1)) >"$S/gres.conf"
# job steps do not see SLURM_CONF: the config has to be at /etc/slurm too
mkdir -p /etc/slurm
for f in slurm.conf gres.conf; do
  case "$(readlink "/etc/slurm/$f" || true)" in
    /tmp/harmref-slurm.*) rm -f "/etc/slurm/$f" ;;   # left by a run that was killed
  esac
  [ -e "/etc/slurm/$f" ] || [ -L "/etc/slurm/$f" ] && mv "/etc/slurm/$f" "$S/etc-backup/$f"
  ln -s "$S/$f" "/etc/slurm/$f"
  CREATED_ETC+=("$f")
done

timeout 30 slurmctld -f "$S/slurm.conf" || die "slurmctld did not start"
timeout 30 slurmd -f "$S/slurm.conf" -N "$NODE" || die "slurmd did not start"
state=
for _ in $(seq 60); do
  state=$(timeout 5 sinfo -h -N -o %t 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 1
done
[ "$state" = idle ] || die "node not idle after 60 s (state: '$state')"
log "cluster up: node $NODE, $NCPU CPUs, $MEM MB, gres gpu:$NGPU (fake)"
[ "$(timeout 60 srun --mem=100 hostname)" = "$(hostname)" ] || die "srun hostname failed"
gpu=$(timeout 60 srun --mem=100 --gpus=1 printenv CUDA_VISIBLE_DEVICES) || die "srun --gpus=1 failed"
[[ "$gpu" =~ ^[0-9]+$ ]] || die "a --gpus=1 job step saw CUDA_VISIBLE_DEVICES='$gpu', expected one GPU index"
log "srun works; a --gpus=1 step sees CUDA_VISIBLE_DEVICES=$gpu"
if [ "${SLURM_TEST_CLUSTER_ONLY:-0}" = 1 ]; then log "PASS (cluster only)"; exit 0; fi

# ---- 3. the .test workflow, locally and through SLURM ---------------------------------------------
DATA_ROOT=$("$VENV/bin/python" - "$ROOT" <<'EOF'
import os, sys, yaml
root = sys.argv[1]
cfg = yaml.safe_load(open(os.path.join(root, ".test/config/config.yaml")))
print(os.path.normpath(os.path.join(root, ".test", cfg.get("data_root", "data"))))
EOF
)
for run in local slurm; do
  mkdir -p "$W/$run"
  tar -C "$ROOT/.test" --exclude=./results --exclude=./logs --exclude=./.snakemake -cf - . | tar -C "$W/$run" -xf -
done
SM=("$VENV/bin/snakemake" -s "$ROOT/Snakefile" --workflow-profile none --config "data_root=$DATA_ROOT")

# CI override of profiles/slurm: no account (none exists here), partition debug, requests capped
# to this node, short first status check. Everything else comes from the real profile.
mkdir -p "$W/profile"
"$VENV/bin/python" - "$ROOT/profiles/slurm/config.yaml" "$W/profile/config.yaml" "$NCPU" "$MEM" <<'EOF'
import sys, yaml
src, dst, ncpu, mem = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = yaml.safe_load(open(src))
assert p["executor"] == "slurm" and p["slurm-status-command"] == "squeue", "profiles/slurm changed"
p["default-resources"].pop("slurm_account")
p["default-resources"]["slurm_partition"] = "debug"
for res in [p["default-resources"], *p.get("set-resources", {}).values()]:
    if "mem_mb" in res:
        res["mem_mb"] = min(res["mem_mb"], mem // ncpu)
    if "cpus_per_task" in res:
        res["cpus_per_task"] = min(res["cpus_per_task"], max(1, ncpu // 2))
p["slurm-init-seconds-before-status-checks"] = 5
yaml.safe_dump(p, open(dst, "w"), sort_keys=False)
EOF

log "local run (profiles/local, as many model jobs at once as CPUs)"
t=$(date +%s)
timeout -k 30 "$RUN_TIMEOUT" "${SM[@]}" -d "$W/local" --profile "$ROOT/profiles/local" --resources "gpu=$NCPU" \
  >"$W/local.log" 2>&1 \
  || { tail -n 40 "$W/local.log"; die "local run failed"; }
T_LOCAL=$(($(date +%s) - t))
log "local run: ${T_LOCAL}s"

# what the DAG should send to SLURM: the dry run's own count (rules/common.smk dry_run_summary): sbatch
# jobs (a group of per-set model jobs is one), the GPU ones among them, and the local rules
timeout -k 10 300 "${SM[@]}" -d "$W/slurm" --profile "$W/profile" -n >"$W/dry.log" 2>&1 || { tail -n 30 "$W/dry.log"; die "dry run failed"; }
plan=$(grep -E '^harmref jobs: ' "$W/dry.log" || true)
[ -n "$plan" ] || { tail -n 30 "$W/dry.log"; die "the dry run printed no 'harmref jobs:' line"; }
log "dry run: $plan"
read -r P_TOTAL P_SBATCH P_GROUPS P_SINGLE_GPU P_LOCAL < <(sed -E 's/^harmref jobs: ([0-9]+) in the DAG, [0-9]+ of them GPU jobs; on SLURM ([0-9]+) sbatch jobs \(([0-9]+) group jobs holding [0-9]+ model jobs, [0-9]+ single jobs, ([0-9]+) of them GPU jobs\), ([0-9]+) local rules$/\1 \2 \3 \4 \5/' <<<"$plan")
[[ "$P_SBATCH" =~ ^[0-9]+$ ]] || die "cannot read the dry run's plan: $plan"

log "SLURM run (profiles/slurm + CI override)"
t=$(date +%s)
timeout -k 30 "$RUN_TIMEOUT" "${SM[@]}" -d "$W/slurm" --profile "$W/profile" >"$W/slurm.log" 2>&1 \
  || die "SLURM run failed (or timed out after ${RUN_TIMEOUT}s)"
T_SLURM=$(($(date +%s) - t))
log "SLURM run: ${T_SLURM}s"

# ---- 4. checks ---------------------------------------------------------------------------------------
n_sub=$(grep -c 'submitted with SLURM jobid' "$W/slurm.log" || true)
n_local=$(grep -cE '^localrule ' "$W/slurm.log" || true)
n_total=$(sed -n 's/^\([0-9]*\) of \1 steps (100%) done$/\1/p' "$W/slurm.log" | tail -n 1)
grep -E 'submitted with SLURM jobid' "$W/slurm.log" | head -n 3
log "SLURM jobs submitted: $n_sub; rules run on the submitting node (localrule): $n_local; jobs in the DAG: ${n_total:-?}"
[ "$n_sub" -gt 0 ] || die "no job went through sbatch"
[ "${n_total:-0}" -eq "$P_TOTAL" ] || die "jobs in the DAG ($n_total) != the dry run's $P_TOTAL"
[ "$n_sub" -eq "$P_SBATCH" ] && [ "$n_local" -eq "$P_LOCAL" ] \
  || die "sbatch jobs $n_sub / local rules $n_local != the dry run's $P_SBATCH / $P_LOCAL (group jobs count once)"
timeout 30 scontrol show job -o | grep 'Comment=rule_' >"$W/jobs.txt" || true   # the plugin's jobs
n_done=$(grep -c 'JobState=COMPLETED' "$W/jobs.txt" || true)
n_gpu=$(grep -c 'TresPerJob=[^ ]*gpu' "$W/jobs.txt" || true)
# sbatch jobs that ask for a GPU: every group job (per-set model jobs) and every single GPU-rule job
n_gpu_want=$((P_GROUPS + P_SINGLE_GPU))
log "SLURM jobs COMPLETED: $n_done; with a gpu GRES: $n_gpu (GPU sbatch jobs planned: $n_gpu_want, $P_GROUPS of them group jobs)"
[ "$n_done" -eq "$n_sub" ] || die "not every submitted job COMPLETED"
[ "$n_gpu" -ge 1 ] && [ "$n_gpu" -eq "$n_gpu_want" ] || die "GPU rules were not submitted with a gpu GRES"

timeout -k 10 120 "${SM[@]}" -d "$W/slurm" --profile "$W/profile" -n >"$W/rerun.log" 2>&1 || die "dry rerun failed"
grep -q 'Nothing to be done' "$W/rerun.log" || { cat "$W/rerun.log"; die "a second SLURM run would redo jobs"; }
log "second SLURM run: nothing to be done"

"$VENV/bin/python" "$ROOT/.ci/compare_results.py" "$W/local/results" "$W/slurm/results" \
  || die "SLURM outputs differ from the local ones"
log "PASS: local ${T_LOCAL}s, SLURM ${T_SLURM}s, total $(($(date +%s) - T0))s"
