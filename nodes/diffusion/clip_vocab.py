"""The CLIP text tokenizer's 49,408-token vocabulary, made offline from the BPE merges file.

Stable Diffusion's text encoders index their embedding rows by the CLIP BPE vocabulary, so the
tokenizer must be the real one. Its source is ``bpe_simple_vocab_16e6.txt.gz`` (OpenAI CLIP,
MIT licence), which the ``open-clip-torch`` wheel ships. That wheel is installed without its
dependencies (it would pull another torch), so its package is never imported: the file is
read through the distribution's file list. An operator may name another copy instead
(``"diffusion": {"clip_vocab": "/path/bpe_simple_vocab_16e6.txt.gz"}``).

The conversion (our own code): the 256 byte symbols in CLIP's byte-to-unicode order, the same
with ``</w>``, one token per merge (the first 48,894 merges after the header line), then
``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
"""

from __future__ import annotations

import gzip
import json
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from graph_runtime.errors import TakeflowError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
START, END = "<|startoftext|>", "<|endoftext|>"
_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48,894
# (distribution, path inside it) of packages known to ship the file.
_SHIPPED_BY = (
    ("open_clip_torch", f"open_clip/{VOCAB_FILE}"),
    ("openai-clip", f"clip/{VOCAB_FILE}"),
    ("clip-anytorch", f"clip/{VOCAB_FILE}"),
)


class ClipVocabularyMissing(TakeflowError):
    """No copy of the CLIP BPE merges file could be found."""

    code = "clip_vocabulary_missing"


def find_bpe_file(explicit: Path | None = None) -> Path:
    """The configured merges file, else the one an installed package ships."""
    if explicit is not None:
        if explicit.is_file():
            return explicit
        raise ClipVocabularyMissing(
            f"diffusion.clip_vocab names '{explicit}', which is not a file", path=str(explicit)
        )
    for dist_name, member in _SHIPPED_BY:
        try:
            dist = distribution(dist_name)
        except PackageNotFoundError:
            continue
        located = Path(str(dist.locate_file(member)))
        if located.is_file():
            return located
    raise ClipVocabularyMissing(
        f"the CLIP tokenizer vocabulary ({VOCAB_FILE}) is needed to load single-file "
        "checkpoints, and no installed package ships it: run "
        "`pip install --no-deps open-clip-torch` (MIT; only its data file is used), or set "
        '"diffusion": {"clip_vocab": "/path/to/bpe_simple_vocab_16e6.txt.gz"} in the home config'
    )


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes, in CLIP's (GPT-2's) order: printable bytes keep
    their own character; the others map to 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    kept = set(printable)
    extra = [b for b in range(256) if b not in kept]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(extra))]


def read_merges(bpe_file: Path) -> list[tuple[str, str]]:
    lines = gzip.decompress(bpe_file.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + _MERGES]]
    if len(merges) != _MERGES or any(len(m) != 2 for m in merges):
        raise ClipVocabularyMissing(
            f"'{bpe_file}' is not the CLIP BPE file (expected {_MERGES} merge lines)",
            path=str(bpe_file),
        )
    return [(a, b) for a, b in merges]


def write_tokenizer_files(bpe_file: Path, folder: Path, pad_token: str = END) -> None:
    """Write a CLIP tokenizer folder (``vocab.json``, ``merges.txt``, configs) for transformers."""
    merges = read_merges(bpe_file)
    symbols = byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges), START, END]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ClipVocabularyMissing(f"'{bpe_file}' gave {len(vocab)} tokens, not {VOCAB_SIZE}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges_text = "\n".join(f"{a} {b}" for a, b in merges)
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges_text + "\n")
    special = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
