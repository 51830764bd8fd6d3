"""One process trains cells: data on the device, the model, the step (engine) and the one step
loop (steps), evaluation, the cell's loop (train) and the sweep around it, measurements and
checkpoints; `harness bench` times the engine against the loop users write. Imports the config,
the plan and record/, never analysis/, report/ or prediction/, and never pandas or seaborn."""
