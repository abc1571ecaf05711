"""Checks of the sections whose settings constrain one another: the rollout mode, the rollout correction, the
multi-turn environment and the evaluation."""

from rlhf.algorithms.corrections import LEVELS, MODES
from rlhf.config.rules import _choice, _positive
from rlhf.config.schema import Config, CorrectionConfig, DataConfig


def validate_mode(c: Config) -> None:
    """rollout.mode and its asynchronous settings."""
    r = c.rollout
    _choice("rollout.mode", r.mode, {"sync", "one_step_off", "async"})
    if r.mode == "sync":
        return
    if r.sleep_mode:
        raise ValueError(f"rollout.sleep_mode=true with rollout.mode={r.mode}: a sleeping engine cannot generate while "
                         "the learner trains; set rollout.sleep_mode=false (or null)")
    off_policy = r.mode == "one_step_off" or r.max_staleness > 0 or r.partial_rollouts
    if off_policy and c.algo.correction.mode == "none":
        raise ValueError(f"rollout.mode={r.mode} trains on samples of earlier weights: choose a rollout correction, "
                         "e.g. algo/correction=tis (truncated importance sampling)")
    if r.mode != "async":
        return
    _positive("rollout.max_staleness", r.max_staleness, allow_zero=True)
    _positive("rollout.push_every", r.push_every)
    _positive("rollout.advance_s", r.advance_s)
    if r.engine != "vllm":
        raise ValueError("rollout.mode=async streams requests through vLLM's engine step by step (continuous batching, "
                         f"interruptible requests); rollout.engine={r.engine} cannot: use rollout.engine=vllm")
    if r.push_every > r.max_staleness + 1:
        raise ValueError(f"rollout.push_every={r.push_every} with rollout.max_staleness={r.max_staleness}: between two "
                         f"pushes the learner moves {r.push_every - 1} updates past the engines' weights, so every sample "
                         f"would be too stale; use push_every <= max_staleness + 1")
    if c.algo.update.old_logprobs == "rollout":
        raise ValueError("rollout.mode=async uses the decoupled PPO objective: the clip is centred on the learner's "
                         "weights when the batch's update begins (algo.update.old_logprobs=recompute) and the rollout "
                         "correction covers the gap to the engines'; algo.update.old_logprobs=rollout would centre it on "
                         "weights up to max_staleness updates old")


def validate_correction(k: CorrectionConfig) -> None:
    _choice("algo.correction.mode", k.mode, MODES)
    _choice("algo.correction.level", k.level, LEVELS)
    if k.max_mismatch_kl is not None:
        _positive("algo.correction.max_mismatch_kl", k.max_mismatch_kl)
    if k.mode == "none":
        return
    if k.high is None:
        raise ValueError(f"algo.correction.mode={k.mode} needs algo.correction.high (the cap, or the upper bound)")
    if k.mode == "truncate" and k.low is not None:
        raise ValueError("algo.correction.low has no meaning for mode=truncate (the weight is only capped): set it to "
                         "null, or use mode=mask")
    if k.mode == "icepop" and k.level != "token":
        raise ValueError(f"algo.correction.mode=icepop is a token-level mask: level={k.level} is not one")
    if k.low is not None and not 0 <= k.low <= k.high:
        raise ValueError(f"algo.correction.low={k.low} must be in [0, high={k.high}]")


def validate_env(c: Config) -> None:
    e = c.env
    for key in ("max_turns", "max_tool_calls", "tool_timeout_s", "tool_workers", "max_tool_response_tokens",
                "max_episode_tokens", "python_cpu_s", "python_memory_mb", "python_output_bytes"):
        _positive(f"env.{key}", getattr(e, key), allow_zero=key == "max_tool_calls")
    if e.max_parallel_calls is not None:
        _positive("env.max_parallel_calls", e.max_parallel_calls)
    _choice("env.tools_prompt", e.tools_prompt, {"auto", "template", "system"})
    _choice("env.tool_response_truncate", e.tool_response_truncate, {"head", "tail", "middle"})
    if e.factory is not None and not isinstance(e.factory, (str, dict)) or isinstance(e.factory, dict) and (
            not e.factory or not all(isinstance(v, str) for v in e.factory.values())):
        raise ValueError(f"env.factory={e.factory!r}: give an import path (pkg.module:factory) or a dict of them "
                         "(name -> path, TRL's multi-environment mode)")
    if e.agent and (e.factory or e.tools):
        raise ValueError("env.agent runs an agent of its own (its tools are its business): set it without env.factory "
                         "and env.tools")
    _positive("env.agent_timeout_s", e.agent_timeout_s)
    if e.reply and not e.factory:
        raise ValueError(f"env.reply={e.reply!r} names a method of the environment, but env.factory is not set")
    if e.enabled and e.max_episode_tokens < c.rollout.max_new_tokens:
        raise ValueError(f"env.max_episode_tokens={e.max_episode_tokens} is below rollout.max_new_tokens="
                         f"{c.rollout.max_new_tokens}, one turn's budget: raise it (it holds every turn and every tool "
                         "answer of an episode)")
    uses_env_reward = any(f.name == "env" for f in [*c.reward.functions, *c.eval.rewards])
    if uses_env_reward and not (e.factory or e.agent):
        raise ValueError("reward.functions names `env` (the environment's get_reward, or the agent's return), but "
                         "neither env.factory nor env.agent is set")


def validate_eval(c: Config) -> None:
    e = c.eval
    _positive("eval.every", e.every, allow_zero=True)
    _positive("eval.held_out", e.held_out)
    _positive("eval.samples", e.samples)
    _positive("eval.temperature", e.temperature)
    if e.max_new_tokens is not None:
        _positive("eval.max_new_tokens", e.max_new_tokens)
        if e.max_new_tokens > c.rollout.max_new_tokens:
            raise ValueError(f"eval.max_new_tokens={e.max_new_tokens} exceeds rollout.max_new_tokens="
                             f"{c.rollout.max_new_tokens}, for which the engines' context was sized")
    if e.greedy and e.samples > 1:
        raise ValueError(f"eval.greedy with eval.samples={e.samples}: greedy completions of a prompt are all the same; "
                         "set eval.greedy=false for pass@k over sampled ones")
    unknown = set(e.data or {}) - set(DataConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"eval.data: {sorted(unknown)} are not data settings; choose from "
                         f"{sorted(DataConfig.__dataclass_fields__)}")
    labels = e.objective_labels(c.reward)
    if len(set(labels)) != len(labels):
        raise ValueError(f"eval.rewards need distinct labels, got {labels}: set `label` on the duplicates")
    if e.pass_objective is not None:
        _choice("eval.pass_objective", e.pass_objective, labels)
    best = c.checkpoint.keep_best
    if best is not None:
        if not e.every:
            raise ValueError(f"checkpoint.keep_best={best!r} ranks checkpoints by an eval metric: set eval.every > 0")
        _choice("checkpoint.keep_best", best, e.metric_names(c.reward))


def validate_sft(c: Config) -> None:
    """Supervised fine-tuning: `algo=sft` on its own, or a warm start (`sft.steps` > 0) before an RL run."""
    s = c.sft
    _positive("sft.steps", s.steps, allow_zero=True)
    _positive("sft.lr", s.lr)
    _positive("sft.batch_size", s.batch_size)
    _choice("sft.reference", s.reference, {"policy", "base"})
    if c.train.max_tokens_per_micro_batch is not None:
        _positive("train.max_tokens_per_micro_batch", c.train.max_tokens_per_micro_batch)
    unknown = set(s.data or {}) - set(DataConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"sft.data: {sorted(unknown)} are not data settings; choose from "
                         f"{sorted(DataConfig.__dataclass_fields__)}")
    if c.algo.name == "sft" and s.steps:
        raise ValueError(f"sft.steps={s.steps} warm-starts an RL run, but algo=sft is a supervised run of its own: it "
                         "trains `steps` steps on `data`; set sft.steps=0 (or choose an RL algorithm)")
    if s.packing and not (c.train.attn_implementation == "flash_attention_2" and c.train.num_gpus > 0):
        raise ValueError("sft.packing=true puts a micro-batch's demonstrations in one row without padding, told apart "
                         "only by their position ids: only flash-attention reads them as separate sequences "
                         "(train.attn_implementation=flash_attention_2, on a GPU: train.num_gpus > 0). SDPA and eager "
                         f"(train.attn_implementation={c.train.attn_implementation}, "
                         f"{'on a GPU' if c.train.num_gpus else 'on the CPU'}) would let each demonstration attend to "
                         "the ones before it; set sft.packing=false (length-sorted micro-batches by "
                         "train.max_tokens_per_micro_batch keep the padding small)")
    if s.steps and c.train.lora.rank and s.reference == "policy":
        raise ValueError("sft.steps > 0 with train.lora.rank > 0 and sft.reference=policy: with LoRA the reference is "
                         "the policy with its adapter off, the base model, so it cannot be the warm-started policy; "
                         "set sft.reference=base")
