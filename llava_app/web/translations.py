"""The page's text in English and Simplified Chinese (keys for ``gr.I18n``; no gradio here).

The browser's language picks the table (``zh-CN``, ``zh``; anything else gets English).
Keys have no dots (the frontend reads a dot as a nested key) and get the ``PREFIX`` in
the tables, because a bare key such as ``chatbot`` names one of Gradio's own groups of
strings and would show as "[object Object]".
"""

from __future__ import annotations

import re
from typing import Any

EN = {
    "title": "## Chat with your photos",
    "media_section": "Videos and PDFs",
    "video_frames": "Keyframes taken from a video (evenly spaced)",
    "pdf_pages": "PDF pages to read (empty: from the first, as many as fit)",
    "settings": "Settings",
    "chat_placeholder": "**Drop pictures here** (or paste a screenshot, or attach them with the clip in the box "
                        "below), then ask about them. Each picture gets a label you can use in your questions: "
                        "\"compare Image 1 and Image 2\". Enter sends.",
    "model_prefix": "Model:",
    "random_banner": "**Test model with random weights:** its answers are random words, not descriptions of your "
                     "images.",
    "gallery": "Images (drop several; they stay for the whole conversation)",
    "chatbot": "Conversation",
    "question": "Ask about your images…",
    "send": "Send",
    "stop": "Stop",
    "regenerate": "Regenerate",
    "undo": "Undo",
    "new_chat": "New chat",
    "parameters": "Parameters",
    "system_prompt": "System prompt",
    "temperature": "Temperature (0 = greedy)",
    "top_p": "Top-p",
    "max_new_tokens": "Max new tokens",
    "model_sees": "What the model sees",
    "no_prompt": "No prompt yet.",
    "prompt": "Prompt (image placeholders shown as the model's image token)",
    "examples": "**Examples** (click one: its images join this conversation and its question goes in the box)",
    "example_describe": "Describe a scene",
    "example_ocr": "Read a receipt",
    "example_compare": "Compare two pictures",
    "example_followup": "Chart, then a follow-up",
    "example_diagram": "Explain a diagram",
    "model_section": "Model",
    "model_picker": "Model to use (the conversation is kept)",
    "load_model": "Load model",
    "model_loaded": "Loaded. The conversation is kept: the next answer reads its images again with this model.",
    "export_section": "Export / import",
    "export_markdown": "Markdown",
    "export_json": "JSON (with images)",
    "export_zip": "Fine-tuning zip (LLaMA-Factory)",
    "download": "Download",
    "import": "Import a JSON or zip",
    "imported": "Imported. Ask a follow-up to continue the conversation.",
    "chats_section": "Earlier chats",
    "cancel_edit": "Cancel",
    "keep_images": "Pictures that stay with this question (untick to take one off)",
    "share": "Share",
    "revoke": "Revoke link",
}

ZH_CN = {
    "title": "## 和你的照片聊天",
    "media_section": "视频和 PDF",
    "video_frames": "从视频中取的关键帧数（均匀分布）",
    "pdf_pages": "要读取的 PDF 页（留空：从第一页起，能放下多少读多少）",
    "settings": "设置",
    "chat_placeholder": "**把图片拖到这里**（或粘贴截图，或用下方输入框里的回形针添加），然后提问。每张图片都有一个标签，"
                        "提问时可以用它指代图片：“比较 Image 1 和 Image 2”。回车发送。",
    "model_prefix": "模型：",
    "random_banner": "**随机权重的测试模型**：它的回答是随机的词语，并不描述你的图片。",
    "gallery": "图片（可一次拖入多张；整个对话中都会保留）",
    "chatbot": "对话",
    "question": "问一个关于图片的问题……",
    "send": "发送",
    "stop": "停止",
    "regenerate": "重新生成",
    "undo": "撤销",
    "new_chat": "新对话",
    "parameters": "参数",
    "system_prompt": "系统提示词",
    "temperature": "温度（0 = 贪心解码）",
    "top_p": "Top-p",
    "max_new_tokens": "最多生成的词元数",
    "model_sees": "模型看到的内容",
    "no_prompt": "还没有提示词。",
    "prompt": "提示词（图片占位符显示为模型的图片词元）",
    "examples": "**示例**（点击一个：它的图片加入当前对话，问题放入输入框）",
    "example_describe": "描述一个场景",
    "example_ocr": "读取收据",
    "example_compare": "比较两张图片",
    "example_followup": "图表与追问",
    "example_diagram": "解释流程图",
    "model_section": "模型",
    "model_picker": "要使用的模型（对话会保留）",
    "load_model": "加载模型",
    "model_loaded": "已加载。对话已保留：下一个回答会用这个模型重新读取图片。",
    "export_section": "导出 / 导入",
    "export_markdown": "Markdown",
    "export_json": "JSON（含图片）",
    "export_zip": "微调数据 zip（LLaMA-Factory）",
    "download": "下载",
    "import": "导入 JSON 或 zip",
    "imported": "已导入。继续提问即可接着对话。",
    "chats_section": "以前的对话",
    "cancel_edit": "取消",
    "keep_images": "保留在这个问题上的图片（取消勾选即移除）",
    "share": "分享",
    "revoke": "撤销链接",
}

PREFIX = "llava_"


def key(name: str) -> str:
    """The key of ``name`` in the tables the browser gets."""
    return PREFIX + name


TRANSLATIONS = {lang: {key(k): v for k, v in table.items()}
                for lang, table in {"en": EN, "zh-CN": ZH_CN, "zh": ZH_CN}.items()}


# ----- text the server writes (notices, the context meter, prompt statistics, warnings) --------
# The server writes English; ``localize`` turns each known sentence into the browser's language
# where it is found (a notice may join several), and leaves anything it does not know as written.
_NAME = r"(?:^|(?<=[.。!?)] ))(?P<name>[^。\n]+?)"  # a file name opening a sentence
_ZH_MESSAGES: list[tuple[str, Any]] = [
    (r"Added (Image \d+(?:, Image \d+)*)\.", r"已添加 \1。"),
    (r"Removed (Image \d+(?:, Image \d+)*)\.", r"已移除 \1。"),
    (r"Type a question first\.", "请先输入问题。"),
    (r"Your question is ([\d,]+) characters long; the limit is ([\d,]+)\. Shorten it and send again\.",
     r"你的问题有 \1 个字符，上限是 \2。请缩短后再发送。"),
    (r"This conversation already has (\d+) images, the limit is (\d+)\. Remove one \(x on its thumbnail\) or start "
     r"a new chat\.", r"这个对话已有 \1 张图片，上限是 \2 张。请移除一张（缩略图上的 x）或开始新对话。"),
    (r"At most (\d+) new images go with one question, and (\d+) are waiting already\. Ask about them first, then "
     r"add more\.", r"每个问题最多附带 \1 张新图片，已有 \2 张在等待。请先就它们提问，再添加更多。"),
    (_NAME + r" is not an image this app reads \(PNG, JPEG, GIF, WebP or BMP\)\.",
     r"\g<name> 不是本应用能读取的图片（PNG、JPEG、GIF、WebP 或 BMP）。"),
    (_NAME + r" is not an image, video or PDF this app reads \(images: PNG, JPEG, GIF, WebP, BMP; videos: MP4, "
     r"WebM, MOV; documents: PDF\)\.",
     r"\g<name> 不是本应用能读取的图片、视频或 PDF（图片：PNG、JPEG、GIF、WebP、BMP；视频：MP4、WebM、MOV；文档：PDF）。"),
    (_NAME + r" is ([\d.]+ [KM]B); the limit is ([\d.]+ [KM]B)\.( Upload a smaller file\.)?",
     lambda m: f"{m['name']} 有 {m[2]}，上限是 {m[3]}。" + ("请上传更小的文件。" if m[4] else "")),
    (_NAME + r" is already in this conversation as (Image \d+)\.", r"\g<name> 已在这个对话中，标签为 \2。"),
    (_NAME + r" could not be read\.", r"无法读取 \g<name>。"),
    (_NAME + r" is empty\.", r"\g<name> 是空文件。"),
    (r"The model failed on this request \((\w+)\)\. Your conversation is kept; try again\.",
     r"模型处理这个请求时出错（\1）。对话已保留，请重试。"),
    (r"The model ran out of memory on this request\. Try fewer images, a shorter answer \(lower max new tokens\) "
     r"or a new chat\. Your conversation is kept\.",
     "模型处理这个请求时内存不足。请减少图片、缩短回答（降低最多生成的词元数）或开始新对话。对话已保留。"),
    (r"There is nothing to export yet: add images or ask a question first\.", "还没有可导出的内容：请先添加图片或提问。"),
    (r"There is nothing to undo\.", "没有可撤销的内容。"),
    (r"There is no answer to regenerate yet\.", "还没有可重新生成的回答。"),
    (r"The previous answer is still being written\. Wait for it or press Stop\.", "上一个回答还在生成。请等待或按“停止”。"),
    (r"Wait for the current answer, or press Stop, before regenerating\.", "请等待当前回答，或先按“停止”，再重新生成。"),
    (r"Press Stop before undoing the answer that is being written\.", "正在生成回答，请先按“停止”再撤销。"),
    (r"Only the server's admins may switch the model \(it changes it for every user\)\.",
     "只有服务器的管理员可以切换模型（切换会影响所有用户）。"),
    (r"Could not load (\S+): ", r"无法加载 \1："),
    (r"Still using (\S+?)\.(?=\s|$)", r"仍在使用 \1。"),
    (r"This browser's conversation is open in another tab\. This tab starts a new one, which is not kept across "
     r"reloads; the other tab keeps yours\.",
     "这个浏览器的对话已在另一个标签页中打开。此标签页开始一个新对话（重新加载后不会保留）；你的对话保留在另一个标签页中。"),
    (r"Regenerating with temperature ([\d.]+) \(sampling\): at temperature 0 the model would write the same answer "
     r"again\.", r"以温度 \1 重新生成（采样）：温度为 0 时模型会写出完全相同的回答。"),
    # edits, branches, the list of earlier chats, share links
    (r"\*\*Editing question (\d+)\*\*: Send asks it again, what followed stays on its own branch\. ",
     r"**正在编辑第 \1 个问题**：发送即重新提问，之后的内容保留在原来的分支上。"),
    (r"Ticked pictures stay with it; attached ones join it\.", "勾选的图片留在这个问题上，新添加的图片也会加入。"),
    (r"Pictures attached now join it\.", "现在添加的图片会加入这个问题。"),
    (r"Kept in this browser for ([\d.]+) days? after their last use; the oldest go first once all of them together "
     r"pass ([\d,]+) MB\.", r"在这个浏览器中保留到最后一次使用后 \1 天；全部对话合计超过 \2 MB 时，最旧的先删除。"),
    (r"Your conversations appear here once you ask a question\.", "提问之后，你的对话会出现在这里。"),
    (r"Conversations are not saved on this server\.", "这个服务器不保存对话。"),
    (r"(?<=>)(\d+) turns? · ", r"\1 轮 · "),
    (r"Read-only link to the branch shown \(anyone with it can read it, until ([^)]+)\):",
     r"当前分支的只读链接（任何拿到链接的人都能查看，有效期至 \1）："),
    (r"Link revoked: it no longer opens\.", "链接已撤销，无法再打开。"),
    (r"There is nothing to share yet: ask a question first\.", "还没有可分享的内容：请先提问。"),
    (r"Wait for the (?:answer being written|current answer), or press Stop, before editing a question\.",
     "请等待正在生成的回答，或先按“停止”，再编辑问题。"),
    (r"Wait for the (?:answer being written|current answer), or press Stop, before switching branch\.",
     "请等待正在生成的回答，或先按“停止”，再切换分支。"),
    (r"Press Stop, or wait for the answer, before opening another conversation\.", "请先按“停止”或等待回答，再打开另一个对话。"),
    (r"That conversation is not in this browser's list(?: \(it may have been deleted\))?\.",
     "这个对话不在此浏览器的列表中（可能已被删除）。"),
    # the chat's own marks (views._messages): never applied to what people or the model wrote
    (r"\*\(stopped\)\*", "*（已停止）*"),
    (r"\*\(interrupted: cut off before the end; Regenerate writes it again\)\*",
     "*（已中断：回答在结尾前被截断；“重新生成”会重写）*"),
    (r"\*(\d+)(?:st|nd|rd|th) in line: your answer starts as soon as the model is free…\*",
     r"*排队第 \1 位：模型一空闲就开始写你的回答…*"),
    (r"\*\[(Image \d+), removed\]\*", r"*[\1，已移除]*"),
    (r'title="Edit this question">✎ Edit<', 'title="编辑这个问题">✎ 编辑<'),
    (r'title="Previous version"', 'title="上一个版本"'),
    (r'title="Next version"', 'title="下一个版本"'),
    (r"(?<=answer-footer\">)first token ([\d.]+) s", r"首个词元 \1 秒"),
    (r'(?:(?<= · )|(?<=answer-footer">))(\d+) tok/s(?= · )', r"\1 词元/秒"),
    (r'(?:(?<= · )|(?<=answer-footer">))(\d+) tokens(?= · |<)', r"\1 个词元"),
    (r"(\d+) image\(s\) from the cache · (\d+) encoded", r"\1 张图片来自缓存 · \2 张新编码"),
    # the limits beside the strip
    (r"^(\d+) of (\d+) images( · up to (\d+) with one question)?$",
     lambda m: f"{m[1]} / {m[2]} 张图片" + (f" · 每个问题最多 {m[4]} 张" if m[3] else "")),
    # the context meter (parts joined by " · ") and the prompt statistics line
    (r"Context window: ([\d,]+) tokens", r"上下文窗口：\1 词元"),
    (r"Context: (\*\*[\d,]+\*\*) / ([\d,]+) tokens \((\d+)%\)", r"上下文：\1 / \2 词元（\3%）"),
    (r"Context: (\*\*[\d,]+\*\*) tokens", r"上下文：\1 词元"),
    (r"(?:^|(?<= · ))(\d+) images? \(([\d,]+) tokens\)(?= · |$)", r"\1 张图片（\2 词元）"),
    (r"(?:^|(?<= · ))(\d+) images?(?= · |$)", r"\1 张图片"),
    (r"(\d+) earlier turns? no longer seen by the model( \(summarised\))?",
     lambda m: f"模型已看不到较早的 {m[1]} 个回合" + ("（已摘要）" if m[2] else "")),
    (r"(\*\*\d+\*\*) image\(s\) in the prompt \((.*?)\) · (\*\*[\d,]+\*\*) prompt tokens",
     lambda m: f"提示词中有 {m[1]} 张图片（{'无' if m[2] == 'none' else m[2]}）· {m[3]} 个提示词元"),
]
_COMPILED = {"zh-CN": [(re.compile(pattern), replacement) for pattern, replacement in _ZH_MESSAGES]}


def localize(text: str, language: str) -> str:
    """The server's English ``text`` in ``language`` (``zh-CN``; anything else: as written)."""
    for pattern, replacement in _COMPILED.get(language, ()):
        text = pattern.sub(replacement, text)
    return text

