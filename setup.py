from setuptools import find_packages, setup

setup(
    name="data-efficient-scaling",
    version="0.1.0",
    description="Data-efficient neural scaling via model reuse: MLM training, growth operators, scaling-law analysis",
    packages=find_packages(include=["reuse", "reuse.*"]),
    package_data={"reuse": ["assets/**/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    # torch is a range that the pinned CPU wheel (torch==2.13.0, installed first by scripts/setup.bash) satisfies,
    # so pip never pulls a CUDA build here; on a GPU machine install the CUDA wheel you want beforehand.
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "tokenizers>=0.20",
        "safetensors",
        "h5py",
        "numpy",
        "scipy",
        "scikit-learn",
        "tqdm",
        "tensorboardX",
        "matplotlib",
        "pyyaml",
        "spacy>=3.7",
        "wikiextractor>=3.0.6",
        "submitit",
        "filelock",
        "huggingface_hub",  # WikiText-103 from the Hub (reuse.wikitext)
        "pyarrow",          # ... whose files are parquet
    ],
    extras_require={"test": ["pytest", "pytest-xdist", "filelock", "nbclient", "nbformat", "ipykernel"]},
)
