"""The hardware an engine runs on: which GPUs it may use, and NVML facts about them."""
