"""What each step kind's recipe must hold, and the values some of its keys may take: read by the
config check at parse time and by each stage for its own --recipe, so the two never disagree."""
from __future__ import annotations

STEP_REQUIRED = {
    "quantize": ["scheme", "method"],
    "sft": ["lora_r", "lora_alpha", "target_modules", "learning_rate", "max_steps"],
    "post_sft": ["learning_rate", "max_steps"],
    "prune": ["keep_layers"],
    "kd": ["temperature", "kl_weight", "ce_weight", "learning_rate", "max_steps"],
}
STEP_CHOICES = {
    ("quantize", "scheme"): ["W4A16", "W8A16", "W8A8", "FP8", "FP8_DYNAMIC"],
    ("quantize", "method"): ["gptq", "minmax"],
    ("prune", "metric"): ["block_influence", "angular"],
}
