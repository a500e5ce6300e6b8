"""Would the deployment target load this model folder? Run by the target env's interpreter
(config `target.python`), whose transformers and compressed-tensors are the target's own releases.

    <target python> -m workflow_scripts.shipping.target_check --model DIR [DIR ...] --target JSON [--out FILE]
    <target python> -m workflow_scripts.shipping.target_check --model - --target JSON

--model: one or more folders, or `-` for folders read from standard input, one a line, each
answered as it arrives (the package gate keeps one such process for all its candidates, so the
target's imports are paid once, not once a candidate); with `-` the first line printed is
{"versions": ...}, once the runtime is known to be the target's.

--target: config `target` (its `transformers` and `compressed_tensors` versions are checked
against this interpreter's, so a check in the wrong runtime cannot pass for the right one).

Static checks first, each a one-line reason, for the server pitfalls a CPU cannot exercise:
  tokenizer_class      tokenizer_config.json names a class the target transformers has
  quantization_config  validates in the target compressed-tensors
  lm_head / embedding  neither is quantized (vLLM 0.14.1 loads neither quantized)
  kv_cache_scheme      unset
  architecture         a supported family; its per-layer lists (layer_types) match
                       num_hidden_layers (pruning must cut them); its q/k/v biases are stored
  tied embedding       stored once
then, when they pass, the load: AutoTokenizer + AutoModelForCausalLM with local_files_only and
greedy generation from a chat-templated prompt.

Prints one line of JSON a folder, {"model", "ok", "reason", "checks": {name: "ok" | reason},
"versions", "generated"}, and writes it to --out (one folder only).
Exit 0 whenever the verdicts were reached (a rejected model is a verdict); 2 when the interpreter
is not the target's runtime (before any folder is read) or a folder is not a model.

Top-level imports are the standard library and workflow_scripts' stdlib-only modules (common,
planning.families): this runs in an env that holds nothing but the target's libraries.
"""
from __future__ import annotations

import argparse
import gc
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from workflow_scripts.common import (
    StageError,
    check_model_dir,
    first_line,
    parse_recipe,
    run_cli,
    stdin_lines,
    write_json,
)
from workflow_scripts.planning.families import UnknownFamily, family

PROMPT = "Hello! Please introduce yourself in one sentence."
NEW_TOKENS = 8
# The target's libraries whose versions must match: (distribution name, key in config `target`).
LIBRARIES = [("transformers", "transformers"), ("compressed-tensors", "compressed_tensors")]
LM_HEAD, EMBED = "lm_head", "model.embed_tokens"


# --- the runtime ---------------------------------------------------------------------------

def runtime_versions(target) -> dict:
    """This interpreter's versions of the target's libraries; a StageError when they differ."""
    found = {}
    for dist, key in LIBRARIES:
        try:
            found[key] = version(dist)
        except PackageNotFoundError:
            found[key] = None
        want = str(target.get(key) or "")
        if want and found[key] != want:
            raise StageError(f"target.{key} is {want}, but this interpreter has {dist} {found[key]}: "
                             f"run the target check with target.python (scripts/setup_envs.sh builds it)")
    return found


# --- what the folder holds -----------------------------------------------------------------

def stored_tensors(model_dir) -> dict:
    """{tensor name: dtype ("F32", "I32", ...)} of a model folder, read from the safetensors
    headers (no tensor is loaded)."""
    from safetensors import safe_open

    tensors = {}
    for p in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(p, "pt") as f:
            tensors.update({k: f.get_slice(k).get_dtype() for k in f.keys()})
    return tensors


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


@dataclass
class Folder:
    """A model folder as the static checks see it, read once."""

    path: Path
    config: dict
    tensors: dict  # tensor name -> safetensors dtype


# --- static checks: each returns None (ok) or a one-line reason -----------------------------

def check_tokenizer_class(folder):
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    tok_cfg = read_json(folder.path / "tokenizer_config.json")
    if tok_cfg is None:
        return "tokenizer_config.json is missing or unreadable"
    name = tok_cfg.get("tokenizer_class")
    if name and tokenizer_class_from_name(name) is None \
            and tokenizer_class_from_name(name.removesuffix("Fast")) is None:
        return f"tokenizer_config.json: tokenizer_class {name!r} does not exist in the target transformers"
    return None


def check_quantization_config(folder):
    qc = folder.config.get("quantization_config")
    if qc is None:
        return None
    if qc.get("quant_method") != "compressed-tensors":
        return f"quantization_config: quant_method {qc.get('quant_method')!r} is not compressed-tensors"
    from compressed_tensors.compressors import ModelCompressor
    from transformers import CompressedTensorsConfig

    try:  # what transformers does with it first (compressed-tensors >= 0.14 takes only this form)
        ModelCompressor.from_compression_config(CompressedTensorsConfig.from_dict(dict(qc)))
    except Exception as e:  # noqa: BLE001 - any validation error is the answer
        return f"quantization_config does not validate in compressed-tensors: {first_line(e)[:240]}"
    return None


def _quantized_by_config(qc, name, module_class):
    """Whether a config group targets module `name` (of torch class `module_class`, by name or
    class) and the ignore list misses it: compressed-tensors' own matching, as the target applies it."""
    import torch
    from compressed_tensors.utils.match import is_match

    module = getattr(torch.nn, module_class)(1, 1)  # only its class is matched
    ignore = qc.get("ignore") or []
    return any(is_match(name, module, g.get("targets") or [], ignore) for g in (qc.get("config_groups") or {}).values())


def check_head_and_embedding(folder):
    qc, tensors = folder.config.get("quantization_config") or {}, folder.tensors
    for module, cls in ((LM_HEAD, "Linear"), (EMBED, "Embedding")):
        stored = [k for k in tensors if k.startswith(module + ".")
                  and (k != module + ".weight" or tensors[k] not in ("F32", "F16", "BF16"))]
        if stored:
            return f"{module} is stored quantized ({', '.join(sorted(stored)[:3])}); vLLM 0.14.1 loads it only unquantized"
        if qc and _quantized_by_config(qc, module, cls):
            return f"quantization_config quantizes {module} (not in ignore); vLLM 0.14.1 loads it only unquantized"
    return None


def check_kv_cache_scheme(folder):
    qc = folder.config.get("quantization_config") or {}
    if qc.get("kv_cache_scheme"):
        return "quantization_config sets kv_cache_scheme (a quantized KV cache); the target serves it unquantized only"
    return None


def check_architecture(folder):
    """A supported family (planning/families.py) whose per-layer config lists match
    num_hidden_layers (pruning must cut them: a longer list fails to load), with the q/k/v biases
    the family has."""
    cfg = folder.config
    try:
        fam = family(cfg.get("model_type"))
    except UnknownFamily as e:
        return f"config.json: {e}"
    n = cfg.get("num_hidden_layers")
    for key in fam.per_layer_config:
        if cfg.get(key) is not None and len(cfg[key]) != n:
            return f"config.json: {key} has {len(cfg[key])} entries but num_hidden_layers is {n}"
    if fam.qkv_bias and not any(k.endswith("self_attn.q_proj.bias") for k in folder.tensors):
        return f"{cfg['model_type']} has q/k/v biases, but no self_attn.q_proj.bias is stored"
    return None


def check_tied_embedding(folder):
    tensors = folder.tensors
    if folder.config.get("tie_word_embeddings") and LM_HEAD + ".weight" in tensors and EMBED + ".weight" in tensors:
        return "tie_word_embeddings is set but lm_head.weight is stored beside model.embed_tokens.weight (twice)"
    return None


STATIC_CHECKS = {
    "tokenizer_class": check_tokenizer_class,
    "quantization_config": check_quantization_config,
    "lm_head_embedding": check_head_and_embedding,
    "kv_cache_scheme": check_kv_cache_scheme,
    "architecture": check_architecture,
    "tied_embedding": check_tied_embedding,
}


# --- the load ------------------------------------------------------------------------------

def load_and_generate(model_dir):
    """(None, generated text) when the target transformers loads the folder and generates
    greedily from a chat prompt, else (reason, None)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to load is the answer
        return f"the target transformers cannot load it ({type(e).__name__}: {first_line(e)[:240]})", None
    if not tok.chat_template:
        return "the tokenizer has no chat template", None
    # return_dict: transformers 5 returns a BatchEncoding by default, 4.57 a tensor; ask for one form.
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    try:
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
    except Exception as e:  # noqa: BLE001
        return f"generation fails in the target transformers ({type(e).__name__}: {first_line(e)[:240]})", None
    new = out[0, ids.shape[1]:]
    if len(new) == 0:
        return "the target transformers generated no tokens", None
    return None, tok.decode(new)


def check(model_dir, target) -> dict:
    """The verdict on one model folder (see the module doc)."""
    folder = Folder(Path(model_dir), check_model_dir(model_dir), stored_tensors(model_dir))
    versions = runtime_versions(target)
    checks = {name: fn(folder) or "ok" for name, fn in STATIC_CHECKS.items()}
    generated = None
    if all(v == "ok" for v in checks.values()):
        reason, generated = load_and_generate(model_dir)
        checks["load_generate"] = reason or "ok"
    else:
        checks["load_generate"] = "skipped (a static check failed)"
    reason = next((v for v in checks.values() if v != "ok"), None)
    return {"model": str(model_dir), "ok": reason is None, "reason": reason, "checks": checks,
            "versions": versions, "generated": generated}


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, nargs="+",
                    help="model folder(s); '-': folders from standard input, one a line")
    ap.add_argument("--target", required=True, help="config `target` as JSON")
    ap.add_argument("--out", help="write the verdict JSON here too (one --model folder)")
    args = ap.parse_args(argv)
    from_stdin = args.model == ["-"]
    if args.out and (from_stdin or len(args.model) > 1):
        ap.error("--out takes one --model folder")
    target = parse_recipe(args.target, [], "target_check", what="--target")
    versions = runtime_versions(target)  # the wrong runtime fails before any folder is read
    if from_stdin:
        print(json.dumps({"versions": versions}), flush=True)  # for the reader: the runtime is the target's
    for model in stdin_lines() if from_stdin else args.model:
        verdict = check(model, target)
        if args.out:
            write_json(args.out, verdict)
        print(json.dumps(verdict), flush=True)  # a reader waiting on this folder gets it now
        gc.collect()  # the folder's model, before the next one loads
    return 0


if __name__ == "__main__":
    run_cli(main)
