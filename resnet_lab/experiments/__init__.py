"""Built-in experiments that run many training runs as one job.

- ``resnet_lab.experiments.degradation``: plain vs residual networks of growing depth (He et al. 2015, Fig. 6/7).
- ``resnet_lab.experiments.search``: a genetic-algorithm hyperparameter search on Optuna's NSGA-II sampler,
  stored in SQLite or any SQLAlchemy database so workers on several machines can share one study.

Neither is imported here: ``search`` needs optuna, which must stay out of the training path's imports.
"""
