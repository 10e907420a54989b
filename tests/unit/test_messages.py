"""Every message a person reads is in the catalogue, in English and Simplified Chinese.

The catalogue (``llava_app.messages``) is checked entry by entry: both languages present, the
same ``{parameters}``, both render. The package's source is read for messages that bypass it:
an error raised, a toast, a warning or a progress line built from literal English (English has
spaces; keys have none) fails here, naming the file and line.
"""

from __future__ import annotations

import ast
import json
import re
import string
from pathlib import Path

import pytest

from llava_app.messages import CATALOGUE, Joined, Message, localize
from llava_app.web.translations import EN, TRANSLATIONS, ZH_CN, key

PACKAGE = Path(__file__).resolve().parents[2] / "llava_app"
SKIP = {"messages", "benchmarks"}  # the catalogue itself; the benchmarks talk to the operator's terminal

# Errors a person reads (``UserError`` and its kind, found below by reading the class definitions), and the
# calls that show text: Gradio's toasts, progress lines, the warnings and errors of an upload.
SHOWN = {"Warning", "Info", "Error", "Message", "text", "Joined"}
PROGRESS = {"report", "progress"}  # (fraction, message)
APPENDED = {"errors", "warnings"}  # result.errors.append(message)
#: the project's own exceptions whose text is not shown to people: the engine's failures (the page names only their
#: type), the /v1 API's errors (English, for programs)
NOT_SHOWN = {"EngineError", "APIError"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in SKIP)


def _fields(template: str) -> dict[str, str]:
    """The ``{name:spec}`` fields of a template, by name."""
    return {name: spec for _, name, spec, _ in string.Formatter().parse(template) if name is not None}


def _user_errors() -> set[str]:
    """``UserError`` and every class of the package that derives from it."""
    found, bases = {"UserError"}, {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
    while True:
        more = {name for name, of in bases.items() if of & found} - found
        if not more:
            return found - NOT_SHOWN
        found |= more


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _words(text: str) -> bool:
    """English: letters and a space (keys have no spaces)."""
    return " " in text and re.search(r"[A-Za-z]", text) is not None


def _english(node: ast.expr) -> list[str]:
    """Literal text in ``node`` that is not a catalogue key: a string with words, or an f-string's."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if _words(node.value) else []
    if isinstance(node, ast.JoinedStr):
        parts = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        return [parts] if _words(parts) else []
    if isinstance(node, ast.BinOp):
        return _english(node.left) + _english(node.right)
    if isinstance(node, ast.IfExp):
        return _english(node.body) + _english(node.orelse)
    return []


def _literal_key(node: ast.expr) -> str | None:
    """The key a call names literally (a plain string), else None."""
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _bypassing(path: Path, errors: set[str], root: Path = PACKAGE.parent) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name, first = _name(node.func), node.args[0]
        if name in PROGRESS and len(node.args) > 1:
            first = node.args[1]
        elif name == "append" and _name(getattr(node.func, "value", None)) in APPENDED:
            pass
        elif name not in errors | SHOWN:
            continue
        where = f"{path.relative_to(root)}:{node.lineno}"
        found += [f"{where} {name}({text!r})" for text in _english(first)]
        literal = _literal_key(first)
        if name in errors | {"Message", "text"} and literal is not None and " " not in literal \
                and literal not in CATALOGUE:
            found.append(f"{where} {name}({literal!r}): no such key in the catalogue")
    return found


def _sample(name: str, spec: str):
    """A value for field ``name`` that its format spec takes."""
    if spec in ("cap", "sentence", "clause", ""):
        return f"<{name}>"
    return 3 if spec in ("ord", "02d") else 1234.5


# ----- the catalogue ------------------------------------------------------------------------------
def test_every_message_has_english_and_chinese_with_the_same_parameters():
    problems = []
    for name, texts in CATALOGUE.items():
        if len(texts) != 2 or not all(isinstance(t, str) and t for t in texts):
            problems.append(f"{name}: needs a non-empty English and Chinese text")
            continue
        en, zh = texts
        if set(_fields(en)) != set(_fields(zh)):
            problems.append(f"{name}: English takes {sorted(_fields(en))}, Chinese {sorted(_fields(zh))}")
        words = re.sub(r"\{[^}]*\}", "", zh)
        if zh == en and re.search(r"[A-Za-z]{2,}", words):
            problems.append(f"{name}: the Chinese text is the English one")
        if not re.fullmatch(r"[a-z_]+(\.[a-z0-9_]+)+", name):
            problems.append(f"{name}: keys are dotted lower-case names (no spaces)")
    assert problems == []


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_every_message_renders_with_its_parameters(lang):
    for name, (en, _) in CATALOGUE.items():
        params = {field: _sample(field, spec) for field, spec in _fields(en).items()}
        assert Message(name, **params).render(lang), name


def test_chinese_follows_zh_and_everything_else_gets_english():
    message = Message("chat.type_first")
    assert [localize(message, lang) for lang in ("zh-CN", "zh", "zh-TW", "en", "fr", None)] == \
        ["请先输入问题。"] * 3 + ["Type a question first."] * 3
    assert str(message) == "Type a question first."  # logs and the API read English


def test_parameters_render_in_the_readers_language_and_words_written_are_never_translated():
    nested = Message("upload.named", name="Type a question first.", problem=Message("chat.type_first"))
    assert localize(nested, "zh-CN") == "Type a question first.：请先输入问题。"
    assert localize("Type a question first.", "zh-CN") == "Type a question first."  # plain text passes as written
    assert Joined([Message("chat.type_first"), "", Message("chat.nothing_undo")]).render("zh-CN") == \
        "请先输入问题。没有可撤销的内容。"
    assert str(Joined([Message("chat.type_first"), Message("chat.nothing_undo")])) == \
        "Type a question first. There is nothing to undo."
    assert str(Message("mark.waiting", place=22)).startswith("*22nd in line")


def test_an_unknown_key_fails_where_it_is_made():
    with pytest.raises(KeyError, match="no message"):
        Message("chat.no_such_message")


def test_errors_carry_their_message_and_read_english_as_text():
    from llava_app.errors import UserError
    from llava_app.storage.images import ImageError

    error = ImageError("image.empty", name="a.png")
    assert str(error) == "a.png is empty." and localize(error.message, "zh-CN") == "a.png 是空文件。"
    with pytest.raises(UserError, match="is empty"):
        raise error
    assert UserError("a server's own words").message == "a server's own words"


# ----- the code -------------------------------------------------------------------------------------
def test_no_message_a_person_reads_bypasses_the_catalogue():
    errors = _user_errors()
    assert {"UserError", "ImageError", "ConversationFileError", "FetchError", "ConfigError"} <= errors
    found = [problem for path in _modules() for problem in _bypassing(path, errors)]
    assert found == []


def test_the_scan_finds_literal_english(tmp_path):
    """The scan itself: literal English in an error, a toast, a warning and a progress line is found."""
    probe = tmp_path / "probe.py"
    probe.write_text('raise UserError(f"{name} is empty.")\ngr.Warning("Type a question first.")\n'
                     'result.warnings.append("took " + str(n) + " frames")\nreport(0.5, "Loading the model")\n'
                     'raise UserError("chat.type_first")\nraise ImageError("image.no_such_key")\n')
    found = _bypassing(probe, {"UserError", "ImageError"}, root=tmp_path)
    assert sorted({int(line.split(" ", 1)[0].rsplit(":", 1)[1]) for line in found}) == [1, 2, 3, 4, 6]


def test_every_key_is_used_somewhere():
    """A key nobody uses is a message that was renamed or dropped in the code but not in the catalogue."""
    constants = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) >= 5:
                constants.add(node.value)
    script = (PACKAGE / "web" / "page" / "page.js").read_text()
    unused = [name for name in CATALOGUE
              if name not in constants and not any(name.startswith(c) for c in constants if "." in c)
              and not (name.startswith("script.") and f"say('{name.removeprefix('script.')}')" in script)]
    assert unused == []


# ----- the page's own text --------------------------------------------------------------------------
def test_every_page_text_is_in_both_languages():
    assert EN.keys() == ZH_CN.keys() and all(ZH_CN.values()) and all(EN.values())
    for lang in ("en", "zh-CN", "zh"):
        assert TRANSLATIONS[lang][key("send")] and TRANSLATIONS[lang]["common"]["webcam"]
    assert TRANSLATIONS["zh-CN"]["common"]["webcam"] == "摄像头"


def test_the_page_script_gets_its_texts_in_both_languages():
    from llava_app.web.i18n import page_script
    from llava_app.web.server import JS

    texts = json.loads(page_script("LLAVA_TEXTS"))
    assert texts["en"].keys() == texts["zh-CN"].keys() >= {"toast_warning", "toast_error", "delete_confirm"}
    assert texts["zh-CN"]["toast_warning"] == "警告" and texts["zh-CN"]["toast_error"] == "错误"
    assert "LLAVA_TEXTS" not in JS and "要从这个浏览器的列表中删除这个对话" in JS
