"""A reward model: any HF `AutoModelForSequenceClassification` folder whose first logit is the score."""

import torch


class RewardModel:
    def __init__(self, path: str, batch_size: int, max_length: int, chat_template_kwargs: dict | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"reward model {path!r} has no usable tokenizer ({err}); save the tokenizer it was "
                             "trained with into the folder") from err
        from rlhf.devices import resolve_device, resolve_dtype
        from rlhf.models.loading import load_model

        self.device = resolve_device(f"reward model {path}")
        self.model = load_model(AutoModelForSequenceClassification, path, resolve_dtype("auto", self.device), "sdpa",
                                self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length
        self.chat_template_kwargs = dict(chat_template_kwargs or {})  # data.chat_template_kwargs

    def text(self, prompt, completion: str) -> str:
        """The conversation as the reward model reads it: its chat template when it has one."""
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        messages = [*messages, {"role": "assistant", "content": completion}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, **self.chat_template_kwargs)
        return "\n".join(m["content"] for m in messages)

    @torch.no_grad()
    def score(self, prompts: list, completions: list[str]) -> list[float]:
        texts = [self.text(p, c) for p, c in zip(prompts, completions)]
        scores = []
        for start in range(0, len(texts), self.batch_size):
            # keep the end of long conversations: the completion is what is being judged
            self.tokenizer.truncation_side = "left"
            inputs = self.tokenizer(texts[start : start + self.batch_size], return_tensors="pt", padding=True,
                                    truncation=True, max_length=self.max_length, add_special_tokens=False)
            scores += self.model(**inputs.to(self.device)).logits[:, 0].float().tolist()
        return scores
