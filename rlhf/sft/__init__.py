"""Supervised fine-tuning on the RL run's actors: `algo=sft` as a run of its own (rlhf/sft/trainer.py), or a warm
start before an RL run (`sft.steps` > 0). Demonstrations in TRL's formats (rlhf/sft/data.py) are rendered as an
episode would hold them (rlhf/sft/rendering.py), batched by a token budget (rlhf/sft/batching.py) and trained on the
policy learner's engine (rlhf/sft/learner.py)."""
