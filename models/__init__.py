"""The recommenders: one module per algorithm, their shared interface (``base``) and torch helpers.

Imports ``core`` and ``evaluation`` (the dataset every model fits on, and the validation protocol
early stopping uses); never MLflow, Spark, Airflow or FastAPI, so that serving can load any model.
"""
