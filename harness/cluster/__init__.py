"""The Slurm adapter, thin over the core: slurm builds and submits the array job, slurm_task runs
inside an allocation. Knows the command line of `harness run`, never imports training/."""
