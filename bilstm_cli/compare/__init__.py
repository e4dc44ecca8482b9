"""`bilstm compare`: two or more variants of one config, trained on the same data, split,
vocabulary and seeds, and measured side by side with the statistics that say whether the
difference is real. Reference: docs/compare.md.

- `plan.py`: the variants (`--variant NAME:key=value,...`), their config for each seed, and
  each run folder's state (finished, to resume, to start);
- `measure.py`: one finished run, read from its folder and measured on its test set;
- `stats.py`: McNemar's exact test, the paired bootstrap interval, Almost Stochastic Order;
- `report.py`: the comparison (compare.json), its tables and compare.md;
- `plot.py`: compare.png.

`api.compare` trains the plan through the ordinary training path (`api.prepare`,
`Training.run`) and `api.compare_runs` measures and reports; nothing here trains. Importing
this package imports no TensorFlow.
"""

# The shape of a --variant, for its help and its errors (here, so that `bilstm --help` need not
# import plan.py and, through it, the config's pydantic models).
VARIANT_HELP = "NAME:key=value,key=value, e.g. --variant last:model.pooling=last"
