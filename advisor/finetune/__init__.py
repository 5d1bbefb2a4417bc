"""Fine-tuning below both commands: the LoRA training loop `tunegate train` runs, and the pilot `advise` runs
with it (one training code path). torch, transformers and peft are imported only inside functions."""
