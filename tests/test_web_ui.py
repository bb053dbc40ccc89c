"""The browser UI in a real browser: Playwright driving Debian's chromium against a real server.

Why: browsers cannot send ``name:secret@host`` credentials, so the login form, the session
cookie and the pages are how people browse a pywharf repo; only a real browser shows that the
cookie round-trips, the README renders (and its scripts do not run), downloads work, logout
really refuses, and the pages fit a phone. Screenshots of the main pages are written to
``test-artifacts/web-ui/`` (git-ignored) for a person to look at.

``.ci/run`` installs chromium with apt-get; elsewhere the tests skip when it is missing (and
fail under CI, where it must be there).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import Server, fs_config
from test_upload_rules import REPO_ROOT, Dist, make_sdist, make_wheel, upload

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "web-ui"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
READ = "read-secret-00"

README = """\
# Wharf demo

A demo package with **bold text**, `inline code` and a table.

## Usage

```python
import wharf_demo
print(wharf_demo.VALUE)
```

| option | meaning |
| ------ | ------- |
| fast   | go fast |

<script>window.__pwned = "script";</script>
<img src="data:," onerror="window.__pwned = 'onerror'" alt="">
"""

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it with apt-get", pytrace=False)
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402
from playwright.sync_api import Error as PlaywrightError  # noqa: E402

pytestmark = pytest.mark.timeout(120)  # a stuck browser fails fast instead of after 300 s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def repo_server(server_factory, tmp_path: Path) -> tuple[Server, dict[str, Dist]]:
    """A server whose repo 'local' holds wharf-demo 1.0 (wheel + sdist), 2.0rc1 and other-tool 0.1."""
    server = server_factory(fs_config(), "--extra_index_url=")
    dists = {
        "wheel": make_wheel(tmp_path, name="wharf-demo", version="1.0", summary="Ships packages to the wharf",
                            description=README, requires_dist=["requests>=2.31", "packaging"],
                            project_urls=["Source, https://example.invalid/wharf-demo"]),
        "sdist": make_sdist(tmp_path, name="wharf-demo", version="1.0", summary="Ships packages to the wharf",
                            description=README),
        "pre": make_wheel(tmp_path, name="wharf-demo", version="2.0rc1", summary="Next wharf"),
        "other": make_wheel(tmp_path, name="other-tool", version="0.1", summary="Something else entirely",
                            description="Plain *reST* description.\n", description_content_type="text/x-rst"),
    }
    for dist in dists.values():
        response = upload(server, dist)
        assert response.status_code == 200, response.text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return server, dists


def shot(page: Page, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def log_in(page: Page, server: Server, secret: str) -> None:
    page.get_by_label("Repository").fill("local")
    page.get_by_label("Secret").fill(secret)
    page.get_by_role("button", name="Log in").click()


def test_login_browse_download_logout(browser: Browser, repo_server: tuple[Server, dict[str, Dist]]) -> None:
    server, dists = repo_server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(f"{message.text} {message.location['url']}")
            if message.type == "error" else None)
    page.on("response", lambda response: errors.append(f"{response.status} {response.url}")
            if response.status >= 400 else None)
    try:
        # Not logged in: the home page sends the browser to the login form.
        page.goto(f"{server.base}/")
        expect(page).to_have_url(re.compile(r"/login/\?next=%2F$"))
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        shot(page, "01-login")

        # A wrong secret re-shows the form with the error, keeping the repo name.
        log_in(page, server, "not-the-secret")
        expect(page.get_by_role("alert")).to_have_text("Invalid repository name or secret.")
        expect(page.get_by_label("Repository")).to_have_value("local")
        shot(page, "02-login-error")

        # The right one: the project list, with latest versions and summaries.
        log_in(page, server, READ)
        expect(page).to_have_url(f"{server.base}/")
        items = page.locator("#project-list > li")
        expect(items).to_have_count(2)
        demo = items.filter(has_text="wharf-demo")
        expect(demo.locator(".version-badge")).to_have_text("1.0")  # 2.0rc1 is a pre-release
        expect(demo).to_contain_text("Ships packages to the wharf")
        expect(page.get_by_role("navigation", name="Account")).to_contain_text("local")
        shot(page, "03-projects")

        # The filter box narrows the list as you type, and works without JS through ?q=.
        page.get_by_label("Filter projects by name or summary").fill("entirely")
        expect(items.filter(has_text="other-tool")).to_be_visible()
        expect(demo).to_be_hidden()
        expect(page.locator("#filter-status")).to_have_text("1 of 2 projects match “entirely”.")
        shot(page, "04-projects-filtered")
        page.goto(f"{server.base}/?q=wharf")
        expect(page.locator("#project-list > li")).to_have_count(1)

        # The project page: rendered README (its scripts inert), details, install lines, files.
        page.get_by_role("link", name=re.compile("wharf-demo")).click()
        expect(page).to_have_url(f"{server.base}/project/wharf-demo/")
        expect(page.get_by_role("heading", level=1)).to_contain_text("wharf-demo")
        readme = page.locator(".readme-body")
        expect(page.get_by_role("heading", level=1)).to_have_count(1)  # README headings nest below
        expect(readme.get_by_role("heading", name="Wharf demo", level=3)).to_be_visible()
        expect(readme.get_by_role("heading", name="Usage", level=4)).to_be_visible()
        expect(readme.locator("strong")).to_have_text("bold text")
        expect(readme.locator("table td").first).to_have_text("fast")
        expect(readme.locator("pre")).to_contain_text("import wharf_demo")
        assert readme.locator("script").count() == 0
        assert page.evaluate("window.__pwned") is None, "a script from the README ran"
        expect(page.locator(".details")).to_contain_text(">=3.8")
        expect(page.locator(".deps")).to_contain_text("requests>=2.31")
        expect(page.get_by_role("link", name="Source")).to_have_attribute("href", "https://example.invalid/wharf-demo")
        index_url = f"{server.base}/repos/local/simple/"  # the repository's own URL (issue 15)
        expect(page.locator("#pip-line")).to_have_text(f"pip install --index-url {index_url} wharf-demo")
        expect(page.locator("#uv-line")).to_have_text(f"uv add --index local={index_url} wharf-demo")
        assert READ not in page.content() and "write-secret" not in page.content()
        rows = page.locator("table.files tbody tr")
        expect(rows).to_have_count(2)
        wheel = dists["wheel"]
        wheel_row = rows.filter(has_text=wheel.filename)
        expect(wheel_row).to_contain_text(wheel.sha256)
        expect(wheel_row).to_contain_text("available")
        expect(wheel_row.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
        expect(page.locator(".versions")).to_contain_text("2.0rc1")
        shot(page, "05-project")

        # Download a file through the session cookie, byte-identical to the upload.
        with page.expect_download() as download_info:
            wheel_row.get_by_role("link", name=wheel.filename).click()
        download = download_info.value
        assert download.suggested_filename == wheel.filename
        assert hashlib.sha256(Path(download.path()).read_bytes()).hexdigest() == wheel.sha256

        # The API pages work in the browser too (the session cookie, no basic auth).
        for path in ("/simple/", "/simple/wharf-demo/", "/pypi/wharf-demo/json"):
            assert page.goto(f"{server.base}{path}").status == 200, path
        assert errors == [], errors

        # Log out: the cookie is gone and everything is refused again.
        page.goto(f"{server.base}/project/wharf-demo/")
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/login/\?logged_out=1$"))
        expect(page.get_by_role("status")).to_have_text("You are logged out.")
        shot(page, "06-logged-out")
        assert [c for c in context.cookies() if c["name"] == "pywharf_session"] == []
        # The browser gets the basic-auth challenge (401), not the page it cached while logged in
        # (logout clears the cache); headless chromium reports a challenge it cannot answer so.
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            page.goto(f"{server.base}/simple/")
        for path in ("/simple/", f"/simple/wharf-demo/{wheel.filename}", "/pypi/wharf-demo/json"):
            assert context.request.get(f"{server.base}{path}").status == 401, path  # the context's cookies
        page.goto(f"{server.base}/project/wharf-demo/")
        expect(page).to_have_url(re.compile(r"/login/\?next="))
    finally:
        context.close()


def test_phone_layout_and_login_return_path(browser: Browser, repo_server: tuple[Server, dict[str, Dist]]) -> None:
    """On a phone-sized screen nothing scrolls sideways, and login returns to the page asked for."""
    server, _ = repo_server
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(f"{server.base}/project/wharf-demo/1.0/")
        expect(page).to_have_url(re.compile(r"/login/\?next=%2Fproject%2Fwharf-demo%2F1.0%2F$"))
        shot(page, "07-phone-login")
        log_in(page, server, READ)
        expect(page).to_have_url(f"{server.base}/project/wharf-demo/1.0/")
        expect(page.locator(".readme-body h3")).to_have_text("Wharf demo")  # README h1, under the page's h2
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "page scrolls sideways"
        shot(page, "08-phone-project")
        page.goto(f"{server.base}/")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        shot(page, "09-phone-projects")
        # A pre-release page says it is not the latest, and pins it in the install lines.
        page.goto(f"{server.base}/project/wharf-demo/2.0rc1/")
        expect(page.get_by_role("note")).to_contain_text("not the latest")
        expect(page.locator("#pip-line")).to_have_text(
            f"pip install --index-url {server.base}/repos/local/simple/ wharf-demo==2.0rc1")
        # A yanked release shows it, with the reason, on the page, the versions list and the files.
        response = requests.post(f"{server.base}/yank/wharf-demo/2.0rc1", data={"reason": "broken build"},
                                 auth=("local", "write-secret"), timeout=10)
        assert response.status_code == 200, response.text
        page.reload()
        expect(page.get_by_role("note")).to_contain_text("Yanked release")
        expect(page.get_by_role("note")).to_contain_text("broken build")
        expect(page.locator(".versions li").filter(has_text="2.0rc1")).to_contain_text("yanked")
        expect(page.locator("table.files tbody tr")).to_contain_text("yanked broken build")
        shot(page, "10-phone-yanked")
        assert page.goto(f"{server.base}/project/no-such-project/").status == 404
    finally:
        context.close()
    # Without a browser, the same server still speaks plain basic auth to tools.
    assert requests.get(f"{server.base}/simple/", auth=("local", READ), timeout=10).status_code == 200


def test_write_session_creates_and_revokes_a_token(browser: Browser,
                                                    repo_server: tuple[Server, dict[str, Dist]]) -> None:
    """Issue 14: the write secret's session creates a token in the browser (shown once), which
    works as ``__token__``, and revokes it."""
    server, _ = repo_server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{server.base}/tokens/")
        expect(page).to_have_url(re.compile(r"/login/\?next=%2Ftokens%2F$"))
        log_in(page, server, "write-secret")
        expect(page).to_have_url(f"{server.base}/tokens/")
        expect(page.get_by_text("No live tokens.")).to_be_visible()
        expect(page.get_by_label("Expires in (days)")).to_have_value("90")
        page.get_by_label("Scope").select_option("upload")
        page.get_by_label("Projects (upload tokens only)").fill("wharf-demo")
        page.get_by_label("Description").fill("browser test")
        page.get_by_role("button", name="Create token").click()
        expect(page.get_by_role("heading", name="New API token")).to_be_visible()
        token = page.locator("#new-token").inner_text().strip()
        assert re.fullmatch(r"pywharf-local-[0-9a-f]{16}-[A-Za-z0-9_-]{43}", token), token
        expect(page.locator("#twine-line")).to_contain_text(f"-u __token__ -p {token}")
        assert token not in page.url
        shot(page, "11-token-created")
        assert requests.get(f"{server.base}/simple/", auth=("__token__", token), timeout=10).status_code == 200

        page.get_by_role("link", name="Back to the API tokens").click()
        rows = page.locator("table.tokens tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("wharf-demo")
        expect(rows.first).to_contain_text("browser test")
        assert token not in page.content()
        shot(page, "12-tokens")
        rows.first.get_by_role("button", name=re.compile("^Revoke token")).click()
        expect(page.get_by_role("status")).to_contain_text("is revoked")
        expect(page.get_by_text("No live tokens.")).to_be_visible()
        assert requests.get(f"{server.base}/simple/", auth=("__token__", token), timeout=10).status_code == 401
    finally:
        context.close()
