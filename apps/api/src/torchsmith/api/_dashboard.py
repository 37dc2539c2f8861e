"""The dashboard page at ``/`` and its static files, plotly.js included (no CDN needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.routing import BaseRoute, Mount, Route

HERE = Path(__file__).parent
STATIC_PREFIX = "/static"
router = APIRouter(include_in_schema=False)
_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
)


def plotly_js() -> Path:
    """plotly.min.js as shipped inside the plotly Python package (found without importing it)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the plotly package is not installed: pip install plotly")
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall plotly")
    return path


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    from . import __version__
    from ._app import API_PREFIX

    html = _templates.get_template("index.html").render(
        version=__version__,
        api_prefix=API_PREFIX,
        static_prefix=STATIC_PREFIX,
        read_access=request.app.state.settings.read_access,
    )
    return HTMLResponse(html)


async def _plotly(request: Request) -> FileResponse:
    try:
        return FileResponse(plotly_js(), media_type="text/javascript")
    except FileNotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc


def static_routes() -> list[BaseRoute]:
    """plotly.js first (more specific), then the package's own static directory."""
    return [
        Route(f"{STATIC_PREFIX}/vendor/plotly.min.js", _plotly, methods=["GET"]),
        Mount(STATIC_PREFIX, app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
