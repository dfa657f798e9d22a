"""A billion-parameter decoder through the service (issue 20): a Llama-style decoder built from a transformers
LlamaConfig at TinyLlama-1.1B's shape (22 layers, hidden 2048, FFN 5632, 32 heads, 4 key/value heads, vocabulary
32000; random weights), exported by PyTorch with external data (about 4.4 GB), then through a real
`onnxsmith serve` (embedded default: SQLite, local folder, its own worker) with the SDK: the folder uploaded as an
archive (packed by the SDK, progress bar), its inspection (the checking child's peak RSS from the server log), a
benchmark (tokens/s at batch 1 for a 16-token prompt), and 4-bit weight-only quantization (streamed one tensor at
a time; size ratio, logit cosine on random prompts, the job child's peak RSS from the worker log).

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'
    HF_HUB_OFFLINE=1 .venv-bench/bin/python bench/big_decoder.py [--layers 22] [--dir /path/with/30GB]
        [--production]   # PostgreSQL (a new database on 127.0.0.1:5432), Redis (db 14), moto's S3 server
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.machine import machine_info  # noqa: E402


def export(folder: Path, layers: int, hidden: int, ffn: int, heads: int, kv_heads: int, vocab: int) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
    )  # fmt: skip
    llama = LlamaForCausalLM(config).eval()
    params = sum(p.numel() for p in llama.parameters())

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.llama = llama

        def forward(self, input_ids):  # type: ignore[no-untyped-def]
            return self.llama(input_ids=input_ids, use_cache=False).logits

    folder.mkdir(parents=True)
    ids = torch.randint(0, vocab, (2, 16))
    with torch.no_grad():
        torch.onnx.export(
            Decoder().eval(), (ids,), str(folder / "model.onnx"), input_names=["input_ids"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
            opset_version=18, dynamo=True, external_data=True,
        )  # fmt: skip
    return params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--port", type=int, default=8797)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--production", action="store_true", help="PostgreSQL + Redis + an S3-compatible store")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-big-", dir=args.dir))
    m = machine_info()
    print(f"machine: {m.cpu_model}, {m.logical_cpus} logical CPUs, int8 ISA {m.int8_isa}; work folder {work}")
    started = time.perf_counter()
    folder = work / "decoder"
    params = export(folder, args.layers, args.hidden, args.ffn, args.heads, args.kv_heads, args.vocab)
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"exported {params:,} parameters, {size / 2**30:.2f} GiB in {len(list(folder.iterdir()))} files, "
          f"{time.perf_counter() - started:.0f} s (exporter peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB)")  # fmt: skip
    rng = np.random.default_rng(0)
    np.savez(work / "prompts.npz", input_ids=rng.integers(0, args.vocab, (8, 16), dtype=np.int64))
    env = dict(os.environ, ONNXSMITH_DATA_DIR=str(work / "data"), ONNXSMITH_JOB_MEMORY_MB="20000")
    env.pop("ONNXSMITH_DATABASE_URL", None)
    cleanup, key = production(env, work) if args.production else (None, None)
    print("deployment:", "PostgreSQL + Redis + S3 (moto server)" if args.production else "embedded default")
    log = open(work / "serve.log", "w+")  # noqa: SIM115 - lives as long as the server below
    server = subprocess.Popen(
        [sys.executable, "-m", "onnxsmith.cli", "serve", "--port", str(args.port)],
        stdout=subprocess.PIPE, stderr=log, env=env, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        run(server, log, work, folder, args.port, args.block_size, key)
    finally:
        server.terminate()
        server.wait(30)
        if cleanup is not None:
            cleanup()


def production(env: dict[str, str], work: Path) -> tuple[Any, str]:
    """A new PostgreSQL database, Redis db 14, a moto S3 server (objects spill to disk): env set, schema migrated,
    a key made. Returns (cleanup, key)."""
    import boto3
    import redis
    from moto.server import ThreadedMotoServer

    name = f"onnxsmith_big_{os.getpid()}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {name}"], check=True)
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=8796 + 100, verbose=False)
    s3.start()
    endpoint = "http://127.0.0.1:8896"
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, **creds).create_bucket(Bucket="onnxsmith-big")
    env.update(
        ONNXSMITH_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        ONNXSMITH_BROKER_URL="redis://127.0.0.1:6379/14",
        ONNXSMITH_STORAGE_URL="s3://onnxsmith-big/models",
        ONNXSMITH_S3_ENDPOINT_URL=endpoint,
        ONNXSMITH_S3_REGION="us-east-1",
        ONNXSMITH_S3_ACCESS_KEY_ID="testing",
        ONNXSMITH_S3_SECRET_ACCESS_KEY="testing",
    )
    cli = [sys.executable, "-m", "onnxsmith.cli"]
    subprocess.run([*cli, "db", "upgrade"], check=True, env=env, cwd=ROOT, capture_output=True)
    made = subprocess.run([*cli, "keys", "create", "--tenant", "bench"], check=True, env=env, cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    key = next(line for line in made.stdout.splitlines() if line.startswith("osk_"))

    def cleanup() -> None:
        s3.stop()
        redis.Redis.from_url("redis://127.0.0.1:6379/14").flushdb()
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE {name}"], check=False)

    return cleanup, key


def run(server: subprocess.Popen, log, work: Path, folder: Path, port: int, block: int, key: str | None) -> None:  # type: ignore[type-arg]
    from onnxsmith import Client

    while key is None or not key.startswith("osk_"):
        key = server.stdout.readline().strip()  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    with Client(base, key, timeout=3600) as c:
        started = time.perf_counter()
        model = c.upload_model(folder, name="llama-1b", progress=True)
        upload_s = time.perf_counter() - started
        log.flush()
        checks = re.findall(r"checked model in ([\d.]+) s, child peak RSS (\d+) MB", Path(log.name).read_text())
        print(f"upload (pack, send, unpack, check, store): {upload_s:.0f} s; check {checks[-1][0]} s, "
              f"checking child peak RSS {checks[-1][1]} MB; runtime_checked {model.info['runtime_checked']}; "
              f"parameters {model.info['parameter_count']:,}; parts {[p['name'] for p in model.parts]}")  # fmt: skip
        prompts = c.upload_dataset(work / "prompts.npz")
        bench = c.submit("benchmark", model, datasets={"eval": prompts}, params={"batch_sizes": [1], "runs": 10})
        bench.wait(timeout=3600, progress=False)
        assert bench.status == "succeeded", bench.state
        (result,) = bench.report().model_dump()["results"]
        p50 = result["latency_ms"]["p50"]
        print(f"benchmark batch 1, 16 tokens, {result['threads']} thread(s), {result['runs']} runs: p50 {p50:.0f} ms "
              f"= {16 / p50 * 1000:.1f} tokens/s (prompt processing, no KV cache)")  # fmt: skip
        quant = c.submit(
            "quantize", model, datasets={"eval": prompts},
            params={"mode": "weight_only", "block_size": block, "batch_sizes": [1], "runs": 5, "eval_max_samples": 8},
        )  # fmt: skip
        quant.wait(timeout=7200, progress=False)
        assert quant.status == "succeeded", quant.state
        report = quant.report().model_dump()
        comparison = report["comparison"]
        log.flush()
        peaks = re.findall(r"engine child peak RSS (\d+) MB", Path(log.name).read_text())
        fid = comparison["fidelity"][0]
        lat = comparison["latency_ms"][0]
        sizes = comparison["size_bytes"]
        print(f"weight_only block {block}: {report['quantization_seconds']:.0f} s; size {sizes['original']:,.0f} -> "
              f"{sizes['candidate']:,.0f} bytes ({sizes['ratio']:.3f}x); logit "
              f"cosine {fid['cosine']:.4f}, top-1 agreement {fid.get('top1_agreement')}; p50 "
              f"{lat['original_ms']['p50']:.0f} -> {lat['candidate_ms']['p50']:.0f} ms; job child peak RSS "
              f"{peaks[-1] if peaks else '?'} MB (benchmark job: {peaks[0] if peaks else '?'} MB); "
              f"left in float: {report['config']['left_in_float']}")  # fmt: skip


if __name__ == "__main__":
    main()
