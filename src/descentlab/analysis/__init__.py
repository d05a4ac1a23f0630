"""Turning tracked runs into tables and figures (matplotlib/seaborn, pandas, MLflow)."""
