# Preemption (included by every template). Slurm's warning signal (sbatch --signal=B:SIGNAL, seconds ahead)
# reaches this shell: it asks every rank to stop at the same step and checkpoint (through the run
# directory's PREEMPT file: torchrun does not forward signals to its workers), then requeues the
# job, which resumes from that checkpoint. SIGTERM (scancel, time limit) checkpoints without requeue.
run_dir=@{run_dir}-"$SLURM_JOB_ID"
requeue=
trap 'requeue=1; mkdir -p "$run_dir"; touch "$run_dir/PREEMPT"' @{signal}
trap 'mkdir -p "$run_dir"; touch "$run_dir/PREEMPT"' TERM
preemptible() {
  # in the background, so that a trapped signal is handled at once rather than after the step ends
  "$@@" &
  local pid=$! code=0
  while :; do
    wait "$pid" && code=0 || code=$?
    kill -0 "$pid" 2>/dev/null || break  # still running: the wait was interrupted by a signal
  done
  if [ -n "$requeue" ]; then scontrol requeue "$SLURM_JOB_ID"; fi
  return "$code"
}
