"""Any ImageFolder tree: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>``.

The images are decoded in DataLoader worker processes with Pillow, resized (shorter side to
``resize``, default ``image_size`` * 8/7 like the usual 256/224 ImageNet recipe, or no resize
when the images already have ``image_size``) and centre-cropped to ``image_size``. Two paths:

- **tensors**: the whole tree is decoded once into one uint8 tensor per split, so training runs
  on the fast tensor path (batched random crop + flip, normalisation inside the model). The
  preload is bounded: a tree over ``max_preload_gib`` as uint8 is refused with the size it needs.
- **files** (:mod:`famr.data.files`): the tree is only indexed (paths and labels); a request
  decodes the forget set, the retain buffer and the evaluation samples it needs, nothing else.

``data_path="auto"`` (the default) takes the file path when the decoded tree would exceed
``files_above_gib`` (1 GiB: Tiny-ImageNet-sized trees at 64 px stay tensors, ImageNet-100 at
224 px, about 19 GiB, streams).

Classes are the train/ sub-folders in sorted order (as ``torchvision.datasets.ImageFolder``
numbers them), or the sorted names listed in a classes file (one folder name per line, ``#``
comments allowed; e.g. the usual ImageNet-100 WNID list).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import TensorDataset

from . import ImageData, register_dataset
from .files import ImageFiles, decode

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# ImageNet statistics: the normalisation torchvision and timm models are trained with.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val")
DATA_PATHS = ("auto", "tensors", "files")


def read_classes_file(path: str | Path) -> list[str]:
    """Folder names listed one per line (blank lines and ``#`` comments skipped)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"classes file {str(file)!r} not found")
    names = []
    for line in file.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name.split()[0])
    if not names:
        raise ValueError(f"classes file {str(file)!r} lists no class")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"classes file {str(file)!r} lists {name!r} twice")
        seen.add(name)
    return sorted(names)


def _files(samples: list[tuple[Path, int]], image_size: int, resize: int, workers: int):
    return ImageFiles([p for p, _ in samples], [y for _, y in samples], image_size, resize, workers)


def _samples(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    samples = []
    for index, name in enumerate(classes):
        files = sorted(
            p for p in (folder / name).iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file()
        )
        if not files:
            raise ValueError(f"class folder {str(folder / name)!r} holds no image")
        samples += [(p, index) for p in files]
    return samples


def _native_size(path: Path) -> int | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
    except Exception:  # noqa: BLE001 - reported later by the decoder with the file name
        return None
    return min(w, h)


@register_dataset("imagefolder")
def load_imagefolder(
    root: str | Path | None = None,
    *,
    classes_file: str | Path | None = None,
    image_size: int | None = None,
    resize: int | None = None,
    workers: int = 2,
    max_preload_gib: float = 8.0,
    data_path: str = "auto",
    files_above_gib: float = 1.0,
) -> ImageData:
    """Load ``root/train`` and ``root/val`` (ImageFolder layout): decoded whole into uint8
    tensors (the tensor path), or indexed as files that a request decodes only where it needs
    them (the file path, :mod:`famr.data.files`).

    Args:
        root: The folder holding ``train/`` and ``val/``.
        classes_file: Optional list of class folder names to use (others are ignored).
        image_size: Side of the square images kept (default: the first training image's
            shorter side).
        resize: Shorter side before the centre crop (default: ``image_size`` when the images
            already have that size, else ``round(image_size * 8 / 7)``).
        workers: DataLoader worker processes decoding the images (0 = in this process).
        max_preload_gib: Refuse (on the tensor path) trees whose uint8 preload would exceed
            this many GiB.
        data_path: ``"tensors"``, ``"files"``, or ``"auto"``: the file path when the whole tree
            would take more than ``files_above_gib`` decoded, the tensor path otherwise.
        files_above_gib: The size above which ``"auto"`` picks the file path.

    Raises:
        FileNotFoundError: ``root``, ``train/``/``val/`` or a listed class folder is missing.
        ValueError: Bad options, an empty class folder, an unreadable image (named), or a
            preload over the limit.
    """
    if root is None:
        raise ValueError("data set 'imagefolder' needs --data-root: a folder with train/ and val/")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} does not exist")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"data root {str(root)!r} lacks {', '.join(s + '/' for s in missing)} "
            "(expected train/<class>/<image> and val/<class>/<image>)"
        )
    found = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if classes_file is not None:
        classes = read_classes_file(classes_file)
        absent = [c for c in classes if c not in found]
        if absent:
            raise FileNotFoundError(
                f"classes {absent[:5]} from {str(classes_file)!r} have no folder in {str(root / 'train')!r}"
            )
    else:
        classes = found
    if len(classes) < 2:
        raise ValueError(f"{str(root / 'train')!r} needs at least 2 class folders, found {classes}")
    absent_val = [c for c in classes if not (root / "val" / c).is_dir()]
    if absent_val:
        raise FileNotFoundError(f"classes {absent_val[:5]} have no folder in {str(root / 'val')!r}")
    train = _samples(root / "train", classes)
    val = _samples(root / "val", classes)
    for name, value in (("image_size", image_size), ("resize", resize), ("workers", workers)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < (0 if name == "workers" else 1)
        ):
            raise ValueError(f"{name}={value!r} is not valid; it must be a positive integer")
    for name, value in (("max_preload_gib", max_preload_gib), ("files_above_gib", files_above_gib)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name}={value!r} is not valid; it must be a number > 0")
    if data_path not in DATA_PATHS:
        raise ValueError(
            f"data_path={data_path!r} is not valid; choose one of: {', '.join(DATA_PATHS)}"
        )
    native = _native_size(train[0][0])
    if image_size is None:
        if native is None:
            raise ValueError(f"unreadable image {train[0][0]}")
        image_size = native
    if resize is None:
        resize = image_size if native == image_size else round(image_size * 8 / 7)
    if resize < image_size:
        raise ValueError(f"resize={resize} is smaller than image_size={image_size}")
    gib = (len(train) + len(val)) * 3 * image_size**2 / 2**30
    if data_path == "auto":
        data_path = "files" if gib > files_above_gib else "tensors"
    train_files = _files(train, image_size, resize, workers)
    val_files = _files(val, image_size, resize, workers)
    if data_path == "tensors" and gib > max_preload_gib:
        raise ValueError(
            f"{len(train) + len(val)} images at {image_size}x{image_size} need {gib:.1f} GiB as uint8, "
            f"over max_preload_gib={max_preload_gib}; use the file path (data_path='files', CLI "
            "--data-path files), lower image_size or raise max_preload_gib"
        )
    if data_path == "tensors":
        train_set, test_set = (TensorDataset(*decode(f)) for f in (train_files, val_files))
    else:
        train_set, test_set = train_files, val_files
    return ImageData(
        name="imagefolder",
        train=train_set,
        test=test_set,
        class_names=classes,
        in_channels=3,
        image_size=image_size,
        mean=MEAN,
        std=STD,
    )
