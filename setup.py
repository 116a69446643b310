"""Install queuepipe.

TensorFlow is deliberately not a hard requirement: installing queuepipe into an
environment that already has ``tensorflow``, ``tensorflow-cpu`` or a GPU build must
not pull in a second TensorFlow wheel.  ``pip install queuepipe[tf]`` brings one on a
fresh machine (the CPU wheel on Linux/Windows, the standard one elsewhere).
"""
from setuptools import find_packages, setup

setup(
    name="queuepipe",
    version="0.1.0",
    description="Feed tf.compat.v1 session graphs from generators and HDF5 files on many CPU workers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["queuepipe", "queuepipe.*"]),
    install_requires=["numpy>=1.23", "h5py>=3.8", "tqdm>=4.60"],
    extras_require={
        "tf": [
            "tensorflow-cpu>=2.12; platform_system == 'Linux' or platform_system == 'Windows'",
            "tensorflow>=2.12; platform_system == 'Darwin'",
        ],
        "progress": ["tqdm>=4.60"],
        "plugins": ["hdf5plugin>=4.0"],
        # ISA-L inflate: gzip-compressed HDF5 chunks decode ~2.3x faster than with zlib
        "fast": ["isal>=1.5"],
        "bench": ["tqdm>=4.60", "matplotlib>=3.6", "hdf5plugin>=4.0", "isal>=1.5"],
        "test": ["pytest>=7", "pytest-timeout>=2.1", "hypothesis>=6.0", "tqdm>=4.60", "hdf5plugin>=4.0",
                 "matplotlib>=3.6", "isal>=1.5"],
    },
    entry_points={"console_scripts": ["queuepipe=queuepipe.tools.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
