"""TRL 1.16's SFTTrainer on a job of scripts/bench_sft.py (run in TRL's own virtualenv): the same demonstrations,
model, batch and threads as ours; writes each optimizer step's wall time and the tokens it trained on.

    <trl-venv>/bin/python scripts/trl_sft_worker.py job.json
"""

import json
import sys
import time


def main(job_path: str) -> None:
    job = json.loads(open(job_path).read())
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(job["threads"])
    rows = [json.loads(line) for line in open(job["rows"])]
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)

    class Clock(TrainerCallback):
        """Each optimizer step's wall time and its non-padding tokens (TRL's own `num_tokens` count)."""

        def __init__(self):
            self.seconds, self.tokens, self.started, self.seen = [], [], None, 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.started)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                self.tokens.append(logs["num_tokens"] - self.seen)
                self.seen = logs["num_tokens"]

    clock = Clock()
    config = SFTConfig(
        output_dir=job["output_dir"], per_device_train_batch_size=job["batch_size"], gradient_accumulation_steps=1,
        max_steps=job["steps"], learning_rate=job["lr"], lr_scheduler_type="constant", warmup_steps=0,
        logging_steps=1, save_strategy="no", report_to=[], bf16=False, fp16=False, use_cpu=True, seed=0,
        gradient_checkpointing=job["gradient_checkpointing"], max_length=job["max_length"], packing=False,
        padding_free=False, completion_only_loss=True, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[clock])
    trainer.train()
    json.dump({"step_seconds": clock.seconds, "step_tokens": clock.tokens}, open(job["result"], "w"))


if __name__ == "__main__":
    main(sys.argv[1])
