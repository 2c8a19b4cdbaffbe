"""Fixtures of the evaluation tests: the shared data, tiny random models, drawn images."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"
MAGIC = SHARED_DATA / "coco-karpathy-magic"

_WORDS = [
    "a", "an", "the", "of", "on", "in", "with", "and", "photo", "picture", "dog", "cat", "man",
    "woman", "red", "blue", "green", "sitting", "standing", "street", "grass", "sky", "car",
    "two", "small", "big",
]


@pytest.fixture(scope="session")
def magic_dir() -> Path:
    if not (MAGIC / "magic_result.json").is_file():
        pytest.skip(f"shared test data not found at {MAGIC.resolve()} (clone shared/ beside the "
                    "repository)")
    return MAGIC


def draw_images(folder: Path, count: int = 4) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    colours = [(200, 30, 30), (30, 160, 40), (40, 60, 200), (230, 200, 20), (90, 90, 90)]
    for i in range(count):
        image = Image.new("RGB", (48 + 8 * i, 40), colours[i % len(colours)])
        ImageDraw.Draw(image).ellipse((4, 4, 30, 30), fill=(255, 255, 255))
        name = f"img_{i}.png"
        image.save(folder / name)
        names.append(name)
    return names


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def build_tiny_blip(folder: Path) -> Path:
    """A random BlipForConditionalGeneration with an in-memory BERT tokenizer, saved."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *_WORDS]))
    tokenizer = BertTokenizer(str(vocab), bos_token="[DEC]")
    vocab.unlink()
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    ).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_clip(folder: Path) -> Path:
    """A random CLIPModel from CLIP*Config objects with an in-memory tokenizer, saved."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPVisionConfig,
        PreTrainedTokenizerFast,
    )

    words = ["<|endoftext|>", "<|startoftext|>", "<unk>", *_WORDS, "depicts", "photo"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # As CLIP's own tokenizer: <|startoftext|> text <|endoftext|>; the text tower pools at EOS.
    backend.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", vocab["<|startoftext|>"]),
                        ("<|endoftext|>", vocab["<|endoftext|>"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", unk_token="<unk>",
    )
    config = CLIPConfig(
        text_config=CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=32,
            eos_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ).to_dict(),
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8,
        ).to_dict(),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                           crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    ).save_pretrained(folder)
    return folder
