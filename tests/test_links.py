"""Every relative link of README.md and docs/*.md reaches a file of the repo, and every #anchor a heading of
the page it names (GitHub's heading slugs)."""
import glob
import os
import re

from conftest import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(root: str) -> list:
    pages = [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    headings = {os.path.normpath(p): {slug(h) for h in re.findall(r"^#+ (.*)$", open(p).read(), re.M)} for p in pages}
    broken = []
    for page in pages:
        for link in LINK.findall(open(page).read()):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = link.partition("#")
            target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else os.path.normpath(page)
            if not os.path.exists(target) or (anchor and target.endswith(".md") and anchor not in headings[target]):
                broken.append(f"{os.path.relpath(page, root)}: {link}")
    return broken


def test_every_link_of_the_pages_reaches_its_file_and_heading():
    assert broken_links(ROOT) == []


def test_a_missing_page_or_heading_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Some heading\n\n[ok](#some-heading) [ok](../README.md#top)\n")
    (tmp_path / "README.md").write_text("# Top\n\n[ok](docs/a.md#a-page) [bad](docs/a.md#energies-under-attack-cpu) "
                                        "[bad](docs/b.md)\n")
    assert broken_links(str(tmp_path)) == ["README.md: docs/a.md#energies-under-attack-cpu", "README.md: docs/b.md"]
