"""The modules, written from the equations of the papers they cite: `cells` (one interface), `recurrent` (a layer,
the stacks, the backends choosing a kernel), `models` (encoder + stack + head), `budget` (width for a
parameter count), `diagnostics` (gradient norms, the temporal profile, gate saturation). Below them only
the kernels and a task's `IOSpec`."""
