"""`/docs`: Swagger UI from files shipped in the package (api/swagger, see VENDORED.txt there).
FastAPI's own page loads its script and style from a CDN, so on a machine without internet it stays
blank. ReDoc, which would need the same, is not served: `/docs` and `/openapi.json` cover it."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)

STATIC_PATH = "/docs/static"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
SWAGGER = resources.files("villager_shop.api") / "swagger"


def static_files() -> StaticFiles:
    return StaticFiles(directory=str(SWAGGER))


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """The interactive API documentation. Behind a proxy that strips a prefix, every URL keeps it
    (root_path). No validator badge: it would fetch an image from validator.swagger.io."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API documentation",
        swagger_js_url=f"{root}{STATIC_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_PATH}/favicon-32x32.png",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_PATH}",
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get(OAUTH2_REDIRECT_PATH)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """Where Swagger UI's OAuth2 login returns to (FastAPI serves the same page at this path)."""
    return get_swagger_ui_oauth2_redirect_html()
