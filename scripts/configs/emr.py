"""EMR vs quadratic regularizers (arXiv:2102.02805) at the paper's scale: CIFAR-100 split by
its 20 superclasses into 5-class tasks, the paper's LR grid. The values (``scripts/continual.py``
flags), and where each comes from, are ``jaxnorm.papers.emr.PAPER`` (the experiment's
``get_config('paper')`` resolves them); this file hands them to ``scripts/continual.py``. Run
it once per importance (ewc, mas, si, rwalk) and method (emr, quadratic).

    python -m jaxnorm.data prepare cifar100     # once, needs internet
    python scripts/continual.py --config scripts/configs/emr.py --importance mas --out emr_mas.json
    python scripts/continual.py --config scripts/configs/emr.py --method quadratic \\
        --strength 1e-5 1e-3 1e-1 1e1 1e3
"""
from jaxnorm.papers import emr

SCRIPT = 'scripts/continual.py'


def get_config():
    return dict(emr.PAPER)
