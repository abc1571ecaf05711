"""Learners and scorers that run a model forward: the DeepSpeed policy learner and the reference model."""
