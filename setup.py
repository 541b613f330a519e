"""Packaging for larq-dysign: the three source folders become one import namespace."""

from setuptools import setup

setup(
    name="larq-dysign",
    version="0.1.0.dev0",
    description=(
        "Binary neural networks with dynamic binarization thresholds (DySign) for Larq, "
        "with export to Larq Compute Engine TFLite"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=["larq_dysign", "larq_dysign.zoo", "larq_dysign.training", "larq_dysign.export"],
    # docs/design.md "Layout": top-level `zoo`/`training`/`export` are never installed as such.
    package_dir={
        "larq_dysign": "larq_dysign",
        "larq_dysign.zoo": "zoo",
        "larq_dysign.training": "training",
        "larq_dysign.export": "export",
    },
    package_data={"larq_dysign.zoo": ["*.json"]},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "tf-keras>=2.16,<2.22",
        "larq>=0.13.3,<0.15",
        "larq-compute-engine>=0.15,<0.17",
        "tensorflow-datasets>=4.9,<5",
        # TFDS' DatasetBuilder.code_path (4.9.10; reached from download_and_prepare, so from
        # the first load of every TFDS dataset) imports it, but TFDS declares it only for
        # Python < 3.9 (issue #13; tests/test_data.py prepares cifar10 and imagenet2012).
        "importlib_resources>=5,<8",
        "tensorboard>=2.16,<2.22",  # the training recipe's TensorBoard logs
        "numpy>=1.23,<2",
        "h5py>=3.6",  # zoo/weights.py reads HDF5 checkpoints
        "flatbuffers>=23.5",  # export/flatbuffer.py reads LCE custom options
        "tqdm>=4.60",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3",
            "ruff>=0.6",
            "matplotlib>=3.7",
            "nbclient>=0.10",
            "nbformat>=5.9",
            "ipykernel>=6",
        ],
        "plots": ["matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["larq-dysign=larq_dysign.cli:main"]},
)
