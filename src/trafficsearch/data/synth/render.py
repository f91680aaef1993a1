"""Draw one small traffic crop per label, faithful to its attributes and deterministic per (record, seed).

Shapes are drawn with PIL ImageDraw at twice the output size and shrunk (cheap anti-aliasing); the
hard parts of real data are added on purpose: clutter, colour casts and lighting (white vs grey is not
free), blur, noise, occlusion, JPEG artefacts and, for vehicles, a camera-domain shift between the web
images of train/val and the surveillance frames of the test set.
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from trafficsearch.data.records import Record, VehicleAttributes
from trafficsearch.data.synth.brand_design import BrandDesign, brand_design
from trafficsearch.data.synth.grammar import brand_types
from trafficsearch.data.vocab import BRANDS, COLORS

Domain = Literal["web", "camera"]
DOMAINS: tuple[Domain, ...] = ("web", "camera")
VehicleView = Literal["side", "front", "rear"]
VEHICLE_VIEWS: tuple[VehicleView, ...] = ("side", "front", "rear")
SS = 2  # supersampling factor

# Body colours before lighting; grey/white/silver differ only by brightness, as on real cars.
VEHICLE_RGB: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "blue": (30, 70, 175),
    "brown": (112, 70, 38),
    "green": (38, 128, 58),
    "grey": (128, 130, 133),
    "orange": (236, 122, 22),
    "pink": (236, 142, 182),
    "purple": (118, 48, 150),
    "red": (192, 26, 30),
    "white": (236, 236, 236),
    "yellow": (236, 202, 30),
}
_CLOTH = [
    (20, 20, 24),
    (235, 235, 235),
    (120, 120, 125),
    (30, 50, 120),
    (150, 30, 35),
    (40, 100, 60),
    (200, 170, 120),
    (90, 60, 40),
    (220, 190, 40),
    (200, 110, 150),
    (60, 140, 190),
    (230, 120, 40),
    (80, 40, 110),
    (160, 160, 100),
]
_SKIN = [(238, 200, 170), (222, 180, 145), (198, 150, 115), (160, 115, 85), (120, 85, 60)]
_HAIR = [(20, 16, 14), (45, 30, 20), (80, 55, 30), (30, 25, 25)]
_GREY_HAIR = [(170, 170, 170), (205, 205, 200), (140, 140, 138)]
_EMBLEM_RGB = [(205, 205, 215), (222, 180, 40), (40, 80, 205), (205, 30, 30)]


class SynthRandom(random.Random):
    """Python's Mersenne Twister with numpy-like names: scalar draws are far cheaper than numpy's,
    and the renderer makes a few hundred of them per image."""

    def integers(self, low: int, high: int | None = None) -> int:
        """An int in [low, high) (or [0, low) with one argument), like numpy's Generator.integers."""
        if high is None:
            low, high = 0, low
        return self.randrange(low, high) if high > low else low

    def normal(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        return self.gauss(mu, sigma)


def record_rng(record: Record, seed: int, domain: str) -> SynthRandom:
    """A generator that depends only on the record's content, the seed and the domain."""
    key = f"{seed}|{domain}|{record.image}|{record.attributes}|{record.text}".encode()
    return SynthRandom(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


_RAMP = np.arange(256, dtype=np.float32)


@functools.cache
def _noise_tile() -> np.ndarray:
    """Fixed unit Gaussian noise; each image takes a random window of it (cheap, deterministic)."""
    return np.random.default_rng(12345).standard_normal((256, 320)).astype(np.float32)


def _jitter(rng: SynthRandom, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)
    return r, g, b


def _pick(rng: SynthRandom, options: list) -> tuple[int, int, int]:
    return options[int(rng.integers(len(options)))]


def _contrast(rgb: tuple[int, int, int], rng: SynthRandom) -> tuple[int, int, int]:
    """A colour clearly different from `rgb` (for stripes, logos, splices)."""
    while True:
        c = _pick(rng, _CLOTH)
        if sum(abs(a - b) for a, b in zip(c, rgb, strict=True)) > 180:
            return c


# ---------------------------------------------------------------------------------------------- background
def _background(rng: SynthRandom, w: int, h: int, kind: str, domain: str) -> Image.Image:
    """Smooth coloured blotches plus random clutter shapes (poles, signs, parts of other objects)."""
    base = np.array(
        _pick(rng, [(110, 110, 112), (140, 135, 125), (90, 95, 100), (160, 160, 150), (120, 130, 110)])
    )
    if domain == "web" and kind == "vehicle" and rng.random() < 0.3:
        base = np.array((225, 225, 228))  # showroom / catalogue backdrop
    shade = np.array([rng.normal(0, 14) for _ in range(12)]).reshape(3, 4, 1)
    tint = np.array([rng.normal(0, 10) for _ in range(36)]).reshape(3, 4, 3)
    grid = Image.fromarray(np.clip(base[None, None, :] + shade + tint, 0, 255).astype(np.uint8))
    # smooth at 1x, then nearest to the drawing size: the final 2x reduce gives the smooth 1x back
    img = grid.resize((w // SS, h // SS), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    if kind == "vehicle":
        y = int(h * rng.uniform(0.55, 0.8))
        draw.rectangle((0, y, w, h), fill=_jitter(rng, (85, 85, 88), 15))  # road
        for _ in range(int(rng.integers(0, 3))):
            x = int(rng.integers(0, w))
            draw.line(
                (x, h, x + int(rng.integers(-w // 3, w // 3)), y),
                fill=_pick(rng, [(230, 230, 230), (220, 190, 40)]),
                width=SS * 2,
            )
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = (
            x0 + int(rng.integers(SS * 3, max(SS * 4, w // 2))),
            y0 + int(rng.integers(SS * 3, max(SS * 4, h // 3))),
        )
        fill = _jitter(rng, _pick(rng, _CLOTH + [(60, 110, 50), (100, 100, 100)]), 25)
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
    return img


# ---------------------------------------------------------------------------------------------- pedestrians
def _render_pedestrian(record: Record, rng: SynthRandom) -> tuple[Image.Image, tuple[int, int]]:
    v = record.vector
    assert v is not None
    female, old, child = v[0] == 1, v[1] == 1, v[3] == 1
    view = "front" if v[4] else ("side" if v[5] else "back")
    boots = "boots" in record.text.split(". ", 1)[-1]
    out_h = int(rng.integers(100, 221))
    out_w = int(np.clip(out_h / rng.uniform(2.0, 3.1), 40, 90))
    w, h = out_w * SS, out_h * SS
    img = _background(rng, w, h, "pedestrian", "web")
    d = ImageDraw.Draw(img)

    fh = h * rng.uniform(0.84, 0.95)
    top = (h - fh) * rng.uniform(0.2, 0.8)
    cx = w / 2 + rng.uniform(-0.05, 0.05) * w
    head = fh / (5.0 if child else 7.0)
    shoulder_w = min(w * 0.62, fh * (0.22 if child else 0.27)) * (0.84 if female else 1.0)
    if view == "side":
        shoulder_w *= 0.55
    facing = 1 if rng.random() < 0.5 else -1  # side view: which way the person looks
    stoop = fh * 0.05 * facing if old and view == "side" else 0.0
    head_drop = fh * 0.03 if old and view != "side" else 0.0

    skin = _jitter(rng, _pick(rng, _SKIN), 10)
    hair = _pick(rng, _GREY_HAIR) if old else _pick(rng, _HAIR)
    upper = _jitter(rng, _pick(rng, _CLOTH), 15)
    lower = _jitter(rng, _pick(rng, _CLOTH), 15)
    coat = _jitter(rng, _pick(rng, _CLOTH), 15)
    shoe = _pick(rng, [(20, 20, 20), (60, 40, 30), (230, 230, 230)])

    y_head0 = top + head_drop
    y_sh = top + head * 1.12 + head_drop * 0.5
    y_waist = top + fh * (0.54 if child else 0.5)
    y_knee = top + fh * 0.76
    y_foot = top + fh
    hip_w = shoulder_w * (0.95 if female else 0.82)

    # legs
    leg_w = hip_w * 0.42
    if view == "side":
        stride = fh * rng.uniform(0.05, 0.12)
        for sgn in (-1, 1):
            d.polygon(
                [
                    (cx - leg_w / 2, y_waist),
                    (cx + leg_w / 2, y_waist),
                    (cx + sgn * stride + leg_w / 2, y_foot),
                    (cx + sgn * stride - leg_w / 2, y_foot),
                ],
                fill=lower,
            )
        feet = [(cx + sgn * stride, y_foot) for sgn in (-1, 1)]
    else:
        gap = hip_w * 0.08
        for sgn in (-1, 1):
            x_in = cx + sgn * gap
            x_out = cx + sgn * (hip_w / 2)
            d.rectangle((min(x_in, x_out), y_waist, max(x_in, x_out), y_foot), fill=lower)
        feet = [(cx - hip_w * 0.27, y_foot), (cx + hip_w * 0.27, y_foot)]
    skirt = bool(v[20])
    if skirt:  # bare legs or stockings below the skirt
        leg_rgb = skin if rng.random() < 0.6 else (35, 35, 40)
        for fx, fy in feet:
            d.rectangle((fx - leg_w * 0.32, y_knee - fh * 0.05, fx + leg_w * 0.32, fy), fill=leg_rgb)
    for fx, fy in feet:
        if boots:
            d.rectangle((fx - leg_w * 0.45, y_knee + fh * 0.06, fx + leg_w * 0.45, fy), fill=(45, 30, 22))
        d.rectangle(
            (
                fx - leg_w * 0.45 + min(0, facing * leg_w * 0.3) * (view == "side"),
                fy - fh * 0.025,
                fx + leg_w * 0.45 + max(0, facing * leg_w * 0.3) * (view == "side"),
                fy,
            ),
            fill=(45, 30, 22) if boots else shoe,
        )
    if skirt:
        flare = hip_w * 0.25
        d.polygon(
            [
                (cx - hip_w / 2, y_waist - fh * 0.02),
                (cx + hip_w / 2, y_waist - fh * 0.02),
                (cx + hip_w / 2 + flare, y_knee),
                (cx - hip_w / 2 - flare, y_knee),
            ],
            fill=lower,
        )

    # backpack behind the body (side view bulge), drawn before the torso
    pack_rgb = _jitter(
        rng, _pick(rng, [(30, 30, 35), (40, 60, 120), (120, 30, 30), (70, 70, 70), (200, 120, 30)]), 10
    )
    if v[11] and view == "side":
        bx = cx - facing * shoulder_w * 0.5
        d.rounded_rectangle(
            (
                min(bx, bx - facing * shoulder_w * 0.9),
                y_sh + fh * 0.02,
                max(bx, bx - facing * shoulder_w * 0.9),
                y_waist - fh * 0.02,
            ),
            radius=SS * 2,
            fill=pack_rgb,
        )

    hold = bool(v[12])
    obj_rgb = _jitter(rng, _pick(rng, _CLOTH), 20)
    if hold and view == "back":  # seen from behind, the held object sticks out at both sides
        d.rectangle(
            (cx - shoulder_w * 0.7, y_waist - fh * 0.09, cx + shoulder_w * 0.7, y_waist + fh * 0.01),
            fill=obj_rgb,
        )

    # torso (shirt or long coat)
    long_coat = bool(v[19])
    torso_rgb = coat if long_coat else upper
    torso_bottom = y_knee + fh * 0.02 if long_coat else y_waist + fh * 0.03
    sx = stoop
    torso = [
        (cx - shoulder_w / 2 + sx, y_sh),
        (cx + shoulder_w / 2 + sx, y_sh),
        (cx + hip_w / 2 + (hip_w * 0.15 if long_coat else 0), torso_bottom),
        (cx - hip_w / 2 - (hip_w * 0.15 if long_coat else 0), torso_bottom),
    ]
    d.polygon(torso, fill=torso_rgb)
    if long_coat and view != "back":
        d.line((cx + sx * 0.5, y_sh + head * 0.3, cx, torso_bottom), fill=_contrast(torso_rgb, rng), width=SS)
    _upper_pattern(d, v, rng, torso_rgb, cx + sx * 0.5, y_sh, y_waist, shoulder_w, hip_w, view)

    # arms: sleeves short (skin forearms) or long
    short = bool(v[13]) and not long_coat
    sleeve_rgb = torso_rgb
    arm_w = max(SS * 2.0, shoulder_w * (0.2 if view != "side" else 0.35))
    y_elbow = y_sh + (y_waist - y_sh) * 0.55
    y_hand = y_waist + fh * 0.04
    arm_xs = (
        [cx + sx]
        if view == "side"
        else [cx + sx - shoulder_w / 2 - arm_w * 0.4, cx + sx + shoulder_w / 2 + arm_w * 0.4]
    )
    hands = []
    for ax in arm_xs:
        d.rectangle((ax - arm_w / 2, y_sh, ax + arm_w / 2, y_elbow), fill=sleeve_rgb)
        if hold:  # forearms forward / inward to the object
            hx = cx + (facing * shoulder_w * 0.9 if view == "side" else (ax - cx) * 0.35)
            d.line(
                (ax, y_elbow, hx, y_waist - fh * 0.02), fill=skin if short else sleeve_rgb, width=int(arm_w)
            )
            hands.append((hx, y_waist - fh * 0.02))
        else:
            swing = facing * fh * 0.03 if view == "side" else 0
            d.line((ax, y_elbow, ax + swing, y_hand), fill=skin if short else sleeve_rgb, width=int(arm_w))
            hands.append((ax + swing, y_hand))
    for hx, hy in hands:
        d.ellipse((hx - arm_w * 0.55, hy - arm_w * 0.55, hx + arm_w * 0.55, hy + arm_w * 0.55), fill=skin)
    if old and rng.random() < 0.5:  # walking stick
        hx, hy = hands[-1]
        d.line((hx, hy, hx + facing * fh * 0.04, y_foot), fill=(90, 60, 35), width=SS)

    # bags
    bag_rgb = _jitter(
        rng, _pick(rng, [(25, 25, 25), (120, 70, 40), (200, 40, 40), (230, 220, 200), (60, 60, 150)]), 10
    )
    if v[10]:  # shoulder bag: strap across the body, bag at the hip
        side = 1 if rng.random() < 0.5 else -1
        bx = cx + side * hip_w * 0.55
        d.line(
            (cx - side * shoulder_w * 0.4 + sx, y_sh, bx, y_waist - fh * 0.02),
            fill=(30, 25, 20),
            width=SS * 2,
        )
        d.rectangle(
            (bx - hip_w * 0.3, y_waist - fh * 0.04, bx + hip_w * 0.3, y_waist + fh * 0.07), fill=bag_rgb
        )
    if v[11] and view == "back":
        d.rounded_rectangle(
            (cx + sx - shoulder_w * 0.42, y_sh + fh * 0.02, cx + sx + shoulder_w * 0.42, y_waist - fh * 0.01),
            radius=SS * 3,
            fill=pack_rgb,
        )
        d.line(
            (cx + sx - shoulder_w * 0.3, y_sh + fh * 0.12, cx + sx + shoulder_w * 0.3, y_sh + fh * 0.12),
            fill=_contrast(pack_rgb, rng),
            width=SS,
        )
    elif v[11] and view == "front":
        for sgn in (-1, 1):
            x = cx + sx + sgn * shoulder_w * 0.28
            d.line((x, y_sh, x, y_waist - fh * 0.05), fill=pack_rgb, width=SS * 2)
    if v[11] and view == "side":
        d.line(
            (cx + sx, y_sh, cx + sx - facing * shoulder_w * 0.2, y_waist - fh * 0.08),
            fill=pack_rgb,
            width=SS * 2,
        )
    if v[9]:  # handbag hanging from a hand
        hx, hy = hands[0]
        bw = hip_w * 0.55
        d.arc(
            (hx - bw * 0.35, hy - bw * 0.1, hx + bw * 0.35, hy + bw * 0.6),
            180,
            360,
            fill=(30, 25, 20),
            width=SS,
        )
        d.rounded_rectangle(
            (hx - bw / 2, hy + bw * 0.2, hx + bw / 2, hy + bw * 0.85), radius=SS, fill=bag_rgb
        )
    if hold and view != "back":
        ox = cx + (facing * shoulder_w * 0.9 if view == "side" else 0)
        d.rectangle(
            (ox - shoulder_w * 0.35, y_waist - fh * 0.08, ox + shoulder_w * 0.35, y_waist + fh * 0.02),
            fill=obj_rgb,
        )

    # head, hair, hat, glasses
    hx0 = cx + sx * 1.6
    hw = head * 0.8
    hy0, hy1 = y_head0, y_head0 + head
    d.rectangle((hx0 - hw * 0.18, hy1 - head * 0.2, hx0 + hw * 0.18, y_sh + SS), fill=skin)  # neck
    if female and not (child and rng.random() < 0.3):  # long hair falling to the shoulders or below
        hair_end = y_sh + fh * rng.uniform(0.04, 0.14)
        if view == "front":
            for sgn in (-1, 1):
                xa, xb = hx0 + sgn * hw * 0.62, hx0 + sgn * hw * 0.3
                d.rectangle((min(xa, xb), hy0 + head * 0.3, max(xa, xb), hair_end), fill=hair)
        elif view == "back":
            d.rectangle((hx0 - hw * 0.55, hy0 + head * 0.3, hx0 + hw * 0.55, hair_end), fill=hair)
        else:  # side: hair behind the head only
            xa, xb = hx0 - facing * hw * 0.6, hx0 + facing * hw * 0.05
            d.rectangle((min(xa, xb), hy0 + head * 0.3, max(xa, xb), hair_end), fill=hair)
    d.ellipse((hx0 - hw / 2, hy0, hx0 + hw / 2, hy1), fill=hair if view == "back" else skin)
    if view == "front":
        d.chord((hx0 - hw / 2, hy0, hx0 + hw / 2, hy0 + head * 0.75), 180, 360, fill=hair)
        ey = hy0 + head * 0.5
        for sgn in (-1, 1):
            d.ellipse(
                (
                    hx0 + sgn * hw * 0.2 - SS * 0.7,
                    ey - SS * 0.7,
                    hx0 + sgn * hw * 0.2 + SS * 0.7,
                    ey + SS * 0.7,
                ),
                fill=(30, 20, 20),
            )
        d.line(
            (hx0 - hw * 0.12, hy0 + head * 0.75, hx0 + hw * 0.12, hy0 + head * 0.75),
            fill=(150, 60, 60),
            width=SS,
        )
    elif view == "side":
        back_half = (hx0 - hw / 2, hy0, hx0, hy1) if facing > 0 else (hx0, hy0, hx0 + hw / 2, hy1)
        d.ellipse((hx0 - hw / 2, hy0, hx0 + hw / 2, hy0 + head * 0.7), fill=hair)
        d.rectangle(back_half[:3] + (hy0 + head * 0.75,), fill=hair)
        nx = hx0 + facing * hw / 2
        d.polygon(
            [(nx, hy0 + head * 0.45), (nx + facing * SS * 2, hy0 + head * 0.6), (nx, hy0 + head * 0.65)],
            fill=skin,
        )
        d.ellipse(
            (
                hx0 + facing * hw * 0.25 - SS * 0.7,
                hy0 + head * 0.45 - SS * 0.7,
                hx0 + facing * hw * 0.25 + SS * 0.7,
                hy0 + head * 0.45 + SS * 0.7,
            ),
            fill=(30, 20, 20),
        )
    if v[8]:
        gy = hy0 + head * 0.5
        if view == "front":
            d.rectangle(
                (hx0 - hw * 0.4, gy - SS * 1.3, hx0 + hw * 0.4, gy + SS * 1.3), outline=(10, 10, 10), width=SS
            )
            d.line((hx0 - hw * 0.4, gy, hx0 + hw * 0.4, gy), fill=(10, 10, 10), width=SS)
        elif view == "side":
            d.line((hx0 + facing * hw * 0.5, gy, hx0 - facing * hw * 0.15, gy), fill=(10, 10, 10), width=SS)
            d.rectangle(
                (
                    hx0 + facing * hw * 0.2 - SS * 1.5,
                    gy - SS * 1.2,
                    hx0 + facing * hw * 0.2 + SS * 1.5,
                    gy + SS * 1.2,
                ),
                fill=(15, 15, 15),
            )
        else:
            for sgn in (-1, 1):
                d.line((hx0 + sgn * hw * 0.5, gy, hx0 + sgn * hw * 0.35, gy), fill=(10, 10, 10), width=SS)
    if v[7]:
        hat = _jitter(rng, _pick(rng, _CLOTH), 15)
        d.chord((hx0 - hw * 0.58, hy0 - head * 0.12, hx0 + hw * 0.58, hy0 + head * 0.6), 180, 360, fill=hat)
        brim = (hw * 0.75 * facing) if view == "side" else 0
        d.rectangle(
            (
                hx0 - hw * 0.62 + min(brim, 0),
                hy0 + head * 0.2,
                hx0 + hw * 0.62 + max(brim, 0),
                hy0 + head * 0.3,
            ),
            fill=hat,
        )
    return img, (out_w, out_h)


def _upper_pattern(
    d: ImageDraw.ImageDraw,
    v: tuple[int, ...],
    rng: SynthRandom,
    rgb: tuple[int, int, int],
    cx: float,
    y0: float,
    y1: float,
    sw: float,
    hw: float,
    view: str,
) -> None:
    """Stripe / logo / plaid / splice on the upper body."""
    half = min(sw, hw) * 0.45
    other = _contrast(rgb, rng)
    step = max(SS * 3, (y1 - y0) / 6)
    if v[15]:
        y = y0 + step / 2
        while y < y1:
            d.line((cx - half, y, cx + half, y), fill=other, width=int(max(SS, step * 0.4)))
            y += step
    elif v[16]:
        r = min(half * 0.6, (y1 - y0) * 0.2)
        ly = y0 + (y1 - y0) * 0.38
        if rng.random() < 0.5:
            d.ellipse((cx - r, ly - r, cx + r, ly + r), fill=other)
        else:
            d.polygon([(cx, ly - r), (cx + r, ly + r), (cx - r, ly + r)], fill=other)
        d.line((cx - r * 0.6, ly + r * 0.1, cx + r * 0.6, ly + r * 0.1), fill=rgb, width=SS)
    elif v[17]:
        x = cx - half
        while x <= cx + half:
            d.line((x, y0, x, y1), fill=other, width=SS)
            x += step
        y = y0
        while y <= y1:
            d.line((cx - half, y, cx + half, y), fill=other, width=SS)
            y += step
    elif v[18]:
        if rng.random() < 0.5:
            d.rectangle((cx - half * 1.15, (y0 + y1) / 2, cx + half * 1.15, y1), fill=other)
        else:
            d.polygon([(cx, y0), (cx + half * 1.1, y0), (cx + half * 1.2, y1), (cx, y1)], fill=other)


# ---------------------------------------------------------------------------------------------- vehicles
def resolve_vehicle(vehicle: VehicleAttributes, rng: SynthRandom) -> VehicleAttributes:
    """Fill the parts a label leaves out (type of a 'color brand' car, colour of a 'Type' one, ...)."""
    brand, vtype, color = vehicle.brand, vehicle.type, vehicle.color
    if brand is None:
        options = [b for b in BRANDS if vtype is None or vtype in brand_types(b)]
        brand = options[int(rng.integers(len(options)))]
    if vtype is None:
        types = brand_types(brand)
        vtype = rng.choices(types, weights=[2.0] + [1.0] * (len(types) - 1))[0]
    if color is None:
        color = COLORS[int(rng.integers(len(COLORS)))]
    return VehicleAttributes(color=color, brand=brand, type=vtype)


@dataclass
class _Painter:
    """Draws on the image and keeps a mask of the visible painted body (for colour checks)."""

    img: Image.Image
    mask: Image.Image

    def __post_init__(self) -> None:
        self.d = ImageDraw.Draw(self.img)
        self.m = ImageDraw.Draw(self.mask)

    def body(self, shape: str, xy, fill, **kw) -> None:
        getattr(self.d, shape)(xy, fill=fill, **kw)
        getattr(self.m, shape)(xy, fill=255, **kw)

    def part(self, shape: str, xy, fill, **kw) -> None:
        getattr(self.d, shape)(xy, fill=fill, **kw)
        getattr(self.m, shape)(xy, fill=0, **kw)


def _emblem(p: _Painter, brand: str, x: float, y: float, r: float) -> None:
    """Brand emblem: a bold shape from the brand's design, its colour and a 3x3 glyph from the brand index."""
    b = BRANDS.index(brand)
    shape, rgb = brand_design(brand).emblem, _EMBLEM_RGB[(b // 8) % 4]
    box = (x - r, y - r, x + r, y + r)
    if shape == "disc":
        p.part("ellipse", box, rgb)
    elif shape == "oval":
        p.part("ellipse", (x - r * 1.5, y - r * 0.75, x + r * 1.5, y + r * 0.75), rgb)
    elif shape == "triangle":
        p.part("polygon", [(x - r * 1.1, y - r), (x + r * 1.1, y - r), (x, y + r * 1.15)], rgb)
    elif shape == "diamond":
        p.part("polygon", [(x, y - r * 1.2), (x + r * 1.2, y), (x, y + r * 1.2), (x - r * 1.2, y)], rgb)
    elif shape == "square":
        p.part("rectangle", box, rgb)
    elif shape == "hexagon":
        p.part("regular_polygon", (x, y, r * 1.1), rgb, n_sides=6)
    elif shape == "wing":  # a wide chevron with wings
        p.part("polygon", [(x - r * 2, y - r * 0.6), (x, y), (x + r * 2, y - r * 0.6), (x, y + r * 0.8)], rgb)
    else:  # ring
        p.part("ellipse", box, rgb)
        p.part("ellipse", (x - r * 0.55, y - r * 0.55, x + r * 0.55, y + r * 0.55), (25, 25, 28))
    bits = (b * 37 + 11) % 511 + 1
    dark = (15, 15, 20) if sum(rgb) > 300 else (240, 240, 240)
    cell = r * 0.5
    for i in range(9):
        if bits >> i & 1:
            gx, gy = x + (i % 3 - 1) * cell, y + (i // 3 - 1) * cell
            p.part("rectangle", (gx - cell * 0.3, gy - cell * 0.3, gx + cell * 0.3, gy + cell * 0.3), dark)


_GLASS = (50, 62, 78)
_TRIM_BLACK = (26, 26, 29)
_CHROME = (196, 198, 204)
_GRILLE_RGB = (25, 25, 28)


def _lamp(p: _Painter, style: str, cx: float, cy: float, lw: float, lh: float, rgb, sgn: int) -> None:
    """One head or tail lamp of the brand's shape; `sgn` (-1 left, 1 right) orients asymmetric shapes."""
    if style == "rect":
        p.part("rectangle", (cx - lw / 2, cy - lh / 2, cx + lw / 2, cy + lh / 2), rgb)
    elif style == "round":
        r = max(lh * 0.75, lw * 0.32)
        p.part("ellipse", (cx - r, cy - r, cx + r, cy + r), rgb)
    elif style == "swept":  # tall at the outside, a thin point toward the middle
        xo, xi = cx + sgn * lw * 0.6, cx - sgn * lw * 0.6
        p.part("polygon", [(xo, cy - lh * 0.9), (xo, cy + lh * 0.7), (xi, cy + lh * 0.1)], rgb)
    elif style == "strip":  # a long thin bar
        p.part("rectangle", (cx - lw * 0.75, cy - lh * 0.28, cx + lw * 0.75, cy + lh * 0.28), rgb)
    else:  # twin round lamps
        r = max(SS * 1.0, min(lh * 0.55, lw * 0.24))
        for dx in (-lw * 0.27, lw * 0.27):
            p.part("ellipse", (cx + dx - r, cy - r, cx + dx + r, cy + r), rgb)


def _grille(p: _Painter, style: str, cx: float, y0: float, gw: float, gh: float) -> None:
    """The brand's grille: shape and size are the strongest brand cue of a front view."""
    x0, x1, y1 = cx - gw / 2, cx + gw / 2, y0 + gh
    line = max(SS, gh * 0.08)
    if style == "bar":
        p.part("rectangle", (x0, y0, x1, y1), _GRILLE_RGB)
        for k in (1, 2):
            y = y0 + gh * k / 3
            p.part("line", (x0, y, x1, y), _CHROME, width=int(line))
    elif style == "kidney":  # two tall rounded halves with body colour between them
        half = gw * 0.44
        for sgn in (-1, 1):
            xa = cx + sgn * gw * 0.06
            xb = xa + sgn * half
            p.part("rounded_rectangle", (min(xa, xb), y0 - gh * 0.25, max(xa, xb), y1), _GRILLE_RGB,
                   radius=int(max(1, half * 0.3)))  # fmt: skip
    elif style == "trapezoid":  # narrow top, wide mouth
        p.part("polygon", [(cx - gw * 0.3, y0), (cx + gw * 0.3, y0), (x1, y1), (x0, y1)], _GRILLE_RGB)
    elif style == "shield":  # pentagon pointing down, chrome frame
        pts = [(x0, y0), (x1, y0), (x1, y0 + gh * 0.6), (cx, y1 + gh * 0.35), (x0, y0 + gh * 0.6)]
        p.part("polygon", pts, _CHROME)
        s = 0.8
        p.part("polygon", [(cx + (x - cx) * s, y0 + (y - y0) * s + gh * 0.08) for x, y in pts], _GRILLE_RGB)
    elif style == "slot":  # a thin full-width slot
        p.part("rectangle", (x0 - gw * 0.2, y0, x1 + gw * 0.2, y0 + gh * 0.4), _GRILLE_RGB)
    elif style == "mesh":  # a big square grille with a chrome grid
        p.part("rectangle", (x0, y0 - gh * 0.15, x1, y1 + gh * 0.15), _GRILLE_RGB)
        for k in range(1, 4):
            x = x0 + gw * k / 4
            p.part("line", (x, y0 - gh * 0.15, x, y1 + gh * 0.15), _CHROME, width=int(line))
        p.part("line", (x0, (y0 + y1) / 2, x1, (y0 + y1) / 2), _CHROME, width=int(line))
    else:  # split: two stacked bars with a body-coloured band between
        p.part("rectangle", (x0, y0, x1, y0 + gh * 0.38), _GRILLE_RGB)
        p.part("rectangle", (x0 - gw * 0.08, y0 + gh * 0.62, x1 + gw * 0.08, y1), _GRILLE_RGB)


def _wheel(p: _Painter, rim: int, x: float, y: float, r: float) -> None:
    p.part("ellipse", (x - r, y - r, x + r, y + r), (18, 18, 18))
    if rim == 0:  # silver disc
        p.part("ellipse", (x - r * 0.5, y - r * 0.5, x + r * 0.5, y + r * 0.5), (150, 150, 155))
    elif rim == 1:  # dark alloy
        p.part("ellipse", (x - r * 0.6, y - r * 0.6, x + r * 0.6, y + r * 0.6), (62, 62, 66))
    elif rim == 2:  # spoked
        p.part("ellipse", (x - r * 0.62, y - r * 0.62, x + r * 0.62, y + r * 0.62), (170, 170, 175))
        for dx, dy in ((1, 0), (0, 1)):
            p.part("line", (x - dx * r * 0.6, y - dy * r * 0.6, x + dx * r * 0.6, y + dy * r * 0.6),
                   (30, 30, 32), width=int(max(SS, r * 0.18)))  # fmt: skip
    else:  # wide chrome ring, dark hub
        p.part("ellipse", (x - r * 0.72, y - r * 0.72, x + r * 0.72, y + r * 0.72), _CHROME)
        p.part("ellipse", (x - r * 0.32, y - r * 0.32, x + r * 0.32, y + r * 0.32), (30, 30, 32))


def _scaled(design: BrandDesign, rng: SynthRandom) -> dict[str, float]:
    """The brand's continuous proportions with mild per-image jitter (+-4 %).

    `rng` is a stream of its own (see `_render_vehicle`), so the scene's draws (view, size, lighting, noise)
    stay what they were before brands had designs."""
    names = ("roof", "nose", "tail", "grille_w", "grille_h", "lamp_w", "lamp_h", "lamp_y")
    return {n: getattr(design, n) * rng.uniform(0.96, 1.04) for n in names}


def _vehicle_side(
    p: _Painter, v: VehicleAttributes, rng: SynthRandom, body, w: int, h: int, jitter: SynthRandom
) -> None:
    L = w * rng.uniform(0.8, 0.94)
    x0 = (w - L) / 2 + rng.uniform(-0.03, 0.03) * w
    ground = h * rng.uniform(0.86, 0.95)
    face = 1 if rng.random() < 0.5 else -1  # front of the vehicle on the right (1) or left
    design = brand_design(v.brand or BRANDS[0])
    s = _scaled(design, jitter)

    def X(f: float) -> float:  # position along the vehicle, 0 = rear, 1 = front
        return x0 + (f if face > 0 else 1 - f) * L

    t = v.type
    wheel = {"Sedan": 0.085, "SUV": 0.1, "Minivan": 0.085, "Microbus": 0.075, "Bus": 0.055, "Truck": 0.075}[
        t
    ] * L
    axle = ground - wheel
    if t == "Sedan":
        base = [
            (0.0, axle + wheel * 0.4),
            (1.0, axle + wheel * 0.4),
            (1.0, axle - L * 0.12),
            (0.0, axle - L * 0.12),
        ]
        cabin = [
            (0.18, axle - L * 0.12),
            (0.72, axle - L * 0.12),
            (0.6, axle - L * 0.25),
            (0.3, axle - L * 0.25),
        ]
    elif t == "SUV":
        base = [
            (0.0, axle + wheel * 0.4),
            (1.0, axle + wheel * 0.4),
            (1.0, axle - L * 0.16),
            (0.0, axle - L * 0.16),
        ]
        cabin = [
            (0.0, axle - L * 0.16),
            (0.78, axle - L * 0.16),
            (0.68, axle - L * 0.33),
            (0.02, axle - L * 0.33),
        ]
    elif t == "Minivan":
        base = [
            (0.0, axle + wheel * 0.4),
            (1.0, axle + wheel * 0.4),
            (1.0, axle - L * 0.12),
            (0.0, axle - L * 0.12),
        ]
        cabin = [
            (0.0, axle - L * 0.12),
            (0.88, axle - L * 0.12),
            (0.7, axle - L * 0.36),
            (0.03, axle - L * 0.37),
        ]
    elif t == "Microbus":
        base = [
            (0.0, axle + wheel * 0.4),
            (1.0, axle + wheel * 0.4),
            (1.0, axle - L * 0.2),
            (0.0, axle - L * 0.2),
        ]
        cabin = [
            (0.0, axle - L * 0.2),
            (1.0, axle - L * 0.2),
            (0.95, axle - L * 0.45),
            (0.0, axle - L * 0.45),
        ]
    elif t == "Bus":
        base = [
            (0.0, axle + wheel * 0.5),
            (1.0, axle + wheel * 0.5),
            (1.0, axle - L * 0.12),
            (0.0, axle - L * 0.12),
        ]
        cabin = [
            (0.0, axle - L * 0.12),
            (1.0, axle - L * 0.12),
            (0.99, axle - L * 0.3),
            (0.0, axle - L * 0.3),
        ]
    else:  # Truck: cab at the front, cargo box behind
        base = [
            (0.72, axle + wheel * 0.4),
            (1.0, axle + wheel * 0.4),
            (1.0, axle - L * 0.28),
            (0.72, axle - L * 0.28),
        ]
        cabin = [
            (0.72, axle - L * 0.28),
            (0.98, axle - L * 0.28),
            (0.95, axle - L * 0.4),
            (0.72, axle - L * 0.4),
        ]
        cargo = _pick(rng, [body, (150, 150, 155), (40, 70, 140), body])
        p.d.rectangle(
            (min(X(0.0), X(0.7)), axle - L * 0.42, max(X(0.0), X(0.7)), axle + wheel * 0.3), fill=cargo
        )
        if cargo == body:
            p.m.rectangle(
                (min(X(0.0), X(0.7)), axle - L * 0.42, max(X(0.0), X(0.7)), axle + wheel * 0.3), fill=255
            )
        p.part(
            "rectangle",
            (min(X(0.0), X(0.7)), axle + wheel * 0.1, max(X(0.0), X(0.7)), axle + wheel * 0.3),
            (40, 40, 40),
        )
    # the brand's proportions: glasshouse height, and for cars bonnet / boot length
    (f0, ya), (f1, _), (f2, yb), (f3, _) = cabin
    yb = ya - (ya - yb) * s["roof"]
    if t in ("Sedan", "SUV", "Minivan"):
        f1, f2 = f1 - s["nose"], f2 - s["nose"]
        if t == "Sedan":
            f0, f3 = f0 + s["tail"], f3 + s["tail"]
        else:  # the tailgate's slope
            f3 = max(f0, f3 + s["tail"])
    cabin = [(f0, ya), (f1, ya), (f2, yb), (f3, yb)]
    p.body("polygon", [(X(f), y) for f, y in base], body)
    p.body("polygon", [(X(f), y) for f, y in cabin], body)
    inset = (ya - yb) * 0.16
    if design.trim == "black-roof":  # two-tone: the roof panel in black
        p.part("polygon", [(X(f3 - 0.01), yb), (X(f2 + 0.01), yb), (X(f2 + 0.005), yb + inset * 1.3),
                           (X(f3 - 0.005), yb + inset * 1.3)], _TRIM_BLACK)  # fmt: skip
    # windows: inset of the cabin
    if t == "Bus" or t == "Microbus":
        n = 7 if t == "Bus" else 3
        for k in range(n):
            a, b = 0.03 + k * 0.95 / n, 0.03 + (k + 0.82) * 0.95 / n
            top = yb + inset * (2.0 if design.trim == "black-roof" else 1.0)
            p.part("rectangle", (min(X(a), X(b)), top, max(X(a), X(b)), ya - inset), _GLASS)
    else:
        top = yb + inset * (1.8 if design.trim == "black-roof" else 1.0)
        win = [
            (X(f0 + 0.04), ya - inset * 0.5),
            (X(f1 - 0.04), ya - inset * 0.5),
            (X(f2 - 0.02), top),
            (X(f3 + 0.02), top),
        ]
        p.part("polygon", win, _GLASS)
        mid = (f0 + f1) / 2
        p.part("line", (X(mid), ya, X(mid), top), body, width=SS * 2)
    if design.trim == "chrome-belt":  # chrome line under the windows, black sill cladding
        p.part("line", (X(f0), ya, X(f1), ya), _CHROME, width=int(max(SS * 2, L * 0.014)))
        p.part("rectangle", (min(X(0.0), X(1.0)), axle + wheel * 0.05, max(X(0.0), X(1.0)),
                             axle + wheel * 0.4), _TRIM_BLACK)  # fmt: skip
    # lights, wheels, emblem
    lh = L * 0.035 * s["lamp_h"]
    lw = L * 0.2 * s["lamp_w"]
    ly = axle - L * (0.065 + s["lamp_y"])
    _lamp(p, design.lamp, X(1.0 - lw / L * 0.5), ly, lw, lh, (240, 235, 200), -face)
    _lamp(p, design.lamp, X(lw / L * 0.5), ly - L * 0.01, lw, lh, (200, 20, 20), face)
    wheels = (0.18, 0.82) if t != "Truck" else (0.12, 0.3, 0.85)
    for f in wheels:
        _wheel(p, design.rim, X(f), axle, wheel)
    _emblem(p, v.brand or BRANDS[0], X(0.86), axle - L * 0.06 - wheel * 0.2, max(SS * 4, L * 0.045))


def _vehicle_face(
    p: _Painter,
    v: VehicleAttributes,
    rng: SynthRandom,
    body,
    w: int,
    h: int,
    rear: bool,
    elevated: bool,
    jitter: SynthRandom,
) -> None:
    """Front or rear view; `elevated` (camera domain) shows the roof and bonnet from above."""
    t = v.type
    design = brand_design(v.brand or BRANDS[0])
    s = _scaled(design, jitter)
    roof_scale = 1.0 + (s["roof"] - 1.0) * 0.5
    rel_h = {"Sedan": 0.55, "SUV": 0.78, "Minivan": 0.88, "Microbus": 1.0, "Bus": 1.15, "Truck": 1.0}[t]
    rel_h *= roof_scale
    rel_w = {"Sedan": 1.0, "SUV": 1.0, "Minivan": 0.98, "Microbus": 0.95, "Bus": 1.1, "Truck": 1.05}[t]
    vw = w * rng.uniform(0.55, 0.8)
    vh = vw * rel_h / rel_w
    if vh > h * 0.92:  # keep the type's proportions: shrink both
        vw, vh = vw * h * 0.92 / vh, h * 0.92
    x0 = (w - vw) / 2 + rng.uniform(-0.05, 0.05) * w
    y1 = h * rng.uniform(0.9, 0.98)
    y0 = y1 - vh
    glass_frac = {"Sedan": 0.38, "SUV": 0.35, "Minivan": 0.42, "Microbus": 0.45, "Bus": 0.55, "Truck": 0.4}[t]
    glass_frac *= roof_scale
    roof = vh * (0.12 if elevated else 0.03)
    if t == "Truck" and not rear:
        cargo = _pick(rng, [(150, 150, 155), (40, 70, 140), body])
        p.d.rectangle((x0 - vw * 0.04, y0 - vh * 0.05, x0 + vw * 1.04, y0 + vh * 0.3), fill=cargo)
    if t == "Bus" or t == "Microbus" or t == "Truck":
        p.body("rounded_rectangle", (x0, y0, x0 + vw, y1 - vh * 0.05), body, radius=int(vw * 0.06))
    else:
        shoulder = vh * (glass_frac + 0.04)
        taper = vw * (0.14 if t == "Sedan" else 0.08)
        p.body(
            "polygon",
            [
                (x0 + taper, y0),
                (x0 + vw - taper, y0),
                (x0 + vw, y0 + shoulder),
                (x0 + vw, y1 - vh * 0.05),
                (x0, y1 - vh * 0.05),
                (x0, y0 + shoulder),
            ],
            body,
        )
    gy0, gy1 = y0 + roof + vh * 0.04, y0 + roof + vh * glass_frac
    if design.trim == "black-roof":  # two-tone: black roof panel above the glass
        p.part("rectangle", (x0 + vw * 0.16, y0, x0 + vw * 0.84, gy0), _TRIM_BLACK)
    elif elevated:  # roof seen from above, a lighter shade of the body colour
        light = tuple(int(min(255, c * 1.12 + 12)) for c in body)
        p.body("rectangle", (x0 + vw * 0.16, y0, x0 + vw * 0.84, y0 + roof), light)
    # windscreen / rear window
    inset = vw * (0.16 if t in ("Sedan", "SUV", "Minivan") else 0.06)
    p.part(
        "polygon",
        [(x0 + inset, gy0), (x0 + vw - inset, gy0), (x0 + vw - vw * 0.06, gy1), (x0 + vw * 0.06, gy1)],
        _jitter(rng, _GLASS, 12),
    )
    if t == "Bus" and not rear:
        p.part(
            "rectangle", (x0 + vw * 0.15, y0 + vh * 0.02, x0 + vw * 0.85, gy0 - vh * 0.005), (230, 120, 20)
        )
    if design.trim == "chrome-belt":  # chrome bar under the glass, black lower bumper
        p.part("rectangle", (x0 + vw * 0.04, gy1 + vh * 0.005, x0 + vw * 0.96, gy1 + vh * 0.035), _CHROME)
        p.part("rectangle", (x0, y1 - vh * 0.2, x0 + vw, y1 - vh * 0.05), _TRIM_BLACK)
    # lights (the brand's shape and size; tail lights red), grille, plate, emblem, wheels
    ly = gy1 + vh * (0.08 + s["lamp_y"])
    lw, lh = vw * s["lamp_w"], vh * 0.07 * s["lamp_h"]
    light_rgb = (200, 25, 25) if rear else (240, 238, 215)
    ey = ly
    if not rear:  # the grille first: the lamps sit over its ends
        gy_0 = ly - lh * 0.5
        gh = vw * 0.1 * s["grille_h"]
        _grille(p, design.grille, x0 + vw / 2, gy_0, vw * s["grille_w"], gh)
        ey = gy_0 + gh * 0.5
    for sgn in (-1, 1):
        cxl = x0 + vw / 2 + sgn * (vw / 2 - vw * 0.05 - lw / 2)
        _lamp(p, design.lamp, cxl, ly, lw, lh, light_rgb, sgn)
    _emblem(p, v.brand or BRANDS[0], x0 + vw / 2, ey, max(SS * 4, vw * 0.06))
    py = y1 - vh * 0.17
    p.part(
        "rectangle",
        (x0 + vw * 0.4, py, x0 + vw * 0.6, py + vh * 0.07),
        _pick(rng, [(30, 60, 170), (220, 190, 30)]),
    )
    for sgn in (-1, 1):
        wx = x0 + vw / 2 + sgn * vw * 0.38
        p.part("rectangle", (wx - vw * 0.07, y1 - vh * 0.07, wx + vw * 0.07, y1), (15, 15, 15))


def _render_vehicle(
    record: Record, rng: SynthRandom, domain: Domain, jitter: SynthRandom, view_override: str | None = None
) -> tuple[Image.Image, Image.Image, tuple[int, int]]:
    assert record.vehicle is not None
    v = resolve_vehicle(record.vehicle, rng)
    camera = domain == "camera"
    r = rng.random()
    if camera:
        view = "front" if r < 0.55 else ("rear" if r < 0.9 else "side")
    else:
        view = "side" if r < 0.55 else ("front" if r < 0.8 else "rear")
    view = view_override or view
    out_w = int(rng.integers(100, 241))
    aspect = rng.uniform(1.7, 2.4) if view == "side" else rng.uniform(1.15, 1.6)
    out_h = int(np.clip(out_w / aspect, 70, 150))
    out_w = max(out_w, int(out_h * 1.1))
    w, h = out_w * SS, out_h * SS
    img = _background(rng, w, h, "vehicle", domain)
    mask = Image.new("L", (w, h), 0)
    p = _Painter(img, mask)
    body = _jitter(rng, VEHICLE_RGB[v.color or "grey"], 10)
    if view == "side":
        _vehicle_side(p, v, rng, body, w, h, jitter)
    else:
        elevated = camera and rng.random() < 0.8
        _vehicle_face(p, v, rng, body, w, h, rear=view == "rear", elevated=elevated, jitter=jitter)
    return img, mask, (out_w, out_h)


# ---------------------------------------------------------------------------------------------- finishing
def _occlude(img: Image.Image, rng: SynthRandom, mask: Image.Image | None) -> None:
    """A pole, sign or another road user covering a strip at one side or the bottom."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    m = ImageDraw.Draw(mask) if mask is not None else None
    fill = _jitter(rng, _pick(rng, _CLOTH + [(90, 90, 90)]), 20)
    if rng.random() < 0.5:
        x = int(rng.uniform(0, 0.2) * w) if rng.random() < 0.5 else int(rng.uniform(0.8, 1.0) * w)
        box = (x - int(w * rng.uniform(0.04, 0.1)), 0, x + int(w * rng.uniform(0.04, 0.1)), h)
    else:
        box = (0, int(h * rng.uniform(0.82, 0.92)), w, h)
    d.rectangle(box, fill=fill)
    if m is not None:
        m.rectangle(box, fill=0)


def _finish(
    img: Image.Image, rng: SynthRandom, size: tuple[int, int], domain: Domain, kind: str
) -> Image.Image:
    """Shrink, then lighting, colour cast, blur, noise, camera-domain degradation and JPEG artefacts."""
    img = img.reduce(SS)
    camera = domain == "camera" and kind == "vehicle"
    if camera and rng.random() < 0.7:  # low-resolution surveillance frame
        f = rng.uniform(0.4, 0.7)
        small = img.resize((max(8, int(size[0] * f)), max(8, int(size[1] * f))), Image.Resampling.BILINEAR)
        img = small.resize(
            size, Image.Resampling.NEAREST if rng.random() < 0.3 else Image.Resampling.BILINEAR
        )
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.9)))
    gain = rng.uniform(0.65, 1.25)
    cast = [rng.normal(1.0, 0.035) for _ in range(3)]
    if camera:  # street-light / sensor colour casts, mild enough that hues stay readable
        tone = _pick(rng, [(0.95, 1.04, 1.0), (1.07, 1.0, 0.88), (0.93, 0.97, 1.08), (1.0, 1.0, 1.0)])
        cast = [c * t for c, t in zip(cast, tone, strict=True)]
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 0.9))  # washed-out camera colours
        if rng.random() < 0.15:
            gain *= 0.65  # dusk
    bias = rng.uniform(-12, 12)
    lut = np.clip(_RAMP[None, :] * (gain * np.array(cast, dtype=np.float32))[:, None] + bias, 0, 255)
    lut = lut.astype(np.int16)
    src = np.asarray(img)
    a = np.empty(src.shape, dtype=np.int16)
    for c in range(3):
        a[:, :, c] = lut[c][src[:, :, c]]
    sigma = rng.uniform(2, 9) if camera else rng.uniform(0, 4)
    if sigma > 0.5:
        tile = _noise_tile()
        y, x = rng.integers(0, tile.shape[0] - size[1]), rng.integers(0, tile.shape[1] - size[0])
        a += (tile[y : y + size[1], x : x + size[0]] * sigma).astype(np.int16)[:, :, None]
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(25, 60) if camera else rng.integers(45, 95)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def render_record_with_mask(
    record: Record, seed: int, domain: Domain = "web", vehicle_view: VehicleView | None = None
) -> tuple[Image.Image, Image.Image | None]:
    """The rendered crop and, for vehicles, the mask of visible body pixels (checks and debugging).

    `vehicle_view` forces side/front/rear instead of the domain's random choice (tests, figures).
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if vehicle_view not in (None, *VEHICLE_VIEWS):
        raise ValueError(f"vehicle_view must be one of {VEHICLE_VIEWS}, got {vehicle_view!r}")
    rng = record_rng(record, seed, domain)
    mask: Image.Image | None = None
    if record.kind == "vehicle":
        jitter = record_rng(record, seed, f"{domain}|design")
        img, mask, size = _render_vehicle(record, rng, domain, jitter, vehicle_view)
    else:
        img, size = _render_pedestrian(record, rng)
    if rng.random() < 0.2:
        _occlude(img, rng, mask)
    out = _finish(img, rng, size, domain, record.kind)
    if mask is not None:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return out, mask


def render_record(record: Record, seed: int, domain: Domain = "web") -> Image.Image:
    """One RGB crop for a label line; the same (record, seed, domain) always gives the same pixels."""
    return render_record_with_mask(record, seed, domain)[0]
