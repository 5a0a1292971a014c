"""Installs keras_compact. Metadata lives here; pyproject.toml only picks
the build backend and holds tool settings."""

from setuptools import find_packages, setup

setup(
    name="keras_compact",
    version="0.1.0",
    description=(
        "Train tiny Keras 3 models more accurately at zero inference cost: "
        "distillation, NetAug, auxiliary over-parameterisation and dynamic "
        "sparse training, exported to verified TFLite."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_compact", "keras_compact.*"]),
    install_requires=[
        "tensorflow-cpu>=2.21,<2.22; platform_machine!='arm64'",
        "keras>=3.10,<4",
        "numpy>=1.26",
        "tensorflow-datasets>=4.9.9,<5",
        "importlib_resources",
        "ai-edge-litert>=2.0",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "tensorboard>=2.21,<2.22",
    ],
    extras_require={
        # tflite-micro publishes dev builds only; pip takes them when no
        # release exists. The quantization tests run int8 files on it.
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "ruff>=0.5",
            "nbclient>=0.10",
            "ipykernel",
            "tflite-micro",
        ],
        "micro": ["tflite-micro"],
        "peers": [
            "tensorflow-model-optimization==0.8.*",
            "tf-keras>=2.21,<2.22",
        ],
    },
    entry_points={
        "console_scripts": ["keras-compact=keras_compact.cli.main:main"],
    },
)
