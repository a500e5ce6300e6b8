"""Stages: one module per rule that makes data or a model (data, base, sft, post_sft, kd, prune,
quantize, sensitivity, teacher), and their helpers (chat_data, training, data_mix, teacher_filters)."""
