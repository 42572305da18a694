"""The Ray layer of the WBC study: Ray Train workers, Tune + Optuna per cell, Parquet results."""
