"""``hydra/launcher=imgcls_parallel``: the project's parallel launcher (conf/hydra/launcher/parallel.yaml)."""
