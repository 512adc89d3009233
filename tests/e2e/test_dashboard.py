"""The web dashboard (/ui) in a real headless Chromium: Debian's ``chromium``, driven by
Playwright's Python API (never Playwright's own browser download). A real daemon on
127.0.0.1, real git repositories, the fake agents of tests/fakeagents and command agents.

Every browser wait is Playwright's (``expect`` polls until its timeout); no sleeps.
Each test has its own timeout (pytest-timeout). The board and job page screenshots of
the README (docs/screenshots/) are taken here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.daemon_fixture import Daemon, _new_daemon
from tests.gitutil import commit_file, git, init_repo
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
FAKES = ROOT / "tests" / "fakeagents"
SCREENSHOTS = ROOT / "docs" / "screenshots"


def screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    """A full-page screenshot: into docs/screenshots/ (the README's) when
    DISPATCHER_SCREENSHOTS=1, else into the test's temp dir, so a test run leaves the
    tree clean. Either way it is taken, and must be a PNG."""
    where = SCREENSHOTS if os.environ.get("DISPATCHER_SCREENSHOTS") == "1" else tmp_path
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


CHROMIUM = os.environ.get("DISPATCHER_TEST_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 20_000  # Playwright's waits (expect, clicks) give up after this
expect.set_options(timeout=WAIT_MS)
Agent = Callable[[str, str], str]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon whose PATH finds the fake agents first (claude prints stream-json)."""
    d = _new_daemon(
        tmp_path_factory.mktemp("ui"),
        PATH=f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}",
        IS_SANDBOX="1",  # the fake claude as root: what docs/agents/claude.md says to set
        DISPATCHER_MAX_PARALLEL="8",
        DISPATCHER_MAX_PARALLEL_PER_REPO="4",
    ).start()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(d.stop)
        cleanup.callback(d.cancel_active)  # first
        yield d


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the dashboard tests need Debian's chromium package "
            "(.ci/run installs it; or set DISPATCHER_TEST_CHROMIUM)"
        )
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield b
    b.close()


@pytest.fixture
def page(browser: Browser, ui: Daemon) -> Iterator[Page]:
    """A fresh browser context (no cookie yet), logged in through the form."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    p = context.new_page()
    p.on("dialog", lambda dialog: dialog.accept())  # the discard button asks first
    login(p, ui)
    yield p
    context.close()


def login(p: Page, d: Daemon) -> None:
    p.goto(f"{d.url}/ui/")
    expect(p).to_have_url(re.compile(r"/ui/login$"))
    p.get_by_label("API token").fill(d.token)
    p.get_by_role("button", name="Log in").click()
    expect(p.get_by_role("heading", name="Board")).to_be_visible()


@contextlib.contextmanager
def cookie_client(d: Daemon) -> Iterator[httpx.Client]:
    """An HTTP client logged in through the login form (it holds the session cookie)."""
    with httpx.Client(base_url=d.url, timeout=30) as c:
        r = c.post("/ui/login", data={"token": d.token})
        assert r.status_code == 303, r.text
        yield c


def csrf_of(c: httpx.Client, path: str = "/ui/") -> str:
    html = c.get(path).text
    found = re.search(r"hx-headers='\{&#34;X-CSRF-Token&#34;: &#34;([0-9a-f]+)&#34;\}'", html)
    if found is None:  # Jinja's tojson escapes differently across versions
        found = re.search(r"X-CSRF-Token[^0-9a-f]+([0-9a-f]{64})", html)
    assert found is not None, html[:2000]
    return found.group(1)


def finished_job(d: Daemon, name: str, prompt: str = "do it", **body: Any) -> dict[str, Any]:
    job = d.wait(d.submit(name, prompt, **body)["id"])
    assert job["state"] == "succeeded", job
    return job


def gated_job(d: Daemon, tmp_path: Path, agent: Agent, later: str) -> tuple[dict[str, Any], Path]:
    """A running job whose command prints a line, waits for the file ``gate`` (returned),
    then prints ``later`` and changes a file."""
    name = d.add_repo(init_repo(tmp_path / "app", files={"README.md": "hi\n"}))
    gate = tmp_path / "gate"
    script = agent(
        "slow.sh",
        'echo "first line from the agent"\n'
        f'while [ ! -e "{gate}" ]; do sleep 0.05; done\n'
        f'echo "{later}"\necho change > out.txt\n',
    )
    job = d.submit(name, "live log please", command=[script])
    d.wait(job["id"], {"running"})
    return job, gate


def open_job(p: Page, d: Daemon, job_id: int) -> None:
    p.goto(f"{d.url}/ui/jobs/{job_id}")
    expect(p.get_by_role("heading", name=re.compile(rf"Job #{job_id}\b"))).to_be_visible()


def state_badge(p: Page) -> Any:
    return p.locator("#job-header h1 .state")


# ------------------------------------------------------------------ login and auth


def test_login_exchanges_the_token_for_an_httponly_strict_cookie_and_logout_ends_it(
    browser: Browser, ui: Daemon
) -> None:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    p = context.new_page()
    p.goto(f"{ui.url}/ui/jobs/1")
    expect(p).to_have_url(re.compile(r"/ui/login$"))  # not logged in: the login page
    p.get_by_label("API token").fill("wrong-" + ui.token)
    p.get_by_role("button", name="Log in").click()
    expect(p.get_by_role("alert")).to_have_text("wrong token")
    assert not [c for c in context.cookies() if c["name"] == "dispatcher_ui"]

    login(p, ui)
    (cookie,) = [c for c in context.cookies() if c["name"] == "dispatcher_ui"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert ui.token not in cookie["value"]
    assert ui.token not in p.content() and ui.token not in p.url
    assert p.evaluate("document.cookie") == ""  # HttpOnly: no script can read it

    p.get_by_role("button", name="Log out").click()
    expect(p).to_have_url(re.compile(r"/ui/login$"))
    assert not [c for c in context.cookies() if c["name"] == "dispatcher_ui"]
    p.goto(f"{ui.url}/ui/")
    expect(p).to_have_url(re.compile(r"/ui/login$"))
    context.close()


def test_a_state_changing_request_without_the_csrf_token_is_refused(
    ui: Daemon, tmp_path: Path, agent: Agent
) -> None:
    name = ui.add_repo(init_repo(tmp_path / "app", files={"README.md": "hi\n"}))
    gate = tmp_path / "gate"
    hold = agent("hold.sh", f'while [ ! -e "{gate}" ]; do sleep 0.05; done\n')
    job = ui.submit(name, "wait", command=[hold])
    ui.wait(job["id"], {"running"})
    with cookie_client(ui) as c:
        no_token = c.post(f"/ui/jobs/{job['id']}/cancel")
        wrong = c.post(f"/ui/jobs/{job['id']}/cancel", headers={"X-CSRF-Token": "0" * 64})
        assert (no_token.status_code, wrong.status_code) == (403, 403), no_token.text
        assert "CSRF" in no_token.text
        assert ui.job(job["id"])["state"] == "running"  # nothing happened
        # A bearer token counts for nothing on /ui either.
        bearer = httpx.post(
            f"{ui.url}/ui/jobs/{job['id']}/cancel",
            headers={"Authorization": f"Bearer {ui.token}"},
        )
        assert bearer.status_code == 401
        good = c.post(f"/ui/jobs/{job['id']}/cancel", headers={"X-CSRF-Token": csrf_of(c)})
        assert good.status_code == 200, good.text
    assert ui.wait(job["id"])["state"] == "canceled"


def test_a_follow_up_too_long_gets_one_line_not_a_500(ui: Daemon, tmp_path: Path) -> None:
    """Under the body limit but over the prompt's: the REST route's one-line refusal, in a
    fragment htmx shows; the job is not followed up."""
    name = ui.add_repo(init_repo(tmp_path / "app", files={"README.md": "hi\n"}))
    job = finished_job(ui, name, command=["sh", "-c", "echo x > x.txt"])
    with cookie_client(ui) as c:
        r = c.post(
            f"/ui/jobs/{job['id']}/followup",
            data={"prompt": "p" * 1_000_001},
            headers={"X-CSRF-Token": csrf_of(c), "HX-Request": "true"},
        )
    assert r.status_code == 422, r.text[:500]
    assert "invalid follow-up: " in r.text and "1000000 characters" in r.text
    assert ui.job(job["id"])["followed_by"] is None


def sse_stream(c: httpx.Client, path: str, **headers: str) -> Iterator[tuple[str, str, str]]:
    """The (event, id, data) of a job's log stream as they come, to its ``end``."""
    with c.stream("GET", path, headers=headers) as resp:
        assert resp.status_code == 200
        event, ident, data = "", "", []
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("id:"):
                ident = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and event:
                yield event, ident, "\n".join(data)
                if event == "end":
                    return
                event, ident, data = "", "", []


def test_log_event_ids_are_file_and_byte_offsets_a_reconnect_resumes_from(
    ui: Daemon, tmp_path: Path, agent: Agent
) -> None:
    """Each id is ``<inode>:<offset>`` counted in the file's bytes (a partial line's
    invalid UTF-8 is one byte each, not three); resuming from an id sends only what
    follows it, and an id of another file (the log rotated since) starts the current
    file from 0."""
    name = ui.add_repo(init_repo(tmp_path / "app", files={"README.md": "hi\n"}))
    gate = tmp_path / "gate"
    # The markers are put together by printf, so the daemon's note of the argv lacks them.
    script = agent(
        "partial.sh",
        "printf 'one%s\\n' MARK; printf 'par\\377\\376'\n"
        f"while [ ! -e \"{gate}\" ]; do sleep 0.05; done\nprintf 'tial%s\\n' MARK\n",
    )
    job = ui.submit(name, "partial line", command=[script])
    log_file = ui.state_dir / "jobs" / str(job["id"]) / "agent.log"
    base = f"/ui/jobs/{job['id']}/log"
    with cookie_client(ui) as c:
        ui.wait(job["id"], {"running"})
        wait_until(lambda: log_file.exists() and b"par\xff\xfe" in log_file.read_bytes(), "output")
        stream = sse_stream(c, base + "?offset=0")
        first = next(e for e in stream if "oneMARK" in e[2])
        gate.touch()
        rest = list(stream)
        raw, inode = log_file.read_bytes(), log_file.stat().st_ino
        file_part, _, off = first[1].partition(":")
        assert int(file_part) == inode
        assert raw[: int(off)].endswith(b"oneMARK\n"), (off, raw)
        assert raw[int(off) :].startswith(b"par\xff\xfetialMARK\n"), (off, raw)
        assert rest[-1][0] == "end" and rest[-1][1] == f"{inode}:{len(raw)}"
        again = " ".join(e[2] for e in sse_stream(c, base, **{"Last-Event-ID": first[1]}))
        assert "tialMARK" in again and "oneMARK" not in again
        stale = sse_stream(c, base, **{"Last-Event-ID": f"{inode + 1}:{off}"})
        assert "oneMARK" in " ".join(e[2] for e in stale)  # another file: from its start


def test_the_session_cookie_is_refused_on_the_rest_api(ui: Daemon) -> None:
    with cookie_client(ui) as c:
        assert c.get("/ui/").status_code == 200
        for method, path in (("GET", "/jobs"), ("GET", "/repos"), ("POST", "/jobs")):
            r = c.request(method, path, json={})
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
    # Only the login page and the static files are open on /ui.
    assert httpx.get(f"{ui.url}/ui/static/vendor/htmx/htmx.min.js").status_code == 200
    assert httpx.get(f"{ui.url}/ui/login").status_code == 200
    assert httpx.get(f"{ui.url}/ui/board").status_code == 303


def test_an_unknown_job_is_a_404_page_not_a_traceback(page: Page, ui: Daemon) -> None:
    for path in ("/ui/jobs/987654321", "/ui/jobs/not-a-number", "/ui/jobs/0", "/ui/nowhere"):
        response = page.goto(f"{ui.url}{path}")
        assert response is not None and response.status == 404, path
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        assert "Traceback" not in page.content()


# ------------------------------------------------------------------ board and live log


def test_a_running_agents_log_lines_appear_live_and_the_board_moves_the_job(
    page: Page, ui: Daemon, tmp_path: Path, agent: Agent
) -> None:
    job, gate = gated_job(ui, tmp_path, agent, "second line, written later")
    name = job["repo"]

    page.goto(f"{ui.url}/ui/?repo={name}")
    running = page.locator("#col-running")
    expect(running.locator(f"[data-job='{job['id']}']")).to_be_visible()

    open_job(page, ui, job["id"])
    page.evaluate("window.__same_page = true")
    log = page.locator("#log")
    expect(log).to_contain_text("first line from the agent")
    expect(log).not_to_contain_text("second line")
    gate.touch()
    expect(log).to_contain_text("second line, written later")
    expect(state_badge(page)).to_have_text("succeeded")  # the header follows by itself
    assert page.evaluate("window.__same_page") is True  # no reload happened

    page.goto(f"{ui.url}/ui/?repo={name}")
    page.evaluate("window.__same_page = true")
    review = page.locator("#col-review")
    expect(review.locator(f"[data-job='{job['id']}']")).to_be_visible()
    expect(review.locator(".count")).to_have_text("1")
    # A job queued now shows up without a reload.
    queued = ui.submit(name, "another one", command=["true"])
    expect(page.locator(f"[data-job='{queued['id']}']")).to_be_visible()
    assert page.evaluate("window.__same_page") is True


def test_the_agents_json_output_reads_as_messages_and_tool_calls(
    page: Page, ui: Daemon, tmp_path: Path
) -> None:
    name = ui.add_repo(init_repo(tmp_path / "app", files={"README.md": "hi\n"}))
    job = finished_job(ui, name, "Note the prompt, then stop", agent="claude")
    open_job(page, ui, job["id"])
    log = page.locator("#log")
    expect(log.locator(".ev-tool")).to_contain_text("Write")
    expect(log.locator(".ev-message").first).to_be_visible()
    expect(log.locator(".ev-final")).to_contain_text("cost $0.0123")
    assert '"type":' not in log.inner_text()  # no raw JSON lines
    expect(page.locator("#job-header")).to_contain_text("2112 in, 345 out")  # tokens
    expect(page.locator("table.diff").first).to_be_visible()
    screenshot(page, "job.png", tmp_path)
    page.get_by_role("button", name="Side by side").click()
    split = page.locator("table.split[data-path='AGENT_NOTES.md']")
    expect(split).to_contain_text("## claude")
    expect(split.get_by_role("button", name="Comment on AGENT_NOTES.md line 1")).to_be_visible()
    expect(page.get_by_role("button", name="Side by side")).to_have_attribute(
        "aria-pressed", "true"
    )


def test_board_filters_and_screenshot(page: Page, ui: Daemon, tmp_path: Path) -> None:
    name = ui.add_repo(init_repo(tmp_path / "app", files={"README.md": "hi\n"}), "shop")
    finished_job(ui, name, "Add a search box to the product list", agent="claude")
    finished_job(ui, name, "Fix the rounding of prices in the cart", command=["true"])
    page.goto(f"{ui.url}/ui/")
    page.get_by_label("Repo", exact=True).select_option(name)
    page.get_by_label("Text").fill("rounding")
    expect(page.locator("#col-done .card")).to_have_count(1)
    expect(page.locator("#col-done")).to_contain_text("rounding of prices")
    expect(page.locator("#col-review .card")).to_have_count(0)
    page.get_by_label("Text").fill("")
    page.get_by_label("Agent").fill("claude")
    expect(page.locator("#col-review .card")).to_have_count(1)
    expect(page.locator("#col-done .card")).to_have_count(0)
    page.get_by_label("Agent").fill("")
    expect(page.locator("#col-done .card")).to_have_count(1)
    expect(page.locator(".repos-summary")).to_contain_text("$0.0123")  # today's cost
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: one column
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 900})
    screenshot(page, "board.png", tmp_path)


# ------------------------------------------------------------------ review and land


def test_comments_on_diff_lines_go_as_one_followup(page: Page, ui: Daemon, tmp_path: Path) -> None:
    name = ui.add_repo(init_repo(tmp_path / "app", files={"README.md": "hi\n"}))
    job = finished_job(ui, name, "Write the notes", agent="claude")
    open_job(page, ui, job["id"])
    notes = page.locator("table[data-path='AGENT_NOTES.md']")
    notes.get_by_role("button", name="Comment on AGENT_NOTES.md line 1").click()
    page.locator("#composer-text").fill("Use a level-one heading here")
    page.get_by_role("button", name="Add comment").click()
    notes.get_by_role("button", name="Comment on AGENT_NOTES.md line 3").click()
    page.locator("#composer-text").fill("Quote the prompt instead")
    page.get_by_role("button", name="Add comment").click()
    page.get_by_role("button", name="Send 2 comments as one follow-up").click()
    notice = page.locator("#result")
    expect(notice).to_contain_text(f"job {job['id']} followed up as job")
    new_id = int(re.findall(r"as job (\d+)", notice.inner_text())[0])
    new = ui.wait(new_id)
    assert new["followup_of"] == job["id"]
    assert "AGENT_NOTES.md line 1: Use a level-one heading here" in new["prompt"]
    assert "AGENT_NOTES.md line 3: Quote the prompt instead" in new["prompt"]
    assert new["state"] == "succeeded"


def test_merge_on_the_page_moves_the_branch(page: Page, ui: Daemon, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "app", files={"README.md": "hi\n"})
    name = ui.add_repo(repo)
    job = finished_job(ui, name, "notes", agent="claude")
    before = git(repo, "rev-parse", "main")
    open_job(page, ui, job["id"])
    page.get_by_label("Strategy").select_option("squash")
    page.get_by_role("button", name="Merge").click()
    expect(page.locator("#result")).to_contain_text("squashed into main")
    expect(state_badge(page)).to_have_text("merged")
    after = git(repo, "rev-parse", "main")
    assert after != before
    assert ui.job(job["id"])["merged_sha"] == after
    assert git(repo, "show", "main:AGENT_NOTES.md").startswith("## claude")


def refused_merge(p: Page, d: Daemon, job_id: int, says: str, file: str) -> None:
    """Click Merge on the job's page; the refusal says ``says`` and lists ``file``."""
    open_job(p, d, job_id)
    p.get_by_role("button", name="Merge").click()
    notice = p.locator("#result .notice.error")
    expect(notice).to_contain_text(says)
    expect(notice.locator(".files")).to_contain_text(file)


def test_a_conflicting_merge_moves_nothing_and_the_page_names_the_files(
    page: Page, ui: Daemon, tmp_path: Path, agent: Agent
) -> None:
    repo = init_repo(tmp_path / "app", files={"README.md": "hi\n", "f.txt": "base\n"})
    name = ui.add_repo(repo)
    job = finished_job(ui, name, "edit f", command=[agent("f.sh", "echo job > f.txt\n")])
    commit_file(repo, "f.txt", "main\n", "main edits f too")
    main_before = git(repo, "rev-parse", "main")
    branch_before = git(repo, "rev-parse", job["branch"])
    refused_merge(page, ui, job["id"], "Merge conflict: nothing was merged", "f.txt")
    assert git(repo, "rev-parse", "main") == main_before
    assert git(repo, "rev-parse", job["branch"]) == branch_before
    assert git(repo, "status", "--porcelain") == ""
    expect(state_badge(page)).to_have_text("succeeded")


def test_a_merge_refused_by_a_dirty_checkout_says_so(
    page: Page, ui: Daemon, tmp_path: Path
) -> None:
    repo = init_repo(tmp_path / "app", files={"README.md": "hi\n"})
    name = ui.add_repo(repo)
    job = finished_job(ui, name, "notes", agent="claude")
    (repo / "README.md").write_text("my own edit, not committed\n")
    before = git(repo, "rev-parse", "main")
    refused_merge(page, ui, job["id"], "uncommitted changes", "README.md")
    assert git(repo, "rev-parse", "main") == before
    assert (repo / "README.md").read_text() == "my own edit, not committed\n"


def test_discard_removes_the_branch(page: Page, ui: Daemon, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "app", files={"README.md": "hi\n"})
    name = ui.add_repo(repo)
    job = finished_job(ui, name, "notes", agent="claude")
    open_job(page, ui, job["id"])
    page.locator("#job-header").get_by_role("button", name="Discard").click()
    expect(state_badge(page)).to_have_text("discarded")
    assert git(repo, "branch", "--list", job["branch"]) == ""
    assert ui.job(job["id"])["state"] == "discarded"


# ------------------------------------------------------------------ hostile text


def test_html_in_prompts_logs_branches_and_commits_renders_as_text(
    page: Page, ui: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hostile = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    repo = init_repo(tmp_path / "app", files={"README.md": "hi\n"})
    name = ui.add_repo(repo)
    script = agent(
        "hostile.sh",
        f"printf '%s\\n' '{hostile}'\n"
        f"printf '%s\\n' '{hostile}' > '<b>x<b>.html'\n"
        f"git add -A && git commit -qm '{hostile}'\n",
    )
    job = finished_job(ui, name, f"{hostile} fix it", command=[script])
    for path in ("/ui/", f"/ui/jobs/{job['id']}", "/ui/events", "/ui/repos"):
        page.goto(f"{ui.url}{path}")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.__pwned") is None, path
        assert page.locator("main script, main img").count() == 0, path
    open_job(page, ui, job["id"])
    expect(page.locator(".prompt")).to_contain_text("<script>window.__pwned = 1</script>")
    expect(page.locator("#log")).to_contain_text('<img src=x onerror="window.__pwned = 2">')
    expect(page.locator("table.diff").first).to_contain_text("<script>")
    expect(page.locator(".filelist")).to_contain_text("<b>x<b>.html")
    assert page.evaluate("window.__pwned") is None


# ------------------------------------------------------------------ teams


def test_teams_page_shows_the_task_graph_who_waits_and_the_messages(
    page: Page, ui: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hostile = '<img src=x onerror="window.__pwned = 3">'
    repo = init_repo(tmp_path / "app", files={"README.md": "hi\n"})
    name = ui.add_repo(repo)
    lead = agent("lead.sh", "exit 0\n")
    created = ui.api.post(
        "/teams", json={"repo": name, "goal": f"ship it {hostile}", "lead_command": [lead]}
    )
    assert created.status_code == 201, created.text
    team = created.json()["id"]
    release = tmp_path / "release"
    gate = agent("gate.sh", f'while [ ! -f "{release}" ]; do sleep 0.05; done\n')

    def add(title: str, **body: Any) -> int:
        r = ui.api.post(
            f"/teams/{team}/tasks",
            json={"title": title, "prompt": title, "command": [gate], **body},
        )
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    first = add(f"api {hostile}")
    second = add("ui", blocked_by=[first])
    sent = ui.api.post(
        f"/teams/{team}/messages", json={"to": f"task:{first}", "body": f"hello {hostile}"}
    )
    assert sent.status_code in (200, 201), sent.text
    try:
        page.goto(f"{ui.url}/ui/teams")
        expect(page.locator(f"#team-{team}")).to_contain_text("ship it <img")
        page.locator(f"#team-{team} a").click()
        expect(page.get_by_role("heading", name=f"Team {team}")).to_be_visible()
        graph = page.get_by_label("Task graph")
        expect(graph).to_contain_text(f"#{first} api <img")
        expect(graph).to_contain_text(f"#{second} ui")
        expect(page.locator(f"#task-{second}")).to_contain_text(f"#{first}")  # waits on it
        expect(page.locator(f"#task-{second}")).to_contain_text("waiting")
        expect(page.locator(f"#task-{first}")).to_contain_text("running")
        expect(page.locator("td.message").first).to_contain_text("hello <img")
        assert page.evaluate("window.__pwned") is None
        assert page.locator("main img").count() == 0
        response = page.goto(f"{ui.url}/ui/teams/987654")
        assert response is not None and response.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    finally:
        release.touch()
        ui.api.post(f"/teams/{team}/shutdown")


# ------------------------------------------------------------------ repos and events


def test_repos_page_adds_shows_trigger_errors_and_removes(
    page: Page, ui: Daemon, tmp_path: Path
) -> None:
    repo = init_repo(
        tmp_path / "app",
        files={
            "README.md": "hi\n",
            ".dispatcher/triggers.yml": "version: 1\ntriggers:\n  x:\n    on: [oops\n",
        },
    )
    page.goto(f"{ui.url}/ui/repos")
    page.get_by_label("Path of a local git repository").fill(str(repo))
    page.get_by_label("Name (default: the directory's)").fill("from-the-page")
    page.get_by_role("button", name="Add repo").click()
    section = page.locator("#repo-from-the-page")
    expect(section).to_be_visible()
    expect(section.locator(".trigger-errors")).to_contain_text("triggers.yml")
    assert re.search(r"triggers\.yml:\d+", section.locator(".trigger-errors").inner_text())
    page.get_by_role("button", name="Remove from-the-page").click()
    expect(section).to_have_count(0)
    assert ui.api.get("/repos/from-the-page").status_code == 404
    page.get_by_label("Path of a local git repository").fill(str(tmp_path / "nothing-here"))
    page.get_by_role("button", name="Add repo").click()
    expect(page.locator("#repo-result .error")).to_be_visible()


def test_events_page_shows_dedup_keys_and_jobs(page: Page, ui: Daemon, tmp_path: Path) -> None:
    repo = init_repo(
        tmp_path / "app",
        files={
            "README.md": "hi\n",
            ".dispatcher/triggers.yml": "version: 1\ntriggers:\n  on-manual:\n    on: manual\n"
            "    prompt: from an event\n    agent: claude\n",
        },
    )
    name = ui.add_repo(repo)
    r = ui.api.post("/events", json={"repo": name, "kind": "manual", "dedup_key": "k-<i>1</i>"})
    assert r.status_code == 200, r.text
    made = r.json()["jobs"]
    assert made, r.json()
    page.goto(f"{ui.url}/ui/events")
    row = page.locator(f"#event-{r.json()['event_id']}")
    expect(row).to_contain_text("k-<i>1</i>")
    expect(row).to_contain_text("on-manual")
    row.get_by_role("link", name=f"#{made[0]}").click()
    expect(page.locator("#job-header")).to_contain_text("on-manual")
    page.goto(f"{ui.url}/ui/notifications")
    expect(page.get_by_role("heading", name="Notifications")).to_be_visible()


# ------------------------------------------------------------------ a lost daemon


def test_a_lost_daemon_shows_reconnecting_and_the_live_parts_resume(
    browser: Browser, daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    """The daemon is killed while a job page follows a running agent's log: the page says
    "reconnecting"; when the daemon is back (it adopts the agent, which outlived it), the
    banner goes, and the log goes on from where it stopped (no line twice) to the end."""
    d = daemon_factory(PATH=f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}").start()
    job, gate = gated_job(d, tmp_path, agent, "second line, after the restart")
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    p = context.new_page()
    try:
        login(p, d)
        open_job(p, d, job["id"])
        log = p.locator("#log")
        expect(log).to_contain_text("first line from the agent")
        d.stop(signal.SIGKILL)
        expect(p.locator("#conn")).to_be_visible()
        expect(p.locator("#conn")).to_contain_text("reconnecting")
        d.start()
        expect(p.locator("#conn")).to_be_hidden()
        gate.touch()
        expect(log).to_contain_text("second line, after the restart")
        expect(log.get_by_text("first line from the agent")).to_have_count(1)
        expect(state_badge(p)).to_have_text("succeeded")
    finally:
        context.close()


def test_a_long_log_opens_at_its_tail(page: Page, ui: Daemon, tmp_path: Path, agent: Agent) -> None:
    name = ui.add_repo(init_repo(tmp_path / "app", files={"README.md": "hi\n"}))
    script = agent(
        "long.sh",
        "echo the-very-start\n"
        "i=0; while [ $i -lt 800 ]; do printf 'filler %01000d\\n' $i; i=$((i+1)); done\n"
        "echo the-very-end\n",
    )
    job = ui.wait(ui.submit(name, "print a lot", command=[script])["id"])
    open_job(page, ui, job["id"])
    log = page.locator("#log")
    expect(log).to_contain_text("the-very-end")
    expect(log).to_contain_text(f"the start is left out: GET /jobs/{job['id']}/log")
    expect(log).not_to_contain_text("the-very-start")
