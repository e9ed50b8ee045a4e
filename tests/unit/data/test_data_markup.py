from tulu_quant.data.markup import clean_play_markdown, clean_wiki, clean_wiki_blocks, is_redirect

ARTICLE = (
    """{{Infobox river
| name = Aa
| image = [[File:Aa river.jpg|thumb|The [[Aa (river)|Aa]] in {{nowrap|spring}}]]
| length = {{convert|37|km|mi}}
}}
'''Aa''' is a ''small'' [[river]] in [[Northern France|northern France]],"""
    """<ref name="a">{{cite web|url=http://x.org|title=T}}</ref>"""
    """ about {{convert|37|km|mi}} long.<ref>Plain footnote.</ref>
Its name, {{lang|de|Ache}}, means ''water''.<!-- hidden comment -->&nbsp;See [http://example.org the survey].

== History ==
The river was canalised in 1840.<sup>[1]</sup>
{| class="wikitable"
! Year !! Flow
|-
| 1900 || 10
|}
* First item with [[Link]]s
* Second item

=== Empty subsection ===
== Geography ==
It flows past <math>x^2</math> towns.[[Category:Rivers of France]][[de:Aa (Fluss)]]
[[Image:Map.png|left|A map with [[Paris]]]]

== References ==
{{reflist}}
* Some book, 1990.

== External links ==
* [http://example.org Official site]
"""
)


def test_clean_wiki_removes_markup_and_keeps_prose():
    text = clean_wiki(ARTICLE)
    for residue in (
        "{{",
        "}}",
        "[[",
        "]]",
        "<ref",
        "'''",
        "''",
        "<!--",
        "http",
        "wikitable",
        "Category",
        "Infobox",
        "File:",
        "thumb",
        "&nbsp;",
        "<math",
        "x^2",
        "Plain footnote",
        "cite web",
        "Fluss",
    ):
        assert residue not in text, residue
    assert text.startswith("Aa is a small river in northern France, about 37 km long.")
    assert "Its name, Ache, means water. See the survey." in text
    assert "The river was canalised in 1840.[1]" in text
    assert "First item with Links\nSecond item" in text  # list markers gone, lines kept, link trail kept
    assert "1900" not in text  # tables dropped
    assert "It flows past towns." in text


def test_clean_wiki_sections_and_headings():
    blocks = clean_wiki_blocks(ARTICLE)
    headings = [text for level, text in blocks if level]
    assert headings == ["History", "Geography"]  # empty subsection and reference sections dropped
    text = clean_wiki(ARTICLE)
    assert "Some book" not in text and "Official site" not in text
    assert "\n\nHistory\n\n" in text


def test_clean_wiki_nested_and_unclosed_templates():
    assert clean_wiki("A {{outer|x={{inner|{{deep}}}}}} B") == "A B"
    assert clean_wiki("Text {{broken") == "Text broken"  # an unclosed template keeps its text, loses the braces


def test_redirect_detection():
    assert is_redirect("#REDIRECT [[Computer accessibility]]")
    assert is_redirect("  #redirect [[X]]")
    assert not is_redirect("'''Anarchism''' is ...")


def test_clean_play_markdown():
    play = (
        "# Macbeth\n\n## ACT I\n\n### SCENE I. A desert place.\n\n_Thunder. Enter three Witches_\n\n"
        "**First Witch**  \nWhen shall we three meet again  \nIn thunder?\n\n__\\[Aside]_  \n\\--odours sweet\n\n"
        "*Exeunt*\n"
    )
    assert clean_play_markdown(play) == (
        "Macbeth\n\nACT I\n\nSCENE I. A desert place.\n\nThunder. Enter three Witches\n\n"
        "First Witch\nWhen shall we three meet again\nIn thunder?\n\n[Aside]\n"
        "--odours sweet\n\nExeunt"
    )
