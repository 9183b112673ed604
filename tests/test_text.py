from mmsc_dgl.data.text import clean_text, clean_title, first_nonempty


def test_broken_html_title_falls_back_to_description():
    title, source = clean_title('<span class="a-size-medium a-color-secondary"',
                                "REASON is edited for people. It has more.")
    assert (title, source) == ("REASON is edited for people.", "description")


def test_entities_and_tags_are_cleaned():
    assert clean_title("Disney &amp; Me", "") == ("Disney & Me", "cleaned")
    assert clean_title("<b>Bold</b> name", "") == ("Bold name", "cleaned")
    assert clean_title("&lt;i&gt;x&lt;/i&gt; y", "") == ("x y", "cleaned")
    assert clean_title("Plain title", "") == ("Plain title", "title")


def test_fallbacks_and_empty():
    assert clean_title("<div", "", fallbacks=("Brand Co",)) == ("Brand Co", "fallback")
    assert clean_title(None, "") == ("", "none")


def test_long_description_is_cut_at_a_word():
    title, source = clean_title("", "word " * 100)
    assert source == "description" and len(title) <= 121 and title.endswith("…")


def test_clean_text_lists_and_none():
    assert clean_text(["a ", None, "<p>b</p>"]) == "a b"
    assert clean_text(None) == ""
    assert first_nonempty(["", "u"]) == "u" and first_nonempty("") is None and first_nonempty(3) is None
