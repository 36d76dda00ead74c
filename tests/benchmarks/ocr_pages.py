"""Pages of known text for the OCR task metric (bench_approximate): rendered with PIL, so the ground
truth (each line's box and string) is exact, and any number of fresh pages can be drawn.

Each page is a SIZE² off-white image with up to LINES lines of random words (letters and digits,
the mix a document has) in DejaVu Sans, Serif or Bold at 11-28 px, some lines light grey, placed
without overlap, with mild sensor noise: hard enough that the original pipeline misses a little. The
detector's input is the page normalised as PaddleOCR does: (x / 255 − 0.5) / 0.5, NCHW.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 640
LINES = 16
FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
         "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
WORDS = ("invoice total amount date order number model speed depthwise layer kernel result sample paper "
         "report value figure table index section price quantity batch number station street")


@dataclass
class Page:
    image: np.ndarray            # [SIZE, SIZE, 3] uint8, BGR as OpenCV reads images
    lines: list                  # [(x0, y0, x1, y1), text] per line


def fonts_present() -> bool:
    return all(Path(f).exists() for f in FONTS)


def render(seed: int) -> Page:
    from PIL import Image, ImageDraw, ImageFont
    rng = random.Random(seed)
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    words = WORDS.split()
    lines, y = [], rng.randint(10, 30)
    for _ in range(LINES):
        size = rng.randint(11, 28)
        font = ImageFont.truetype(rng.choice(FONTS), size)
        text = " ".join(rng.choice(words) if rng.random() < 0.7 else str(rng.randint(10, 99999))
                        for _ in range(rng.randint(2, 4)))
        x = rng.randint(10, 120)
        box = draw.textbbox((x, y), text, font=font)
        if box[2] > SIZE - 10 or box[3] > SIZE - 10:
            break
        shade = rng.choice((0, 0, 60, 120, 160))
        draw.text((x, y), text, fill=(shade, shade, shade), font=font)
        lines.append((box, text))
        y = box[3] + rng.randint(8, 26)
    noise = np.random.default_rng(seed).normal(0, 12, (SIZE, SIZE, 1))
    pixels = np.clip(np.asarray(img, dtype=np.float32) * 0.94 + 8 + noise, 0, 255).astype(np.uint8)
    return Page(pixels[:, :, ::-1].copy(), lines)


def detector_input(page: Page) -> np.ndarray:
    """[1, 3, SIZE, SIZE] float32, normalised as PaddleOCR's detector expects (RGB)."""
    rgb = page.image[:, :, ::-1].astype(np.float32) / 255.0
    return ((rgb - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()


# -- the task metric: the package's own pipeline on pages of known text ------------------------

def ocr_engine(det_model: str | None = None, rec_model: str | None = None, threads: int = 1):
    """rapidocr-onnxruntime's pipeline (detect → classify → recognise) with the detector and/or
    recogniser swapped for the given files, the detector at SIZE (no resize of a SIZE² page)."""
    from rapidocr_onnxruntime import RapidOCR
    kwargs = dict(det_limit_side_len=SIZE, det_limit_type="min", intra_op_num_threads=threads,
                  inter_op_num_threads=1)
    if det_model:
        kwargs["det_model_path"] = str(det_model)
    if rec_model:
        kwargs["rec_model_path"] = str(rec_model)
    return RapidOCR(**kwargs)


def _iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _edits(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def score(engine, pages: list) -> dict:
    """Detection F at IoU 0.5 (each found line's bounding box against the rendered lines', matched
    one to one, best IoU first) and character accuracy: 1 − edit distance / length summed over the
    rendered lines, a missed line counting as all wrong (spaces ignored: the recogniser drops some)."""
    found = truth = matched = 0
    chars = errors = 0
    for page in pages:
        result, _ = engine(page.image)
        boxes = [(min(p[0] for p in r[0]), min(p[1] for p in r[0]), max(p[0] for p in r[0]), max(p[1] for p in r[0]),
                  r[1]) for r in (result or [])]
        found, truth = found + len(boxes), truth + len(page.lines)
        pairs = sorted(((_iou(b[:4], g[0]), i, j) for i, b in enumerate(boxes) for j, g in enumerate(page.lines)),
                       reverse=True)
        used_b, used_g = set(), {}
        for iou, i, j in pairs:
            if iou >= 0.5 and i not in used_b and j not in used_g:
                used_b.add(i)
                used_g[j] = boxes[i][4]
        matched += len(used_g)
        for j, (_, text) in enumerate(page.lines):
            want, got = text.replace(" ", ""), used_g.get(j, "").replace(" ", "")
            chars += len(want)
            errors += min(len(want), _edits(got, want))
    precision, recall = matched / max(found, 1), matched / max(truth, 1)
    f = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"det_f": 100 * f, "char_acc": 100 * (1 - errors / max(chars, 1)), "lines": truth, "found": found}
