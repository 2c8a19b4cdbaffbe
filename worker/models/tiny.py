"""Tiny randomly initialised models of the real architectures.

For the offline demo, the tests and the benchmarks: the weights are random, so
the words are noise, but the files are real ``save_pretrained`` folders that
load through the same ``from_pretrained`` path as production weights.
Tokenizers are built in memory (word-level vocabularies), never downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    GitConfig,
    GitForCausalLM,
    GitProcessor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

_WORDS = (
    "a", "an", "the", "of", "on", "in", "with", "and", "at", "by", "photo", "picture",
    "image", "dog", "cat", "person", "man", "woman", "child", "car", "bike", "street",
    "city", "beach", "sea", "sky", "grass", "tree", "flower", "table", "food", "cup",
    "plate", "red", "blue", "green", "yellow", "white", "black", "small", "big", "sunny",
    "bright", "happy", "new", "fresh", "sitting", "standing", "running", "holding",
    "looking", "near", "next", "to", "front", "two", "three",
)

# SmolVLM's chat template (Idefics3 family): "User:<image>text<end_of_utterance>\nAssistant:".
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_SPECIAL = ["<unk>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                    "<image>", "<global-img>", "<pad>"]

# ChatML, as Qwen2 instruct models use it.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATML_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def word_tokenizer(
    special: list[str], *, vocab_size: int | None = None, **kwargs: Any
) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer: ``special`` tokens first (``special[0]`` is unknown),
    then a small English vocabulary, padded with filler words up to ``vocab_size``."""
    words = [*special, *(w for w in _WORDS if w not in special)]
    if vocab_size is not None:
        words += [f"w{i}" for i in range(vocab_size - len(words))]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=special[0]))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    core.add_special_tokens(special)
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token=special[0], **kwargs)


def byte_bpe_tokenizer(
    special: list[str], *, vocab_size: int = 400, **kwargs: Any
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (the GPT-2/Qwen2/Llama-3 family's kind), trained in
    memory on a small vocabulary: Qwen2's own tokenizer class reloads it faithfully."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator([" ".join(_WORDS)] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, **kwargs)


def _bert_tokenizer(folder: Path, vocab_size: int | None = None) -> BertTokenizer:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *_WORDS]
    if vocab_size is not None:
        words += [f"w{i}" for i in range(vocab_size - len(words))]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(words))
    tokenizer = BertTokenizer(str(vocab), bos_token="[DEC]")
    vocab.unlink()
    return tokenizer


def _save(folder: Path, model: Any, processor: Any) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _small(**overrides: Any) -> dict[str, Any]:
    return {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, **overrides}


def _clip_images(image_size: int) -> CLIPImageProcessorPil:
    """CLIP's image processor (GIT uses it too), for square images of ``image_size``."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def build_tiny_blip(folder: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Write a tiny random BLIP captioner (BlipForConditionalGeneration) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_tokenizer(folder)
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    config = BlipConfig(
        text_config=_small(
            vocab_size=len(tokenizer),
            max_position_embeddings=64,
            bos_token_id=tokenizer.bos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            sep_token_id=tokenizer.sep_token_id,
        ),
        vision_config=_small(image_size=image_size, patch_size=8),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    return _save(folder, BlipForConditionalGeneration(config), processor)


def build_tiny_git(folder: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Write a tiny random GIT captioner (GitForCausalLM, CLIP image processor)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_tokenizer(folder)
    processor = GitProcessor(image_processor=_clip_images(image_size), tokenizer=tokenizer)
    config = GitConfig(
        vision_config=_small(image_size=image_size, patch_size=8),
        **_small(
            vocab_size=len(tokenizer),
            max_position_embeddings=64,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
    )
    torch.manual_seed(seed)
    return _save(folder, GitForCausalLM(config), processor)


def idefics3_processor(tokenizer: PreTrainedTokenizerFast, *, image_size: int,
                       image_seq_len: int, **image_kwargs: Any) -> Idefics3Processor:
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
        **{"do_image_splitting": False, **image_kwargs},
    )
    return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                             image_seq_len=image_seq_len, chat_template=IDEFICS3_CHAT_TEMPLATE)


def idefics3_tokenizer(*, vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    return word_tokenizer(
        IDEFICS3_SPECIAL, vocab_size=vocab_size, bos_token="<|im_start|>",
        eos_token="<end_of_utterance>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>",
                              "fake_image_token": "<fake_token_around_image>",
                              "global_image_token": "<global-img>",
                              "end_of_utterance_token": "<end_of_utterance>"},
    )


def build_tiny_idefics3(folder: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Write a tiny random Idefics3 (SmolVLM-style) chat VLM with its chat template."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = idefics3_tokenizer()
    patch, scale = 8, 2
    image_seq_len = (image_size // patch) ** 2 // scale**2
    processor = idefics3_processor(tokenizer, image_size=image_size, image_seq_len=image_seq_len)
    config = Idefics3Config(
        vision_config=_small(image_size=image_size, patch_size=patch),
        text_config=_small(
            model_type="llama", vocab_size=len(tokenizer), num_key_value_heads=1,
            max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        ),
        scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _save(folder, model, processor)


def build_tiny_qwen2(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2 instruct causal LM whose tokenizer has a ChatML template."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_bpe_tokenizer(CHATML_SPECIAL, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    config = Qwen2Config(**_small(
        vocab_size=len(tokenizer), num_key_value_heads=1, max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    ))
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _save(folder, model, tokenizer)


def build_tiny_clip(folder: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Write a tiny random CLIP model for the image–text quality part."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = word_tokenizer(["<unk>", "<|startoftext|>", "<|endoftext|>"],
                               bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>")
    processor = CLIPProcessor(image_processor=_clip_images(image_size), tokenizer=tokenizer)
    config = CLIPConfig(
        text_config=_small(vocab_size=len(tokenizer), max_position_embeddings=77,
                           eos_token_id=tokenizer.eos_token_id,
                           bos_token_id=tokenizer.bos_token_id,
                           pad_token_id=tokenizer.pad_token_id),
        vision_config=_small(image_size=image_size, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    return _save(folder, CLIPModel(config), processor)


def build_blip_from_config(folder: Path, config: dict[str, Any], *, seed: int = 0) -> Path:
    """A random-weight BLIP of the size ``config`` (a published config.json) describes,
    with a word-level tokenizer of the same vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    text = config["text_config"]
    tokenizer = _bert_tokenizer(folder, vocab_size=text["vocab_size"])
    size = config["vision_config"]["image_size"]
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": size, "width": size}),
        tokenizer=tokenizer,
    )
    blip = BlipConfig(**{
        **config,
        "text_config": {**text, "bos_token_id": tokenizer.bos_token_id,
                        "pad_token_id": tokenizer.pad_token_id,
                        "sep_token_id": tokenizer.sep_token_id},
    })
    torch.manual_seed(seed)
    return _save(folder, BlipForConditionalGeneration(blip), processor)


def build_idefics3_from_config(
    folder: Path, config: dict[str, Any], processor_config: dict[str, Any], *, seed: int = 0
) -> Path:
    """A random-weight Idefics3 (SmolVLM) of the size ``config`` describes. The word-level
    tokenizer has the same vocabulary size; its special-token ids replace the config's."""
    folder.mkdir(parents=True, exist_ok=True)
    text = config["text_config"]
    tokenizer = idefics3_tokenizer(vocab_size=text["vocab_size"])
    image = dict(processor_config["image_processor"])
    processor = idefics3_processor(
        tokenizer,
        image_size=image.pop("size")["longest_edge"],
        image_seq_len=processor_config["image_seq_len"],
        **{k: v for k, v in image.items() if k != "max_image_size"},
    )
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    idefics3 = Idefics3Config(**{
        **config,
        "text_config": {**text, **ids},
        "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
        "pad_token_id": tokenizer.pad_token_id,
    })
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(idefics3)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _save(folder, model, processor)
