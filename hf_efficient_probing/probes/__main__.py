"""``python -m hf_efficient_probing.probes``: print the trainable parameters of every probe (ViT-B, 1000 classes)."""

from .counting import main

main()
