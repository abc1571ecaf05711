"""Hosts one DeepSpeed rank of the policy learner."""

import shutil

import ray

from actors.learner_group import LearnerRank
from rlhf.console import capture_output
from rlhf.experience import Experience
from rlhf.sft import learner as sft_learner
from rlhf.training import sync_folders


@ray.remote
class PolicyActor(LearnerRank):
    def __init__(self, model_path: str, train_cfg, algo_cfg, batch_size: int, max_new_tokens: int,
                 temperature: float, seed: int):
        capture_output()  # into <output_dir>/logs/<role>-<index>.log (rlhf/console.py)
        self.args = (model_path, train_cfg, algo_cfg, batch_size, max_new_tokens, temperature, seed)

    def build(self, rank: int, world: int):
        from rlhf.training.policy import PolicyLearner

        return PolicyLearner(*self.args, rank=rank, world=world)

    def logprobs(self, experience: Experience):
        return self.learner.logprobs(experience)

    def reference_logprobs(self, experience: Experience):
        return self.learner.reference_logprobs(experience)

    def new_weight_folder(self, sync_dir: str) -> str:
        """The shm route's folder, named after this process; this host's folders of ended runs are removed first
        (a killed run cannot remove its own)."""
        sync_folders.remove_orphans(sync_dir)
        return sync_folders.new_folder(sync_dir)

    def remove_weight_folder(self, folder: str) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def save_weights(self, folder: str) -> str:
        return self.learner.save_weights(folder)

    def export_weights(self):
        return self.learner.export_weights()

    def join_weight_group(self, host: str, port: int, rank: int, world: int) -> None:
        self.learner.join_weight_group(host, port, rank, world)

    def leave_weight_group(self) -> None:
        self.learner.leave_weight_group()

    def prepare_nccl_push(self, bucket_bytes: int):
        return self.learner.prepare_nccl_push(bucket_bytes)

    def broadcast_bucket(self, index: int) -> None:
        self.learner.broadcast_bucket(index)

    def finish_nccl_push(self) -> None:
        self.learner.finish_nccl_push()

    def prepare_ipc_push(self, bucket_bytes: int):
        return self.learner.prepare_ipc_push(bucket_bytes)

    def ipc_bucket(self, index: int) -> dict:
        return self.learner.ipc_bucket(index)

    def finish_ipc_push(self) -> None:
        self.learner.finish_ipc_push()

    def save_pretrained(self, folder: str, tokenizer_path: str) -> str:
        return self.learner.save_pretrained(folder, tokenizer_path)

    # supervised fine-tuning on the same engine (rlhf/sft/learner.py): algo=sft, or an RL run's warm start
    def sft_step(self, sequences, plan: list, targets: int, packing: bool) -> dict:
        return sft_learner.train_step(self.learner, sequences, plan, targets, packing)

    def sft_nll(self, sequences, plan: list, packing: bool) -> dict:
        return sft_learner.nll(self.learner, sequences, plan, packing)

    def start_sft(self, lr: float) -> None:
        sft_learner.start_phase(self.learner, lr)

    def end_sft(self, lr: float) -> None:
        sft_learner.end_phase(self.learner, lr)

    def load_reference(self, folder: str, bf16: bool | None, attn_implementation: str) -> None:
        sft_learner.load_reference(self.learner, folder, bf16, attn_implementation)

    def sft_preflight(self, rows: int, length: int, targets: int) -> dict:
        return sft_learner.preflight(self.learner, rows, length, targets)

    def warm_start_preflight(self, prompt_len: int, completion_len: int, case: tuple, reference: tuple | None) -> dict:
        return sft_learner.warm_start_preflight(self.learner, prompt_len, completion_len, case, reference)
