"""Recommenders, training, offline evaluation, MLflow tracking and the serving registry.

Modules that serving imports (``base``, ``data``, the model classes, ``artifacts``) must not
import Spark, Airflow or MLflow.
"""
