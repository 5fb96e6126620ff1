"""Structured channel pruning with EagleEye (Li et al., ECCV 2020).

Replaceable parts, as Torch-Pruning splits them: ``graph`` (dependency analysis: coupled channel units
and groups), ``importance`` (L1 norm of filters), ``cost`` (FLOPs of a keep-mask), ``strategy`` (EagleEye's
strategies under a FLOPs budget, random and sensitivity-guided), ``scoring`` (adaptive BN, cached data, fast
sub-net scoring) and ``apply`` (physical removal). ``search`` runs the EagleEye search over them (recorded
by ``searchlog`` so that a killed one resumes); ``prune_model`` (``pruner``) runs the search, evaluates and
fine-tunes the winner; it is a stage (:mod:`yolocompress.compress.stage`) returning ``(pruned_model,
StageReport)``. Its settings: ``config``.
"""
from yolocompress.compress.prune.apply import ChannelRules, prune_channels
from yolocompress.compress.prune.config import PruneConfig, PruneFinetuneConfig, SearchConfig
from yolocompress.compress.prune.cost import CostModel
from yolocompress.compress.prune.graph import ChannelGraph, ChannelGroup, channel_graph, register_handler
from yolocompress.compress.prune.importance import l1_importance
from yolocompress.compress.prune.pruner import prune_model
from yolocompress.compress.prune.scoring import adaptive_bn

__all__ = [
    "ChannelGraph", "ChannelGroup", "ChannelRules", "CostModel", "PruneConfig", "PruneFinetuneConfig",
    "SearchConfig", "adaptive_bn",
    "channel_graph", "l1_importance", "prune_channels", "prune_model", "register_handler",
]
