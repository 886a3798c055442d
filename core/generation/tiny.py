"""A tiny random-weight Stable Diffusion pipeline, built and saved on the fly.

The demo (``python -m core demo``) and the tests load it through the product's own
loading path (``from_pretrained``), exactly like a downloaded model folder::

    from core.generation.tiny import build_tiny_sd
    model_dir = build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")

It has the real Stable Diffusion layout (unet, vae, text_encoder, tokenizer, scheduler,
``model_index.json``) but a few thousand parameters, so a 32-64 px image with 2 steps
takes a few milliseconds on a CPU. Weights come from a fixed seed: every build is
identical, so pixel hashes are comparable across test runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

# Words of the default prompts, merged into single tokens so prompts stay short; any
# other word still tokenizes (into characters).
PROMPT_WORDS = (
    "a photo of an the on in with and close up studio photograph fruit apple banana lime "
    "plum orange pear lemon wooden table white background kitchen counter market stall "
    "grass soft daylight natural light bright sunlight warm indoor lighting blurry "
    "cartoon drawing text watermark low quality deformed single ripe fresh"
).split()

TINY_SIZE = 32  # default generation size (pixels) the tests use
TINY_STEPS = 2


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's byte-level alphabet (the same table as in the original BPE tokenizer).
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def write_tokenizer_files(folder: Path, words: tuple[str, ...] = PROMPT_WORDS) -> int:
    """Write ``vocab.json`` and ``merges.txt`` of a small CLIP BPE tokenizer; returns its size."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab: list[str] = ["<|startoftext|>", "<|endoftext|>"]
    vocab += alphabet + [symbol + "</w>" for symbol in alphabet]
    merges: list[str] = []
    seen_merges: set[str] = set()
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        current = symbols[0]
        for symbol in symbols[1:]:
            rule = f"{current} {symbol}"
            current = current + symbol
            if rule not in seen_merges:
                seen_merges.add(rule)
                merges.append(rule)
                if current not in vocab:
                    vocab.append(current)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def build_tiny_sd(path: Path | str) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it to ``path`` (reused if already there)."""
    path = Path(path)
    if (path / "model_index.json").is_file():
        return path  # before the imports: reusing it costs no diffusers import
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    tokenizer_dir = staging / "tokenizer-src"
    vocab_size = write_tokenizer_files(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=TINY_SIZE // 2,
        in_channels=4, out_channels=4, norm_num_groups=4, cross_attention_dim=16,
        attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
        norm_num_groups=4, sample_size=TINY_SIZE,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=vocab_size,
        max_position_embeddings=77, projection_dim=16))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(staging / "pipeline")
    # Publish with one rename: a half-built folder never looks like a model to another test.
    try:
        (staging / "pipeline").rename(path)
    except OSError:
        if not (path / "model_index.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
