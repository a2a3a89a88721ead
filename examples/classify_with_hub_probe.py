#!/usr/bin/env python
"""Load a ready-made probe from the Hub (it fetches its backbone), classify an image and draw its attention maps.

python examples/classify_with_hub_probe.py --model user/vit-mae-base-ep-imagenet --image cat.jpg --maps maps.png
"""

import argparse

from PIL import Image
from transformers import pipeline

# Importing the package registers the probes with transformers' Auto classes, which `pipeline` uses.
from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.analysis import save_attention_maps
from hf_efficient_probing.checkpoint import load_image_processor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hub id (or folder) of a probe")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--image", required=True)
    parser.add_argument("--maps", default=None, help="PNG file for the attention maps")
    args = parser.parse_args(argv)

    classifier = pipeline("image-classification", model=args.model, revision=args.revision)
    predictions = classifier(Image.open(args.image).convert("RGB"), top_k=5)
    for prediction in predictions:
        print(f"{prediction['score']:.3f}  {prediction['label']}")
    if args.maps:
        model = AutoModelForEfficientProbing.from_pretrained(args.model, revision=args.revision)
        processor = load_image_processor(args.model, args.revision, model.config)
        print("attention maps:", save_attention_maps(model, args.image, args.maps, processor))
    return predictions


if __name__ == "__main__":
    main()
