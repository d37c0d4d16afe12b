"""A small line recogniser for stamped catalogue numbers (CNN + BiGRU + CTC).

Tesseract reads a clean stamped number right only about one time in three on the ALA sheets:
its models are trained on book print, and speckled numbering-machine digits crossed by a rule are
not that. This reader is trained only on synthetic numbers (`numsynth`), so it carries no
collection's data; its weights ship with herbscan as safetensors and are rebuilt by
`scripts/train_number_reader.py` (`train`). Three readers trained on different synthetic draws
ship, and their reads vote together (`default_readers`): they err on different bands. torch is
imported only when a number is read.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from herbscan.errors import HerbscanError
from herbscan.labels.numsynth import ALPHABET, HEIGHT, OLD_STYLE, make_batch, normalise

WEIGHTS = tuple(
    Path(__file__).with_name("weights") / f"number_reader{suffix}.safetensors"
    for suffix in ("", "_2", "_3")
)
"""The shipped readers' weights."""
RECIPES = (
    {"seed": 0, "old_style": 0.0},
    {"seed": 0, "old_style": OLD_STYLE},
    {"seed": 1, "old_style": OLD_STYLE},
)
"""How each of `WEIGHTS` is trained (`train` keywords): on lining figures only, or with
old-style figures too, and from other random draws, so that they err on different bands."""
HIDDEN = 96
"""GRU width; a weights file records its own in its metadata ("config")."""


@dataclass
class NumberRead:
    """Text read from one band and its confidence: the lowest per-character probability."""

    text: str
    conf: float


def _build(hidden: int = HIDDEN):
    import torch
    from torch import nn

    def block(cin, cout, pool):
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(pool),
        ]

    class NumberNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *block(1, 32, 2), *block(32, 64, 2), *block(64, 96, (2, 1)), *block(96, 128, (4, 1))
            )
            self.rnn = nn.GRU(128, hidden, batch_first=True, bidirectional=True)
            self.head = nn.Linear(2 * hidden, len(ALPHABET) + 1)  # 0 is the CTC blank

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.features(x)  # N, C, 1, W/4
            f = f.squeeze(2).transpose(1, 2)  # N, T, C
            out, _ = self.rnn(f)
            return self.head(out)  # N, T, classes

    return NumberNet()


def _to_tensor(images: list[np.ndarray]):
    import torch

    width = max(im.shape[1] for im in images)
    width += -width % 4
    batch = np.full((len(images), 1, HEIGHT, width), 1.0, dtype=np.float32)
    for i, im in enumerate(images):
        batch[i, 0, :, : im.shape[1]] = im / 255.0
    return torch.from_numpy(1.0 - batch)  # ink positive, padding zero


MAX_LETTERS = 2
"""Letters a catalogue number may carry before its digits (a series, e.g. "V" or "CA")."""
NOT_A_NUMBER = -3.0
"""Log-probability the number path may lose against the reader's free reading before the band
is taken to hold words, not a number ("BOTANICAL" must not become "BT7404")."""


def _decode(logp: np.ndarray) -> NumberRead:
    """The most probable CTC path of one (T, classes) log-probability array that spells a
    catalogue number: up to `MAX_LETTERS` letters, then digits only.

    Greedy decoding lets a worn 0 or 6 come out as C or G inside the digits; restricting the
    path to what a number can be makes the reader pick the digit it thought next likeliest.
    A band read as letters only, or whose number path is much less likely than the reader's
    free reading (`NOT_A_NUMBER`), gives ""."""
    n = logp.shape[1]
    labels = np.arange(n)
    digit = (labels >= 1) & (labels <= 10)
    letter = labels > 10
    phases = MAX_LETTERS + 2  # 0..MAX_LETTERS letters so far, then "in the digits"
    last = phases - 1
    score = np.full((phases, n), -np.inf)
    score[0, 0] = 0.0
    back = []  # per frame: the (phase, label) each (phase, label) state came from
    for lp in logp:
        # stay: a blank after anything, or the same label again
        top = score.argmax(1)
        new = score + lp
        new[:, 0] = score.max(1) + lp[0]
        from_phase = np.repeat(np.arange(phases)[:, None], n, axis=1)
        from_label = np.repeat(labels[None, :], phases, axis=0)
        from_label[:, 0] = top
        # a new character: after the best previous label other than itself
        second = np.argsort(score, axis=1)[:, -2]
        for p in range(phases):
            prev = np.where(labels == top[p], second[p], top[p])
            gain = score[p, prev] + lp
            moves = [(last, digit)] + ([(p + 1, letter)] if p < MAX_LETTERS else [])
            for q, allowed in moves:
                take = allowed & (gain > new[q])
                new[q][take] = gain[take]
                from_phase[q][take], from_label[q][take] = p, prev[take]
        back.append((from_phase, from_label))
        score = new
    p, k = np.unravel_index(np.argmax(score), score.shape)
    path = []
    for from_phase, from_label in reversed(back):
        path.append(k)
        p, k = from_phase[p, k], from_label[p, k]
    path.reverse()
    frames = np.arange(len(path))
    if (logp[frames, path] - logp.max(1)).sum() < NOT_A_NUMBER or not digit[path].any():
        return NumberRead("", 0.0)
    probs = np.exp(logp[frames, path])
    chars, confs, prev = [], [], 0
    for t, k in enumerate(path):
        if k != 0 and k != prev:
            chars.append(ALPHABET[k - 1])
            confs.append(probs[t])
        elif k != 0 and confs:
            confs[-1] = max(confs[-1], probs[t])
        prev = k
    return NumberRead("".join(chars), float(min(confs)) if confs else 0.0)


class NumberReader:
    """Reads grey bands (ink dark, `HEIGHT` px tall) holding one stamped number."""

    def __init__(self, weights: Path | str = WEIGHTS[0]):
        self.weights = Path(weights)

    @functools.cached_property
    def model_(self):
        from safetensors.torch import load_file

        if not self.weights.is_file():
            raise HerbscanError(
                f"{self.weights}: number reader weights not found; reinstall "
                "herbscan or rebuild them with scripts/train_number_reader.py"
            )
        model = _build(**json.loads(self._meta().get("config", "{}")))
        model.load_state_dict(load_file(str(self.weights)))
        return model.eval()

    def _meta(self) -> dict:
        from safetensors import safe_open

        with safe_open(str(self.weights), framework="pt") as f:
            return f.metadata() or {}

    def read(self, bands: list[np.ndarray]) -> list[NumberRead]:
        """The number in each band (any width; height is resampled to `HEIGHT`)."""
        import torch
        from PIL import Image

        if not bands:
            return []
        images = []
        for b in bands:
            img = Image.fromarray(b)
            w = max(4, round(img.width * HEIGHT / max(img.height, 1)))
            images.append(normalise(np.asarray(img.resize((w, HEIGHT), Image.Resampling.BILINEAR))))
        with torch.inference_mode():
            logp = self.model_(_to_tensor(images)).log_softmax(-1).numpy()
        return [_decode(lp) for lp in logp]


@functools.cache
def default_readers() -> tuple[NumberReader, ...]:
    """The shipped readers, loaded once per process. On the 158 ALA stamps the three together
    read 100 numbers right and 17 wrong, 3 of them with confidence ≥ 0.6; each alone read 97–99
    right and 18–19 wrong, 5–7 of them with confidence ≥ 0.6."""
    return tuple(NumberReader(w) for w in WEIGHTS)


def _pool_part(args: tuple[int, int, float]) -> tuple[list[np.ndarray], list[str]]:
    n, seed, old_style = args
    return make_batch(n, np.random.default_rng(seed), old_style=old_style)


def synthetic_pool(
    n: int,
    seed: int,
    workers: int = 1,
    old_style: float = OLD_STYLE,
) -> tuple[list[np.ndarray], list[str]]:
    """`n` synthetic numbers made in `workers` processes (the same images for any `workers`)."""
    from herbscan.workers import worker_pool

    parts = [(min(1000, n - i), seed * 100_000 + i, old_style) for i in range(0, n, 1000)]
    if workers > 1:
        with worker_pool(workers) as pool:
            done = list(pool.map(_pool_part, parts))
    else:
        done = [_pool_part(p) for p in parts]
    return [im for d in done for im in d[0]], [t for d in done for t in d[1]]


def train(
    out: Path | str,
    *,
    samples: int = 60_000,
    steps: int = 4000,
    batch: int = 48,
    seed: int = 0,
    old_style: float = OLD_STYLE,
    lr: float = 3e-3,
    workers: int = 1,
    log_every: int = 250,
) -> dict:
    """Train the reader on synthetic numbers and save it (safetensors, atomically).

    A pool of `samples` numbers (a share `old_style` in old-style figures) is made first and
    batches are drawn from it by width, so that little time goes into padding. Returns the
    accuracy (whole number right) on 500 fresh synthetic numbers of the same kind from another
    seed, and the seconds taken."""
    import torch
    from safetensors.torch import save_file

    from herbscan.fileio import atomic_path

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    images, texts = synthetic_pool(samples, seed, workers, old_style)
    order = np.argsort([im.shape[1] for im in images], kind="stable")
    rng = np.random.default_rng(seed)
    model = _build()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    index = {c: i + 1 for i, c in enumerate(ALPHABET)}
    model.train()
    for step in range(1, steps + 1):
        start = int(rng.integers(0, max(1, len(order) - batch)))
        pick = order[start : start + batch]  # neighbours in width: little padding
        x = _to_tensor([images[i] for i in pick])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        logp = logits.float().log_softmax(-1).transpose(0, 1)  # T, N, C
        targets = torch.tensor([index[c] for i in pick for c in texts[i]])
        loss = ctc(
            logp,
            targets,
            torch.full((len(pick),), logp.shape[0], dtype=torch.long),
            torch.tensor([len(texts[i]) for i in pick]),
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if log_every and step % log_every == 0:
            print(
                f"step {step}/{steps} loss {loss.item():.3f} {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    model.eval()
    acc = synthetic_accuracy(model, seed + 1, old_style=old_style)
    out = Path(out)
    meta = {
        "config": json.dumps({"hidden": HIDDEN}),
        "samples": str(samples),
        "steps": str(steps),
        "seed": str(seed),
        "old_style": str(old_style),
        "synthetic_accuracy": f"{acc:.4f}",
    }
    with atomic_path(out) as tmp:
        # half precision halves the file; the reader computes in float32 after loading
        save_file(
            {
                k: (v.half() if v.is_floating_point() else v).contiguous()
                for k, v in model.state_dict().items()
            },
            str(tmp),
            metadata=meta,
        )
    return {"synthetic_accuracy": acc, "seconds": round(time.perf_counter() - t0, 1)}


def synthetic_accuracy(model, seed: int, n: int = 500, old_style: float = OLD_STYLE) -> float:
    """Share of `n` fresh synthetic numbers that `model` reads exactly."""
    import torch

    images, texts = make_batch(n, np.random.default_rng(seed), old_style=old_style)
    with torch.inference_mode():
        logp = model(_to_tensor(images)).log_softmax(-1).numpy()
    return float(np.mean([_decode(lp).text == t for lp, t in zip(logp, texts, strict=True)]))
