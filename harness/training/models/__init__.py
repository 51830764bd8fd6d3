"""The built-in workloads' models, one file each (harness/builtins.py lists them)."""
