"""Training: datasets (``data``), model builders (``models``), optimizers and schedulers
(``optim``), the training loop (``train``: ``fit``, ``History``) and checkpoints
(``checkpoint``: ``save`` / ``load``)."""
