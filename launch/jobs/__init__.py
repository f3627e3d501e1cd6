"""Starting jobs: the job spec, launch plans for local, torchrun, mpirun and horovodrun, Slurm's
sbatch scripts, and the child processes a launcher runs."""
