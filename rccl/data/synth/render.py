"""Rendering natural videos: identities (procedural faces or photos), camera motion, lighting, grain.

A natural frame is a face of identity X over a textured background, with smooth camera motion (pan, zoom,
slight roll), lighting of its own, talking and blinking, and camera grain on every frame. The fakes are
made from these frames by rccl.data.synth.forge.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from rccl.data.synth.params import SynthConfig, SynthError, seeded_rng

BOX_CENTRE_V, BOX_HALF = 0.25, 0.9  # the true face box in canonical face units (dlib-like: brows to chin)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# --------------------------------------------------------------------------------------------- randomness
def smooth_field(rng, n: int, size: int, amplitude: float) -> np.ndarray:
    """A smooth random field: n x n noise upsampled bicubically to size x size, scaled to `amplitude`."""
    small = rng.standard_normal((n, n)).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(img) * amplitude


# --------------------------------------------------------------------------------------------- identities
SKIN_LIGHT, SKIN_DARK = np.array([235, 198, 172]), np.array([105, 70, 50])
HAIR_COLOURS = np.array([[25, 20, 18], [70, 45, 25], [120, 80, 40], [190, 160, 100], [150, 60, 30], [140, 140, 140]])
IRIS_COLOURS = np.array([[70, 45, 25], [60, 100, 150], [70, 110, 70], [110, 110, 120]])
TEXTURE_RES = 96  # texture maps cover canonical [-1.6, 1.6]^2 (head and hair)


def identity_params(cfg: SynthConfig, name: str) -> dict:
    rng = seeded_rng(cfg, "identity", name)
    tone = rng.uniform(0, 1)
    skin = SKIN_LIGHT * (1 - tone) + SKIN_DARK * tone + rng.normal(0, 6, 3)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] + rng.normal(0, 8, 3)
    return {
        "skin": np.clip(skin, 0, 255),
        "hair": np.clip(hair, 0, 255),
        "iris": IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
        "lips": np.clip(skin * np.array([1.0, 0.62, 0.62]) + np.array([25, 0, 5]), 0, 255),
        "head_b": rng.uniform(1.15, 1.35),
        "hairline": rng.uniform(-0.75, -0.45),
        "eye_x": rng.uniform(0.32, 0.44), "eye_y": rng.uniform(-0.18, -0.04), "eye_r": rng.uniform(0.13, 0.18),
        "brow_dy": rng.uniform(0.17, 0.26), "brow_t": rng.uniform(0.035, 0.07),
        "nose_y": rng.uniform(0.25, 0.38), "nose_w": rng.uniform(0.07, 0.12),
        "mouth_y": rng.uniform(0.55, 0.68), "mouth_w": rng.uniform(0.24, 0.38),
        "beard": bool(rng.uniform() < 0.25),
        # identity-specific skin detail (pores, freckles): fine texture fixed in face coordinates
        "texture": smooth_field(rng, 40, TEXTURE_RES, 7.0) + smooth_field(rng, 12, TEXTURE_RES, 5.0),
    }


def _tex_lookup(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    n = tex.shape[0]
    iu = np.clip(((u + 1.6) / 3.2 * (n - 1)).round().astype(int), 0, n - 1)
    iv = np.clip(((v + 1.6) / 3.2 * (n - 1)).round().astype(int), 0, n - 1)
    return tex[iv, iu]


def ellipse(u, v, cx, cy, a, b, px):
    """Anti-aliased coverage (0..1) of an ellipse; px is one pixel in canonical units."""
    r = np.sqrt(((u - cx) / a) ** 2 + ((v - cy) / b) ** 2)
    return np.clip(0.5 - (r - 1) * min(a, b) / px, 0, 1)


class Canvas:
    """Canonical face coordinates (u, v) of every pixel of a frame, and the pixel window around a spot of
    the face, so that small features are drawn on a few pixels instead of the whole frame."""

    def __init__(self, c, scale, roll, size: int, shift=(0.0, 0.0)):
        self.size, self.scale, self.px = size, float(scale), 1.0 / float(scale)
        self.ox, self.oy = c[0] + shift[0] - 0.5, c[1] + shift[1] - 0.5
        self.cr, self.sr = math.cos(roll), math.sin(roll)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        dx, dy = xx - self.ox, yy - self.oy
        self.u = (self.cr * dx + self.sr * dy) / self.scale
        self.v = (-self.sr * dx + self.cr * dy) / self.scale

    def window(self, cu, cv, radius):
        """Slices of the frame covering canonical radius `radius` around (cu, cv), plus 2 pixels."""
        x = self.ox + self.scale * (self.cr * cu - self.sr * cv)
        y = self.oy + self.scale * (self.sr * cu + self.cr * cv)
        r = self.scale * radius + 2
        x0, x1 = max(0, int(x - r)), min(self.size, int(x + r) + 2)
        y0, y1 = max(0, int(y - r)), min(self.size, int(y + r) + 2)
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))

    def paint(self, rgb, colour, cu, cv, a, b, *, inside=None):
        """Draw an ellipse of `colour` (anti-aliased), optionally only where `inside` (another ellipse's
        (cu, cv, a, b)) covers."""
        sl = self.window(cu, cv, max(a, b))
        u, v = self.u[sl], self.v[sl]
        alpha = ellipse(u, v, cu, cv, a, b, self.px)
        if inside is not None:
            alpha = alpha * ellipse(u, v, *inside, self.px)
        rgb[sl] = rgb[sl] * (1 - alpha[..., None]) + np.asarray(colour, np.float32) * alpha[..., None]


def over(rgb, colour, alpha):
    a = alpha[..., None]
    return rgb * (1 - a) + np.asarray(colour, np.float32) * a


def render_face(p: dict, cv: Canvas, *, mouth_open: float, blink: float, with_hair: bool = True):
    """The face of identity p on a canvas: (rgb float32 HxWx3, head alpha HxW, hair alpha HxW)."""
    u, v, px = cv.u, cv.v, cv.px
    r2 = u ** 2 + (v * 0.8) ** 2
    rgb = np.empty(u.shape + (3,), np.float32)
    rgb[:] = p["skin"]
    rgb *= (1 - 0.16 * np.clip(r2, 0, 1.5) + _tex_lookup(p["texture"], u, v) / p["skin"].mean())[..., None]
    if p["beard"]:
        beard = np.clip((v - 0.35) / 0.25, 0, 1) * ellipse(u, v, 0, 0.2, 1.0, p["head_b"], px)
        rgb = over(rgb, p["hair"] * 0.8, 0.55 * beard)
    ex, ey, er = p["eye_x"], p["eye_y"], p["eye_r"]
    eh = 0.55 * er * max(0.08, 1 - blink)
    for sx in (-1, 1):
        cx = sx * ex
        cv.paint(rgb, (235, 232, 225), cx, ey, er, eh)
        cv.paint(rgb, p["iris"], cx, ey, 0.5 * er, 0.5 * er, inside=(cx, ey, er, eh))
        cv.paint(rgb, (15, 10, 10), cx, ey, 0.22 * er, 0.22 * er, inside=(cx, ey, er, eh))
        cv.paint(rgb, p["hair"] * 0.7, cx, ey - p["brow_dy"], 1.25 * er, p["brow_t"])
    sl = cv.window(0, (ey + p["nose_y"]) / 2, (p["nose_y"] - ey) / 2 + p["nose_w"])
    us, vs = u[sl], v[sl]
    nose = (np.clip(1 - np.abs(us) / p["nose_w"], 0, 1) * np.clip((vs - ey) / (p["nose_y"] - ey), 0, 1)
            * (vs < p["nose_y"]))
    rgb[sl] *= (1 - 0.12 * nose)[..., None]
    for sx in (-1, 1):
        cv.paint(rgb, p["skin"] * 0.45, sx * 0.6 * p["nose_w"], p["nose_y"], 0.045, 0.03)
    mh = 0.035 + 0.09 * mouth_open
    cv.paint(rgb, p["lips"], 0, p["mouth_y"], p["mouth_w"], mh + 0.03)
    if mouth_open > 0.05:
        cv.paint(rgb, (60, 20, 25), 0, p["mouth_y"], 0.85 * p["mouth_w"], mh)
    alpha = ellipse(u, v, 0, 0, 1.0, p["head_b"], px)
    hair = np.zeros_like(alpha)
    if with_hair:
        hair = ellipse(u, v, 0, -0.15, 1.12, p["head_b"] * 0.98, px) * np.clip(
            (p["hairline"] + 0.25 * u ** 2 - v) / px + 0.5, 0, 1)
        hair_rgb = p["hair"].astype(np.float32) * (1 + _tex_lookup(p["texture"], v, u) / 60)[..., None]
        rgb = rgb * (1 - hair[..., None]) + hair_rgb * hair[..., None]
        alpha = np.maximum(alpha, hair)
    return rgb, alpha, hair


# --------------------------------------------------------------------------------------------- photo faces
class PhotoFace:
    """An identity from a photo: dlib's box of the face in the photo maps onto the canonical face box."""

    def __init__(self, photo: Path):
        from rccl.data.faces import FaceCropper

        img = np.asarray(Image.open(photo).convert("RGB"))
        box = FaceCropper(detect_size=max(img.shape[:2])).detect(img)
        if box is None:
            box = FaceCropper(detect_size=max(img.shape[:2]), upsample=1).detect(img)
        if box is None:
            raise SynthError(f"{photo}: dlib finds no face in this photo; remove it from the faces folder")
        self.img = img.astype(np.float32)
        self.cx, self.cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        self.half = max(box[2] - box[0], box[3] - box[1]) / 2

    def sample(self, u, v):
        """Bilinear samples of the photo at canonical coordinates; outside the photo: its edge pixels."""
        x = self.cx + u * self.half / BOX_HALF
        y = self.cy + (v - BOX_CENTRE_V) * self.half / BOX_HALF
        h, w = self.img.shape[:2]
        x = np.clip(x, 0, w - 1.001)
        y = np.clip(y, 0, h - 1.001)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = (x - x0)[..., None], (y - y0)[..., None]
        im = self.img
        top = im[y0, x0] * (1 - fx) + im[y0, x0 + 1] * fx
        bot = im[y0 + 1, x0] * (1 - fx) + im[y0 + 1, x0 + 1] * fx
        return top * (1 - fy) + bot * fy


def photo_identities(faces_dir: Path) -> list[tuple[str, list[Path]]]:
    if not faces_dir.is_dir():
        raise SynthError(f"faces folder {faces_dir}: not a folder (expected one subfolder of photos per identity)")
    out = []
    for d in sorted(p for p in faces_dir.iterdir() if p.is_dir()):
        photos = sorted(p for p in d.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        if photos:
            out.append((d.name, photos))
    if len(out) < 2:
        raise SynthError(f"faces folder {faces_dir}: needs at least 2 subfolders with photos (one per identity), "
                         f"found {len(out)}")
    return out


# --------------------------------------------------------------------------------------------- natural videos
def motion(cfg: SynthConfig, key: str) -> dict:
    rng = seeded_rng(cfg, "motion", key)
    s = cfg.size
    return {
        "c0": np.array([s * rng.uniform(0.44, 0.56), s * rng.uniform(0.40, 0.50)]),
        "amp": s * rng.uniform(0.015, 0.045, 2), "freq": rng.uniform(0.4, 1.2, 2), "phase": rng.uniform(0, 6.3, 2),
        "scale": s * rng.uniform(0.2, 0.25), "zoom": rng.uniform(0.0, 0.06), "zoom_f": rng.uniform(0.2, 0.7),
        "roll": rng.uniform(-0.12, 0.12), "roll_amp": rng.uniform(0, 0.06), "roll_f": rng.uniform(0.3, 1.0),
        "talk_f": rng.uniform(1.5, 3.5), "talk_phase": rng.uniform(0, 6.3),
        "blinks": rng.uniform(0, cfg.n_frames / cfg.fps, 2),
        "gain": rng.uniform(0.8, 1.15), "cast": rng.normal(0, 0.05, 3), "light_dir": rng.uniform(0, 6.3),
        "light_amp": rng.uniform(0.05, 0.2), "grain": rng.uniform(2.5, 4.0),
        "pan": s * rng.uniform(-0.03, 0.03, 2),
        "bg": _background(rng, s),
        "shirt": rng.uniform(20, 220, 3),
    }


def _background(rng, s: int) -> np.ndarray:
    """A background 1.25x the frame (the camera pans over it): a gradient, soft blobs and fine texture."""
    n = int(s * 1.25)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    a, b = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    ang = rng.uniform(0, 6.3)
    t = (np.cos(ang) * xx + np.sin(ang) * yy)[..., None]
    bg = a * (1 - t) + b * t
    for _ in range(rng.integers(3, 7)):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.3)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        bg = bg * (1 - 0.7 * blob) + rng.uniform(20, 235, 3) * 0.7 * blob
    bg += smooth_field(rng, n // 3, n, 6.0)[..., None]
    return bg.astype(np.float32)


def _pose(m: dict, t: float):
    c = m["c0"] + m["amp"] * np.sin(2 * np.pi * m["freq"] * t + m["phase"])
    scale = m["scale"] * (1 + m["zoom"] * np.sin(2 * np.pi * m["zoom_f"] * t))
    roll = m["roll"] + m["roll_amp"] * np.sin(2 * np.pi * m["roll_f"] * t)
    return c, scale, roll


def true_box(c, scale, roll, size: int) -> list[int]:
    """The face box in frame pixels (dlib-like: brows to chin), the axis-aligned hull of the rotated box."""
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * BOX_HALF + [0, BOX_CENTRE_V]
    cr, sr = math.cos(roll), math.sin(roll)
    x = c[0] + scale * (cr * corners[:, 0] - sr * corners[:, 1])
    y = c[1] + scale * (sr * corners[:, 0] + cr * corners[:, 1])
    return [int(max(0, round(x.min()))), int(max(0, round(y.min()))),
            int(min(size, round(x.max()))), int(min(size, round(y.max())))]


def _expression(m: dict, t: float) -> tuple[float, float]:
    mouth = max(0.0, math.sin(2 * math.pi * m["talk_f"] * t + m["talk_phase"]))
    blink = max((max(0.0, 1 - abs(t - b) / 0.08) for b in m["blinks"]), default=0.0)
    return mouth, blink


class Face:
    """One identity's look, procedural or photo, rendered at a pose."""

    def __init__(self, cfg: SynthConfig, name: str, photos: list[Path] | None, video_key: str):
        self.params = identity_params(cfg, name)
        self.photo = None
        if photos:
            pick = seeded_rng(cfg, "photo", video_key).integers(len(photos))
            self.photo = PhotoFace(photos[pick])

    def render(self, cv: Canvas, mouth, blink, *, with_hair=True):
        if self.photo is None:
            return render_face(self.params, cv, mouth_open=mouth, blink=blink, with_hair=with_hair)
        rgb = self.photo.sample(cv.u, cv.v)
        alpha = ellipse(cv.u, cv.v, 0, 0.1, 1.2, 1.5, cv.px * 4)  # soft head outline around the photo's face
        return rgb, alpha, np.zeros_like(alpha)


def natural_frame(cfg, m, face, t, frame_rng):
    s = cfg.size
    c, scale, roll = _pose(m, t)
    cv = Canvas(c, scale, roll, s)
    u, v, px = cv.u, cv.v, cv.px
    off = (m["pan"] * t / max(1e-6, cfg.n_frames / cfg.fps) + s * 0.125).astype(int)
    frame = m["bg"][off[1]:off[1] + s, off[0]:off[0] + s].copy()
    shirt = np.clip((v - 1.7) / px + 0.5, 0, 1) * np.clip((1.9 - np.abs(u)) / px + 0.5, 0, 1)
    frame = over(frame, m["shirt"], shirt)
    neck = np.clip((0.42 - np.abs(u)) / px + 0.5, 0, 1) * (v > 0.5) * (v < 1.9)
    frame = over(frame, face.params["skin"] * 0.85, neck)
    mouth, blink = _expression(m, t)
    rgb, alpha, hair = face.render(cv, mouth, blink)
    frame = frame * (1 - alpha[..., None]) + rgb * alpha[..., None]
    frame = light(frame, m, u, v)
    grain = frame_rng.normal(0, m["grain"], frame.shape).astype(np.float32)
    return frame + grain, (c, scale, roll, mouth, blink, hair)


def light(frame, m, u, v):
    shade = 1 + m["light_amp"] * np.clip(np.cos(m["light_dir"]) * u + np.sin(m["light_dir"]) * v, -1.5, 1.5)
    return frame * (m["gain"] * (1 + m["cast"]))[None, None, :] * shade[..., None]
