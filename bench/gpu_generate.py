"""Stable Diffusion 1.5 throughput on a CUDA GPU, with random weights (no download).

    python bench/gpu_generate.py                    # 512 px, 25 steps, 16 images per setting
    python bench/gpu_generate.py --images 32 --no-compile

The UNet, VAE and CLIP text encoder are built from SD 1.5's configuration (written out
below), so the compute is that of the real model; only the weights are random. Measured
in the same run:

* baseline: the naive loop, fp32, one image per pipeline call;
* SynthLab's path: fp16, SDPA attention, VAE slicing, per-image seeds, batch 1, 4, 8, 16
  (``core.generation.generator.PipelineRunner``, the code a generation job runs);
* the same at batch 8 with the UNet under ``torch.compile``.

Prints images per second and the ratio to the baseline. Exits with a clear message on a
machine without CUDA.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Stable Diffusion 1.5's architecture (stable-diffusion-v1-5/stable-diffusion-v1-5 configs).
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                 attention_head_dim=8, norm_num_groups=32,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                 "CrossAttnUpBlock2D"))
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), norm_num_groups=32, sample_size=512,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                 projection_dim=768, bos_token_id=0, eos_token_id=1, pad_token_id=1)
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1,
                      set_alpha_to_one=False)


def build_sd15(dtype, tokenizer_dir: Path):  # noqa: ANN001, ANN201
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tests.tiny_sd import write_tokenizer_files

    torch.manual_seed(0)
    write_tokenizer_files(tokenizer_dir)
    # Initialised on the GPU: random init of 1 B parameters on the CPU takes minutes.
    with torch.device("cuda"):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, unet=unet, scheduler=PNDMScheduler(**SD15_SCHEDULER),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = pipe.to("cuda", dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images per measured setting")
    parser.add_argument("--baseline-images", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--compile-batch", type=int, default=8)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench/gpu_generate.py needs a CUDA GPU and none is visible here "
              f"(torch {torch.__version__}). Run it on a GPU machine; for a CPU figure use "
              "bench/generate_cpu.py.", file=sys.stderr)
        return 2

    from diffusers.models.attention_processor import AttnProcessor2_0

    from core.generation.generator import GenerationConfig, PipelineRunner, WorkItem
    from core.generation.loading import LoadedPipeline, prepare_for_batch
    from core.generation.prompts import default_prompt_config, prompt_for
    from core.generation.seeds import image_seed

    prompts = default_prompt_config("apple")

    def items(count: int) -> list[WorkItem]:
        return [WorkItem("apple", i, image_seed(0, "apple", i),
                         prompt_for(prompts, i, base_seed=0, class_key="apple"),
                         prompts.negative_prompt) for i in range(count)]

    class Quiet:
        def progress(self, *a, **k): pass
        def log(self, *a, **k): pass
        def check_cancelled(self, refresh: bool = True): pass

    def timed(fn, count: int) -> float:  # noqa: ANN001
        torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return count / (time.perf_counter() - started)

    gpu = torch.cuda.get_device_name(0)
    print(f"{gpu}, torch {torch.__version__}; SD 1.5 architecture, random weights, "
          f"{args.size} px, {args.steps} steps, guidance 7.5")
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # Baseline: fp32, one image per call, a plain loop.
        pipe = build_sd15(torch.float32, Path(tmp) / "tok")
        baseline_items = items(args.baseline_images)

        def naive() -> None:
            for item in baseline_items:
                pipe(prompt=item.prompt, negative_prompt=item.negative_prompt,
                     num_inference_steps=args.steps, guidance_scale=7.5, height=args.size,
                     width=args.size, generator=torch.Generator("cpu").manual_seed(item.seed))
        pipe(prompt="warm up", num_inference_steps=2, height=args.size, width=args.size)
        baseline = timed(naive, len(baseline_items))
        rows.append(("naive fp32, batch 1 (baseline)", baseline))
        del pipe
        torch.cuda.empty_cache()

        pipe = build_sd15(torch.float16, Path(tmp) / "tok")
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        loaded = LoadedPipeline(pipe=pipe, source="sd15-random", location=tmp, device="cuda",
                                dtype="float16", base_scheduler_config=dict(pipe.scheduler.config),
                                base_scheduler_class=type(pipe.scheduler).__name__)
        work = items(args.images)

        def run_batched(batch: int) -> None:
            config = GenerationConfig(model="sd15-random", classes=["apple"], per_class=args.images,
                                      steps=args.steps, guidance=7.5, size=args.size, batch_size=batch)
            prepare_for_batch(loaded, batch, args.size)
            PipelineRunner(loaded, config).generate(work, Quiet())

        for batch in (int(b) for b in args.batches.split(",")):
            PipelineRunner(loaded, GenerationConfig(model="x", classes=["apple"], per_class=batch,
                                                    steps=2, guidance=7.5, size=args.size,
                                                    batch_size=batch)).generate(work[:batch], Quiet())
            rows.append((f"SynthLab fp16, batch {batch}", timed(lambda b=batch: run_batched(b), len(work))))
            print(f"  {rows[-1][0]:<36} {rows[-1][1]:7.3f} images/s", flush=True)

        if not args.no_compile:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.unet = torch.compile(pipe.unet, mode="max-autotune-no-cudagraphs", fullgraph=False)
            batch = args.compile_batch
            started = time.perf_counter()
            run_batched(batch)  # compiles (and warms up) for this batch shape
            print(f"  (torch.compile warm-up took {time.perf_counter() - started:.0f} s)")
            rows.append((f"SynthLab fp16 + torch.compile, batch {batch}",
                         timed(lambda: run_batched(batch), len(work))))

    print()
    print(f"{'setting':<44} {'images/s':>9} {'vs baseline':>12}")
    for name, rate in rows:
        print(f"{name:<44} {rate:9.3f} {rate / baseline:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
