"""TRL's GRPOTrainer on the benchmark's work; runs inside TRL's own virtualenv (see bench_vs_trl.py).

Reads a JSON job (model folder, prompt rows, settings), trains `steps` steps, and writes per-step wall times,
generated lengths and the peak memory it saw to the job's output file. Imports nothing from this project but
the BLEU module, by file path, so that the reward is the same function ours uses.
"""

import importlib.util
import json
import sys
import time

job = json.loads(open(sys.argv[1]).read())

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

spec = importlib.util.spec_from_file_location("bleu", job["bleu_module"])
bleu_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bleu_module)


def bleu_reward(prompts, completions, references, **_):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [bleu_module.bleu_score(t.strip(), refs) if t.strip() else 0.0 for t, refs in zip(texts, references)]


class StepClock(TrainerCallback):
    def __init__(self):
        self.times, self.lengths, self.last = [], [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.last)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "completions/mean_length" in logs:
            self.lengths.append(logs["completions/mean_length"])


torch.manual_seed(0)
dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "references": r["references"]}
                             for r in job["rows"]])
config = GRPOConfig(
    output_dir=job["output_dir"], per_device_train_batch_size=job["prompts"] * job["group_size"],
    num_generations=job["group_size"], max_completion_length=job["max_new_tokens"], learning_rate=job["lr"],
    beta=job["beta"], max_steps=job["steps"], logging_steps=1, temperature=job["temperature"], top_p=1.0,
    bf16=job["dtype"] == "bfloat16", use_cpu=True, report_to=[], save_strategy="no", seed=0,
    gradient_accumulation_steps=1, shuffle_dataset=False,
    gradient_checkpointing=job["gradient_checkpointing"],
)
clock = StepClock()
trainer = GRPOTrainer(model=job["model"], reward_funcs=bleu_reward, args=config, train_dataset=dataset,
                      callbacks=[clock])
trainer.train()
json.dump({"step_seconds": clock.times, "completion_lengths": clock.lengths}, open(job["result"], "w"))
