"""Result files -> numbers: collect reads a results folder into tidy frames; per_batch, stats,
fit, recommend and collapse turn them into times to target, intervals, the sweet spot and the
collapse verdict. Reads files only (works on a laptop without the training code): never imports
training/, report/ or prediction/, nor torch."""
