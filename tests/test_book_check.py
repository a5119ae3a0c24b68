"""The book check reads a page as a publication: numbered captioned figures, hidden code, table lengths."""

from __future__ import annotations

from rmvalues.book import check


def _rows(n: int) -> str:
    return "".join(f"<tr><td>{i}</td></tr>" for i in range(n))


PAGE = f"""<html><body><article>
<h1>Chapter</h1>
<details class="hide above-input"><summary>Show code</summary><div class="cell_input docutils container">x</div></details>
<div class="cell_input docutils container">visible()</div>
<figure id="fig-a"><img src="a.png"><figcaption><p><span class="caption-number">Fig. 3.1 </span>
<span class="caption-text">What is plotted.</span></p></figcaption></figure>
<table><thead><tr><th>h</th></tr></thead><tbody>{_rows(20)}</tbody></table>
<details class="sd-dropdown"><summary>Timings</summary><table><tbody>{_rows(40)}</tbody></table></details>
<table><tbody>{_rows(3)}</tbody></table>
<a class="reference download internal" download="" href="../_downloads/x/panel.csv">csv</a>
</article></body></html>"""


def test_a_page_is_read_for_figures_code_and_tables(tmp_path):
    page = tmp_path / "p.html"
    page.write_text(PAGE)
    info = check.parse_page(page)
    assert info.numbered_figures == ["Fig. 3.1"]
    assert info.visible_code_inputs == 1  # the one outside <details>
    assert info.long_tables == [20]  # the collapsed 40-row table does not count
    assert info.downloads == ["../_downloads/x/panel.csv"] and info.tables == 3
    problems = check.publication_problems("p", info)
    assert any("1 code input(s) visible" in p for p in problems)
    assert any("tables of [20] rows" in p for p in problems)
    assert not any("no numbered figure" in p for p in problems)
    bare = tmp_path / "q.html"
    bare.write_text(
        "<html><body><article><h1>T</h1><figure><img src='a.png'></figure></article></body></html>"
    )
    assert check.publication_problems("q", check.parse_page(bare)) == ["q: no numbered figure with a caption"]


def test_glued_values_hidden_inputs_and_unresolved_glue_are_counted(tmp_path):
    page = tmp_path / "g.html"
    page.write_text(
        "<html><body><article><h1>T</h1>"
        '<div class="cell tag_parameters tag_hide-input docutils container"><details>x</details></div>'
        '<div class="cell tag_remove-input docutils container"></div>'
        '<p>Mean <span class="pasted-text">4.2</span> of <span class="pasted-text">10</span>; '
        "{glue:text}`missing_key` left as text.</p></article></body></html>"
    )
    info = check.parse_page(page)
    assert (info.glued, info.hidden_inputs, info.unresolved_glue) == (2, 1, 1)
    assert "g: 1 glue reference(s) left unresolved in the text" in check.publication_problems("g", info)
    counts = check.page_counts("g", info)
    assert counts["glued_values"] == 2 and counts["hidden_inputs"] == 1 and counts["numbered_figures"] == 0
    html = tmp_path / "html"
    (html / "book").mkdir(parents=True)
    (html / "book" / "g.html").write_text(page.read_text())
    report = check.book_report(html, ["book/g", "book/absent"])
    assert [p["page"] for p in report["pages"]] == ["book/g"] and report["totals"]["glued_values"] == 2


def test_the_browser_never_reaches_the_network():
    flags = " ".join(check.CHROMIUM_FLAGS)
    assert "--host-resolver-rules=MAP * ~NOTFOUND" in flags and "--proxy-server=http://127.0.0.1:9" in flags


def test_table_cells_render_literally():
    """A reader table's cells stay one Markdown cell each: pipes escaped, ``<pad>`` not read as HTML."""
    import pandas as pd

    from rmvalues.core.display import table

    df = pd.DataFrame({"pad token": ["<pad>", "<|endoftext|>", "a\nb"], "n": [1, 2, 3]})
    body = table(df, "Tokens.", "tbl-x").data
    assert "&lt;pad>" in body and r"&lt;\|endoftext\|>" in body and "| a b " in body
    assert all(line.count("|") - line.count(r"\|") == 3 for line in body.splitlines() if line.startswith("|"))
    # a link role in a cell keeps its target (``&lt;`` there would break the reference)
    linked = table(pd.DataFrame({"x": ["{doc}`Word lists <corpora>` <b>"]}), "Links.", "tbl-y").data
    assert "{doc}`Word lists <corpora>` &lt;b>" in linked


def test_an_empty_table_keeps_its_number():
    """A table a run has no rows for (a fork with one base model) is still a numbered table, so the prose's
    ``{numref}`` resolves and the book builds; no download of a file the run did not write."""
    import pandas as pd

    from rmvalues.core.display import table

    for df in (None, pd.DataFrame(), pd.DataFrame({"a": []})):
        body = table(df, "Bases compared.", "tbl-z", "results/x/none.csv", empty="One base model.").data
        assert ":name: tbl-z" in body and "One base model." in body and "download" not in body


def test_one_p_value_format_across_the_book(tmp_path):
    """Issue 17: every p-value a page shows reads ``p = 0.012`` or ``p < 0.001`` (thresholds ``p < 0.05``);
    ``p 0.19``, ``p < .001`` and ``p = 0.000`` are problems the book check names."""
    from rmvalues.core.formats import bad_pvalues, p_clause

    assert [p_clause(x) for x in (0.0004, 0.0123, 0.19, 1.0)] == [
        "p < 0.001",
        "p = 0.012",
        "p = 0.19",
        "p = 1.00",
    ]
    good = "exact p = 0.012; Welch p < 0.001; 27% have p < 0.05; p ≤ 0.05 for 2 of 5; the top 5 words"
    assert bad_pvalues(good) == []
    assert bad_pvalues("Welch p 0.19, p < .001, p = 0.000 and p=0.5") == [
        "p 0.19",
        "p < .001",
        "p = 0.000",
        "p=0.5",
    ]
    page = tmp_path / "p.html"
    page.write_text(
        '<article><figure><figcaption><span class="caption-number">Fig. 1 </span>x</figcaption></figure>'
        "<p>permutation Welch p 0.19, where 5 against 5 seeds allow p = 0.008</p></article>"
    )
    problems = check.publication_problems("p", check.parse_page(page))
    assert problems == [
        "p: 1 p-value(s) not in the book's one format (p = 0.012, p < 0.001; rmvalues.core.formats.p_clause): "
        "['p 0.19']"
    ]


def test_one_set_of_formatters_writes_numbers_intervals_and_shares():
    """Issue 17: numbers, intervals (also of shares) and CIs are written one way, with a true minus sign."""
    from rmvalues.core.formats import ci, interval, number, percent, signed

    assert number(-0.04, 1) == "0.0" and number(-1.26, 1) == "\u22121.3"  # no "−0.0"
    assert signed(0.5, 1) == "+0.5" and percent(0.614, 1) == "61.4%"
    assert interval(-5.0, -1.5, 1) == "[\u22125.0, \u22121.5]" and interval(None, 1.0) == "no interval"
    assert interval(0.6, 0.624, 1, share=True) == "[60.0%, 62.4%]"
    assert ci(0.55, 0.67, 1, share=True) == "95% CI [55.0%, 67.0%]" and ci(1.0, 4.0, 1) == "95% CI [1.0, 4.0]"
