"""CVG: a classifier on cross-attention maps of entity tokens, and its guidance.

Method steps (shared/seed/cvg-method.txt) and where they live:
- training (a) inversion + replay: ``training.py`` via ``Generator.invert`` / ``capture``;
- (b) maps A[t,l,h,k] of entity tokens, relation withheld: ``features.entity_maps``;
- (c) aggregator theta_agg -> per-step volume A_hat_t: ``aggregator.AttentionAggregator``;
- (d) frozen backbone + trainable head: ``classifier.CVGClassifier`` (backbones/);
- (e)-(f) dual inversion, dual cross-entropy: ``training.py``;
- inference (a)-(e): the ``cvg`` method plugin (methods/cvg.py).
"""
