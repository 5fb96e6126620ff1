"""Structured channel pruning with EagleEye (Li et al., ECCV 2020).

Four replaceable parts, as Torch-Pruning splits them: ``graph`` (dependency analysis: coupled channel
units and groups), ``importance`` (L1 norm of filters), ``eagleeye`` (strategy sampling under a FLOPs budget,
adaptive BN, fast sub-net scoring) and ``apply`` (physical removal). ``prune_model`` runs them in order and
fine-tunes the winner; it is a stage (:mod:`yolocompress.compress.stage`) returning ``(pruned_model,
StageReport)``.
"""
from yolocompress.compress.prune.apply import ChannelRules, prune_channels
from yolocompress.compress.prune.eagleeye import CostModel, adaptive_bn
from yolocompress.compress.prune.graph import ChannelGraph, ChannelGroup, channel_graph, register_handler
from yolocompress.compress.prune.importance import l1_importance
from yolocompress.compress.prune.pruner import PruneConfig, prune_model

__all__ = [
    "ChannelGraph", "ChannelGroup", "ChannelRules", "CostModel", "PruneConfig", "adaptive_bn",
    "channel_graph", "l1_importance", "prune_channels", "prune_model", "register_handler",
]
