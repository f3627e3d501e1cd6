"""Who am I and where: the world a launcher started (torchrun, OpenMPI, PMI, Slurm, TF_CONFIG),
Slurm host lists, rendezvous that fails in time, each rank's GPU, and the launch environment a run records."""
