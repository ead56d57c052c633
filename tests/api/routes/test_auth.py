"""POST /api/auth/token and `villager-shop users set-password`."""

from __future__ import annotations

import pytest

from tests.api.conftest import BALA, PASSWORD, Api, ShopDb
from tests.helpers import run_cli

pytestmark = pytest.mark.anyio


async def test_token_by_email_or_phone_and_wrong_passwords(api: Api) -> None:
    r = await api.client.post("/api/auth/token", data={"username": BALA, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["token_type"] == "bearer"
    me = await api.client.get("/api/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.json() == {"id": "00000000-0000-0000-0000-000000000002", "role": "customer"}
    assert (await api.client.post("/api/auth/token", data={"username": "900002", "password": PASSWORD})
            ).status_code == 200  # Bala's phone
    for username, password in ((BALA, "wrong-password"), ("nobody@v.in", PASSWORD), ("esha@v.in", PASSWORD),
                               ("a\x00b", PASSWORD)):
        r = await api.client.post("/api/auth/token", data={"username": username, "password": password})
        assert r.status_code in (401, 422), (username, r.status_code)
    assert (await api.client.post("/api/auth/token", data={"username": BALA})).status_code == 422


async def test_cli_sets_password_and_role_and_old_tokens_stop_working(api: Api, any_shop_db: ShopDb) -> None:
    old = await api.auth(BALA)
    done = run_cli("users", "set-password", BALA, "--password-stdin", "--role", "shopkeeper",
                   database_url=any_shop_db.url, input_text="a-new-password\n")
    assert done.returncode == 0, done.stderr
    assert (await api.client.get("/api/auth/me", headers=old)).status_code == 401
    new = {"Authorization": f"Bearer {await api.token(BALA, 'a-new-password')}"}
    assert (await api.client.get("/api/auth/me", headers=new)).json()["role"] == "shopkeeper"
    assert any_shop_db.scalar("SELECT role FROM users WHERE email = %s", (BALA,)) == "shopkeeper"

    bad = run_cli("users", "set-password", BALA, "--password-stdin", "--role", "king",
                  database_url=any_shop_db.url, input_text="a-new-password\n")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: role must be one of")
    missing = run_cli("users", "set-password", "ghost@v.in", "--password-stdin",
                      database_url=any_shop_db.url, input_text="a-new-password\n")
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
