"""Experiment trackers beyond TensorBoard (issue 18): MLflow and Weights & Biases as `logger=`
options, one tracker run per job, one experiment/group per sweep.

- job.py: names, tags, params and the end of one job's runs (train.py's ``tracked_runs``)
- mlflow_logger.py, wandb_logger.py: the Lightning loggers (conf/logger/mlflow.yaml, wandb.yaml)
- sweep.py: the sweep's parent/summary run (called by src/sweeps/callback.py)
- figures.py: the confusion-matrix and activation figures the runs carry
"""
