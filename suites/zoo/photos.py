"""Real photographs shipped inside packages: the ImageNet-class models' fixed evaluation set.

No labelled ImageNet images install from a package registry, so the ImageNet-class models
are judged on photographs that do: scikit-image's sample images, matplotlib's portrait of
Grace Hopper and scikit-learn's two JPEGs (``china.jpg``, ``flower.jpg``) -- 15 colour
photographs (:data:`PHOTOS`), read as files (Pillow decodes them; no library is imported).

Views (deterministic, no randomness): each photo is resized so that its shorter side is
``256 / 224 * size`` (bicubic), then six ``size x size`` crops are taken -- centre, the
four corners, and the mirrored centre -- giving 90 eval images. Calibration (for static
int8) uses three further views per photo at another scale (shorter side ``size``,
crops at the left/centre/right or top/middle/bottom), 45 images: other pixels of the same
photographs, since no other photographs are at hand (stated, not hidden).

What the figures mean (docs/zoo.md):

* ``top1_agreement`` / ``max_abs_diff`` / ``cosine`` -- **fidelity**: how closely a
  variant's logits follow the fp32 model's on the same 90 images;
* ``top5_photos`` -- a **sanity check** on the 7 centre views of photos whose ImageNet
  class is known (:data:`LABELS`: a set of acceptable classes each, e.g. tabby / tiger
  cat / Egyptian cat for the cat): the fraction whose top-5 contains one of them. 7 photos
  say the weights are loaded and preprocessed right; they are not an accuracy estimate,
  and nothing here is ImageNet accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: (data source, file, acceptable ImageNet-1k class indices or ()) -- () = no known class
PHOTOS = (
    ("skimage-photos", "chelsea.png", (281, 282, 285)),  # tabby, tiger cat, Egyptian cat
    ("skimage-photos", "coffee.png", (504, 967, 968)),  # coffee mug, espresso, cup
    ("skimage-photos", "rocket.jpg", (657, 812)),  # missile, space shuttle
    ("skimage-photos", "motorcycle_left.png", (665, 670)),  # moped, motor scooter
    ("skimage-photos", "astronaut.png", ()),
    ("skimage-photos", "hubble_deep_field.jpg", ()),
    ("skimage-photos", "retina.jpg", ()),
    ("skimage-photos", "brick.png", ()),
    ("skimage-photos", "grass.png", ()),
    ("skimage-photos", "gravel.png", ()),
    ("skimage-photos", "ihc.png", ()),
    ("skimage-photos", "color.png", ()),
    ("matplotlib-photos", "grace_hopper.jpg", (652, 457, 834)),  # military uniform, bow tie, suit
    ("sklearn", "china.jpg", (698, 663, 483)),  # palace, monastery, castle
    ("sklearn", "flower.jpg", (985, 309, 738)),  # daisy, bee, pot (flowerpot)
)
#: sources the photo set needs (``sklearn`` is scikit-learn itself, a dependency of bench)
SOURCES = ("skimage-photos", "matplotlib-photos")

#: ImageNet-style per-channel normalisations: (mean, std) on 0..255 pixels
TF_LITE = ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
IMAGENET = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))

N_VIEWS = 6
N_CALIB_VIEWS = 3


def photo_path(source: str, name: str):
    from pathlib import Path

    if source == "sklearn":
        import importlib.util

        spec = importlib.util.find_spec("sklearn")
        return Path(spec.origin).parent / "datasets" / "images" / name
    from suites import datasets

    return datasets.path(source, name)


def load_rgb(source: str, name: str) -> np.ndarray:
    """uint8 ``(H, W, 3)``; grey or RGBA images converted to RGB."""
    from PIL import Image

    with Image.open(photo_path(source, name)) as im:
        return np.asarray(im.convert("RGB"))


def _resize_short(img: np.ndarray, short: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    s = short / min(h, w)
    size = (max(short, round(w * s)), max(short, round(h * s)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def _crop(img: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return img[top:top + size, left:left + size]


def views(img: np.ndarray, size: int) -> list[np.ndarray]:
    """The six eval views: centre, four corners, mirrored centre (uint8 HWC)."""
    r = _resize_short(img, round(size * 256 / 224))
    h, w = r.shape[:2]
    ct, cl = (h - size) // 2, (w - size) // 2
    centre = _crop(r, ct, cl, size)
    return [centre, _crop(r, 0, 0, size), _crop(r, 0, w - size, size), _crop(r, h - size, 0, size),
            _crop(r, h - size, w - size, size), centre[:, ::-1]]


def calib_views(img: np.ndarray, size: int) -> list[np.ndarray]:
    r = _resize_short(img, size)
    h, w = r.shape[:2]
    if w >= h:
        return [_crop(r, 0, left, size) for left in (0, (w - size) // 2, w - size)]
    return [_crop(r, top, 0, size) for top in (0, (h - size) // 2, h - size)]


def to_tensor(batch: list[np.ndarray], normalize) -> np.ndarray:
    mean, std = (np.asarray(v, np.float32)[None, :, None, None] for v in normalize)
    x = np.stack(batch).astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


@dataclass
class PhotoSet:
    x: np.ndarray  # float32 (N, 3, size, size)
    names: list[str]  # "file#view"
    labels: np.ndarray  # int64 (N, 3): acceptable classes of the centre view of a known photo, -1 padded

    def describe(self) -> dict:
        return {"photos": len(PHOTOS), "views_per_photo": N_VIEWS, "n_eval": int(len(self.x)),
                "n_labelled": int((self.labels[:, 0] >= 0).sum()),
                "files": [f"{s}:{n}" for s, n, _ in PHOTOS]}

    def task_data(self) -> dict:
        return {"photo_labels": self.labels}


def eval_set(size: int, normalize=TF_LITE) -> PhotoSet:
    imgs, names, labels = [], [], []
    for source, name, classes in PHOTOS:
        for i, v in enumerate(views(load_rgb(source, name), size)):
            imgs.append(v)
            names.append(f"{name}#{i}")
            row = list(classes)[:3] if (i == 0 and classes) else []
            labels.append(row + [-1] * (3 - len(row)))
    return PhotoSet(to_tensor(imgs, normalize), names, np.asarray(labels, np.int64))


def calibration_set(size: int, normalize=TF_LITE) -> PhotoSet:
    imgs = [v for source, name, _ in PHOTOS for v in calib_views(load_rgb(source, name), size)]
    return PhotoSet(to_tensor(imgs, normalize), [], np.full((len(imgs), 3), -1, np.int64))


def score(outputs: np.ndarray, task: dict) -> dict:
    """``top5_photos``: the fraction of labelled photos whose top-5 logits hold an acceptable class.

    ``task["photo_labels"]``: int ``(N, k)`` acceptable classes per eval image, -1 padded;
    rows of -1 only are unlabelled and left out. Pure function of the variant's outputs.
    """
    labels = np.asarray(task["photo_labels"])
    known = labels[:, 0] >= 0
    if not known.any():
        return {}
    top5 = np.argsort(-outputs[known], axis=1)[:, :5]
    hit = [(set(t.tolist()) & set(lab[lab >= 0].tolist())) != set() for t, lab in zip(top5, labels[known])]
    top1 = [int(o.argmax()) in set(lab[lab >= 0].tolist()) for o, lab in zip(outputs[known], labels[known])]
    return {"top5_photos": float(np.mean(hit)), "top1_photos": float(np.mean(top1)),
            "n_photos_labelled": int(known.sum())}
