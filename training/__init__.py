"""Training and MLOps: one MLflow run per model (``train``), MLflow glue (``tracking``), champion
promotion (``promote``) and the offline experiment CLI (``offline``, also ``python -m models.offline``).
Writes the serving registry through ``core.registry``; serving never imports this package."""
