#!/usr/bin/env python
"""Attach a new Efficient Probing head to a pretrained backbone from the Hub, classify an image, save or publish it.

    python examples/attach_probe.py --backbone facebook/vit-mae-base --num_labels 10 --image cat.jpg --save my-probe/

The probe is untrained here (train it with examples/run_probing.py); what this shows is the API: one call builds
the frozen backbone and the probe, and the saved probe holds only the probe's weights plus the backbone's name.
"""

import argparse

from PIL import Image
from transformers import AutoImageProcessor

from hf_efficient_probing import AutoModelForEfficientProbing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="facebook/vit-mae-base", help="Hub id or path of the backbone")
    parser.add_argument("--revision", default=None, help="revision of the backbone")
    parser.add_argument("--probe", default="ep", help="ep, linear or a baseline (mhca, siglip, jepa, ...)")
    parser.add_argument("--num_labels", type=int, default=10)
    parser.add_argument("--image", default=None, help="an image to classify")
    parser.add_argument("--save", default=None, help="folder to save the probe to")
    parser.add_argument("--push", default=None, help="Hub repository to publish the probe to")
    args = parser.parse_args(argv)

    model = AutoModelForEfficientProbing.from_backbone(
        args.backbone, probe=args.probe, revision=args.revision, num_labels=args.num_labels
    )
    print(f"{type(model).__name__}: {sum(p.numel() for p in model.probe.parameters()):,} probe parameters")
    if args.image:
        processor = AutoImageProcessor.from_pretrained(args.backbone, revision=args.revision)
        inputs = processor(Image.open(args.image).convert("RGB"), return_tensors="pt")
        print("logits:", model.eval()(**inputs).logits)  # eval: the BatchNorm uses its running statistics
    if args.save:
        model.save_pretrained(args.save)  # config.json + a probe-only model.safetensors
    if args.push:
        print("pushed:", model.push_to_hub(args.push).commit_url)
    return model


if __name__ == "__main__":
    main()
