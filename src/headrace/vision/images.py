"""Decoding, resizing and augmenting images with Pillow and torch only (no torchvision needed).

Images are decoded once into uint8 tensors at a modest "base" size (shorter side ``base``), kept in
memory, and every later step works on tensors: the evaluation transform (centre crop), and the
training augmentation (random resized crop, horizontal flip, colour jitter), done a batch at a time
on the training device, so on a GPU it costs almost nothing and on a CPU it never re-decodes a JPEG.

JPEGs are decoded with Pillow's ``draft`` mode, which lets libjpeg scale by 1/2, 1/4 or 1/8 while
decoding: a 2592x1984 photo needed at 256 px decodes about 8 times faster.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

__all__ = [
    "Augment",
    "batch_center",
    "decode",
    "decode_to_tensor",
    "normalize",
    "open_image",
    "resize_shorter",
]

# Pillow's guard against decompression bombs: refuse images over ~180 megapixels outright.
Image.MAX_IMAGE_PIXELS = 178_956_970


def open_image(data: bytes, *, what: str = "image") -> Image.Image:
    """A fully decoded Pillow image, or a DataError naming what is wrong with the bytes."""
    if not data:
        raise DataError(f"{what} is empty (0 bytes)", hint="send the image file's bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, UnidentifiedImageError):
            reason = "not an image format Pillow can read"
        raise DataError(
            f"{what} cannot be decoded ({reason})",
            hint="send a JPEG, PNG, WEBP or BMP file's raw bytes",
        ) from None
    except Image.DecompressionBombWarning:
        raise DataError(f"{what} is too large to decode safely", hint="downscale it first") from None
    return img


def decode(data: bytes, *, base: int | None = None, what: str = "image") -> Image.Image:
    """Decode to RGB; with ``base``, let JPEG decoding shrink it while keeping the shorter side >= base."""
    if base is not None:
        try:
            probe = Image.open(io.BytesIO(data))
            if probe.format == "JPEG":
                w, h = probe.size
                scale = min(w, h) / base
                if scale >= 2:
                    probe.draft("RGB", (math.ceil(w / scale), math.ceil(h / scale)))
                probe.load()
                return _rgb(probe)
        except Exception:  # fall through to the careful path, which names the problem
            pass
    return _rgb(open_image(data, what=what))


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def resize_shorter(img: Image.Image, size: int, max_ratio: float = 1.5) -> Image.Image:
    """Resize so the shorter side is ``size``; first crop the longer side to ``max_ratio`` x shorter.

    The crop keeps the centre, which every later crop samples from anyway, and bounds memory.
    """
    w, h = img.size
    if max(w, h) > max_ratio * min(w, h):
        if w > h:
            keep = round(h * max_ratio)
            left = (w - keep) // 2
            img = img.crop((left, 0, left + keep, h))
        else:
            keep = round(w * max_ratio)
            top = (h - keep) // 2
            img = img.crop((0, top, w, top + keep))
        w, h = img.size
    scale = size / min(w, h)
    target = (max(size, round(w * scale)), max(size, round(h * scale)))
    if target != (w, h):
        img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0 if scale < 0.5 else None)
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """HWC uint8 Pillow image to a CHW uint8 tensor."""
    buffer = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return buffer.view(img.size[1], img.size[0], 3).permute(2, 0, 1).contiguous()


def decode_to_tensor(data: bytes, base: int, *, what: str = "image") -> torch.Tensor:
    """Bytes to a CHW uint8 tensor whose shorter side is ``base``."""
    return to_tensor(resize_shorter(decode(data, base=base, what=what), base))


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or 0..1 float) NCHW batch to the backbone's input scale, as float32."""
    x = batch.float()
    if batch.dtype == torch.uint8:
        x = x / 255.0
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _center_crop(img: torch.Tensor, size: int, fraction: float) -> torch.Tensor:
    """Crop the central ``fraction`` of the shorter side (as a square) and resize it to ``size``."""
    _, h, w = img.shape
    side = max(1, round(min(h, w) * fraction))
    top, left = (h - side) // 2, (w - side) // 2
    crop = img[:, top : top + side, left : left + side]
    if side == size:
        return crop
    return _resize(crop, size, size)


def _resize(crop: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    x = crop.unsqueeze(0).float()
    y = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True)
    return y.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)


def batch_center(images: Sequence[torch.Tensor], size: int, fraction: float = 0.875) -> torch.Tensor:
    """The evaluation transform: centre crops (``fraction`` of the shorter side) as one NCHW batch."""
    return torch.stack([_center_crop(img, size, fraction) for img in images])


class Augment:
    """Random resized crop, horizontal flip and colour jitter for a list of CHW uint8 tensors.

    The crop follows the usual recipe (area ``scale`` of the image, aspect ratio in ``ratio``, ten
    tries, then a centre crop); colour jitter scales brightness, contrast and saturation by factors
    drawn from [1 - strength, 1 + strength]. Random draws come from ``generator`` so a run repeats.
    """

    def __init__(
        self,
        size: int,
        *,
        scale: tuple[float, float] = (0.25, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        jitter: float = 0.3,
        generator: torch.Generator | None = None,
    ) -> None:
        self.size = size
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.flip = flip
        self.jitter = jitter
        self.generator = generator

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))

    def _box(self, h: int, w: int) -> tuple[int, int, int, int]:
        area = h * w
        for _ in range(10):
            target = area * self._uniform(*self.scale)
            aspect = math.exp(self._uniform(*self.log_ratio))
            cw = round(math.sqrt(target * aspect))
            ch = round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (), generator=self.generator))
                left = int(torch.randint(0, w - cw + 1, (), generator=self.generator))
                return top, left, ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def crops(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        out = []
        for img in images:
            _, h, w = img.shape
            top, left, ch, cw = self._box(h, w)
            crop = _resize(img[:, top : top + ch, left : left + cw], self.size, self.size)
            if self.flip and float(torch.rand((), generator=self.generator)) < 0.5:
                crop = crop.flip(-1)
            out.append(crop)
        return torch.stack(out)

    def colour(self, batch: torch.Tensor) -> torch.Tensor:
        """Colour jitter on a float batch in [0, 1] (any device), per image."""
        if self.jitter <= 0:
            return batch
        n = batch.shape[0]

        def factors() -> torch.Tensor:
            draw = torch.rand(n, 1, 1, 1, generator=self.generator)
            return (1 - self.jitter + 2 * self.jitter * draw).to(batch.device)

        brightness, contrast, saturation = factors(), factors(), factors()
        x = batch * brightness
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).clamp(0, 1)
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * contrast + gray.mean(dim=(2, 3), keepdim=True)
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - gray) * saturation + gray
        return x.clamp_(0, 1)

    def __call__(self, images: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
        """Augmented float batch in [0, 1] on ``device``."""
        batch = self.crops(images).to(device, non_blocking=True).float().div_(255.0)
        return self.colour(batch)
