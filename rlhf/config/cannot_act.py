"""Settings that are valid but can never act with the rest of the config: warned about, not refused."""

from rlhf.config.schema import Config


def settings_that_cannot_act(c: Config) -> list[str]:
    """Settings that are valid but, with the rest of the config, can never change anything: the driver warns once,
    naming them."""
    algo, warnings = c.algo, []
    on_policy = algo.update.epochs == 1 and algo.update.mini_batches == 1
    if on_policy and algo.loss.ratio_against == "rollout":
        # GRPO's symmetric clip doing nothing on-policy is TRL's num_iterations=1; a clip a preset chose on purpose
        # (DAPO's clip-higher, GSPO's and CISPO's own) is what this is about
        asymmetric = algo.loss.clip_eps_low != algo.loss.clip_eps_high
        clips = {"clipped": "the clip-higher range (clip_eps_low != clip_eps_high)" if asymmetric else None,
                 "gspo": "the sequence-ratio clip (clip_eps_low / clip_eps_high)",
                 "cispo": "the IS-weight clip (clip_eps_low / clip_eps_high)"}.get(algo.loss.name)
        if algo.loss.dual_clip is not None:
            clips = f"{clips or 'the clip'} and algo.loss.dual_clip"
        if clips:
            warnings.append(f"algo.loss.name={algo.loss.name}: {clips} can never act: with one optimizer step per "
                            "rollout batch (algo.update.epochs=1, algo.update.mini_batches=1) every ratio pi / pi_old "
                            "is exactly 1 (pi_old is the policy being trained); set algo.update.mini_batches > 1 or "
                            "algo.update.epochs > 1 for off-policy updates")
    if c.rollout.mode != "sync" and on_policy and algo.loss.ratio_against == "rollout":
        # decoupled PPO: the clip is centred on the proximal policy, so only algo.correction's behaviour weight
        # (pi_old / pi_rollout) answers for the samples' staleness
        warnings.append(f"rollout.mode={c.rollout.mode}: the policy loss's clip can never act: with one optimizer step "
                        "per batch (algo.update.epochs=1, algo.update.mini_batches=1) the ratio to the proximal "
                        "policy (the learner's weights when the update begins) is exactly 1; only the rollout "
                        f"correction (algo.correction.mode={algo.correction.mode}) acts on the samples' staleness. "
                        "Set algo.update.mini_batches > 1 for the clip to act")
    return warnings
