"""One place that turns a HF model and the `train` config into a DeepSpeed engine (policy and critic alike)."""

import logging
import zlib

import torch

from rlhf.config import micro_batch
from rlhf.devices import resolve_bf16
from rlhf.training.lora import is_adapted, merged_state_dict

log = logging.getLogger(__name__)


def deepspeed_config(train_cfg, batch_size: int, world_size: int, bf16: bool, on_gpu: bool) -> dict:
    micro = micro_batch(train_cfg.micro_batch_size, batch_size, world_size)
    zero = {"stage": train_cfg.zero_stage}
    if train_cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_batch_size": batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": batch_size // (micro * world_size),
        "gradient_clipping": train_cfg.max_grad_norm,
        "zero_optimization": zero,
        # the client AdamW also steps the offloaded fp32 partitions (DeepSpeed's CPU Adam JIT-builds for minutes)
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def dist_backend(device: torch.device) -> str:
    """NCCL for ranks on GPUs, gloo on the CPU: the rank's own device decides, not whether torch sees a GPU (a CPU
    rank on a GPU host must not pick NCCL)."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device) -> None:
    """Join the ranks' process group (set up from MASTER_ADDR, RANK, ... by `LearnerRank.setup`)."""
    import deepspeed

    deepspeed.init_distributed(dist_backend=dist_backend(device))


def load_learner_model(auto_class, model_path: str, train_cfg, batch_size: int, world_size: int,
                       device: torch.device, **kwargs):
    """A learner's fp32 model (DeepSpeed's master weights). Under ZeRO-3 it loads straight into each rank's shard
    (transformers' `from_pretrained` under `HfDeepSpeedConfig`, as the reference loads): no rank ever holds the whole
    fp32 model, which on a GPU would fill it before DeepSpeed shards anything."""
    from rlhf.models.loading import load_model

    if train_cfg.zero_stage != 3:
        return load_model(auto_class, model_path, torch.float32, train_cfg.attn_implementation, device, **kwargs)
    from transformers.integrations import HfDeepSpeedConfig

    init_distributed(device)  # zero.Init partitions over the ranks' group as it loads
    config = deepspeed_config(train_cfg, batch_size, world_size, resolve_bf16(train_cfg.bf16, device),
                              device.type == "cuda")
    zero3_loading = HfDeepSpeedConfig(config)  # while it lives, from_pretrained loads into shards
    try:
        return load_model(auto_class, model_path, torch.float32, train_cfg.attn_implementation, device, **kwargs)
    finally:
        del zero3_loading


def make_engine(model, train_cfg, batch_size: int, world_size: int = 1):
    """`batch_size` sequences make one optimizer step, on the device the model is on (bf16 there when
    `train.bf16` is null and it is a GPU). The optimizer is a client AdamW: DeepSpeed's own Adam variants
    JIT-compile for minutes on CPU."""
    import deepspeed

    device = next(model.parameters()).device
    init_distributed(device)
    if train_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if is_adapted(model):  # frozen embeddings: checkpointed blocks need an input that asks for gradients
            model.enable_input_require_grads()
    # fused: one kernel over all parameters, ~4x faster than the per-tensor loop on CPU (0.13 s vs 0.5 s at 135M).
    # Only what trains is in it (with LoRA: the adapter, and the critic's value head)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, fused=True)
    warmup = max(1, train_cfg.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    bf16 = resolve_bf16(train_cfg.bf16, device)
    config = deepspeed_config(train_cfg, batch_size, world_size, bf16, device.type == "cuda")
    # DeepSpeed casts the model to bf16 in place (new tensors: these keep the loaded fp32 values, in host memory: on a
    # GPU they would need 4 more bytes a parameter there while DeepSpeed makes its copies; on the CPU no copy is made)
    # (ZeRO-3: shards loaded in bf16, its masters stay on the grid)
    loaded = {name: p.detach().cpu() for name, p in model.named_parameters()
              if bf16 and train_cfg.zero_stage < 3 and p.requires_grad and p.dtype == torch.float32}
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    if bf16:
        start_masters_off_grid(engine, loaded)
    if world_size == 1 and train_cfg.zero_stage == 0:
        # nothing to average over, but DeepSpeed would still flatten and all-reduce (~0.5 s at 135M); under ZeRO
        # the optimizer's gradient partitioning runs through this call, so it stays
        engine.enable_backward_allreduce = False
    return engine


def start_masters_off_grid(engine, loaded: dict[str, torch.Tensor]) -> None:
    """Start DeepSpeed's fp32 master weights from the loaded fp32 values, those that bf16 holds exactly dithered
    (`dither_on_grid`), instead of DeepSpeed's copy of the bf16 module. From that copy every master sits on the bf16
    grid, and a weight the model computes with moves only once its updates add up to half a bf16 step: at lr 3e-5 on
    SmolLM2 (weights ~0.1, a bf16 step ~5e-4) some 8 updates of one sign, and an RMSNorm weight of 1.0 some 130. The
    default experiment's policy then drifted from its reference 5-10x slower than in fp32 and learned more slowly.
    Off the grid, rounding to the nearest moves the weights as much as the updates on average. The model computes
    with the same bf16 weights either way. ZeRO-3 loads each rank's shard in bf16: its masters stay on the grid."""
    from deepspeed.utils import safe_set_full_fp32_param

    def master(name: str) -> torch.Tensor:  # the same on every rank: a generator per parameter, seeded by its name
        return dither_on_grid(loaded[name], torch.Generator().manual_seed(zlib.crc32(name.encode())))

    optimizer, kept = engine.optimizer, 0
    if hasattr(optimizer, "fp32_groups"):  # ZeRO 0 (FP16_UnfusedOptimizer over bf16): one fp32 master per param
        name_of = {id(param): name for name, param in engine.module.named_parameters()}
        for masters, params in zip(optimizer.fp32_groups, optimizer.fp16_groups):
            for fp32, param in zip(masters, params):
                if name_of[id(param)] in loaded:
                    fp32.data.copy_(master(name_of[id(param)]))  # copy_ moves host values to the device
                    kept += 1
    else:  # ZeRO 1-2: each rank's fragment of the partitioned masters
        for name, param in engine.module.named_parameters():
            if name in loaded and getattr(param, "_hp_mapping", None) is not None:
                safe_set_full_fp32_param(param, master(name))  # copies only this rank's fragment over
                kept += 1
    if loaded and not kept:
        log.warning("bf16: the fp32 master weights are DeepSpeed's copy of the bf16 ones (%s): small updates lag",
                    type(optimizer).__name__)


def dither_on_grid(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`values` with each one that bf16 holds exactly (0 aside) moved by a uniform amount within half a bf16 step,
    which leaves its bf16 rounding as it was. Such a weight then moves in bf16 after as many updates as an off-grid
    one, on average as much as its updates add up to (a checkpoint stored in bf16 is all on the grid)."""
    magnitude = values.abs()
    on_grid = (values == values.bfloat16().float()) & (values != 0)
    mantissa, exponent = torch.frexp(magnitude)
    up = torch.ldexp(torch.ones_like(values), exponent - 8)  # bf16 keeps 8 significant bits
    down = torch.where(mantissa == 0.5, up / 2, up)  # a power of two: the step below it is half the step above
    u = (torch.rand(values.shape, generator=generator) - 0.5) * 0.999  # never a tie (values in host memory)
    shifted = torch.sign(values) * (magnitude + torch.where(u >= 0, u * up, u * down))
    return torch.where(on_grid, shifted, values)


def backward_and_step(engine, loss: torch.Tensor, metrics: dict) -> None:
    """Backward a loss that is already its share of the optimizer batch, then let DeepSpeed step at the
    accumulation boundary. Records the pre-clip gradient norm in `metrics["grad_norm"]`."""
    engine.backward(loss, scale_wrt_gas=False)
    at_boundary = engine.is_gradient_accumulation_boundary()
    if at_boundary and not engine.zero_optimization():
        # without ZeRO, DeepSpeed clips but does not keep the norm
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        metrics["grad_norm"] = torch.nn.utils.get_total_norm(grads).item()
    engine.step()
    if at_boundary and engine.zero_optimization():
        metrics["grad_norm"] = float(engine.get_global_grad_norm())


def full_state_dict(engine) -> dict[str, torch.Tensor] | None:
    """Every parameter, gathered from ZeRO-3 shards if needed; None on ranks other than 0. Outside ZeRO-3 the
    tensors are the live weights (no copy: callers read them before the next optimizer step). With LoRA: the
    plain model's weights with the adapter merged in."""
    module = engine.module
    if is_adapted(module):
        state = merged_state_dict(module)
    elif engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}  # the gathered copy is freed
    else:
        state = {k: v.detach() for k, v in module.state_dict().items()}
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return None
    # Tied embeddings: vLLM needs lm_head.weight present, and safetensors refuses two names on one storage.
    seen = set()
    for name, tensor in state.items():
        if tensor.data_ptr() in seen or not tensor.is_contiguous():
            state[name] = tensor.contiguous().clone()
        seen.add(tensor.data_ptr())
    return state


def save_training_state(engine, folder: str, client_state: dict) -> None:
    """Weights, optimizer, scheduler (DeepSpeed's checkpoint format, sharded under ZeRO) plus the torch RNG.
    Every rank calls this; the caller makes the enclosing folder appear atomically."""
    state = {**client_state, "torch_rng": torch.get_rng_state()}
    # with LoRA only what trains is saved (the frozen base weights are the model folder's)
    engine.save_checkpoint(folder, tag="state", client_state=state, save_latest=False,
                           exclude_frozen_parameters=is_adapted(engine.module))


def load_training_state(engine, folder: str) -> dict:
    """Restore what `save_training_state` wrote; returns the client state."""
    _, client_state = engine.load_checkpoint(folder, tag="state", load_optimizer_states=True,
                                             load_lr_scheduler_states=True,
                                             load_module_strict=not is_adapted(engine.module))
    if client_state is None:
        raise FileNotFoundError(f"no DeepSpeed checkpoint under {folder}/state")
    torch.set_rng_state(client_state.pop("torch_rng"))
    return client_state
