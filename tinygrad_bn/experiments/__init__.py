"""``tinygrad_bn.experiments`` is the old name of ``tinygrad_bn.studies``: ``STUDIES``,
``get``, ``run_and_save`` and the old module paths (``experiments.lr_sweep``,
``experiments.init_scale``, ``experiments.ics``, ...) keep working."""
from ..studies import STUDIES, get, run_and_save  # noqa: F401
from ..studies.framework import to_json as _jsonable  # noqa: F401
