"""The Tokens page in Chromium: make a limited token, see it once, use it, revoke it."""

from __future__ import annotations

import re

import httpx2
import pytest
from django.contrib.auth.models import User
from playwright.sync_api import BrowserContext, expect

from aistack.accounts.models import ApiToken, Role, Workspace
from aistack.accounts.services import membership_set
from tests.browser import screenshot

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_token_made_on_the_page_is_limited_shown_once_and_revoked(
    logged_in: BrowserContext, asgi_url: str, alice: User, request: pytest.FixtureRequest
) -> None:
    team = Workspace.objects.create(name="Team", slug="team")
    membership_set(workspace=team, user=alice, role=Role.EDITOR)
    page = logged_in.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"http://{asgi_url}/tokens/")
    expect(page.get_by_text("You have no API tokens yet.")).to_be_visible()

    page.get_by_label("Name").fill("Claude on my laptop")
    page.get_by_label("Limit to workspace").select_option(label="Team")
    page.get_by_label("Read only").check()
    page.get_by_role("button", name="Make token").click()
    secret = page.get_by_label("Copy it now")
    expect(secret).to_have_value(re.compile(r"^ais_"))
    raw = secret.input_value()
    row = page.locator("table.tokens tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Claude on my laptop")
    expect(row).to_contain_text("Team")
    expect(row).to_contain_text("Read only")
    expect(row).to_contain_text(raw[:12])
    screenshot(page, request, "-made")

    # Its secret is not shown again, nor kept anywhere but as a hash.
    page.reload()
    expect(page.get_by_label("Copy it now")).to_have_count(0)
    assert raw not in page.content()
    assert ApiToken.objects.get().key_hash != raw

    # The token works, within its limits: it reads Team, and writes nothing.
    api = f"http://{asgi_url}/api/v1/documents"
    headers = {"Authorization": f"Bearer {raw}"}
    assert httpx2.get(api, headers=headers).status_code == 200
    assert httpx2.post(api, headers=headers,
                       json={"title": "T", "content": "C"}).status_code == 403

    page.get_by_role("button", name="Revoke Claude on my laptop").click()
    expect(page.get_by_text("Revoked the token Claude on my laptop")).to_be_visible()
    expect(page.get_by_text("You have no API tokens yet.")).to_be_visible()
    screenshot(page, request, "-revoked")
    assert httpx2.get(api, headers=headers).status_code == 401


def test_an_empty_name_is_refused_beside_the_field(
    logged_in: BrowserContext, asgi_url: str
) -> None:
    page = logged_in.new_page()
    page.goto(f"http://{asgi_url}/tokens/")
    page.get_by_label("Name").evaluate("field => field.removeAttribute('required')")
    page.get_by_role("button", name="Make token").click()
    expect(page.get_by_text("This field is required.")).to_be_visible()
    assert not ApiToken.objects.exists()
