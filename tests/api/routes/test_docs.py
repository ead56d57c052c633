"""/docs works without internet: the page and every asset it loads come from the service itself."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import Api

pytestmark = pytest.mark.anyio


async def test_docs_loads_only_assets_the_service_serves_itself(api_migrating: Api) -> None:
    client = api_migrating.client
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html, html
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"""url: ?["']([^"']+)["']""", html)
    assert set(urls) >= {"/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css", "/openapi.json"}, urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        r = await client.get(url)
        assert r.status_code == 200, (url, r.status_code)
    js = await client.get("/docs/static/swagger-ui-bundle.js")
    assert "javascript" in js.headers["content-type"] and "SwaggerUIBundle" in js.text
    assert (await client.get("/docs/static/swagger-ui.css")).headers["content-type"].startswith("text/css")
    assert (await client.get("/docs/oauth2-redirect")).status_code == 200


async def test_redoc_which_would_need_a_cdn_is_not_served(api_migrating: Api) -> None:
    assert (await api_migrating.client.get("/redoc")).status_code == 404
