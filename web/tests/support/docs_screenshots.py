"""Copy a chosen set of the browser tests' screenshots (web/tests/screenshots/, made by
`make web-test`) into docs/web/ for docs/web.md, as compact palette PNGs (256 colours, each well
under 150 KB). Run from the repository root after the tests:
`.venv/bin/python web/tests/support/docs_screenshots.py`. Uses Pillow, which the server depends on."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "web" / "tests" / "screenshots"
TARGET = ROOT / "docs" / "web"
LIMIT = 150 * 1024

# name in tests/screenshots -> name in docs/web
CHOSEN = {  # every screen, at 1280x800 and at 390x844
    "login-desktop": "login-desktop",
    "login-phone": "login-phone",
    "chat-thread-desktop": "chat-desktop",
    "chat-thread-phone": "chat-phone",
    "messenger-thread-desktop": "messenger-desktop",
    "messenger-thread-phone": "messenger-phone",
    "call-desktop": "call-desktop",
    "call-phone": "call-phone",
    "calls-desktop": "calls-desktop",
    "calls-phone": "calls-phone",
    "usage-desktop": "usage-desktop",
    "usage-phone": "usage-phone",
    "pricing-desktop": "pricing-desktop",
    "pricing-phone": "pricing-phone",
    "profile-desktop": "profile-desktop",
    "profile-phone": "profile-phone",
    "translator-desktop": "translator-desktop",
    "translator-phone": "translator-phone",
    "call-incoming-phone": "call-incoming-phone",
}


def compact(image: Image.Image, colors: int) -> Image.Image:
    rgb = image.convert("RGB")
    return rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def main() -> int:
    TARGET.mkdir(parents=True, exist_ok=True)
    missing = [name for name in CHOSEN if not (SOURCE / f"{name}.png").exists()]
    if missing:
        sys.stderr.write(f"missing in {SOURCE}: {', '.join(missing)} (run make web-test first)\n")
        return 1
    for name, out_name in CHOSEN.items():
        image = Image.open(SOURCE / f"{name}.png")
        out = TARGET / f"{out_name}.png"
        for colors in (256, 128, 64):
            compact(image, colors).save(out, optimize=True)
            if out.stat().st_size <= LIMIT:
                break
        size = out.stat().st_size // 1024
        sys.stdout.write(f"{out.relative_to(ROOT)}: {image.width}x{image.height}, {size} KB\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
