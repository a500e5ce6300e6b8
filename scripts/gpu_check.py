"""A prepared check for a lent GPU machine: the compress stages at EXAONE-4.0-1.2B's shape (random
weights, no hub), with the time and peak GPU memory of each (docs/running.md "GPU check").

    python scripts/gpu_check.py [--tiny] [--out DIR] [--kd-steps 5] [--sft-steps 5]

Steps: build the model (bf16, 30 layers, hidden 2048, vocab 102400, tied embeddings); GPTQ W4A16
and GPTQ W8A8 with config/lanes.yaml's recipes (256 x 1024-token calibration); prune to 26 layers
and a few bf16 KD steps (lanes.yaml kd, batch 8 x 2048); a few LoRA SFT steps (lanes.yaml sft).
--tiny: a 4-layer, 128-wide shape and small data, to test the script itself on a CPU.
Prints one line per step and writes DIR/gpu_check.json.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REAL = dict(num_hidden_layers=30, hidden_size=2048, intermediate_size=4096, num_attention_heads=32,
            num_key_value_heads=8, max_position_embeddings=65536, embedding_vocab_size=102400)
TINY = dict(num_hidden_layers=4, hidden_size=128, intermediate_size=256, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048)
WORDS = ("서울 부산 대구 인천 광주 대전 울산 수도 항구 도시 강 산 바다 학교 시장 역사 문화 음식 날씨 "
         "the of and river city market school history weather food 1 2 3 4 5 6 7 8 9 0").split()


def conversations(n, words_per_turn, seed):
    rng = random.Random(seed)

    def text(k):
        return " ".join(rng.choice(WORDS) for _ in range(k)) + "."

    return [{"messages": [{"role": "user", "content": text(words_per_turn // 4)},
                          {"role": "assistant", "content": text(words_per_turn)}]} for _ in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class Meter:
    """Wall time and peak GPU memory (torch's allocator; 0 on a CPU) of each step."""

    def __init__(self):
        import torch

        self.torch, self.cuda, self.results = torch, torch.cuda.is_available(), {}

    def run(self, name, fn):
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        status = "ok"
        try:
            fn()
        except Exception as e:  # report every step, also after one fails (e.g. out of memory)
            status = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        seconds = time.perf_counter() - start
        peak = self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else 0.0
        self.results[name] = {"seconds": round(seconds, 1), "peak_gpu_gib": round(peak, 2), "status": status}
        print(f"== {name}: {seconds:.1f} s, peak GPU memory {peak:.2f} GiB, {status}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny shape and data: test the script on a CPU")
    ap.add_argument("--out", type=Path, default=Path("gpu_check"), help="work folder (models, data, JSON)")
    ap.add_argument("--kd-steps", type=int, default=5)
    ap.add_argument("--sft-steps", type=int, default=5)
    args = ap.parse_args(argv)

    import torch
    import transformers
    import yaml

    from workflow_scripts.demo import model as demo_model
    from workflow_scripts.stages import kd, prune, quantize, sft

    recipes = yaml.safe_load((REPO / "config" / "lanes.yaml").read_text())["recipes"]

    def recipe(name, **overrides):
        return {k: v for k, v in {**recipes[name], **overrides}.items() if k != "step"}

    out, meter = args.out, Meter()
    data, models = out / "data", out / "models"
    data.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__} (cuda {torch.version.cuda}), transformers {transformers.__version__}, "
          f"device {torch.cuda.get_device_name() if meter.cuda else 'cpu'}", flush=True)

    # Data: ~1024-token calibration and ~2048-token training conversations at the real shape.
    words = 64 if args.tiny else 900
    n_calib, n_train = (8, 16) if args.tiny else (256, 8 * max(args.kd_steps, args.sft_steps, 1) * 4)
    write_jsonl(data / "calib.jsonl", conversations(n_calib, words, 1))
    write_jsonl(data / "train.jsonl", conversations(n_train, words * 2, 2))
    write_jsonl(data / "val.jsonl", conversations(8, words * 2, 3))
    calib_over = {"num_calibration_samples": 8, "max_seq_length": 128} if args.tiny else {}
    train_over = {"max_seq_length": 256, "batch_size": 4} if args.tiny else {}
    base = models / "base"

    def build():
        texts = [m["content"] for line in open(data / "train.jsonl") for m in json.loads(line)["messages"]]
        tok = demo_model.train_tokenizer(texts, vocab_size=512)
        model = demo_model.build_model(tok, TINY if args.tiny else REAL)
        demo_model.save(model.to(torch.bfloat16), tok, base)

    meter.run("build base (bf16)", build)
    for lane in ("gptq_w4a16", "gptq_w8a8"):
        meter.run(f"quantize {lane}", lambda lane=lane: quantize.quantize(
            base, data / "calib.jsonl", recipe(lane, **calib_over), models / lane))
    keep = 2 if args.tiny else 26
    meter.run(f"prune to {keep} layers", lambda: prune.main(
        ["--model", str(base), "--calib", str(data / "calib.jsonl"), "--out", str(models / "pruned"),
         "--recipe", json.dumps(recipe("prune26", keep_layers=keep, **calib_over))]))
    meter.run(f"kd {args.kd_steps} steps", lambda: kd.main(
        ["--student", str(models / "pruned"), "--teacher", str(base), "--train", str(data / "train.jsonl"),
         "--val", str(data / "val.jsonl"), "--out", str(models / "kd"),
         "--recipe", json.dumps(recipe("kd", max_steps=args.kd_steps, **train_over))]))
    meter.run(f"sft {args.sft_steps} steps", lambda: sft.main(
        ["--model", str(base), "--train", str(data / "train.jsonl"), "--val", str(data / "val.jsonl"),
         "--out", str(models / "sft"),
         "--recipe", json.dumps(recipe("sft", max_steps=args.sft_steps, grad_accum=1, **train_over))]))

    report = {"device": torch.cuda.get_device_name() if meter.cuda else "cpu", "tiny": args.tiny,
              "torch": torch.__version__, "transformers": transformers.__version__, "steps": meter.results}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if all(r["status"] == "ok" for r in meter.results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
