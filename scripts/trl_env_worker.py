"""TRL 1.16's GRPOTrainer(environment_factory=...) on a job of scripts/trl_env_side_by_side.py; runs inside TRL's own
virtualenv (see bench_vs_trl.py) and imports nothing from this project: only the environment module, by its module
name from the folder the job names (the same import ours does through env.factory).

Writes to the job's result file: every log line TRL produced (its `rewards/<ClassName>/mean` among them), the names
of its reward functions, its tools, and each row's prompt as TRL renders it (token ids and text, with the tools),
computed with the same call TRL makes in `_tokenize_prompts`.
"""

import importlib
import json
import os
import sys
from pathlib import Path

job = json.loads(Path(sys.argv[1]).read_text())
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, job["module_dir"])

import torch
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

module_name, class_name = job["factory"].split(":")
factory = getattr(importlib.import_module(module_name), class_name)


class Logs(TrainerCallback):
    def __init__(self):
        self.lines = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.lines.append({"step": state.global_step, **logs})


torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(job["model"])
tokenizer.chat_template = Path(job["chat_template"]).read_text()  # the tool-capable template both sides use
dataset = Dataset.from_list(job["rows"])
config = GRPOConfig(
    output_dir=job["output_dir"], per_device_train_batch_size=job["prompts"] * job["group_size"],
    num_generations=job["group_size"], max_completion_length=job["max_completion_length"],
    max_tool_calling_iterations=job["max_tool_calling_iterations"], learning_rate=job["lr"], beta=job["beta"],
    max_steps=job["steps"], logging_steps=1, temperature=job["temperature"], top_p=1.0, bf16=False, use_cpu=True,
    report_to=[], save_strategy="no", seed=0, gradient_accumulation_steps=1, shuffle_dataset=False,
)
logs = Logs()
trainer = GRPOTrainer(model=job["model"], args=config, train_dataset=dataset, processing_class=tokenizer,
                      environment_factory=factory, callbacks=[logs])

prompts = {}
for row in job["rows"]:
    ids = trainer.processing_class.apply_chat_template(
        conversation=[row["prompt"]], tools=trainer._env_tools[None] or None, chat_template=trainer.chat_template,
        add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"][0]
    prompts[row["id"]] = {"ids": list(ids), "text": tokenizer.decode(ids)}

trainer.train()
result = {"logs": logs.lines, "reward_func_names": list(trainer.reward_func_names),
          "reward_weights": trainer.reward_weights.tolist(), "tools": [t.__name__ for t in trainer.tools],
          "training_template_swapped": trainer.chat_template is not None, "prompts": prompts,
          "versions": {m: __import__(m).__version__ for m in ("trl", "transformers", "torch", "datasets")}}
Path(job["result"]).write_text(json.dumps(result, indent=1))
