"""What users run: `fit` (one run, cross-validation, the range test), `load` and predict, search.

`setup` builds a run from its configuration (the one path every run takes), `build` and
`model_setup` its data and model sides, `train` one run end to end, `fit` the public
dispatcher, `select` cross-validation, `lr_find` the range test, `study` the optuna search,
`predict` a trained workdir's use, `finetune` another run's parameters, `per_class` the
test's per-class report, `diagnose` the doctor's wiring and `--mode=doctor`.
"""
