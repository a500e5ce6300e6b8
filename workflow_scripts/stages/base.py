"""The base model: taken from the hub (or a local copy), or for the demo built and trained here
(workflow_scripts/demo/model.py).

    python -m workflow_scripts.stages.base --spec JSON --data results/data --out results/models/base
"""
from __future__ import annotations

import argparse
import shutil

from workflow_scripts.common import (
    StageError,
    check_model_dir,
    first_line,
    limit_threads,
    parse_recipe,
    run_cli,
    write_model_dir,
)
from workflow_scripts.demo.model import build_demo
from workflow_scripts.planning.families import UnknownFamily, family_of

# --- hub base model ------------------------------------------------------------------------

def check_family(folder, name):
    """A base of an unsupported architecture stops here, before any lane starts from it."""
    try:
        family_of(folder)
    except UnknownFamily as e:
        raise StageError(f"base model {name}: {e}") from None


def fetch_hub(base, out):
    """The real base model: a copy of base.local_path, or a hub snapshot (hub_id, revision)."""
    local = base.get("local_path")
    if local:
        check_model_dir(local)
        check_family(local, local)
        write_model_dir(out, lambda tmp: shutil.copytree(local, tmp, dirs_exist_ok=True))
        return

    def download(tmp):
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(repo_id=base["hub_id"], revision=base.get("revision") or "main", local_dir=tmp)
        except Exception as e:  # noqa: BLE001 - network, auth, unknown id or revision
            raise StageError(f"base model {base['hub_id']}: cannot be downloaded ({first_line(e)})") from None
        check_family(tmp, base["hub_id"])

    write_model_dir(out, download)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Build (demo) or fetch (hub) the base model.")
    ap.add_argument("--spec", required=True, help="JSON: {base, compute}")
    ap.add_argument("--data", required=True, help="prepared data folder (corpus.txt, sft_train.jsonl)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    spec = parse_recipe(args.spec, ["base"], "base", what="--spec")
    limit_threads()
    if spec["base"]["source"] == "demo":
        build_demo(spec, args.data, args.out)
    else:
        fetch_hub(spec["base"], args.out)
    print(f"base model in {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
