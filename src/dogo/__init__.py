"""dogo: self-supervised pretraining of small vision models with online mutual distillation.

Distill-on-the-Go (Bhat, Arani, Zonooz, CVPR Workshops 2021): a cohort of peers trains from
scratch, each on its own SSL objective plus a KL term that pulls its cross-view similarity
distribution towards each peer's. The package follows the data flow:
data -> views -> models -> objectives -> distillation -> training -> evaluation -> reports -> cli.
"""

__version__ = "0.1.0"
