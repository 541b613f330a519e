"""Write zoo/imagenet_class_index.json: ImageNet-1k index -> [WordNet id, first lemma].

The same content as the file Keras downloads at run time, built offline from two local
sources: the 1000 synset ids in TFDS's imagenet2012 `labels.txt` (TFDS label order, sorted
by id) and WordNet 3.0's `data.noun` (Debian package `wordnet-base`), whose byte offsets are
the ids' numbers.

Usage: python scripts/make_imagenet_class_index.py [--wordnet /usr/share/wordnet/data.noun]
"""

import argparse
import json
import os

import tensorflow_datasets as tfds


def first_lemma(data_noun: str, offset: int) -> str:
    with open(data_noun, "rb") as f:
        f.seek(offset)
        fields = f.readline().decode().split()
    # data.noun lines: offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] ...
    if int(fields[0]) != offset:
        raise ValueError(f"{data_noun} has no synset at offset {offset}.")
    return fields[4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", default="/usr/share/wordnet/data.noun")
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "..", "zoo", "imagenet_class_index.json"),
    )
    args = parser.parse_args()
    labels = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    with open(labels) as f:
        wnids = [line.strip() for line in f if line.strip()]
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise ValueError(f"{labels}: expected 1000 sorted synset ids, got {len(wnids)}.")
    index = {
        str(i): [wnid, first_lemma(args.wordnet, int(wnid[1:]))] for i, wnid in enumerate(wnids)
    }
    with open(args.out, "w") as f:
        json.dump(index, f, indent=0)
        f.write("\n")
    print(f"wrote {len(index)} classes to {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
