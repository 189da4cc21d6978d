"""Screenshots of each dashboard page, for the README and for reviews.

``python -m headrace.ui.screenshots PROJECT_DIR OUT_DIR`` serves the project's dashboard on a free
loopback port, opens each page in headless Chromium (Debian's ``chromium``, driven by Playwright,
a dev dependency) and writes one PNG per page, reduced to a 256-colour palette (Pillow) when a
page would be larger than ``--max-kb``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_ARGS", "take_screenshots"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _save(png: bytes, path: Path, max_bytes: int) -> Path:
    if len(png) > max_bytes:
        from PIL import Image

        image = Image.open(io.BytesIO(png)).convert("RGB")
        reduced = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buffer = io.BytesIO()
        reduced.save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
    path.write_bytes(png)
    return path


def take_screenshots(
    project: Path,
    out: Path,
    *,
    chromium: str = "/usr/bin/chromium",
    width: int = 1280,
    max_height: int = 2600,
    max_bytes: int = 290_000,
) -> list[Path]:
    """One PNG per page of the project's dashboard (overview, first dataset with a quarantine,
    first model, its monitoring, the overview on a phone), written to ``out``."""
    from playwright.sync_api import sync_playwright

    from ..serve.runner import serve_in_thread
    from ..workspace import Workspace
    from .app import dashboard_app

    ws = Workspace.open(project)
    out.mkdir(parents=True, exist_ok=True)
    app: Any = dashboard_app(ws)
    dashboard = app.state.ui
    datasets = dashboard.dataset_names()
    sourced = [s.dataset for s in ws.project.sources.values() if s.dataset in datasets]
    dataset = next((d for d in sourced if ws.store.exists(ws.store.quarantine_name(d))), None)
    models = dashboard.model_names()
    pages = [("overview", "/ui/")]
    if dataset or datasets:
        pages.append(("dataset", f"/ui/datasets/{dataset or datasets[0]}"))
    if models:
        pages += [("model", f"/ui/models/{models[0]}"), ("monitoring", f"/ui/monitoring/{models[0]}")]
    written = []
    try:
        with serve_in_thread(app) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                viewport: Any
                for name, path, viewport in [
                    *[(n, p, {"width": width, "height": 900}) for n, p in pages],
                    ("overview-phone", "/ui/", {"width": 390, "height": 844}),
                ]:
                    context = browser.new_context(viewport=viewport, device_scale_factor=1)
                    tab = context.new_page()
                    tab.goto(f"{url}{path}")
                    height = min(int(tab.evaluate("document.documentElement.scrollHeight")), max_height)
                    clip: Any = {"x": 0, "y": 0, "width": viewport["width"], "height": height}
                    png = tab.screenshot(full_page=True, clip=clip)
                    written.append(_save(png, out / f"{name}.png", max_bytes))
                    context.close()
            finally:
                browser.close()
    finally:
        ws.close()
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, help="the project folder (headrace.yaml)")
    parser.add_argument("out", type=Path, help="where to write the PNG files")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--max-kb", type=int, default=290)
    args = parser.parse_args(argv)
    for path in take_screenshots(
        args.project, args.out, chromium=args.chromium, max_bytes=args.max_kb * 1000
    ):
        print(f"{path} ({path.stat().st_size // 1000} KB)")


if __name__ == "__main__":
    main()
