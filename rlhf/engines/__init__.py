"""Generation engines (vLLM, HF generate) behind one contract, and the routes that move weights into them."""

from rlhf.engines.base import GenerationEngine, Sample, SamplingSettings

__all__ = ["GenerationEngine", "Sample", "SamplingSettings"]
