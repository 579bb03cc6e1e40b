"""bench_ready_to_dom.py's browser: Debian's Chromium under Playwright, the init script that
times the page on its own clock (socket open, first ready frame, DOM, paint), and the
approver logged in."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_WORDING = "Ready — awaiting approval"
PASSWORD = "pw-bench-ready-to-dom"


# Runs in every page before its own scripts. Keyed on the migration id in the URL.
INIT_SCRIPT = r"""
(() => {
  const m = location.pathname.match(/^\/migrations\/(\d+)\/$/);
  if (!m) { return; }
  const id = m[1];
  const WORDING = %(wording)s;
  const now = () => performance.timeOrigin + performance.now();
  const b = window.__bench = {id: id, wsOpen: null, frame: null, dom: null, domDateNow: null, paint: null,
                              initialReady: null, initialText: null};
  const statusReady = () => {
    const el = document.getElementById('migration-' + id + '-status');
    return !!el && el.textContent.includes(WORDING);
  };
  // Re-arm for the next sample on the same page (the baseline tab).
  b.arm = () => { b.frame = null; b.dom = null; b.domDateNow = null; b.paint = null; };
  const observer = new MutationObserver(() => {
    if (b.dom !== null || document.readyState === 'loading') { return; }
    if (statusReady()) {
      b.dom = now();
      b.domDateNow = Date.now();
      requestAnimationFrame(() => { b.paint = now(); });
    }
  });
  observer.observe(document, {childList: true, subtree: true, characterData: true});
  document.addEventListener('DOMContentLoaded', () => {
    b.initialReady = statusReady();
    const el = document.getElementById('migration-' + id + '-status');
    b.initialText = el ? el.textContent.replace(/\s+/g, ' ').trim().slice(0, 80) : null;
  });
  document.addEventListener('htmx:wsOpen', () => { if (b.wsOpen === null) { b.wsOpen = now(); } });
  document.addEventListener('htmx:wsBeforeMessage', (e) => {
    if (b.frame === null && typeof e.detail.message === 'string' && e.detail.message.includes(WORDING)) {
      b.frame = now();
    }
  });
})();
"""


def login(browser, base_url: str):
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    context.add_init_script(INIT_SCRIPT % {"wording": repr(READY_WORDING)})
    page = context.new_page()
    page.goto("/accounts/login/")
    page.fill("#id_username", "approver")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    return page
